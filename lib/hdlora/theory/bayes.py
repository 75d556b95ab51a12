r"""Bayes-optimal (BO) benchmarks (Result 6, App. B). Pre-training part (App. B.1).

The BO overlap Q_BO ∈ [0, Q0] with the extensive target solves two equations:

* input channel, eq. (87), with η² = 1/Q̂ (the law μ_{1/Q̂} of Y = S*/√D + Q̂^{-1/2} Z is the
  free convolution of μ0 with the semicircle of *variance* 1/Q̂, i.e. radius 2/√Q̂ — the
  subscript of μ in (87) is a variance, not the radius of :mod:`hdlora.theory.spectral`'s μ_η):

      Q = Q0 − mmse(Q̂),   mmse(Q̂) = 1/Q̂ − (4π²/3) Q̂⁻² ∫ μ_{1/Q̂}(t)³ dt;

* output channel, eq. (89), softmax: Q̂ = α (T² + T − 2)/(Q0 + Δ/2 − Q).

Substituting the second into the first gives one scalar equation F(Q) = Q0 − mmse(Q̂(Q)) − Q = 0,
solved with a bracketing root finder (Brent) on [0, Q0]: F(0) ≥ 0, F(Q0) < 0 when Δ > 0. With
Δ = 0, Q = Q0 is a root for every α; it is the BO solution (perfect recovery) above the threshold
α_PR = 2(κ̄ − κ̄²/2)/(T² + T − 2), κ̄ = min(κ0, 1), where no smaller root remains.

The BO test error (91) is a Monte Carlo over the channel (90), with its standard error.

Fine-tuning (App. B.2), e = 0: q_BO ∈ [0, 1] solves q = q̂/(1 + q̂) (eq. 92) with
q̂ = α' E‖g'_out‖² (eq. 95), g'_out = ∇_ω log Z'_out, and for the softmax (eq. 96)

    Z'_out(ω) = E_{χ̃ ~ N(ω, v I_T)} exp(−‖χ̃χ̃ᵀ − χ*χ*ᵀ‖²_F/(4V_BO)
                                          + ((Σχ̃)² − (Σχ*)²)²/(4T² V_BO)),

v = q0 − q_BO, V_BO = Q0 + Δ/2 − Q_BO, and ω = χ with (χ*, χ) as in eq. (93). The inner
T-dimensional integral is a self-normalised Monte Carlo over K Gaussian draws (fixed draws:
common random numbers), so g'_out = (E_tilted[χ̃] − ω)/v; its error is reported by comparing K
with K/2. q_BO is found by Brent's method on [0, 1). e = 1: q_BO = 1 for α' ≥ 1 (App. B.2).
E'_BO (97) and o_BO = √(q_BO/q0) (98) follow.

Erratum in (95)–(96): the observation is σ(z* + χ*χ*ᵀ − q0 I) with z* = z + h, h the
realisation of the side noise ((1 + δ_ab) V_BO), so the likelihood pins χ̃χ̃ᵀ to χ*χ*ᵀ + h (up to
s 11ᵀ) and the average in (95) runs over h as well. As printed, (96) uses χ*χ*ᵀ alone — data
without their noise scored with a noisy likelihood — and the resulting "BO" overlap falls below
that of the trained attention given the same side information (``05_bayes_optimal``), which a
Bayes-optimal estimator cannot do. ``noise_in_data=True`` (default) is the corrected form,
``False`` the printed one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.theory import rowops, spectral
from hdlora.theory.laws import Q0_TEACHER_W, PretrainSamples, channel_fields, pretrain_errors
from hdlora.theory.symmetric import n_entries, to_matrix


def mmse(Q_hat: float, kappa0: float) -> float:
    r"""mmse(Q̂) = 1/Q̂ − (4π²/3) Q̂⁻² ∫ ρ_Y³ for Y = S*/√D + Q̂^{-1/2} GOE (eq. 87)."""
    if not Q_hat > 0:
        raise ValueError(f"Q_hat must be > 0, got Q_hat={Q_hat!r}")
    eta = 1.0 / math.sqrt(Q_hat)
    return 1.0 / Q_hat - 4 * math.pi**2 / (3 * Q_hat**2) * spectral.cube_integral(eta, kappa0)


def output_count(T: int, activation: str) -> int:
    """T² + T − 2 for the softmax (eq. 89): the T(T+1)/2 entries less the direction 11ᵀ, ×2."""
    if activation != "softmax":
        raise NotImplementedError(
            "the Bayes-optimal output channel (89) is given by the paper for the softmax only; "
            f"activation={activation!r} is not covered"
        )
    return T * T + T - 2


def perfect_recovery_threshold(params: Params) -> float:
    """α_PR = 2(κ̄ − κ̄²/2)/(T² + T − 2), κ̄ = min(κ0, 1) (App. B.1; meaningful for Δ = 0)."""
    k = min(params.kappa0, 1.0)
    return 2 * (k - k * k / 2) / output_count(params.T, params.activation)


@dataclass
class BayesPretrainResult:
    """``Q`` = Q_BO, ``Q_hat``, ``mmse`` = Q0 − Q_BO, ``test_error`` E_BO (eq. 91) and its
    ``test_error_se``, ``Q0``, ``perfect_recovery``, ``n_roots`` (sign changes of F found)."""

    params: Params
    Q0: float
    Q: float
    Q_hat: float
    mmse: float
    test_error: float
    test_error_se: float
    perfect_recovery: bool
    n_roots: int


def _F(Q, params, K, A0, Q0):
    Q_hat = params.alpha * K / (A0 - Q)
    return Q0 - mmse(Q_hat, params.kappa0) - Q


def overlap(params: Params, n_grid: int = 64) -> tuple[float, float, bool, int]:
    """(Q_BO, Q̂_BO, perfect_recovery, n_roots) from eqs. (87) and (89)."""
    K = output_count(params.T, params.activation)
    Q0 = params.Q0
    A0 = Q0 + params.Delta / 2
    # grid denser towards Q0, where mmse → 0 when Δ = 0
    u = np.linspace(0.0, 1.0, n_grid)
    grid = Q0 * (1 - (1 - u) ** 2)
    top = Q0 * (1 - 1e-6) if params.Delta == 0 else Q0
    grid[-1] = top
    F = np.array([_F(q, params, K, A0, Q0) for q in grid])
    changes = np.nonzero((F[:-1] > 0) & (F[1:] <= 0))[0]
    if len(changes) == 0:
        if params.Delta == 0 and F[-1] > 0:  # F > 0 up to Q0: only Q = Q0 remains
            return Q0, math.inf, True, 0
        raise RuntimeError(f"no root of the BO equation found for {params}")
    i = changes[0]  # the root reached from the uninformed start Q = 0
    Q = brentq(_F, grid[i], grid[i + 1], args=(params, K, A0, Q0), xtol=1e-14, rtol=1e-13)
    return Q, params.alpha * K / (A0 - Q), False, len(changes)


def pretrain(params: Params, n_mc: int = 200_000, seed: int = 0) -> BayesPretrainResult:
    """BO pre-training: Q_BO (eqs. 87, 89), its MMSE and the test error E_BO (eqs. 90–91)."""
    Q, Q_hat, perfect, n_roots = overlap(params)
    Q0 = params.Q0
    # the channel (90) is the test law 𝒬 of eq. (13) with M = Q = Q_BO
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    g, zeta = rng.standard_normal((2, int(n_mc), n_entries(params.T)))
    z_star, z, _ = channel_fields(Q, Q, Q0, params.Delta, PretrainSamples(g, zeta), params.T)
    E, E_se = pretrain_errors(z_star, z, params)
    return BayesPretrainResult(params, Q0, Q, Q_hat, Q0 - Q, E, E_se, perfect, n_roots)


Q0_W = Q0_TEACHER_W


@dataclass
class BayesFinetuneResult:
    """``q`` = q_BO, ``q_hat``, ``ft_test_error`` E'_BO (eq. 97) with its ``ft_test_error_se``,
    ``overlap`` o_BO (eq. 98), ``inner_error`` (change of q̂ when the inner Monte Carlo halves)."""

    params: Params
    q: float
    q_hat: float
    ft_test_error: float
    ft_test_error_se: float
    overlap: float
    inner_error: float


def _g_out(omega, target, v, V_bo, xi):
    """g'_out per outer sample: (E_tilted[χ̃] − ω)/v, χ̃ = ω + √v ξ_k, weights of eq. (96).

    ``target`` (n, T, T) is what the observation pins χ̃χ̃ᵀ to, up to s 11ᵀ: χ*χ*ᵀ as printed in
    (96), or χ*χ*ᵀ + h with the pre-training noise realisation h = z* − z (see :func:`finetune`).
    The weight is exp(−(‖A‖²_F − (1ᵀA1)²/T²)/(4V_BO)), A = χ̃χ̃ᵀ − target.
    """
    T = omega.shape[1]
    ct = omega[:, None, :] + math.sqrt(v) * xi[None, :, :]  # (n, K, T)
    a = (ct**2).sum(-1)
    quad = np.einsum("nki,nij,nkj->nk", ct, target, ct)
    frob = a * a - 2 * quad + (target**2).sum(axis=(1, 2))[:, None]
    ones = (ct.sum(-1) ** 2) - target.sum(axis=(1, 2))[:, None]
    logw = -(frob - ones**2 / T**2) / (4 * V_bo)
    logw -= logw.max(axis=1, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(axis=1, keepdims=True)
    mean = (w[..., None] * ct).sum(axis=1)
    return (mean - omega) / v


def _q_hat(q, params, V_bo, chi_s, zeta, xi, h, chunk=256):
    v = max(Q0_W - q, 1e-12)
    omega = q * chi_s + math.sqrt(max(q - q * q, 0.0)) * zeta  # Cov(χ*, χ) = q, Var χ = q (93)
    target = chi_s[:, :, None] * chi_s[:, None, :] + h
    tot = 0.0
    for i in range(0, len(chi_s), chunk):
        g = _g_out(omega[i : i + chunk], target[i : i + chunk], v, V_bo, xi)
        tot += (g * g).sum()
    return params.alpha_ft * tot / len(chi_s)


def finetune(
    params: Params,
    pre: BayesPretrainResult | None = None,
    n_out: int = 2000,
    n_inner: int = 2000,
    n_mc: int = 200_000,
    seed: int = 0,
    noise_in_data: bool = True,
) -> BayesFinetuneResult:
    """BO fine-tuning: q_BO (eqs. 92, 95, 96), E'_BO (97), o_BO (98).

    ``noise_in_data``: average (95) over the side-noise realisation (corrected form, default) or
    not (eq. 96 as printed); see the module docstring."""
    output_count(params.T, params.activation)  # softmax only
    pre = pre if pre is not None else pretrain(params, n_mc=n_mc, seed=seed)
    T = params.T
    A0 = pre.Q0 + params.Delta / 2
    V_bo = A0 - pre.Q
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    if params.reuse:
        if params.alpha_ft < 1:
            raise NotImplementedError(
                "App. B.2 gives the reused-sequence (e = 1) BO overlap only for alpha_ft >= 1 "
                f"(q_BO = 1); got alpha_ft={params.alpha_ft!r}"
            )
        q, q_hat, inner_err = 1.0, math.inf, 0.0
    elif V_bo <= 0:  # perfect pre-training: the output channel is noiseless
        q, q_hat, inner_err = 1.0, math.inf, 0.0
    else:
        chi_s, zeta = rng.standard_normal((2, n_out, T))
        xi = rng.standard_normal((n_inner, T))
        h = np.zeros((n_out, T, T))
        if noise_in_data:  # the realisation h = z* − z of the side noise, (1 + δ_ab) V_BO
            hh = rng.standard_normal((n_out, T, T)) * math.sqrt(V_bo / 2)
            h = hh + np.swapaxes(hh, 1, 2)

        def f(q):
            qh = _q_hat(q, params, V_bo, chi_s, zeta, xi, h)
            return q - qh / (1 + qh)

        q = brentq(f, 0.0, 1 - 1e-9, xtol=1e-10)
        q_hat = _q_hat(q, params, V_bo, chi_s, zeta, xi, h)
        q_hat_half = _q_hat(q, params, V_bo, chi_s, zeta, xi[: n_inner // 2], h)
        inner_err = abs(q_hat - q_hat_half)
    # E'_BO (97): (z*, z) from (90), (χ*, χ) from (93); the student is shifted by −q0 I
    g, zt = rng.standard_normal((2, int(n_mc), n_entries(T)))
    z_star, z, _ = channel_fields(pre.Q, pre.Q, pre.Q0, params.Delta, PretrainSamples(g, zt), T)
    cs, cz = rng.standard_normal((2, int(n_mc), T))
    c = q * cs + math.sqrt(max(q - q * q, 0.0)) * cz
    eye = np.eye(T)
    sigma = rowops.sigma(params.activation)
    student = sigma(to_matrix(z, T) + c[:, :, None] * c[:, None, :] - Q0_W * eye)
    target = sigma(to_matrix(z_star, T) + cs[:, :, None] * cs[:, None, :] - Q0_W * eye)
    e = ((student - target) ** 2).sum(axis=(1, 2))
    return BayesFinetuneResult(
        params,
        q,
        q_hat,
        float(e.mean()),
        float(e.std(ddof=1) / math.sqrt(len(e))),
        math.sqrt(q / Q0_W),
        inner_err,
    )


def bayes_optimal(
    params: Params,
    n_mc: int = 200_000,
    seed: int = 0,
    *,
    progress: bool | None = None,
    **kwargs,
) -> Observables:
    """Both BO stages as one :class:`Observables` record (source = "bayes").

    ``M`` = ``Q`` = Q_BO and ``m`` = ``q`` = q_BO (the BO estimator's overlaps are its norms).
    ``kwargs`` go to :func:`finetune` (``n_out``, ``n_inner``, ``noise_in_data``); ``progress``
    is accepted for the common call shape of the solvers (these solves show no bar)."""
    t0 = time.perf_counter()
    pre = pretrain(params, n_mc=n_mc, seed=seed)
    ft = finetune(params, pre, n_mc=n_mc, seed=seed, **kwargs)
    return Observables(
        params=params,
        source="bayes",
        test_error=pre.test_error,
        test_error_se=pre.test_error_se,
        ft_test_error=ft.ft_test_error,
        ft_test_error_se=ft.ft_test_error_se,
        overlap=ft.overlap,
        Q0=pre.Q0,
        Q=pre.Q,
        M=pre.Q,
        Q_hat=pre.Q_hat,
        q0=Q0_W,
        q=ft.q,
        m=ft.q,
        q_hat=ft.q_hat,
        converged=True,
        message="perfect recovery" if pre.perfect_recovery else "",
        n_mc=int(n_mc),
        seed=int(seed),
        wall_time=time.perf_counter() - t0,
        info={
            "mmse": pre.mmse,
            "perfect_recovery": pre.perfect_recovery,
            "n_roots": pre.n_roots,
            "inner_mc_error": ft.inner_error,
            "noise_in_data": kwargs.get("noise_in_data", True),
        },
    )
