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
from dataclasses import dataclass

import numpy as np

from hdlora.diagnostics import ConvergenceWarning, RepliconWarning, warn
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.theory import driver, noise, spectral
from hdlora.theory.fixed_point import FixedPointResult, OutOfDomain
from hdlora.theory.laws import PretrainSamples, channel_fields, check_method, pretrain_errors
from hdlora.theory.precision import gradient, propagate
from hdlora.theory.prox import ProxResult, loss_terms, pretrain_prox
from hdlora.theory.replicon import pretrain_replicon
from hdlora.theory.symmetric import multiplicity


@dataclass
class OutputChannel(driver.ProxEvaluation):
    """Everything the output channel computes at one (Q, M, V); ``point`` and ``objective``
    are the proximal's h (n, L) and F = −Ψ (eq. 42)."""

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


def free_entropy(x, conjugates, objective, params: Params) -> float:
    r"""Φ of eq. (21) = (45) at (Q, M, V; M̂, Q̂, V̂): the algebraic terms, J of eq. (44), and
    E max Ψ = −E F at the proximals (``objective`` F = −Ψ per sample)."""
    Q, M, V = x
    M_hat, Q_hat, V_hat = conjugates
    alpha = params.alpha
    eta = math.sqrt(Q_hat) / M_hat
    eps = 2 * math.sqrt(params.kappa) * params.lam / M_hat
    J = spectral.J(eta, eps, params.kappa0)[0]
    return float(
        -M * M_hat / (2 * alpha)
        + (Q * V_hat - V * Q_hat) / (4 * alpha)
        + M_hat**2 / (4 * alpha * V_hat) * J
        - np.mean(objective)
    )


@dataclass
class PretrainStage:
    """The pre-training's physics for :mod:`hdlora.theory.driver`: x = (Q, M, V), the output
    channel (49)–(51), the input channel (52)–(54), the free entropy (21). The iteration ends
    on the zero predictor when the input channel returns J = 0 above λ_c (on the coarse block:
    at any λ, the full sample then decides)."""

    params: Params
    samples: PretrainSamples
    lam_c: float
    name = "pretrain"
    pinned = ()
    rounds = 4
    every_start_rounds = False

    def evaluate(self, x, samples, warm, every_start):
        starts = ("z_tilde", "z_star") if (warm is None or every_start) else ()
        return output_channel(*x, self.params.Q0, self.params, samples, warm=warm, starts=starts)

    def input_channel(self, conjugates):
        return np.array(input_channel(*conjugates, self.params))

    def check(self, x_new, coarse):
        if not x_new.any() and (coarse or self.params.lam >= self.lam_c):
            raise driver.Terminal

    def project(self, x):
        Q, M, V = x
        A0 = self.params.Q0 + self.params.Delta / 2
        return x if (Q > 0 and V > 0 and M * M < Q * A0) else None

    def free_entropy(self, x, conjugates, evaluation):
        return free_entropy(x, conjugates, evaluation.objective, self.params)

    def desc(self, kind, coarse):
        return f"pretrain SE{' (coarse)' if coarse else ''} lam={self.params.lam:g}"


def _zero_record(params, E, E_se, message, t0, *, n_mc, seed, info=None, hats=None):
    """The record of the zero predictor Q = M = V = 0 (exact: no Monte-Carlo error on Q, M)."""
    return Observables(
        params=params,
        source="theory",
        test_error=E,
        test_error_se=E_se,
        train_error=E,
        train_error_se=E_se,
        Q0=params.Q0,
        Q=0.0,
        Q_se=0.0,
        M=0.0,
        M_se=0.0,
        V=0.0,
        **(hats or {}),
        converged=True,
        n_iter=0,
        residual=0.0,
        message=message,
        replicon=0.0,
        replicon_stable=True,
        n_mc=int(n_mc),
        seed=int(seed),
        wall_time=time.perf_counter() - t0,
        **({"info": info} if info is not None else {}),
    )


def _zero_predictor(params, samples, n_mc, seed, t0, oc=None, message="") -> Observables:
    """The fixed point Q = M = V = 0 (λ = ∞, or λ ≥ λ_c where Ŵ = 0 is a fixed point)."""
    z_star, _, _ = channel_fields(0.0, 0.0, params.Q0, params.Delta, samples, params.T)
    E, se = pretrain_errors(z_star, np.zeros_like(z_star), params)
    hats = dict(Q_hat=oc.Q_hat, M_hat=oc.M_hat, V_hat=oc.V_hat) if oc is not None else None
    return _zero_record(params, E, se, message, t0, n_mc=n_mc, seed=seed, hats=hats)


