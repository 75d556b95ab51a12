"""The pre-training input channel (eqs. 52–54) and the replicon (75) against references written
in the test: finite random matrices, an independent quadrature of μ_η, and the proximal's
Hessian obtained by finite differences of −Ψ (eq. 41).

Input channel: Ŝ/√D = (M̂/V̂) ζ(Y), Y = S*/√D + η Z (Z a GOE with semicircle of radius 2),
ζ(x) = (x − ε)_+, η = √Q̂/M̂, ε = 2√κλ/M̂. Then Q = D⁻¹ Tr(Ŝ/√D)², M = D⁻¹ Tr(Ŝ S*)/D and
V = V̂⁻¹ ∫∫ μ(dx) μ(dy) (ζ(x) − ζ(y))/(x − y) (the mean derivative of the denoiser).
"""

import math

import numpy as np
import pytest

from hdlora import Params
from hdlora.theory import spectral
from hdlora.theory.pretrain import input_channel
from hdlora.theory.replicon import pretrain_replicon
from hdlora.theory.symmetric import multiplicity

HATS = (1.3, 0.4, 0.8)  # M̂, Q̂, V̂


def _grid(eta, kappa0, n=2000):
    """Midpoint rule on each interval of the support: nodes x and weights ρ(x)dx."""
    xs, ws = [], []
    for lo, hi in spectral.support(eta, kappa0):
        h = (hi - lo) / n
        x = lo + h * (np.arange(n) + 0.5)
        xs.append(x)
        ws.append(h * spectral.density(x, eta, kappa0))
    return np.concatenate(xs), np.concatenate(ws)


def _divided_differences(x, eps):
    """[(ζ(x_i) − ζ(x_j))/(x_i − x_j)]_ij, ζ' = 1{x > ε} on the diagonal."""
    z = np.maximum(x - eps, 0)
    dx = x[:, None] - x[None, :]
    same = dx == 0
    return np.where(
        same, (x > eps)[:, None] * 1.0, (z[:, None] - z[None, :]) / np.where(same, 1, dx)
    )


@pytest.mark.parametrize("kappa0", [1.0, 0.5])
def test_input_channel_against_finite_random_matrices(kappa0):
    p = Params(T=3, kappa0=kappa0, kappa=1.5, lam=0.05)
    M_hat, Q_hat, V_hat = HATS
    Q, M, V = input_channel(M_hat, Q_hat, V_hat, p)
    eta = math.sqrt(Q_hat) / M_hat
    eps = 2 * math.sqrt(p.kappa) * p.lam / M_hat
    D = 600
    rng = np.random.default_rng(0)
    P0 = round(kappa0 * D)
    W = rng.standard_normal((D, P0))
    S0 = W @ W.T / math.sqrt(P0 * D)  # S*/√D
    A = rng.standard_normal((D, D))
    lam, U = np.linalg.eigh(S0 + eta * (A + A.T) / math.sqrt(2 * D))
    S_hat = (M_hat / V_hat) * (U * np.maximum(lam - eps, 0)) @ U.T  # Ŝ/√D
    assert (S_hat * S_hat).sum() / D == pytest.approx(Q, rel=1e-2)
    assert (S_hat * S0).sum() / D == pytest.approx(M, rel=1e-2)
    assert _divided_differences(lam, eps).mean() / V_hat == pytest.approx(V, rel=1e-2)


@pytest.mark.parametrize("kappa0", [1.0, 0.5])
def test_input_channel_Q_and_V_against_quadrature(kappa0):
    p = Params(T=3, kappa0=kappa0, kappa=1.5, lam=0.05)
    M_hat, Q_hat, V_hat = HATS
    Q, _, V = input_channel(M_hat, Q_hat, V_hat, p)
    eta = math.sqrt(Q_hat) / M_hat
    eps = 2 * math.sqrt(p.kappa) * p.lam / M_hat
    x, w = _grid(eta, kappa0)
    assert (M_hat / V_hat) ** 2 * (w * np.maximum(x - eps, 0) ** 2).sum() == pytest.approx(
        Q, rel=1e-4
    )
    assert w @ _divided_differences(x, eps) @ w / V_hat == pytest.approx(V, rel=1e-4)


def _minus_psi_linear(h, zs, zt, V, T):
    """−Ψ of eq. (41) for σ(x) = x/T on the upper entries h (a ≤ b)."""
    iu = np.triu_indices(T)

    def sym(u):
        H = np.zeros((T, T))
        H[iu] = u
        return H + np.triu(H, 1).T

    s = 1.0 + (iu[0] == iu[1])
    return (((sym(h) - sym(zs)) / T) ** 2).sum() + ((zt - h) ** 2 / (2 * V * s)).sum()


def _hessian_fd(f, x, e=1e-3):
    """Hessian of f at x by central second differences (exact for a quadratic f)."""
    n = len(x)
    H = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            ei, ej = np.eye(n)[i] * e, np.eye(n)[j] * e
            H[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * e * e
            )
    return H


@pytest.mark.parametrize("V", [0.05, 30.0])
def test_pretraining_replicon_against_its_defining_formula(V):
    """Eq. (75) corrected, 2α E‖(V∇²_uΨ)⁻¹ + I_L‖²_F ∫∫(Δζ)² dμ dμ/(V̂V)², with u_ab = h_ab/√s_ab,
    and as printed (h coordinates, /V̂² only), for the linear σ whose Hessian is the same at every
    sample. At large V (small λ) the 1/V² matters: both cases are checked."""
    T = 3
    p = Params(T=T, kappa0=1.0, kappa=1.0, alpha=0.3, lam=0.05, activation="linear")
    M_hat, Q_hat, V_hat = HATS
    L = T * (T + 1) // 2
    rng = np.random.default_rng(0)
    zs, zt = rng.standard_normal((2, L))
    H_F = _hessian_fd(lambda h: _minus_psi_linear(h, zs, zt, V, T), np.zeros(L))  # −∇²_hΨ
    r = pretrain_replicon(p, V, M_hat, Q_hat, V_hat, np.stack([H_F, H_F]))

    eta = math.sqrt(Q_hat) / M_hat
    eps = 2 * math.sqrt(p.kappa) * p.lam / M_hat
    x, w = _grid(eta, p.kappa0)
    dd2 = w @ _divided_differences(x, eps) ** 2 @ w
    root_s = np.sqrt(multiplicity(T))
    Hu = -H_F * root_s[:, None] * root_s[None, :]  # ∇²_uΨ
    out_u = ((np.linalg.inv(V * Hu) + np.eye(L)) ** 2).sum()
    out_h = ((np.linalg.inv(-V * H_F) + np.eye(L)) ** 2).sum()
    # in u coordinates −∇²_uΨ = (4/T² + 1/V) I_L: the output factor is L (1 − 1/(1 + 4V/T²))²
    assert out_u == pytest.approx(L * (1 - 1 / (1 + 4 * V / T**2)) ** 2, rel=1e-6)
    assert r.value == pytest.approx(2 * p.alpha * out_u * dd2 / (V_hat * V) ** 2, rel=1e-4)
    assert r.paper_value == pytest.approx(2 * p.alpha * out_h * dd2 / V_hat**2, rel=1e-4)
