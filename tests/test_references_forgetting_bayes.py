r"""Independent references for two drawn quantities: the forgetting error ℰ'' (eq. 84) and the
Bayes-optimal fine-tuning overlap (eqs. 92, 95, 96).

Every reference below is written from the paper's equations with its own sampler (Cholesky
factors of the 2×2 covariances of eqs. 13, 14, 90, 93), its own σ and its own quadrature; no
sampling function or formula of the library is called except the quantity under test.

* ℰ'' (App. A.8, eq. 84): E‖σ(z + χχᵀ − q I_T) − σ(z*)‖²_F with, independently,
  (z*_ab, z_ab) ~ N(0, (1 + δ_ab)[[Q0 + Δ/2, M], [M, Q]]) for a ≤ b (eq. 13, z symmetric) and
  (χ*_a, χ_a) ~ N(0, [[q0, m], [m, q]]) per token (eq. 14). For σ(x) = x/T it is exact:
  ℰ'' = (T² + T)(Δ_eff + q²)/T², Δ_eff = Δ/2 + Q0 − 2M + Q (eq. 25), since
  E‖z − z*‖²_F = (T² + T)Δ_eff and E‖χχᵀ − qI‖²_F = (T² + T)q², the cross term vanishing.
* Z'_out (eq. 94): for the softmax, σ(x) = σ(y) for symmetric x, y iff x − y = s 11ᵀ; with the
  side noise h' = z* − z, h'_ab ~ N(0, (1 + δ_ab)V_BO) independent of z under eq. (90), the
  observation pins h' = target − χ̃χ̃ᵀ + s 11ᵀ, target = χ*χ*ᵀ + h (h the realisation in the data,
  the library's documented erratum) or χ*χ*ᵀ (as printed). The reference integrates this delta
  form over (χ̃, s) by quadrature, or eq. (96) (s integrated in closed form) over χ̃ on a grid,
  and takes g'_out = ∇_ω log Z'_out by central differences (no tilted-mean identity).
* q̂_BO (eq. 95) = α' E‖g'_out‖² over (χ*, χ) of eq. (93) and h; q_BO solves eq. (92).

Tolerances are stated at each test, in standard errors (SE) of the Monte-Carlo averages.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from hdlora import Params
from hdlora.simulation import simulate
from hdlora.theory import EffectivePretraining, bayes, finetune

SIGMAS = 4.0  # tolerance in combined standard errors for the Monte-Carlo comparisons


# ----------------------------------------------------------------------------- references
def _sigma(x, activation):
    """σ of §2: row-wise softmax or x ↦ x/T, on (..., T, T)."""
    if activation == "linear":
        return x / x.shape[-1]
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _pairs(rng, n, cov):
    """n draws of a centred 2-vector with covariance ``cov`` (Cholesky, zero pivot allowed)."""
    c = np.asarray(cov, dtype=float)
    a = math.sqrt(c[0, 0])
    b = c[0, 1] / a if a > 0 else 0.0
    d = math.sqrt(max(c[1, 1] - b * b, 0.0))
    g = rng.standard_normal((2,) + tuple(n))
    return a * g[0], b * g[0] + d * g[1]


def _symmetric_pairs(rng, n, T, cov):
    """(z*, z) symmetric (n, T, T): entries a ≤ b ~ N(0, (1 + δ_ab) cov), eqs. (13), (90)."""
    x, y = _pairs(rng, (n, T, T), cov)
    scale = np.sqrt(1.0 + np.eye(T))
    iu = np.triu_indices(T)
    out = []
    for u in (x, y):
        m = np.zeros((n, T, T))
        m[:, iu[0], iu[1]] = (u * scale)[:, iu[0], iu[1]]
        out.append(m + np.triu(m, 1).swapaxes(1, 2))
    return out


def _forgetting_mc(activation, T, Delta, Q0, Q, M, q, n=200_000, seed=11):
    """Direct Monte Carlo of ℰ'' (eq. 84) under eqs. (13), (14): (mean, SE). χ* does not enter
    (84), so only the marginal χ_a ~ N(0, q) of eq. (14) is drawn (independent of (z*, z))."""
    rng = np.random.default_rng(seed)
    zs, z = _symmetric_pairs(rng, n, T, [[Q0 + Delta / 2, M], [M, Q]])
    chi = math.sqrt(q) * rng.standard_normal((n, T))
    student = _sigma(z + chi[:, :, None] * chi[:, None, :] - q * np.eye(T), activation)
    e = ((student - _sigma(zs, activation)) ** 2).sum(axis=(1, 2))
    return e.mean(), e.std(ddof=1) / math.sqrt(n)


def _forgetting_linear_exact(T, Delta, Q0, Q, M, q):
    """ℰ'' of eq. (84) for σ(x) = x/T in closed form: (T² + T)(Δ_eff + q²)/T²."""
    return (T * T + T) * (Delta / 2 + Q0 - 2 * M + Q + q * q) / T**2


# ------------------------------------------------------------------------ ℰ'' of the theory
FT = Params(T=3, kappa0=0.5, Delta=0.5, alpha=0.2, alpha_ft=3.0, lam=0.3, lam_ft=2.0)
FROZEN = EffectivePretraining(Q0=1.5, Q=0.8, M=0.9)


@functools.cache
def _se_record(activation):
    """The fine-tuning state evolution on a frozen pre-training (cheap: no pre-training solve)."""
    p = FT.replace(activation=activation)
    return p, finetune(p, FROZEN, n_mc=4000, seed=0, progress=False)


@pytest.mark.parametrize("activation", ["linear", "softmax"])
def test_theory_forgetting_error_matches_direct_monte_carlo(activation):
    """ℰ'' of the fine-tuning state evolution (eq. 84) against a direct Monte Carlo of (84) at
    the record's own Q0, Q, M, q and Δ (2·10⁵ i.i.d. draws of eqs. 13, 14 written here), within
    SIGMAS combined SE. Bugs planted in a copy of the library's ℰ'' (shift −2q I or −q0 I, no
    (1 + δ_ab), χχᵀ → 2χχᵀ or −χχᵀ, no LoRA term, σ(z) for σ(z*), Δ dropped from z*) each fail
    one activation at least (report of issue 21; the shifts matter little where q ≈ 1 resp.
    q ≈ 0: −q0 I is seen by the softmax case, −2q I by the linear one)."""
    p, r = _se_record(activation)
    ref, ref_se = _forgetting_mc(activation, p.T, p.Delta, r.Q0, r.Q, r.M, r.q)
    tol = SIGMAS * math.hypot(ref_se, r.forgetting_error_se)
    assert abs(r.forgetting_error - ref) <= tol, (r.forgetting_error, ref, tol)


def test_theory_forgetting_error_linear_closed_form():
    """σ(x) = x/T: ℰ'' = (T² + T)(Δ_eff + q²)/T² exactly (eqs. 84, 13, 14), so only the
    library's Monte-Carlo error remains (SIGMAS of its SE). The closed form is itself checked
    against the direct Monte Carlo, so the two references cannot share an error."""
    p, r = _se_record("linear")
    exact = _forgetting_linear_exact(p.T, p.Delta, r.Q0, r.Q, r.M, r.q)
    ref, ref_se = _forgetting_mc("linear", p.T, p.Delta, r.Q0, r.Q, r.M, r.q, seed=12)
    assert abs(ref - exact) <= SIGMAS * ref_se
    assert abs(r.forgetting_error - exact) <= SIGMAS * r.forgetting_error_se


def test_simulated_forgetting_error_matches_eq84_at_its_order_parameters():
    """The simulator's measured ℰ'' (fresh pre-training sequences through Ŵ, ŵ at D = 64)
    against the closed form of (84) at the order parameters the same run measures (Q0, Q, M, q
    of eqs. 8, 9). For σ(x) = x/T and the population centring, Δ_eff and q are exact second
    moments at finite D; the only finite-D term left is the cross moment
    2(T² + T) ŵᵀ(Ŝ − S*)ŵ/(D² T²), O(q D^{-1/2}) and measured below the test noise (mean
    relative deviation +1.1 % at D = 64, −0.6 % at D = 128 over 4 seeds, against an SE of
    3–5 %). Tolerance: SIGMAS SE of the run's 640 test sequences. Comparing with the state
    evolution instead would need ±50 %: q alone varies from 0.60 to 0.95 across seeds at D = 64.
    """
    p = FT.replace(activation="linear")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # D = 64: threading costs more than it saves (5× on 2 busy cores)
    try:
        runs = [simulate(p, 64, seed=seed, n_init=(1, 1), progress=False) for seed in (0, 1)]
    finally:
        torch.set_num_threads(threads)
    for seed, r in enumerate(runs):
        exact = _forgetting_linear_exact(p.T, p.Delta, r.Q0, r.Q, r.M, r.q)
        assert abs(r.forgetting_error - exact) <= SIGMAS * r.forgetting_error_se, (seed, exact)


# ------------------------------------------------------------- Bayes-optimal fine-tuning, T = 2
BO = Params(T=2, kappa0=0.5, Delta=0.5, alpha=0.2, alpha_ft=2.0)
BO_Q0, BO_Q = 1.5, 0.5  # a BO pre-training overlap Q_BO (eq. 90): V_BO = Q0 + Δ/2 − Q_BO = 1.25
V_BO = BO_Q0 + BO.Delta / 2 - BO_Q


def _log_z_delta_form(omega, target, v, V, n_u=121, n_s=41):
    """log Z'_out of eq. (94) at one ω (T = 2), up to an ω-free constant, by quadrature over
    χ̃ = ω + √v u (u on [−7, 7]²) and s: the integrand is the density of the side noise
    h' = target − χ̃χ̃ᵀ + s 11ᵀ, h'_ab ~ N(0, (1 + δ_ab)V) for a ≤ b (σ(x) = σ(y) ⟺ x − y ∈ R 11ᵀ).
    The s grid (±8√V) is centred, per χ̃, on the peak of its Gaussian integrand."""
    u1 = np.linspace(-7.0, 7.0, n_u)
    u = np.stack(np.meshgrid(u1, u1, indexing="ij"), -1).reshape(-1, 2)
    c = omega + math.sqrt(v) * u
    base = target - c[:, :, None] * c[:, None, :]
    s = -base.sum(axis=(1, 2))[:, None] / 4 + np.linspace(-8, 8, n_s) * math.sqrt(V)
    h = base[:, None] + s[:, :, None, None]
    log_p = -(h[..., 0, 0] ** 2 + h[..., 1, 1] ** 2) / (4 * V) - h[..., 0, 1] ** 2 / (2 * V)
    return logsumexp(logsumexp(log_p, axis=1) - 0.5 * (u**2).sum(-1))


def _log_z_96(omega, target, v, V, n_u=41):
    """log Z'_out of eq. (96) (s integrated out) for a batch ω (n, T), on a grid χ̃ = ω + √v u,
    u ∈ [−6, 6]^T (T = 2), up to an ω-free constant."""
    u1 = np.linspace(-6.0, 6.0, n_u)
    u = np.stack(np.meshgrid(u1, u1, indexing="ij"), -1).reshape(-1, 2)
    T = omega.shape[-1]
    c = omega[:, None, :] + math.sqrt(v) * u[None]
    A = c[..., :, None] * c[..., None, :] - target[:, None]
    log_l = -((A**2).sum(axis=(-1, -2)) - A.sum(axis=(-1, -2)) ** 2 / T**2) / (4 * V)
    return logsumexp(log_l - 0.5 * (u**2).sum(-1), axis=1)


def _derivatives(log_z, omega, eps=1e-3):
    """g'_out = ∇_ω log Z'_out and Tr ∂_ω g'_out by central differences: ((n, T), (n,))."""
    n, T = omega.shape
    centre = log_z(omega)
    g, lap = np.empty((n, T)), np.zeros(n)
    for a in range(T):
        e = eps * np.eye(T)[a]
        plus, minus = log_z(omega + e), log_z(omega - e)
        g[:, a] = (plus - minus) / (2 * eps)
        lap += (plus - 2 * centre + minus) / eps**2
    return g, lap