def _zero_solution(stage: PretrainStage, origin: OutputChannel) -> driver.Solution:
    """The zero predictor as a candidate of the selection: Φ = −E‖σ(0) − σ(z*)‖²_F (eq. 45 at
    Q = M = V = 0, where J = 0 above λ_c and max Ψ → Ψ(h = z̃ = 0) as V → 0)."""
    z_star = origin.z_star
    E, E_se = pretrain_errors(z_star, np.zeros_like(z_star), stage.params)
    zero = np.zeros(3)
    fp = FixedPointResult(x=zero, converged=True, n_iter=0, residual=0.0, message="closed form")
    return driver.Solution(
        x=zero,
        fixed_point=fp,
        evaluation=origin,
        per_sample=np.zeros((len(z_star), 3)),
        n_iter=0,
        coarse_iter=0,
        phi=-E,
        phi_se=E_se,
    )


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

    The fixed point is found by :func:`hdlora.theory.driver.run_stage`. Above λ_c
    (:func:`threshold_lambda`) the zero predictor Ŵ = 0 is a fixed point: when the iteration
    reaches it, or when a fixed point with Ŵ ≠ 0 has the smaller free entropy Φ (eq. 21,
    ``info["free_entropy"]``), the result is Q = M = V = 0 with ``message`` saying so.
    """
    t0 = time.perf_counter()
    if method == "exact":
        from hdlora.theory.pretrain_linear import pretrain_exact_linear

        return pretrain_exact_linear(params, n_mc, seed, tol, max_iter, x0, damping, progress)
    samples = PretrainSamples.draw(n_mc, params.T, seed, check_method(method))
    if math.isinf(params.lam):
        return _zero_predictor(params, samples, n_mc, seed, t0, message="lam = inf: W = 0")
    origin = output_channel_at_origin(params.Q0, params, samples)
    stage = PretrainStage(params, samples, threshold_lambda(params, samples, origin))
    x = np.array(x0 if x0 is not None else (0.5, 0.5, 1.0), dtype=float)
    if stage.project(x) is None:
        raise ValueError(f"x0 = (Q, M, V) must satisfy Q > 0, V > 0, M² < Q A0; got {tuple(x)}")
    zero_message = f"zero predictor: lam = {params.lam:g} >= lam_c = {stage.lam_c:.6g}"
    solver = dict(tol=tol, max_iter=max_iter, damping=damping, progress=progress)
    try:
        found = {"nonzero": driver.run_stage(stage, x, **solver)}
    except driver.Terminal:
        return _zero_predictor(params, samples, n_mc, seed, t0, origin, zero_message)
    if params.lam >= stage.lam_c:
        found["zero"] = _zero_solution(stage, origin)
    chosen, n_distinct = driver.select(found, "nonzero", "zero", lambda y: _nonzero(y, params.Q0))
    if chosen == "zero":
        message = f"{zero_message}; selected by free entropy over a fixed point with W != 0"
        return _zero_predictor(params, samples, n_mc, seed, t0, origin, message)
    info = driver.selection_info(found, chosen, n_distinct)
    return _record(stage, found["nonzero"], method, t0, n_mc=n_mc, seed=seed, info=info)


def _nonzero(x, Q0) -> bool:
    """A fixed point away from the zero predictor (Q above rounding level)."""
    return x[0] > noise.ZERO_PREDICTOR_Q * Q0


def _replicon(params, V, M_hat, Q_hat, V_hat, hessian):
    """The pre-training replicon (75), with a warning when it is ≥ 1."""
    rep = pretrain_replicon(params, V, M_hat, Q_hat, V_hat, hessian)
    if not rep.stable:
        warn(
            RepliconWarning,
            f"pre-training replicon (75, corrected) = {rep.value:.3g} >= 1 at {params}: the "
            "replica-symmetric prediction need not describe the minimisers",
        )
    return rep


def _record(stage: PretrainStage, sol: driver.Solution, method, t0, *, n_mc, seed, info):
    """The record of a fixed point with Ŵ ≠ 0: errors, standard errors, replicon, flags."""
    params, samples, oc, fp = stage.params, stage.samples, sol.evaluation, sol.fixed_point
    Q, M, V = sol.x
    E, E_se = pretrain_errors(oc.z_star, oc.z_tilde, params)
    L, L_se = pretrain_errors(oc.z_star, oc.prox.h, params, samples.blocks)
    se: dict = dict(test_error_se=E_se)
    precision_info: dict = {}
    message = fp.message
    if samples.blocks > 1:
        try:
            E, se, precision_info = _observable_se(stage, sol)
        except OutOfDomain as err:  # a single block's conjugates leave the domain (near λ_c)
            message += f"; block standard errors unavailable ({err})"
            warn(ConvergenceWarning, f"pretrain at {params}: standard errors unavailable: {err}")
    rep = _replicon(params, V, oc.M_hat, oc.Q_hat, oc.V_hat, oc.prox.hessian)
    converged = fp.converged and oc.prox.n_failed == 0
    if params.lam < stage.lam_c and not _nonzero(sol.x, params.Q0):
        # the tolerance is absolute for small (Q, M, V): an iteration that collapsed onto
        # Ŵ ≈ 0 can pass it, but below λ_c the zero predictor is not a fixed point
        converged = False
        message += (
            f"; Q = {Q:.3g} at rounding level below lam_c = {stage.lam_c:.6g}: not a fixed "
            "point (the zero predictor is one only above lam_c)"
        )
        warn(ConvergenceWarning, f"pretrain at {params}: {message}")
    if oc.prox.n_failed:
        message += f"; {oc.prox.n_failed} proximal samples above tolerance"
    return fixed_point_record(
        params,
        sol.x,
        (oc.M_hat, oc.Q_hat, oc.V_hat),
        rep,
        errors=dict(test_error=E, train_error=L, train_error_se=L_se, **se),
        status=dict(converged=converged, n_iter=sol.n_iter, residual=fp.residual, message=message),
        t0=t0,
        n_mc=n_mc,
        seed=seed,
        info={
            "prox_failed": oc.prox.n_failed,
            "prox_disagree": oc.prox.n_disagree,
            "lambda_c": stage.lam_c,
            "replicon_paper_normalisation": rep.paper_value,
            "method": method,
            "n_samples": len(samples.g),
            "coarse_iter": sol.coarse_iter,
            **precision_info,
            **info,
        },
    )


def fixed_point_record(
    params: Params, x, conjugates, rep, *, errors: dict, status: dict, t0, n_mc, seed, info
) -> Observables:
    """The record of a pre-training fixed point with Ŵ ≠ 0, for both paths (sampled, and the
    closed form of :mod:`hdlora.theory.pretrain_linear`): x = (Q, M, V), the conjugates
    (M̂, Q̂, V̂), the replicon ``rep`` (75), ``errors`` (ℰ, ℒ and their standard errors),
    ``status`` (converged, n_iter, residual, message) and ``info``."""
    Q, M, V = x
    M_hat, Q_hat, V_hat = conjugates
    return Observables(
        params=params,
        source="theory",
        Q0=params.Q0,
        Q=Q,
        M=M,
        V=V,
        Q_hat=Q_hat,
        M_hat=M_hat,
        V_hat=V_hat,
        **errors,
        **status,
        replicon=rep.value,
        replicon_stable=rep.stable,
        n_mc=int(n_mc),
        seed=int(seed),
        wall_time=time.perf_counter() - t0,
        info=info,
    )


def _test_error(params: Params, samples: PretrainSamples, Q, M, n: int | None = None):
    """ℰ (55) at (Q, M) on the independent RQMC test set (its first n points): (mean, se)."""
    test = PretrainSamples(samples.test_g[:n], samples.test_zeta[:n])
    zs, zt, _ = channel_fields(Q, M, params.Q0, params.Delta, test, params.T)
    return pretrain_errors(zs, zt, params, samples.blocks)


def _observable_se(stage: PretrainStage, sol: driver.Solution):
    r"""ℰ (55) on the test set and the standard errors of Q, M, ℰ by the delta method
    (:func:`hdlora.theory.driver.map_covariance`; ℰ's gradient in (Q, M) by central
    differences on the first n test points)."""
    params, samples = stage.params, stage.samples
    fc = driver.map_covariance(stage, sol)
    Q, M, _ = sol.x
    E, E_test_se = _test_error(params, samples, Q, M)
    n = len(samples.g)  # the gradient of a smooth function of (Q, M): n points suffice
    grad = gradient(lambda y: _test_error(params, samples, *y, n=n)[0], np.array([Q, M]))
    se = dict(
        Q_se=float(fc.se()[0]),
        M_se=float(fc.se()[1]),
        test_error_se=propagate(grad, fc.cov[:2, :2], E_test_se),
    )
    info = {"jacobian_spectral_radius": fc.spectral_radius, "V_se": float(fc.se()[2])}
    return E, se, info
