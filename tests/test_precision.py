"""Variance reduction and standard errors of the state evolution (issue: precise theory curves).

References are independent of the code under test:

* σ(x) = x/T: the pre-training expectations are Gaussian moments; the closed form
  (``method="exact"``) is checked against a brute-force sample average of eqs. (49)–(51) with the
  linear proximal, and the Monte-Carlo / RQMC solvers are checked against it *within their own
  reported standard errors* (a too small standard error fails);
* the RQMC samples are checked to be standard Gaussians, block-wise independent randomisations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hdlora import Params
from hdlora.theory import pretrain
from hdlora.theory.laws import FinetuneSamples, PretrainSamples, rqmc_size
from hdlora.theory.pretrain_linear import linear_conjugates

LIN = Params(T=3, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.1, lam_ft=0.5, activation="linear")


def test_linear_conjugates_against_brute_force_average():
    """Eqs. (49)–(51) averaged over 400 000 i.i.d. samples with the linear proximal written here
    (h minimises Σ_{a≤b}(2 − δ)(h − z*)²/T² + (h − z̃)²/(2V(1 + δ)) entrywise)."""
    T, (Q, M, V), Q0 = 3, (0.9, 0.7, 1.7), LIN.Q0
    rng = np.random.default_rng(3)
    n, L = 400_000, 6
    a, b = np.triu_indices(T)
    s = 1.0 + (a == b)
    A0 = Q0 + LIN.Delta / 2
    B = Q - M * M / A0
    g, zeta = rng.standard_normal((2, n, L))
    zs = np.sqrt(s * A0) * g
    zt = np.sqrt(s) * (M / math.sqrt(A0) * g + math.sqrt(B) * zeta)
    w_fit, w_pen = (2.0 - (a == b)) / T**2, 1.0 / (2 * V * s)
    h = (w_fit * zs + w_pen * zt) / (w_fit + w_pen)
    d = (h - zt) / np.sqrt(s)
    al = LIN.alpha
    per = np.stack(
        [
            2 * al / V * (d * (g / math.sqrt(A0) - M / (A0 * math.sqrt(B)) * zeta)).sum(1),
            2 * al / V**2 * (d * d).sum(1),
            -2 * al / (V * math.sqrt(B)) * (d * zeta).sum(1),
        ],
        axis=1,
    )
    mean, se = per.mean(0), per.std(0) / math.sqrt(n)
    exact = linear_conjugates(Q, M, V, Q0, LIN)
    assert np.all(np.abs(mean - exact) <= 5 * se), (mean, exact, se)


def test_linear_exact_is_deterministic():
    r0 = pretrain(LIN, n_mc=1000, seed=0, method="exact", progress=False)
    r1 = pretrain(LIN, n_mc=50, seed=7, method="exact", progress=False)
    assert r0.converged and r0.Q > 0
    for name in ("Q", "M", "V", "test_error", "train_error", "Q_hat", "M_hat", "V_hat"):
        assert getattr(r0, name) == getattr(r1, name), name
    with pytest.raises(ValueError, match="linear"):
        pretrain(LIN.replace(activation="softmax"), n_mc=100, method="exact", progress=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rqmc_solution_within_its_standard_error_of_the_exact_one(seed):
    """The sampled solver (RQMC, delta-method standard errors) agrees with the closed form
    within 4 of its own standard errors, and the standard errors are not absurdly large."""
    exact = pretrain(LIN, n_mc=100, method="exact", progress=False)
    r = pretrain(LIN, n_mc=4000, seed=seed, method="rqmc", progress=False)
    for name in ("Q", "M", "test_error"):
        se = getattr(r, f"{name}_se")
        assert 0 < se < 0.05 * abs(getattr(exact, name)), (name, se)
        assert abs(getattr(r, name) - getattr(exact, name)) <= 4 * se, (name, r, exact)


def test_iid_monte_carlo_path_agrees_with_exact():
    exact = pretrain(LIN, n_mc=100, method="exact", progress=False)
    r = pretrain(LIN, n_mc=20000, seed=0, method="mc", progress=False)
    assert r.test_error == pytest.approx(exact.test_error, abs=4 * r.test_error_se + 0.01)
    assert r.Q == pytest.approx(exact.Q, rel=0.03) and r.M == pytest.approx(exact.M, rel=0.03)


def test_rqmc_samples_are_gaussian_blocks():
    S = PretrainSamples.draw(3000, 3, 5, method="rqmc")
    n = rqmc_size(3000)
    assert S.g.shape == (n, 6) and S.blocks == 8 and S.test_g.shape[0] == 8 * n
    for x in (S.g, S.zeta, S.test_g):
        assert abs(x.mean()) < 0.01 and abs(x.var() - 1) < 0.02
    # the blocks are independent randomisations: different points, same law
    b = n // 8
    assert not np.allclose(S.g[:b], S.g[b : 2 * b])
    # same seed, same samples; another seed, others
    assert np.array_equal(S.g, PretrainSamples.draw(3000, 3, 5, method="rqmc").g)
    assert not np.array_equal(S.g, PretrainSamples.draw(3000, 3, 6, method="rqmc").g)
    F = FinetuneSamples.draw(3000, 3, 5, method="rqmc")
    assert np.abs(np.corrcoef(F.chi_star.T, F.zeta.T)[:3, 3:]).max() < 0.05


@pytest.mark.parametrize("act", ["linear", "softmax"])
def test_free_entropy_is_minus_the_predicted_training_objective(act):
    """At the selected fixed point, −φ (eq. 22) equals the training objective per sample
    ℒ'/N' + λ'‖ŵ‖²/N' = ft_train_error + λ' q/α' (‖ŵ‖²/D → q, N' = α'D), the latter averaged
    directly over the training channel's proximals: the sign convention of the selection."""
    from hdlora.theory import EffectivePretraining, finetune

    pre = EffectivePretraining(Q0=2.0, Q=1.2, M=1.3)
    p = LIN.replace(activation=act, lam_ft=0.2)
    r = finetune(p, pre, n_mc=2000, seed=1, progress=False)
    objective = r.ft_train_error + p.lam_ft * r.q / p.alpha_ft
    assert r.info["predicted_objective"] == pytest.approx(objective, rel=1e-6)
    # both fixed points exist here; the informed one fits better and is selected
    assert r.info["fixed_point"] == "informed" and r.info["n_fixed_points"] == 2
    assert r.info["free_entropy_informed"] > r.info["free_entropy_uninformed"] + 0.01
    assert r.m > 0.1