def _bo_draws(rng, n, q, T=2, noise=True):
    """(χ*, ζ, ω, h, target): (χ*_a, χ_a) of eq. (93), ω = χ, and the side-noise realisation
    h_ab ~ N(0, (1 + δ_ab)V_BO) (eq. 90) in the data, target = χ*χ*ᵀ + h (h = 0: as printed)."""
    chi_s, zeta = rng.standard_normal((2, n, T))
    omega = q * chi_s + math.sqrt(q - q * q) * zeta  # Cov(χ*, χ) = Var χ = q, Var χ* = q0 = 1
    _, h = _symmetric_pairs(rng, n, T, [[0.0, 0.0], [0.0, V_BO]])
    h = h if noise else 0 * h
    return chi_s, zeta, omega, h, chi_s[:, :, None] * chi_s[:, None, :] + h


def _q_hat_reference(q, n=3000, seed=21, noise=True):
    """α' E‖g'_out‖² (eq. 95) by quadrature of (96): (q̂, SE, Nishimori residual in SE).
    For q ≥ 0.3 a 31² grid gives E‖g'_out‖² to 1e-5 relative (1e-8 for q ≥ 0.7)."""
    _, _, omega, _, target = _bo_draws(np.random.default_rng(seed), n, q, noise=noise)
    g, lap = _derivatives(lambda w: _log_z_96(w, target, 1 - q, V_BO, n_u=31), omega)
    g2 = (g * g).sum(axis=1)
    nishimori = (g2 + lap).mean() / ((g2 + lap).std(ddof=1) / math.sqrt(n))
    return BO.alpha_ft * g2.mean(), BO.alpha_ft * g2.std(ddof=1) / math.sqrt(n), nishimori


