import math

import numpy as np
import pytest
from scipy.optimize import minimize

from hdlora import Params
from hdlora.theory import EffectivePretraining, finetune, pretrain, state_evolution
from hdlora.theory.prox_finetune import finetune_prox, loss_terms

LIN = Params(T=3, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.1, lam_ft=0.5, activation="linear")
SOFT = LIN.replace(activation="softmax")


@pytest.mark.parametrize("act", ["softmax", "linear"])
def test_prox_derivatives_against_finite_differences(act):
    rng = np.random.default_rng(0)
    n, T = 4, 3
    chi = rng.standard_normal((n, T))
    Zb = rng.standard_normal((n, T, T))
    Zb = Zb + np.swapaxes(Zb, 1, 2)
    Y = rng.dirichlet(np.ones(T), size=(n, T))
    f, g, H, G = loss_terms(chi, Zb, Y, act)
    e = 1e-6
    for k in range(T):
        cp, cm = chi.copy(), chi.copy()
        cp[:, k] += e
        cm[:, k] -= e
        fp, gp, _, _ = loss_terms(cp, Zb, Y, act)
        fm, gm, _, _ = loss_terms(cm, Zb, Y, act)
        assert np.allclose((fp - fm) / (2 * e), g[:, k], atol=1e-7)
        assert np.allclose((gp - gm) / (2 * e), H[:, :, k], atol=1e-6)
    # ∂f/∂q for Z = Z_base − q I is −Tr G, so ∂_qψ = Tr G (eq. 72)
    fq1 = loss_terms(chi, Zb - e * np.eye(T), Y, act)[0]
    fq2 = loss_terms(chi, Zb + e * np.eye(T), Y, act)[0]
    assert np.allclose((fq1 - fq2) / (2 * e), -np.trace(G, axis1=1, axis2=2), atol=1e-7)


@pytest.mark.parametrize("act", ["softmax", "linear"])
def test_dq_psi_is_the_envelope_derivative_of_the_proximal_value(act):
    """∂_qψ of eq. (72) at the proximal is d/dq of the maximal value of ψ (envelope theorem):
    against central differences of the minimal F = −ψ, re-solved at q ± e from the proximal."""
    rng = np.random.default_rng(1)
    n, T = 200, 3
    cs = rng.standard_normal((n, T))
    ct = 0.5 * cs + 0.6 * rng.standard_normal((n, T))
    zs = rng.standard_normal((n, T, T))
    zs = zs + np.swapaxes(zs, 1, 2)
    noise = rng.standard_normal((n, T, T))
    z = 0.5 * zs + 0.3 * (noise + np.swapaxes(noise, 1, 2))
    q, v, e = 0.6, 0.8, 1e-5
    r = finetune_prox(cs, ct, zs, z, q, v, act)
    plus = finetune_prox(cs, ct, zs, z, q + e, v, act, warm=r.chi, both_signs=False)
    minus = finetune_prox(cs, ct, zs, z, q - e, v, act, warm=r.chi, both_signs=False)
    d_max_psi = -(plus.objective - minus.objective) / (2 * e)
    assert r.n_failed == 0 and np.abs(r.dq_psi).mean() > 0.1
    assert np.abs(r.dq_psi - d_max_psi).max() < 1e-8


def test_prox_is_the_best_of_many_starts():
    rng = np.random.default_rng(1)
    n, T = 400, 3
    cs = rng.standard_normal((n, T))
    ct = 0.3 * cs + 0.5 * rng.standard_normal((n, T))
    zs = rng.standard_normal((n, T, T))
    zs = (zs + np.swapaxes(zs, 1, 2)) * 1.2
    z = 0.4 * zs
    q, v = 0.5, 2.0
    r = finetune_prox(cs, ct, zs, z, q, v)
    assert r.n_failed == 0 and np.all(np.linalg.eigvalsh(r.hessian) > 0)
    from hdlora.model.activations import softmax_rows

    for i in range(6):
        Y = softmax_rows(zs[i] + np.outer(cs[i], cs[i]) - np.eye(T))

        def F(c, i=i, Y=Y):
            Z = z[i] - q * np.eye(T) + np.outer(c, c)
            return ((softmax_rows(Z) - Y) ** 2).sum() + ((c - ct[i]) ** 2).sum() / (2 * v)

        best = min(
            (minimize(F, 2 * rng.standard_normal(T), method="BFGS") for _ in range(12)),
            key=lambda res: res.fun,
        )
        assert r.objective[i] <= best.fun + 1e-8


def test_frozen_baseline_linear_closed_form():
    """λ' = ∞: ℰ'_frozen for σ(x) = x/T is ((T² + T) Δ_eff + T² + T)/T² (eq. 80 corrected)."""
    pre = EffectivePretraining(Q0=2.0, Q=0.7, M=0.9)
    p = LIN.replace(lam_ft=math.inf)
    r = finetune(p, pre, n_mc=200000, seed=0, progress=False)
    T = p.T
    d_eff = p.Delta / 2 + pre.Q0 + pre.Q - 2 * pre.M
    exact = ((T**2 + T) * d_eff + T**2 + T) / T**2
    printed = ((T**2 + T - 2) * d_eff + T**2 + T) / T**2
    assert r.ft_test_error == pytest.approx(exact, abs=4 * r.ft_test_error_se)
    assert abs(r.ft_test_error - printed) > 10 * r.ft_test_error_se
    assert (r.q, r.m, r.v) == (0.0, 0.0, 0.0)


def test_effective_pretraining_is_validated():
    with pytest.raises(ValueError, match="M"):
        EffectivePretraining(Q0=1.0, Q=1.0, M=2.0)
    with pytest.raises(ValueError, match="Q"):
        EffectivePretraining(Q0=1.0, Q=-1.0, M=0.0)


def test_linear_fixed_point_converges_with_positive_m():
    pre = pretrain(LIN, n_mc=3000, progress=False)
    r = finetune(LIN, pre, n_mc=3000, seed=0, progress=False)
    assert r.converged and r.m > 0 and 0 < r.overlap <= 1
    assert r.ft_train_error < r.ft_test_error
    assert r.ft_replicon_stable


def test_state_evolution_fills_one_record():
    obs = state_evolution(LIN, n_mc=2000, progress=False)
    for name in (
        "test_error",
        "train_error",
        "ft_test_error",
        "ft_train_error",
        "overlap",
        "forgetting_error",
        "Q",
        "M",
        "V",
        "q",
        "m",
        "v",
    ):
        assert np.isfinite(getattr(obs, name)), name
    assert obs.source == "theory" and obs.converged
