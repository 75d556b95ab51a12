r"""The replicon conditions (75) and (78) against references written in the test (issue 21).

The replicon decides which points of the figures are compared with simulation, so both
conditions are recomputed here from their definitions, independently of the library's batched
Newton proximals and analytic Hessians:

* the per-sample problems are written out in numpy: the fine-tuning ψ of eq. (63) and the
  pre-training Ψ of eq. (42) (row-wise softmax, T = 2, 3);
* each sample's maximiser is found by :func:`scipy.optimize.minimize` (BFGS from several starts,
  then one Newton step on finite-difference derivatives);
* the Hessian of ψ (Ψ) at the maximiser is taken by central second differences;
* the conditions are then evaluated directly: α' E‖(v∇²ψ)⁻¹ + I_T‖²_F (78), and eq. (75) with
  the two corrections of :mod:`hdlora.theory.replicon` (u coordinates, 1/V²) as well as printed.

The inputs are the library's (same v or V, same Monte-Carlo samples): for the state-evolution
records the samples are redrawn from (n_mc, seed, method) and the Gaussian fields of eqs. (47),
(62) are rebuilt here from them.
"""

import functools
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from test_replicon import _grid  # midpoint rule on the support of μ_η

from hdlora import Params
from hdlora.params import EffectivePretraining
from hdlora.theory.finetune import finetune
from hdlora.theory.laws import FinetuneSamples, PretrainSamples
from hdlora.theory.pretrain import pretrain
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.prox_finetune import finetune_prox
from hdlora.theory.replicon import finetune_replicon, pretrain_replicon

pytestmark = pytest.mark.filterwarnings("ignore::hdlora.diagnostics.RepliconWarning")

# --------------------------------------------------------------------------------------------
# generic numerics: minimiser and finite-difference derivatives of a small smooth function


def _gradient_fd(f, x, e=1e-5):
    """∇f(x) by central differences (error ~e² f''' + rounding/e)."""
    eye = np.eye(len(x)) * e
    return np.array([(f(x + d) - f(x - d)) / (2 * e) for d in eye])


def _hessian_fd(f, x, e=1e-4):
    """∇²f(x) by central second differences (error ~e² f'''' + rounding/e², ~1e-8 here)."""
    n = len(x)
    eye = np.eye(n) * e
    H = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            a, b = eye[i], eye[j]
            H[i, j] = H[j, i] = (f(x + a + b) - f(x + a - b) - f(x - a + b) + f(x - a - b)) / (
                4 * e * e
            )
    return H


def _argmin(fg, starts):
    """The lowest of the BFGS minima of f from ``starts`` (``fg`` returns f and ∇f), then one
    Newton step on finite-difference derivatives of f alone (so that the point is stationary
    for f itself, whatever the analytic gradient that guided the search)."""
    runs = [minimize(fg, x0, jac=True, method="BFGS", options={"gtol": 1e-8}) for x0 in starts]
    x = min(runs, key=lambda r: r.fun).x

    def f(y):
        return fg(y)[0]

    return x - np.linalg.solve(_hessian_fd(f, x), _gradient_fd(f, x))