def test_g_out_matches_derivative_of_the_delta_form_of_z_out():
    """g'_out of the library (``_g_out``: self-normalised Monte Carlo over χ̃) against central
    differences of log Z'_out, Z'_out integrated by quadrature in its delta form (94), at six
    (ω, data) points, three with the side noise in the data, three as printed. The library is
    averaged over 16 independent sets of 12 500 inner draws; tolerance SIGMAS SE of that mean
    per component. The quadrature of (96) is also checked against (94) to 1e-7: the s
    integration behind (96) is right, sign of the (Σχ̃)² term included."""
    rng = np.random.default_rng(5)
    v = 0.6
    _, _, omega, h, target = _bo_draws(rng, 6, 1 - v)
    target[3:] -= h[3:]  # the printed (96): χ*χ*ᵀ alone
    ref = (
        np.array(
            [
                [
                    _log_z_delta_form(w + e, t, v, V_BO) - _log_z_delta_form(w - e, t, v, V_BO)
                    for e in 1e-3 * np.eye(2)
                ]
                for w, t in zip(omega, target, strict=True)
            ]
        )
        / 2e-3
    )
    g96, _ = _derivatives(lambda w: _log_z_96(w, target, v, V_BO), omega)
    assert np.abs(g96 - ref).max() < 1e-7
    runs = [
        bayes._g_out(omega, target, v, V_BO, rng.standard_normal((12_500, 2))) for _ in range(16)
    ]
    mean, se = np.mean(runs, axis=0), np.std(runs, axis=0, ddof=1) / math.sqrt(len(runs))
    assert np.all(np.abs(mean - ref) <= SIGMAS * se + 1e-6), (mean, ref, se)