def test_uninformed_point_selected_when_informed_collapses():
    """Strong ridge λ' = 5 (softmax): the iteration from m > 0 falls onto m = 0; the record says
    so, with one distinct fixed point."""
    from hdlora.theory import EffectivePretraining, finetune

    pre = EffectivePretraining(Q0=2.0, Q=1.2, M=1.3)
    p = LIN.replace(activation="softmax", lam_ft=5.0)
    r = finetune(p, pre, n_mc=2000, seed=0, progress=False)
    assert r.info["fixed_point"] == "uninformed" and r.info["n_fixed_points"] == 1
    assert r.m == 0.0 and r.overlap == 0.0
    # at m = 0 the conjugate m̂ vanishes in expectation (w → −w): the record holds 0, not the
    # sample mean's noise, and the free entropy (22) is computed with it
    assert r.m_hat == 0.0
    assert r.info["uninformed_coarse_only"] is False  # the selected point is the full solve


@pytest.mark.parametrize(
    "act, lam_ft, n_mc", [("linear", 0.2, 4000), ("softmax", 0.3, 16384), ("softmax", 0.5, 32768)]
)
def test_coarse_uninformed_free_entropy_agrees_with_the_full_solve(monkeypatch, act, lam_ft, n_mc):
    """The uninformed fixed point solved on one RQMC block (kept when it loses the selection by
    far more than its error) against the same point solved on all samples (SELECT_MARGIN = ∞
    forces the full solve): same selection, same informed point, and the coarse φ within 5 of
    its standard errors of the full φ. The full uninformed solve converges in few iterations: at
    λ' = 0.5 it used to wander 178 iterations at a noise floor ~1e-3 once the warm-started
    proximals had left samples in worse local minima (the map depended on the path)."""
    import importlib

    from hdlora.theory import EffectivePretraining, finetune

    ft_module = importlib.import_module("hdlora.theory.finetune")  # the module, not the function

    pre = EffectivePretraining(Q0=2.0, Q=1.2, M=1.3)
    p = LIN.replace(activation=act, lam_ft=lam_ft)
    coarse = finetune(p, pre, n_mc=n_mc, seed=2, progress=False)
    monkeypatch.setattr(ft_module, "SELECT_MARGIN", math.inf)
    full = finetune(p, pre, n_mc=n_mc, seed=2, progress=False)
    assert coarse.info["uninformed_coarse_only"] and not full.info["uninformed_coarse_only"]
    assert coarse.info["fixed_point"] == full.info["fixed_point"] == "informed"
    assert full.converged and full.n_iter < 60, full.n_iter
    assert (coarse.m, coarse.q, coarse.v) == (full.m, full.q, full.v)
    se = coarse.info["free_entropy_uninformed_se"]
    assert 0 < se < 0.1
    assert abs(coarse.info["free_entropy_uninformed"] - full.info["free_entropy_uninformed"]) < (
        5 * se
    )


