r"""State evolution of the pre-training (Result 4, App. A.3, eqs. (46)–(55)).

The fixed point is sought in x = (Q, M, V). One evaluation of the map x ↦ G(x):

1. output channel, eqs. (46)–(51): with A0 = Q0 + Δ/2, B = Q − M²/A0, s_ab = 1 + δ_ab and
   fixed standard Gaussians g_ab, ζ_ab (one set per solve: common random numbers),

       z*_ab = √(s A0) g_ab,   z̃_ab = √s (M/√A0 g_ab + √B ζ_ab),   h = Prox(z*, z̃),
       M̂ = (2α/V) E Σ_{a≤b} (h − z̃)_ab/√s (g/√A0 − M ζ/(A0 √B)),
       Q̂ = (2α/V²) E Σ (h − z̃)²/s,     V̂ = −(2α/(V√B)) E Σ (h − z̃)/√s ζ;

2. input channel, eqs. (48), (52)–(54): η = √Q̂/M̂, ε = 2√κ λ/M̂,

       Q = M̂²/V̂² J,   V = J1/(2 V̂ η),   M = M̂/(2V̂) (2J − η J1 − ε J2).

Errors (Result 3): the test error (55) E‖σ(z̃) − σ(z*)‖²_F ((z*, z̃) ~ 𝒬 is the test law) and the
train error E‖σ(h) − σ(z*)‖²_F (law ℛ, eq. 17), with Monte-Carlo standard errors.

λ = ∞ is the no-pre-training baseline: Q = M = V = 0 and the zero predictor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hdlora.diagnostics import ConvergenceWarning, RepliconWarning, warn
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.theory import noise, spectral
from hdlora.theory.fixed_point import OutOfDomain, solve
from hdlora.theory.laws import PretrainSamples, channel_fields, check_method, pretrain_errors
from hdlora.theory.precision import (
    block_means,
    fixed_point_covariance,
    gradient,
    jacobian,
    propagate,
)
from hdlora.theory.prox import ProxResult, loss_terms, pretrain_prox
from hdlora.theory.replicon import pretrain_replicon
from hdlora.theory.symmetric import multiplicity, n_entries


@dataclass
class OutputChannel:
    """Everything the output channel computes at one (Q, M, V)."""

    M_hat: float
    Q_hat: float
    V_hat: float
    z_star: np.ndarray
    z_tilde: np.ndarray
    prox: object  # hdlora.theory.prox.ProxResult
    per_sample: np.ndarray | None = None  # (n, 3): the summands of M̂, Q̂, V̂


def output_channel(
    Q, M, V, Q0, params: Params, samples: PretrainSamples, warm=None, starts=("z_tilde", "z_star")
) -> OutputChannel:
    """M̂, Q̂, V̂ of eqs. (49)–(51) at (Q, M, V)."""
    T, alpha = params.T, params.alpha
    s = multiplicity(T)
    A0 = Q0 + params.Delta / 2
    z_star, z_tilde, sqB = channel_fields(Q, M, Q0, params.Delta, samples, T)
    prox = pretrain_prox(z_star, z_tilde, V, T, params.activation, warm=warm, starts=starts)
    d = (prox.h - z_tilde) / np.sqrt(s)  # (h − z̃)/√s
    if not sqB > 0:  # B = 0: the limit B ↓ 0 of (49), (51) is not implemented
        raise OutOfDomain("B = Q − M²/A0 = 0: the output channel needs B > 0")
    per = np.stack(
        [
            2
            * alpha
            / V
            * (d * (samples.g / math.sqrt(A0) - M / (A0 * sqB) * samples.zeta)).sum(1),
            2 * alpha / V**2 * (d * d).sum(axis=1),
            -2 * alpha / (V * sqB) * (d * samples.zeta).sum(axis=1),
        ],
        axis=1,
    )
    M_hat, Q_hat, V_hat = per.mean(axis=0)
    return OutputChannel(M_hat, Q_hat, V_hat, z_star, z_tilde, prox, per)


def output_channel_at_origin(Q0, params: Params, samples: PretrainSamples) -> OutputChannel:
    r"""The limit of eqs. (49)–(51) as (Q, M, V) → 0 (the zero predictor, Ŵ = 0).

    As V → 0, h − z̃ = −V s ∇f(z̃) + O(V²) with f = ‖σ(h) − σ(z*)‖²_F, and z̃ → 0, so
    M̂ → −(2α/√A0) E Σ √s ∂f(0) g,  Q̂ → 2α E Σ s (∂f(0))²,  V̂ → 2α E Σ s ∂²f(0)
    (derivatives in the entries a ≤ b at h = 0; V̂ by Stein's lemma on the ζ term).
    """
    s = multiplicity(params.T)
    A0 = Q0 + params.Delta / 2
    z_star, _, _ = channel_fields(0.0, 0.0, Q0, params.Delta, samples, params.T)
    zero = np.zeros_like(z_star)
    _, grad, hess = loss_terms(zero, z_star, params.T, params.activation)
    a = 2 * params.alpha
    M_hat = -a / math.sqrt(A0) * (np.sqrt(s) * grad * samples.g).sum(axis=1).mean()
    Q_hat = a * (s * grad * grad).sum(axis=1).mean()
    V_hat = a * (s * np.diagonal(hess, axis1=1, axis2=2)).sum(axis=1).mean()
    prox = ProxResult(zero, hess + np.inf, np.zeros(len(zero)), np.zeros(len(zero)), 0, 0, 0)
    return OutputChannel(float(M_hat), float(Q_hat), float(V_hat), z_star, zero, prox)


def threshold_lambda(
    params: Params, samples: PretrainSamples, origin: OutputChannel | None = None
) -> float:
    r"""λ_c above which Ŵ = 0 is a fixed point: ε(0) = 2√κλ/M̂(0) ≥ the upper edge of
    μ_{η(0)}, with the conjugates ``origin`` of :func:`output_channel_at_origin`."""
    oc = origin if origin is not None else output_channel_at_origin(params.Q0, params, samples)
    eta = math.sqrt(oc.Q_hat) / oc.M_hat
    edge = spectral.support(eta, params.kappa0)[-1][1]
    return oc.M_hat * edge / (2 * math.sqrt(params.kappa))


def input_channel(M_hat, Q_hat, V_hat, params: Params) -> tuple[float, float, float]:
    """(Q, M, V) of eqs. (52)–(54) from the conjugates."""
    if not (M_hat > 0 and Q_hat > 0 and V_hat > 0):
        raise OutOfDomain(f"conjugates must be > 0, got M̂={M_hat}, Q̂={Q_hat}, V̂={V_hat}")
    eta = math.sqrt(Q_hat) / M_hat
    eps = 2 * math.sqrt(params.kappa) * params.lam / M_hat
    J, J1, J2 = spectral.J(eta, eps, params.kappa0)
    Q = M_hat**2 / V_hat**2 * J
    V = J1 / (2 * V_hat * eta)
    M = M_hat / (2 * V_hat) * (2 * J - eta * J1 - eps * J2)
    return Q, M, V


def _zero_predictor(params, samples, n_mc, seed, t0, oc=None, message="") -> Observables:
    """The fixed point Q = M = V = 0 (λ = ∞, or λ ≥ λ_c where Ŵ = 0 is a fixed point)."""
    Q0 = params.Q0
    z_star, _, _ = channel_fields(0.0, 0.0, Q0, params.Delta, samples, params.T)
    E, se = pretrain_errors(z_star, np.zeros_like(z_star), params)
    hats = {}
    if oc is not None:
        hats = dict(Q_hat=oc.Q_hat, M_hat=oc.M_hat, V_hat=oc.V_hat)
    return Observables(
        params=params,
        source="theory",
        test_error=E,
        test_error_se=se,
        train_error=E,
        train_error_se=se,
        Q0=Q0,
        Q=0.0,
        Q_se=0.0,  # exact: the zero predictor has no Monte-Carlo error
        M=0.0,
        M_se=0.0,
        V=0.0,
        **hats,
        converged=True,
        n_iter=0,
        residual=0.0,
        message=message,
        replicon=0.0,
        replicon_stable=True,
        n_mc=n_mc,
        seed=seed,
        wall_time=time.perf_counter() - t0,
    )


class _ReachedZero(Exception):
    """The input channel returned J = 0: the iteration lands on the zero predictor."""


def pretrain(
    params: Params,
    n_mc: int = 30000,
    seed: int = 0,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
    x0: tuple[float, float, float] | None = None,
    damping: float = 0.5,
    progress: bool | None = None,
    method: str = "rqmc",
) -> Observables:
    r"""Solve the pre-training state evolution, eqs. (46)–(54), and evaluate E, L, replicon.

    Parameters
    ----------
    params : the model (uses T, κ0, κ, Δ, α, λ, σ).
    n_mc : Monte-Carlo samples of the output channel (common random numbers).
    seed : seed of the Monte-Carlo samples.
    tol : tolerance on max |G(x) − x|/max(1, |x|) for x = (Q, M, V).
    max_iter : iteration budget of the (Anderson-accelerated) fixed point.
    x0 : initial (Q, M, V).
    method : "rqmc" (default): randomised quasi-Monte Carlo samples (8 scrambled Sobol blocks,
        n_mc rounded to 8·2^k), a coarse solve on one block first, the test error (55) on an
        independent test set 8 times larger, and standard errors of Q, M, E from the blocks by
        the delta method (:mod:`hdlora.theory.precision`). "mc": the original i.i.d. path.
        "exact" (linear σ only): every expectation in closed form (:func:`linear_conjugates`),
        no Monte Carlo at all: the result does not depend on ``seed`` (standard errors 0).

    Above λ_c (:func:`threshold_lambda`) the zero predictor Ŵ = 0 is a fixed point; when the
    iteration reaches it, the result is Q = M = V = 0 with ``message`` saying so.
    ``info["lambda_c"]`` is reported in every case.
    """
    t0 = time.perf_counter()
    if method == "exact":
        return _pretrain_exact_linear(params, n_mc, seed, tol, max_iter, x0, damping, progress, t0)
    samples = PretrainSamples.draw(n_mc, params.T, seed, check_method(method))
    if math.isinf(params.lam):
        return _zero_predictor(params, samples, n_mc, seed, t0, message="lam = inf: W = 0")
    Q0 = params.Q0
    A0 = Q0 + params.Delta / 2
    origin = output_channel_at_origin(Q0, params, samples)
    lam_c = threshold_lambda(params, samples, origin)
    cache: dict = {"h": None}

    def G(x):
        Q, M, V = x
        warm = cache["h"]
        oc = output_channel(
            Q,
            M,
            V,
            Q0,
            params,
            samples,
            warm=warm,
            starts=("z_tilde", "z_star") if warm is None else (),
        )
        cache["h"] = oc.prox.h
        out = np.array(input_channel(oc.M_hat, oc.Q_hat, oc.V_hat, params))
        if not out.any() and params.lam >= lam_c:
            raise _ReachedZero
        return out

    def project(x):
        Q, M, V = x
        if not (Q > 0 and V > 0 and M * M < Q * A0):
            return None
        return x

    x = np.array(x0 if x0 is not None else (0.5, 0.5, 1.0), dtype=float)
    if project(x) is None:
        raise ValueError(f"x0 = (Q, M, V) must satisfy Q > 0, V > 0, M² < Q A0; got {tuple(x)}")
    n_iter = 0
    coarse_iter = 0
    if samples.blocks > 1:
        # coarse stage: one RQMC block (1/8 of the cost) to tolerance 1e-3 gives the start
        sub = samples.subset(1)
        coarse_cache: dict = {"h": None}

        def G_coarse(x):
            w = coarse_cache["h"]
            starts = ("z_tilde", "z_star") if w is None else ()
            oc = output_channel(*x, Q0, params, sub, warm=w, starts=starts)
            coarse_cache["h"] = oc.prox.h
            out = np.array(input_channel(oc.M_hat, oc.Q_hat, oc.V_hat, params))
            if not out.any():
                raise _ReachedZero
            return out

        try:
            fpc = solve(
                G_coarse,
                x,
                tol=max(tol, 1e-3),
                max_iter=max_iter,
                damping=damping,
                project=project,
                progress=progress,
                warn_failure=False,
                desc=f"pretrain SE (coarse) lam={params.lam:g}",
            )
            coarse_iter = fpc.n_iter
            if fpc.converged:
                x = fpc.x
        except (_ReachedZero, OutOfDomain):
            pass
    for _round in range(4):
        try:
            fp = solve(
                G,
                x,
                tol=tol,
                max_iter=max_iter - n_iter,
                damping=damping,
                project=project,
                progress=progress,
                desc=f"pretrain SE lam={params.lam:g}",
            )
        except _ReachedZero:
            return _zero_predictor(
                params,
                samples,
                n_mc,
                seed,
                t0,
                origin,
                f"zero predictor: lam = {params.lam:g} >= lam_c = {lam_c:.6g}",
            )
        n_iter += fp.n_iter
        x = fp.x
        # final evaluation at the returned point from every start (warm, z̃, z*): the proximal is
        # the best maximiser, and the conjugates belong to the returned (Q, M, V)
        oc = output_channel(*x, Q0, params, samples, warm=cache["h"])
        changed = np.abs(oc.prox.h - cache["h"]).max()
        cache["h"] = oc.prox.h
        if not fp.converged or changed < 1e-8 or n_iter >= max_iter:
            break
    Q, M, V = x
    E, E_se = pretrain_errors(oc.z_star, oc.z_tilde, params)
    L, L_se = pretrain_errors(oc.z_star, oc.prox.h, params, samples.blocks)
    se: dict = dict(test_error_se=E_se)
    precision_info: dict = {}
    se_note = ""
    if samples.blocks > 1:
        try:
            E, se, precision_info = _fixed_point_se(params, samples, x, oc, cache["h"])
        except OutOfDomain as err:  # a single block's conjugates leave the domain (near λ_c)
            se_note = f"; block standard errors unavailable ({err})"
            warn(ConvergenceWarning, f"pretrain at {params}: standard errors unavailable: {err}")
    rep = pretrain_replicon(params, V, oc.M_hat, oc.Q_hat, oc.V_hat, oc.prox.hessian)
    if not rep.stable:
        warn(
            RepliconWarning,
            f"pre-training replicon (75, corrected) = {rep.value:.3g} >= 1 at {params}: the "
            "replica-symmetric prediction need not describe the minimisers",
        )
    converged = fp.converged and oc.prox.n_failed == 0
    message = fp.message + se_note
    if params.lam < lam_c and not Q > noise.ZERO_PREDICTOR_Q * Q0:
        # the tolerance is absolute for small (Q, M, V): an iteration that collapsed onto
        # Ŵ ≈ 0 can pass it, but below λ_c the zero predictor is not a fixed point
        converged = False
        message += (
            f"; Q = {Q:.3g} at rounding level below lam_c = {lam_c:.6g}: not a fixed "
            "point (the zero predictor is one only above lam_c)"
        )
        warn(ConvergenceWarning, f"pretrain at {params}: {message}")
    if oc.prox.n_failed:
        message += f"; {oc.prox.n_failed} proximal samples above tolerance"
    return Observables(
        params=params,
        source="theory",
        test_error=E,
        train_error=L,
        train_error_se=L_se,
        Q0=Q0,
        Q=Q,
        M=M,
        V=V,
        **se,
        Q_hat=oc.Q_hat,
        M_hat=oc.M_hat,
        V_hat=oc.V_hat,
        converged=converged,
        n_iter=n_iter,
        residual=fp.residual,
        message=message,
        replicon=rep.value,
        replicon_stable=rep.stable,
        n_mc=int(n_mc),
        seed=int(seed),
        wall_time=time.perf_counter() - t0,
        info={
            "prox_failed": oc.prox.n_failed,
            "prox_disagree": oc.prox.n_disagree,
            "lambda_c": lam_c,
            "replicon_paper_normalisation": rep.paper_value,
            "method": method,
            "n_samples": len(samples.g),
            "coarse_iter": coarse_iter,
            **precision_info,
        },
    )


def _test_error(params: Params, samples: PretrainSamples, Q, M, n: int | None = None):
    """ℰ (55) at (Q, M) on the independent RQMC test set (its first n points): (mean, se)."""
    test = PretrainSamples(samples.test_g[:n], samples.test_zeta[:n])
    zs, zt, _ = channel_fields(Q, M, params.Q0, params.Delta, test, params.T)
    return pretrain_errors(zs, zt, params, samples.blocks)


def _fixed_point_se(params: Params, samples: PretrainSamples, x, oc: OutputChannel, h):
    r"""ℰ (55) on the test set and the standard errors of Q, M, ℰ by the delta method of
    :mod:`hdlora.theory.precision` (block means of the summands of (49)–(51) mapped through
    (52)–(54); J by forward differences on two blocks, warm-started at the proximal)."""
    K = samples.blocks
    G_blocks = np.array(
        [input_channel(*c, params) for c in block_means(oc.per_sample, K)], dtype=float
    )
    sub = samples.subset(2)
    k = len(sub.g)
    warm = {"h": h[:k].copy()}

    def G_sub(y):
        o = output_channel(*y, params.Q0, params, sub, warm=warm["h"], starts=())
        warm["h"] = o.prox.h
        return np.array(input_channel(o.M_hat, o.Q_hat, o.V_hat, params))

    fc = fixed_point_covariance(jacobian(G_sub, x), G_blocks)
    Q, M, _ = x
    E, E_test_se = _test_error(params, samples, Q, M)
    # the gradient (a smooth function of Q, M) on the first n points suffices
    n = len(samples.g)
    grad = gradient(lambda y: _test_error(params, samples, *y, n=n)[0], np.array([Q, M]))
    se = dict(
        Q_se=float(fc.se()[0]),
        M_se=float(fc.se()[1]),
        test_error_se=propagate(grad, fc.cov[:2, :2], E_test_se),
    )
    info = {"jacobian_spectral_radius": fc.spectral_radius, "V_se": float(fc.se()[2])}
    return E, se, info


def linear_conjugates(Q, M, V, Q0, params: Params) -> tuple[float, float, float]:
    r"""Eqs. (49)–(51) in closed form for σ(x) = x/T.

    The proximal is linear, h = k z* + (1 − k) z̃ with k = cV/(cV + 1), c = 4/T² (App. C), so
    with d = (h − z̃)/√s = k((√A0 − M/√A0) g − √B ζ) every expectation is a Gaussian moment:
    E[d (g/√A0 − Mζ/(A0√B))] = k, E[d ζ] = −k√B, E[d²] = k²(A0 − 2M + Q), summed over the
    L = T(T+1)/2 entries:

        M̂ = V̂ = 2αLk/V,   Q̂ = 2αL k² (A0 − 2M + Q)/V².
    """
    T, L = params.T, n_entries(params.T)
    A0 = Q0 + params.Delta / 2
    k = 4.0 * V / (4.0 * V + T * T)
    a = 2 * params.alpha * L
    return a * k / V, a * k * k * (A0 - 2 * M + Q) / V**2, a * k / V


def linear_errors(Q, M, V, Q0, params: Params) -> tuple[float, float]:
    r"""ℰ (55) and ℒ for σ(x) = x/T: with ‖H‖²_F = Σ_{a≤b}(2 − δ_ab) h²_ab and
    E(z̃ − z*)²_ab = s_ab (A0 − 2M + Q), ℰ = (T + 1)/T · (A0 − 2M + Q), and ℒ = (1 − k)² ℰ
    (h − z* = (1 − k)(z̃ − z*); k = 0 at V = 0, the zero predictor)."""
    T = params.T
    A0 = Q0 + params.Delta / 2
    E = (T + 1) / T * (A0 - 2 * M + Q)
    k = 4.0 * V / (4.0 * V + T * T) if V > 0 else 0.0
    return E, (1 - k) ** 2 * E


def _pretrain_exact_linear(params, n_mc, seed, tol, max_iter, x0, damping, progress, t0):
    """:func:`pretrain` with ``method="exact"``: eqs. (49)–(54) with :func:`linear_conjugates`."""
    if params.activation != "linear":
        raise ValueError('method="exact" needs activation="linear" (the proximal is linear)')
    Q0, T = params.Q0, params.T
    A0 = Q0 + params.Delta / 2
    a = 2 * params.alpha * n_entries(T)
    c = 4.0 / T**2  # V → 0: k ≈ cV, M̂ = V̂ → a c, Q̂ → a c² (A0 − 2M + Q) at the origin
    eta0 = math.sqrt(a * c * c * A0) / (a * c)
    lam_c = a * c * spectral.support(eta0, params.kappa0)[-1][1] / (2 * math.sqrt(params.kappa))
    common = dict(params=params, source="theory", Q0=Q0, n_mc=int(n_mc), seed=int(seed))
    if math.isinf(params.lam) or params.lam >= lam_c:
        E, _ = linear_errors(0.0, 0.0, 0.0, Q0, params)
        msg = (
            "lam = inf: W = 0"
            if math.isinf(params.lam)
            else (f"zero predictor: lam = {params.lam:g} >= lam_c = {lam_c:.6g}")
        )
        return Observables(
            **common,
            test_error=E,
            test_error_se=0.0,
            train_error=E,
            train_error_se=0.0,
            Q=0.0,
            Q_se=0.0,
            M=0.0,
            M_se=0.0,
            V=0.0,
            converged=True,
            n_iter=0,
            residual=0.0,
            message=msg,
            replicon=0.0,
            replicon_stable=True,
            wall_time=time.perf_counter() - t0,
            info={"lambda_c": lam_c, "method": "exact"},
        )

    def G(x):
        return np.array(input_channel(*linear_conjugates(*x, Q0, params), params))

    def project(x):
        Q, M, V = x
        return x if (Q > 0 and V > 0 and M * M < Q * A0) else None

    x = np.array(x0 if x0 is not None else (0.5, 0.5, 1.0), dtype=float)
    fp = solve(
        G,
        x,
        tol=min(tol, 1e-10),
        max_iter=max(max_iter, 500),
        damping=damping,
        project=project,
        progress=progress,
        desc=f"pretrain SE exact lam={params.lam:g}",
    )
    Q, M, V = fp.x
    M_hat, Q_hat, V_hat = linear_conjugates(Q, M, V, Q0, params)
    E, L = linear_errors(Q, M, V, Q0, params)
    s = multiplicity(T)
    k2 = 2.0 - (s == 2)
    hess = np.diag(2 * k2 / T**2 + 1.0 / (V * s))[None]  # −∇²Ψ, the same for every sample
    rep = pretrain_replicon(params, V, M_hat, Q_hat, V_hat, hess)
    if not rep.stable:
        warn(
            RepliconWarning,
            f"pre-training replicon (75, corrected) = {rep.value:.3g} >= 1 "
            f"at {params}: the replica-symmetric prediction need not describe the minimisers",
        )
    return Observables(
        **common,
        test_error=E,
        test_error_se=0.0,
        train_error=L,
        train_error_se=0.0,
        Q=Q,
        Q_se=0.0,
        M=M,
        M_se=0.0,
        V=V,
        Q_hat=Q_hat,
        M_hat=M_hat,
        V_hat=V_hat,
        converged=fp.converged,
        n_iter=fp.n_iter,
        residual=fp.residual,
        message=fp.message,
        replicon=rep.value,
        replicon_stable=rep.stable,
        wall_time=time.perf_counter() - t0,
        info={
            "lambda_c": lam_c,
            "method": "exact",
            "replicon_paper_normalisation": rep.paper_value,
        },
    )


def recalibrated(
    params: Params,
    pre: Observables,
    beta: float | Sequence[float],
    n_mc: int = 30000,
    seed: int = 0,
    *,
    method: str = "rqmc",
) -> Observables | list[Observables]:
    r"""The pre-training record of the recalibrated map Ŵ → √β Ŵ (eq. 26, App. E).

    The fields scale, z → β z, so Q → β²Q, M → βM and, with (z*, z̃) ~ 𝒬 and h = Prox(z*, z̃)
    the training field (Result 2, at the fixed point's V),

        ℰ(β) = E‖σ(β z̃) − σ(z*)‖²_F  (eq. 55),   ℒ(β) = E‖σ(β h) − σ(z*)‖²_F.

    For σ(x) = x/T both are Gaussian moments: ℰ(β) = (T+1)/T · (A0 − 2βM + β²Q), minimal at
    β* = M/Q, and ℒ(β) with h = k z* + (1 − k) z̃ (exact, ``method="exact"``). Otherwise fresh
    samples of the seed (``method`` as in :func:`pretrain`); the standard errors are those of the
    sample averages at the given (Q, M, V) (β and the fixed point held fixed). ``beta=1``
    reproduces ``pre``'s errors within their standard errors. Returns ``pre`` with test_error,
    train_error, Q, M (and their standard errors, scaled) replaced, ``beta`` and ``beta_star``
    set, and ``info["test_error_unscaled"]``.

    ``beta`` may be a sequence: then a list of records, one per β, computed from one draw of
    the samples and one proximal (the same numbers as one call per β; common random numbers
    along the β curve).
    """
    scalar = np.ndim(beta) == 0
    betas = [beta] if scalar else list(beta)
    for b in betas:
        if isinstance(b, bool | np.bool_) or not (np.isreal(b) and math.isfinite(b) and b > 0):
            raise ValueError(f"beta must be finite numbers > 0, got beta={b!r}")
    Q, M, V = pre.Q, pre.M, pre.V
    beta_star = noise.beta_star(Q, M, pre.Q0)
    T, A0 = params.T, pre.Q0 + params.Delta / 2
    errors = []  # (E, E_se, L, L_se) per β
    if method == "exact" or (params.activation == "linear" and Q == 0):
        if params.activation != "linear":
            raise ValueError('method="exact" needs activation="linear" (the proximal is linear)')
        k = 4.0 * V / (4.0 * V + T * T) if V > 0 else 0.0
        c = (T + 1) / T
        for b in betas:
            E = c * (A0 - 2 * b * M + b * b * Q)
            a, bb = b * k - 1.0, b * (1.0 - k)  # β h − z* = a z* + bb z̃
            L = c * (a * a * A0 + 2 * a * bb * M + bb * bb * Q)
            errors.append((E, 0.0, L, 0.0))
    else:
        samples = PretrainSamples.draw(n_mc, T, seed, check_method(method))
        test = (
            PretrainSamples(samples.test_g, samples.test_zeta)
            if samples.test_g is not None
            else samples
        )
        # the fields of (β²Q, βM) are β times those of (Q, M): one draw serves every β
        zs_test, zt_test, _ = channel_fields(Q, M, pre.Q0, params.Delta, test, T)
        zs, zt, _ = channel_fields(Q, M, pre.Q0, params.Delta, samples, T)
        h = pretrain_prox(zs, zt, V, T, params.activation).h if V > 0 else zt
        for b in betas:
            E, E_se = pretrain_errors(zs_test, b * zt_test, params, samples.blocks)
            L, L_se = pretrain_errors(zs, b * h, params, samples.blocks)
            errors.append((E, E_se, L, L_se))
    records = [
        pre.replace(
            test_error=E,
            test_error_se=E_se,
            train_error=L,
            train_error_se=L_se,
            Q=b * b * Q,
            Q_se=b * b * pre.Q_se,
            M=b * M,
            M_se=b * pre.M_se,
            beta=float(b),
            beta_star=beta_star,
            info={**pre.info, "test_error_unscaled": pre.test_error},
        )
        for b, (E, E_se, L, L_se) in zip(betas, errors, strict=True)
    ]
    return records[0] if scalar else records