@pytest.mark.parametrize("q", [0.3, 0.7])
def test_q_hat_matches_quadrature_on_common_draws(q):
    """q̂ = α' E‖g'_out‖² (eq. 95) of the library (``_q_hat``) against the same average with
    g'_out from quadrature of (96), on common outer draws (χ*, ζ, h of eqs. 90, 93; ω = χ is
    built here), so only the library's inner Monte Carlo differs: 4 independent sets of 2000
    inner draws (the library's default size), tolerance SIGMAS SE of their mean. The
    reference also obeys the Nishimori identity E‖g'_out‖² = −E Tr ∂_ω g'_out of a Bayes
    channel (within SIGMAS SE), which holds only when the data carry the noise the likelihood
    assumes."""
    rng = np.random.default_rng(31)
    chi_s, zeta, omega, h, target = _bo_draws(rng, 600, q)
    g, lap = _derivatives(lambda w: _log_z_96(w, target, 1 - q, V_BO), omega)
    g2 = (g * g).sum(axis=1)
    assert abs((g2 + lap).mean()) <= SIGMAS * (g2 + lap).std(ddof=1) / math.sqrt(len(g2))
    ref = BO.alpha_ft * g2.mean()
    runs = [
        bayes._q_hat(q, BO, V_BO, chi_s, zeta, rng.standard_normal((2000, 2)), h) for _ in range(4)
    ]
    mean, se = np.mean(runs), np.std(runs, ddof=1) / 2
    assert abs(mean - ref) <= SIGMAS * se, (mean, ref, se)


def _pretrain_result(Q):
    """A BO pre-training record with Q_BO = Q (only Q0, Q enter the fine-tuning of App. B.2)."""
    mmse = BO_Q0 - Q
    return bayes.BayesPretrainResult(BO, BO_Q0, Q, math.nan, mmse, math.nan, math.nan, False, 1)


def test_bo_overlap_is_a_fixed_point_of_the_quadrature_q_hat():
    """q_BO of ``bayes.finetune`` (e = 0) against eqs. (92), (95) written here: at q = q_BO the
    reference q̂ (quadrature of (96), 3000 fresh outer draws) must give q̂/(1 + q̂) = q_BO within
    SIGMAS combined SE (the library's SE on its n_out = 1000 draws scaled from the
    reference's, same estimator). The printed form (no side noise in the data) breaks the
    Nishimori identity of a Bayes channel by many SE, the corrected one keeps it."""
    r = bayes.finetune(BO, _pretrain_result(BO_Q), n_out=1000, n_inner=2000, n_mc=1000)
    q_hat, se, nishimori = _q_hat_reference(r.q)
    q_ref = q_hat / (1 + q_hat)
    se_q = se / (1 + q_hat) ** 2 * math.sqrt(1 + 3000 / 1000)
    assert abs(r.q - q_ref) <= SIGMAS * se_q, (r.q, q_ref, se_q)
    assert abs(nishimori) <= SIGMAS
    assert abs(_q_hat_reference(r.q, n=1000, noise=False)[2]) > 3 * SIGMAS