def test_sweep_matches_independent_predictions():
    """The sweep reuses each pre-training and starts each point from its neighbour; with the
    same samples (common random numbers) every row equals the independent prediction at that
    point up to the solvers' tolerance."""
    from hdlora.theory import state_evolution, sweep

    p = LIN.replace(activation="softmax", alpha=0.2)
    df = sweep(p, lam=[0.05, 0.1], lam_ft=[0.2, 1.0], n_mc=2000, seed=3, tol=1e-9)
    assert len(df) == 4 and list(df["lam"]) == [0.05, 0.05, 0.1, 0.1]
    assert list(df["lam_ft"]) == [0.2, 1.0, 0.2, 1.0]
    assert df["converged"].all()
    # one pre-training per λ
    assert df.groupby("lam")["Q"].nunique().eq(1).all()
    for row in df.itertuples():
        ref = state_evolution(
            p.replace(lam=row.lam, lam_ft=row.lam_ft), n_mc=2000, seed=3, tol=1e-9, progress=False
        )
        for name in ("test_error", "Q", "ft_test_error", "q", "m", "overlap"):
            assert getattr(row, name) == pytest.approx(getattr(ref, name), rel=1e-5), name
        assert row.ft_test_error_se == pytest.approx(ref.ft_test_error_se, rel=1e-2)


def test_standard_errors_near_lambda_c_warn_instead_of_crashing():
    """At 0.95 λ_c a single RQMC block's V̂ is negative: the block standard errors are not
    defined. The solve must still return its fixed point, say so, and warn (no crash)."""
    import pytest as _pytest

    from hdlora import Params
    from hdlora.diagnostics import ConvergenceWarning
    from hdlora.theory import pretrain as _pretrain

    p = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.1, lam=0.5232)
    with _pytest.warns(ConvergenceWarning, match="standard errors unavailable"):
        r = _pretrain(p, n_mc=5000, seed=0, progress=False)
    assert r.converged and r.Q >= 0 and "standard errors unavailable" in r.message


def test_variance_shares_against_a_simulated_linear_fixed_point():
    """x̂ = (I − J)⁻¹ (b + ε) with independent map noises ε_j (diagonal S) and a test-set
    noise: the share of each source is the variance of f(x̂) with that source alone, over the
    total, both measured by simulation."""
    from hdlora.theory.precision import FixedPointCovariance, variance_shares

    rng = np.random.default_rng(4)
    J = 0.4 * rng.standard_normal((3, 3))
    S = np.diag([0.5, 2.0, 0.2])
    grad, se_test = np.array([1.0, -0.7, 0.3]), 0.6
    A = np.linalg.inv(np.eye(3) - J)
    fc = FixedPointCovariance(cov=A @ S @ A.T, jacobian=J, spectral_radius=0.0, map_cov=S)
    shares = variance_shares(grad, fc, se_test)

    n = 400_000
    eps = rng.standard_normal((n, 3)) * np.sqrt(np.diag(S))
    test = se_test * rng.standard_normal(n)
    alone = [np.var(grad @ A @ (eps * (np.arange(3) == j)).T) for j in range(3)]
    alone.append(np.var(test))
    total = np.var(grad @ A @ eps.T + test)
    assert np.allclose(shares, np.array(alone) / total, atol=0.01)
    assert shares.sum() == pytest.approx(1.0)