def _softmax(X):
    """Row-wise softmax σ of eq. (1)."""
    E = np.exp(X - X.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


def _softmax_loss(X, Y):
    """‖σ(X) − Y‖²_F and its gradient in X: per row, with p = σ(x) and r = p − y,
    ∂/∂x_i = Σ_j 2 r_j p_j (δ_ij − p_i) = 2 p_i (r_i − Σ_j r_j p_j). Only used to guide the
    search of the maximisers: every Hessian below is a finite difference of the loss alone."""
    P = _softmax(X)
    R = P - Y
    return (R * R).sum(), 2 * P * (R - (R * P).sum(axis=-1, keepdims=True))


def _sq_frob(M):
    """‖M‖²_F over the last two axes, averaged over the first (the E of (75), (78))."""
    return float((M * M).sum(axis=(-1, -2)).mean())


# --------------------------------------------------------------------------------------------
# fine-tuning: ψ of eq. (63), replicon (78)


def _minus_psi_ft(chi_star, chi_tilde, z_star, z, q, v):
    """χ ↦ (−ψ, −∇ψ) of eq. (63) for one sample, softmax, q0 = 1 in the teacher term; with
    G = ∂‖σ(X) − Y‖²/∂X at X = z + χχᵀ − qI, the loss gradient is (G + Gᵀ)χ."""
    T = len(chi_star)
    Y = _softmax(z_star + np.outer(chi_star, chi_star) - np.eye(T))

    def fg(chi):
        f, G = _softmax_loss(z + np.outer(chi, chi) - q * np.eye(T), Y)
        d = chi - chi_tilde
        return f + (d * d).sum() / (2 * v), (G + G.T) @ chi + d / v

    return fg


def _ft_reference(chi_star, chi_tilde, z_star, z, q, v, n_random=0, seed=0):
    """Per sample: the maximiser of ψ (the best from ±χ̃, 0 and ``n_random`` Gaussian starts of
    variance q + 1) and −∇²ψ there, by finite differences of −ψ."""
    rng = np.random.default_rng(seed)
    chis, hessians = [], []
    for cs, ct, zs, zz in zip(chi_star, chi_tilde, z_star, z, strict=True):
        fg = _minus_psi_ft(cs, ct, zs, zz, q, v)
        random = rng.standard_normal((n_random, len(ct))) * math.sqrt(q + 1)
        chi = _argmin(fg, [ct, -ct, np.zeros_like(ct), *random])
        chis.append(chi)
        hessians.append(_hessian_fd(lambda x, fg=fg: fg(x)[0], chi))
    return np.array(chis), np.array(hessians)


def _eq78(alpha_ft, v, minus_hess):
    """α' E‖(v ∇²ψ)⁻¹ + I_T‖²_F, eq. (78), with ∇²ψ = −``minus_hess`` (n, T, T)."""
    T = minus_hess.shape[-1]
    return alpha_ft * _sq_frob(np.linalg.inv(v * -minus_hess) + np.eye(T))


def _random_symmetric(rng, n, T, scale=1.0):
    A = rng.standard_normal((n, T, T)) * scale
    return (A + np.swapaxes(A, -1, -2)) / math.sqrt(2)


def _ft_fields(rng, n, T, m, q):
    """χ*, χ̃ of eq. (62) and symmetric side fields z*, z (any law: (78) is per sample)."""
    chi_star, zeta = rng.standard_normal((2, n, T))
    chi_tilde = m * chi_star + math.sqrt(q - m * m) * zeta
    z_star = _random_symmetric(rng, n, T)
    z = 0.7 * z_star + 0.5 * _random_symmetric(rng, n, T)
    return chi_star, chi_tilde, z_star, z


def test_finetune_replicon_softmax_against_finite_difference_hessians():
    """Eq. (78) at T = 3, softmax, generic (m, q, v): the library's proximal (64) and Hessian
    (``finetune_prox``) fed to ``finetune_replicon`` against the same condition built from
    scipy maximisers of ψ (63) and finite-difference Hessians. Also checks the per-sample
    maximisers and Hessians, so that a wrong term of the analytic Hessian (e.g. χ_c(B_cχ)_d
    doubled instead of symmetrised) is located, not only its effect on (78)."""
    T, n, m, q, v, alpha_ft = 3, 48, 0.6, 0.9, 0.8, 2.0
    rng = np.random.default_rng(3)
    chi_star, chi_tilde, z_star, z = _ft_fields(rng, n, T, m, q)
    lib = finetune_prox(chi_star, chi_tilde, z_star, z, q, v, "softmax")
    chi_ref, H_ref = _ft_reference(chi_star, chi_tilde, z_star, z, q, v, n_random=4)
    np.testing.assert_allclose(lib.chi, chi_ref, atol=1e-7)
    np.testing.assert_allclose(lib.hessian, H_ref, rtol=0, atol=1e-6)
    rep = finetune_replicon(alpha_ft, v, lib.hessian)
    ref = _eq78(alpha_ft, v, H_ref)
    assert rep.value == pytest.approx(ref, rel=1e-6)
    assert rep.paper_value == rep.value and rep.stable == (ref < 1)
    assert 0.5 < ref < 1  # ≈ 0.88: a non-trivial stable point


def _ft_record_fields(rec):
    """The training fields of the record's final proximal evaluation, rebuilt from its samples:
    (z*, z) ~ 𝒬 of eq. (47) (e = 0, β = 1), χ* ~ N(0, I_T), χ̃ of eq. (62) at the record's m, q."""
    T = rec.params.T
    s = FinetuneSamples.draw(rec.n_mc, T, rec.seed, rec.info["method"])
    z_star, z = _channel_47(rec.Q0, rec.Q, rec.M, rec.params.Delta, s.g, s.zeta_pre, T)
    chi_tilde = rec.m * s.chi_star + math.sqrt(rec.q - rec.m**2) * s.zeta
    return s.chi_star, chi_tilde, _matrix(z_star, T), _matrix(z, T)


@pytest.mark.parametrize(
    ("T", "alpha_ft", "lam_ft", "stable"), [(2, 5.0, 0.3, True), (3, 2.0, 0.2, False)]
)
def test_finetune_state_evolution_replicon_against_reference(T, alpha_ft, lam_ft, stable):
    """``ft_replicon`` of the fine-tuning state evolution (``finetune``, e = 0, softmax, RQMC)
    against eq. (78) evaluated here at the record's (α', v) on the record's samples (rebuilt from
    n_mc, seed, method): checks that the library evaluates (78) at the fixed point's v, with α',
    on the full training sample, at the final (best-of-starts) proximal. Both verdicts: ≈ 0.61
    (T = 2) and ≈ 1.05 (T = 3, n_mc = 128). At the second point ψ has two local maxima on some
    samples, one of them nearly flat (a per-sample term 186 instead of 3): the reference keeps
    the best of 11 starts (±χ̃, 0, 8 random) and agrees with the library's choice there."""
    p = Params(T=T, alpha_ft=alpha_ft, lam_ft=lam_ft)
    rec = finetune(p, EffectivePretraining.on_diagonal(1.0, p.Delta), n_mc=128, seed=0)
    assert rec.converged and rec.info["fixed_point"] == "informed"
    _, H_ref = _ft_reference(*_ft_record_fields(rec), rec.q, rec.v, n_random=8)
    ref = _eq78(alpha_ft, rec.v, H_ref)
    assert rec.ft_replicon == pytest.approx(ref, rel=1e-6)
    assert rec.ft_replicon_stable == (ref < 1) == stable


def test_finetune_replicon_linear_closed_form():
    """Eq. (78) for σ(x) = x/T in closed form. With A = z − qI − (z* + χ*χ*ᵀ − I) the objective
    −ψ = ‖A + χχᵀ‖²_F/T² + ‖χ − χ̃‖²/(2v) is quartic, so its Hessian is not constant:
    −∇²ψ = (4/T²)(A + 2χχᵀ + ‖χ‖²I) + I/v. At χ̃ = 0 (m = q = 0) and A ≻ 0, χ = 0 is the global
    maximiser (‖A + χχᵀ‖² = ‖A‖² + 2χᵀAχ + ‖χ‖⁴), and with c = 4v/T² and a_i the eigenvalues of
    A, (v∇²ψ)⁻¹ + I = I − (I + cA)⁻¹ gives α' E Σ_i (c a_i/(1 + c a_i))²."""
    T, n, v, alpha_ft = 3, 20, 0.7, 1.5
    rng = np.random.default_rng(5)
    chi_star = rng.standard_normal((n, T))
    z_star = _random_symmetric(rng, n, T)
    R = rng.standard_normal((n, T, T))
    A = np.eye(T) + R @ np.swapaxes(R, -1, -2) / T  # A ≻ 0
    z = A + z_star + chi_star[:, :, None] * chi_star[:, None, :] - np.eye(T)
    lib = finetune_prox(chi_star, np.zeros((n, T)), z_star, z, 0.0, v, "linear")
    assert np.abs(lib.chi).max() < 1e-12
    c = 4 * v / T**2
    a = np.linalg.eigvalsh(A)
    ref = alpha_ft * ((c * a / (1 + c * a)) ** 2).sum(axis=1).mean()
    assert finetune_replicon(alpha_ft, v, lib.hessian).value == pytest.approx(ref, rel=1e-10)


def test_finetune_hessian_linear_closed_form_away_from_zero():
    """σ(x) = x/T at generic χ̃ ≠ 0: the library's maximiser is stationary for the closed-form
    gradient (4/T²)(A + χχᵀ)χ + (χ − χ̃)/v, and its Hessian and (78) equal the closed forms
    −∇²ψ = (4/T²)(A + 2χχᵀ + ‖χ‖²I) + I/v (quartic ψ: the ‖χ‖²I and 2χχᵀ terms matter)."""
    T, n, m, q, v, alpha_ft = 2, 40, 0.5, 1.2, 0.9, 2.5
    chi_star, chi_tilde, z_star, z = _ft_fields(np.random.default_rng(7), n, T, m, q)
    lib = finetune_prox(chi_star, chi_tilde, z_star, z, q, v, "linear")
    chi, eye = lib.chi, np.eye(T)
    A = z - q * eye - (z_star + chi_star[:, :, None] * chi_star[:, None, :] - eye)
    outer = chi[:, :, None] * chi[:, None, :]
    grad = 4 / T**2 * ((A + outer) @ chi[:, :, None])[..., 0] + (chi - chi_tilde) / v
    assert np.abs(grad).max() < 1e-9
    assert np.linalg.eigvalsh(lib.hessian).min() > 0  # a maximiser of ψ
    norm2 = (chi * chi).sum(axis=1)[:, None, None]
    H = 4 / T**2 * (A + 2 * outer + norm2 * eye) + eye / v
    np.testing.assert_allclose(lib.hessian, H, rtol=1e-10, atol=1e-12)
    rep = finetune_replicon(alpha_ft, v, lib.hessian)
    assert rep.value == pytest.approx(_eq78(alpha_ft, v, H), rel=1e-10)


# --------------------------------------------------------------------------------------------
# pre-training: Ψ of eq. (42), replicon (75)


@functools.lru_cache
def _upper(T):
    """Indices a ≤ b (row-major) and the multiplicities s_ab = 1 + δ_ab."""
    a, b = np.triu_indices(T)
    return a, b, 1.0 + (a == b)


def _matrix(h, T):
    """(..., L) entries a ≤ b → (..., T, T) symmetric matrices."""
    a, b, _ = _upper(T)
    H = np.zeros(h.shape[:-1] + (T, T))
    H[..., a, b] = h
    H[..., b, a] = h
    return H


def _channel_47(Q0, Q, M, Delta, g, zeta, T):
    """(z*, z̃) of eq. (47) with A0 = Q0 + Δ/2, B = Q − M²/A0 (eq. 46), entries a ≤ b."""
    s = _upper(T)[2]
    A0 = Q0 + Delta / 2
    B = Q - M * M / A0
    return np.sqrt(s * A0) * g, np.sqrt(s) * (M / math.sqrt(A0) * g + math.sqrt(B) * zeta)


def _minus_Psi(z_star, z_tilde, V, T):
    """h ↦ (−Ψ, −∇Ψ) of eq. (42) on the entries a ≤ b, for one sample (softmax); the loss
    gradient in h_ab is (G + Gᵀ)_ab/s_ab, G = ∂‖σ(H) − σ(z*)‖²/∂H."""
    a, b, s = _upper(T)
    Y = _softmax(_matrix(z_star, T))

    def fg(h):
        f, G = _softmax_loss(_matrix(h, T), Y)
        d = h - z_tilde
        return f + (d * d / (2 * V * s)).sum(), (G + G.T)[a, b] / s + d / (V * s)

    return fg


def _pre_reference(z_star, z_tilde, V, T, n_random=0, seed=0):
    """Per sample: Prox of eq. (41) (the best from z̃, z* and ``n_random`` starts z̃ + N(0, s))
    and −∇²Ψ there, in the entries h_ab and in u_ab = h_ab/√s_ab (the Hessian of
    u ↦ −Ψ(√s u), by its own finite differences)."""
    root_s = np.sqrt(_upper(T)[2])
    rng = np.random.default_rng(seed)
    hs, H_h, H_u = [], [], []
    for zs, zt in zip(z_star, z_tilde, strict=True):
        fg = _minus_Psi(zs, zt, V, T)
        random = zt + rng.standard_normal((n_random, len(zt))) * root_s
        h = _argmin(fg, [zt, zs, *random])
        hs.append(h)
        H_h.append(_hessian_fd(lambda x, fg=fg: fg(x)[0], h))
        H_u.append(_hessian_fd(lambda u, fg=fg: fg(root_s * u)[0], h / root_s))
    return np.array(hs), np.array(H_h), np.array(H_u)


def _dd2(params, M_hat, Q_hat):
    """∫∫ μ(dx)μ(dy) (ζ(x) − ζ(y))²/(x − y)² of eq. (75), μ = μ_{√Q̂/M̂}, ζ(x) = (x − ε)_+
    (eq. 76), ε = 2√κλ/M̂, by the midpoint rule (ζ'² = 1{x > ε} on the diagonal)."""
    x, w = _grid(math.sqrt(Q_hat) / M_hat, params.kappa0)
    eps = 2 * math.sqrt(params.kappa) * params.lam / M_hat
    z = np.maximum(x - eps, 0)
    dx = x[:, None] - x[None, :]
    same = dx == 0
    dd = np.where(same, (x > eps)[:, None] * 1.0, (z[:, None] - z[None, :]) / np.where(same, 1, dx))
    return float(w @ dd**2 @ w)


def _eq75(alpha, V, V_hat, dd2, H_u, H_h):
    """Eq. (75) corrected, 2α E‖(V∇²_uΨ)⁻¹ + I_L‖²_F ∫∫(Δζ)²/(V̂V)², and as printed,
    2α E‖(V∇²_hΨ)⁻¹ + I_L‖²_F ∫∫(Δζ)²/V̂² (∇²Ψ = −H)."""
    eye = np.eye(H_u.shape[-1])
    corrected = 2 * alpha * _sq_frob(np.linalg.inv(V * -H_u) + eye) * dd2 / (V_hat * V) ** 2
    printed = 2 * alpha * _sq_frob(np.linalg.inv(V * -H_h) + eye) * dd2 / V_hat**2
    return corrected, printed


def test_pretrain_replicon_softmax_against_finite_difference_hessians():
    """Eq. (75) at T = 3, softmax, at a generic (V; M̂, Q̂, V̂) with large V (where the 1/V² of
    the correction matters): ``pretrain_replicon`` fed with the library's proximal Hessians
    (``pretrain_prox``) against the condition built from scipy maximisers of Ψ (42) and
    finite-difference Hessians in u and h coordinates; per-sample Prox and Hessians too."""
    T, n, V, hats = 3, 40, 2.5, (1.3, 0.4, 0.8)
    p = Params(T=T, kappa0=1.0, kappa=1.5, alpha=0.3, lam=0.05)
    rng = np.random.default_rng(11)
    g, zeta = rng.standard_normal((2, n, T * (T + 1) // 2))
    z_star, z_tilde = _channel_47(p.Q0, 1.2, 0.9, p.Delta, g, zeta, T)
    lib = pretrain_prox(z_star, z_tilde, V, T, "softmax")
    h_ref, H_h, H_u = _pre_reference(z_star, z_tilde, V, T, n_random=4)
    np.testing.assert_allclose(lib.h, h_ref, atol=1e-7)
    np.testing.assert_allclose(lib.hessian, H_h, rtol=0, atol=1e-6)
    rep = pretrain_replicon(p, V, *hats, lib.hessian)
    corrected, printed = _eq75(p.alpha, V, hats[2], _dd2(p, *hats[:2]), H_u, H_h)
    assert rep.value == pytest.approx(corrected, rel=1e-4)
    assert rep.paper_value == pytest.approx(printed, rel=1e-4)
    assert rep.stable == (corrected < 1)


@pytest.mark.parametrize(("T", "alpha", "lam"), [(2, 0.2, 0.01), (3, 0.5, 0.1)])
def test_pretrain_state_evolution_replicon_against_reference(T, alpha, lam):
    """``replicon`` (75, corrected) and ``info["replicon_paper_normalisation"]`` (75 as printed)
    of the pre-training state evolution (``pretrain``, softmax) against eq. (75) evaluated here
    at the record's (V; M̂, Q̂, V̂) on the record's samples: (z*, z̃) of eq. (47) rebuilt from
    (n_mc, seed, method), Prox (best of z̃, z* and 4 random starts) and Hessians by scipy and
    finite differences, the spectral factor by an independent quadrature. V ≈ 16 at the first
    point (the 1/V² of the correction: a factor ≈ 260, corrected ≈ 0.64, printed ≈ 185) and
    ≈ 0.78 at the second (≈ 0.22 and ≈ 1.34): the two normalisations disagree on the verdict."""
    p = Params(T=T, alpha=alpha, lam=lam)
    rec = pretrain(p, n_mc=128, seed=0)
    assert rec.converged
    s = PretrainSamples.draw(rec.n_mc, T, rec.seed, rec.info["method"])
    z_star, z_tilde = _channel_47(rec.Q0, rec.Q, rec.M, p.Delta, s.g, s.zeta, T)
    _, H_h, H_u = _pre_reference(z_star, z_tilde, rec.V, T, n_random=4)
    dd2 = _dd2(p, rec.M_hat, rec.Q_hat)
    corrected, printed = _eq75(p.alpha, rec.V, rec.V_hat, dd2, H_u, H_h)
    assert rec.replicon == pytest.approx(corrected, rel=1e-4)
    assert rec.info["replicon_paper_normalisation"] == pytest.approx(printed, rel=1e-4)
    assert rec.replicon_stable == (corrected < 1)
