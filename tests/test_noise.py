"""Each effective noise against a Monte Carlo of the underlying Gaussian variables."""

import math

import numpy as np
import pytest

from hdlora.theory import noise
from hdlora.theory.prox import pretrain_prox
from hdlora.theory.symmetric import multiplicity

DELTA, Q0, Q, M = 0.5, 2.0, 0.8, 1.0
N = 400_000


def _pair(rng, Q0=Q0, Q=Q, M=M, Delta=DELTA):
    """(z*_ab, z_ab) off the diagonal: covariance [[Δ/2 + Q0, M], [M, Q]] (eq. 13)."""
    L = np.linalg.cholesky(np.array([[Delta / 2 + Q0, M], [M, Q]]))
    x = rng.standard_normal((N, 2)) @ L.T
    return x[:, 0], x[:, 1]


def test_delta_eff_is_the_variance_of_z_minus_zstar():
    zs, z = _pair(np.random.default_rng(0))
    v = np.var(z - zs)
    se = v * np.sqrt(2 / N)
    assert noise.delta_eff(DELTA, Q0, Q, M) == pytest.approx(v, abs=5 * se)


def test_recalibration_minimises_at_beta_star():
    zs, z = _pair(np.random.default_rng(1))
    b = noise.beta_star(Q, M, Q0)
    for beta in (0.5 * b, b, 1.5 * b):
        v = np.var(beta * z - zs)
        assert noise.delta_eff_recalibrated(DELTA, Q0, Q, M, beta) == pytest.approx(
            v, abs=5 * v * np.sqrt(2 / N)
        )
    betas = np.linspace(0.2, 2.0, 200) * b
    values = noise.delta_eff_recalibrated(DELTA, Q0, Q, M, betas)
    assert betas[np.argmin(values)] == pytest.approx(b, rel=0.01)
    assert noise.delta_eff_recalibrated(DELTA, Q0, Q, M) == pytest.approx(DELTA / 2 + Q0 - M**2 / Q)


def test_active_noise_is_the_conditional_variance():
    zs, z = _pair(np.random.default_rng(2))
    near = np.abs(z) < 0.02  # condition on z ≈ 0
    v = np.var((z - zs)[near])
    assert noise.delta_eff_active(DELTA, Q0, Q, M) == pytest.approx(v, rel=0.03)
    assert noise.delta_eff_active(DELTA, Q0, Q, M) <= noise.delta_eff(DELTA, Q0, Q, M)
    gap = noise.delta_eff(DELTA, Q0, Q, M) - noise.delta_eff_active(DELTA, Q0, Q, M)
    assert gap == pytest.approx((M / np.sqrt(Q) - np.sqrt(Q)) ** 2)  # App. C


def test_reused_noise_against_the_linear_proximal():
    """e = 1: Var(Prox(z*, z̃) − z*) = (1 + δ_ab) Δ_eff/(1 + 4V/T²)² (eqs. 107–108)."""
    T, V = 3, 0.7
    rng = np.random.default_rng(3)
    s = multiplicity(T)
    A0 = Q0 + DELTA / 2
    g, zeta = rng.standard_normal((2, N, 6))
    zs = np.sqrt(s * A0) * g
    zt = np.sqrt(s) * (M / np.sqrt(A0) * g + np.sqrt(Q - M**2 / A0) * zeta)
    h = pretrain_prox(zs, zt, V, T, activation="linear").h
    var = np.var(h - zs, axis=0) / s
    expected = noise.delta_eff_reused(DELTA, Q0, Q, M, V, T)
    assert np.allclose(var, expected, rtol=5 * np.sqrt(2 / N))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="Q"):
        noise.delta_eff_active(DELTA, Q0, 0.0, M)
    with pytest.raises(ValueError, match="V"):
        noise.delta_eff_reused(DELTA, Q0, Q, M, -1.0, 3)


def test_beta_star_is_undefined_for_the_zero_predictor():
    """Above λ_c the pre-training is Ŵ = 0 (Q = M = 0): β* is NaN in every record that carries
    it, never a ratio of rounding errors; just below λ_c it is the argmin of the exact ℰ(β) of a
    linear σ, found by a numerical minimisation."""
    from scipy.optimize import minimize_scalar

    from hdlora import Params
    from hdlora.theory import finetune, pretrain
    from hdlora.theory.recalibration import recalibrated

    p = Params(T=2, Delta=0.5, alpha=0.5, activation="linear", lam=0.1, lam_ft=0.5)
    lam_c = pretrain(p, method="exact").info["lambda_c"]
    zero = pretrain(p.replace(lam=2 * lam_c), method="exact")
    assert zero.Q == 0.0 and "zero predictor" in zero.message
    assert math.isnan(recalibrated(p.replace(lam=2 * lam_c), zero, 1.0, method="exact").beta_star)
    assert math.isnan(finetune(p.replace(lam=2 * lam_c), zero, 1024, 0).beta_star)
    assert math.isnan(noise.beta_star(1e-17, 3e-17, 1.5))  # rounding level: undefined
    from hdlora.theory import state_evolution, sweep

    for solve in (
        lambda: state_evolution(p.replace(lam=2 * lam_c), 1024, method="exact", beta=None),
        lambda: sweep(p, lam=[2 * lam_c], beta=None, method="exact", n_mc=1024),
    ):
        with pytest.raises(ValueError, match="beta=None.*zero predictor"):
            solve()
    near = pretrain(p.replace(lam=0.9 * lam_c), method="exact")
    assert near.Q > 0

    def error(b):
        return recalibrated(p.replace(lam=0.9 * lam_c), near, b, method="exact").test_error

    best = minimize_scalar(error, bracket=(0.5, 5.0), tol=1e-10).x
    assert noise.beta_star(near.Q, near.M, near.Q0) == pytest.approx(best, rel=1e-5)
