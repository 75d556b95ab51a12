"""The §4 protocols in the theory: recalibration β (eq. 26, App. E) and active fine-tuning
(Algorithm 1, eq. 28, App. D), each against an independent reference."""

import math

import numpy as np
import pytest
from direct import sigma
from scipy.optimize import minimize_scalar

from hdlora import EffectivePretraining, Params
from hdlora.theory import finetune, pretrain, state_evolution
from hdlora.theory.laws import active_selection, noise_variance
from hdlora.theory.recalibration import recalibrated

LIN = Params(T=3, Delta=0.5, alpha=0.1, alpha_ft=3, lam=0.01, lam_ft=0.5, activation="linear")
SOFT = Params(T=3, Delta=0.0, alpha_ft=3, lam_ft=0.5, activation="softmax")


def direct_pretrain_errors(Q, M, V, Q0, Delta, T, beta, n=400_000, seed=3):
    """ℰ(β), ℒ(β) for σ(x) = x/T by brute force from eq. (104)'s parametrisation of 𝒬
    (z̃ = √Q ζ1, z* = M/√Q ζ1 + √(A0 − M²/Q) ζ2, each entry a ≤ b with variance ×(1 + δ_ab)),
    the linear proximal of App. C, h = (T⁻² z* + (4V)⁻¹ z̃)/(T⁻² + (4V)⁻¹), and the matrix
    norm over all T² entries."""
    rng = np.random.default_rng(seed)
    A0 = Q0 + Delta / 2
    iu = np.triu_indices(T)
    s = np.where(iu[0] == iu[1], 2.0, 1.0)
    z1, z2 = rng.standard_normal((2, n, len(s)))
    zt = np.sqrt(s) * np.sqrt(Q) * z1
    zs = np.sqrt(s) * (M / np.sqrt(Q) * z1 + np.sqrt(A0 - M * M / Q) * z2)
    h = (zs / T**2 + zt / (4 * V)) / (1 / T**2 + 1 / (4 * V))

    def full(x):
        out = np.zeros((n, T, T))
        out[:, iu[0], iu[1]] = x
        out[:, iu[1], iu[0]] = x
        return out

    S = sigma(full(zs), "linear")
    E = ((sigma(beta * full(zt), "linear") - S) ** 2).sum(axis=(1, 2))
    L = ((sigma(beta * full(h), "linear") - S) ** 2).sum(axis=(1, 2))
    return E.mean(), E.std() / np.sqrt(n), L.mean(), L.std() / np.sqrt(n)


@pytest.fixture(scope="module")
def linear_pre():
    return pretrain(LIN, method="exact")


@pytest.mark.parametrize("factor", [0.7, 1.0, 1.3])
def test_recalibrated_linear_errors_match_a_direct_evaluation(linear_pre, factor):
    pre = linear_pre
    beta = factor * pre.M / pre.Q
    rec = recalibrated(LIN, pre, beta, method="exact")
    E, E_se, L, L_se = direct_pretrain_errors(pre.Q, pre.M, pre.V, pre.Q0, 0.5, 3, beta)
    assert abs(rec.test_error - E) < 4 * E_se
    assert abs(rec.train_error - L) < 4 * L_se
    assert rec.Q == pytest.approx(beta**2 * pre.Q) and rec.M == pytest.approx(beta * pre.M)
    assert rec.beta == beta and rec.beta_star == pytest.approx(pre.M / pre.Q)


def test_linear_recalibration_optimum_is_beta_star(linear_pre):
    """App. E / eq. (26): for linear σ, ℰ(β) is minimal at β* = M/Q (a numerical minimisation
    over β of the closed form, not the formula β* itself)."""
    pre = linear_pre
    res = minimize_scalar(
        lambda b: recalibrated(LIN, pre, b, method="exact").test_error,
        bounds=(0.1, 3.0),
        method="bounded",
        options={"xatol": 1e-8},
    )
    assert res.x == pytest.approx(pre.M / pre.Q, rel=1e-5)


def test_recalibrated_monte_carlo_path_matches_exact_and_beta_one_is_identity(linear_pre):
    pre = linear_pre
    for beta in (1.0, 0.8 * pre.M / pre.Q):
        ex = recalibrated(LIN, pre, beta, method="exact")
        mc = recalibrated(LIN, pre, beta, 4096, seed=1, method="rqmc")
        assert abs(mc.test_error - ex.test_error) < 4 * mc.test_error_se + 1e-12
        assert abs(mc.train_error - ex.train_error) < 4 * mc.train_error_se + 1e-12
    same = recalibrated(LIN, pre, 1.0, method="exact")
    assert same.test_error == pytest.approx(pre.test_error, rel=1e-12)
    assert same.train_error == pytest.approx(pre.train_error, rel=1e-12)


def test_finetune_beta_equals_the_rescaled_effective_pretraining():
    """Ŵ → √β Ŵ scales the frozen fields by β (finetune's ``beta``), which is the law 𝒬 with
    Q → β²Q, M → βM (eq. 102): two different code paths, the same numbers."""
    eff = EffectivePretraining(Q0=2.0, Q=2.0, M=1.0)
    a = finetune(SOFT, eff, 1024, seed=2, beta=0.6, select=False)
    b = finetune(SOFT, eff.recalibrated(0.6), 1024, seed=2, select=False)
    assert a.ft_test_error == pytest.approx(b.ft_test_error, rel=1e-9)
    assert a.overlap == pytest.approx(b.overlap, rel=1e-9)
    assert (a.Q, a.M, a.beta) == (pytest.approx(0.72), pytest.approx(0.6), 0.6)
    assert a.Delta_eff == pytest.approx(eff.recalibrated(0.6).delta_eff(0.0))


def test_linear_finetuning_is_best_at_beta_star(linear_pre):
    """For linear σ the fine-tuning depends on the pre-training only through Δ_eff(β), eq. (26),
    minimal at β*: ℰ' at β* is below ℰ' at 0.85 β* and 1.15 β* (by many standard errors)."""
    b_star = linear_pre.M / linear_pre.Q
    E = {}
    for f in (0.85, 1.0, 1.15):
        r = finetune(LIN, linear_pre, 4096, seed=0, beta=f * b_star)
        E[f] = (r.ft_test_error, r.ft_test_error_se)
    for f in (0.85, 1.15):
        assert E[f][0] - E[1.0][0] > 3 * math.hypot(E[f][1], E[1.0][1])


def test_state_evolution_beta_none_is_beta_star():
    r = state_evolution(LIN, 2048, method="exact", beta=None)
    assert r.beta == pytest.approx(r.beta_star) and r.beta_star > 0
    assert r.info["pre_test_error_unscaled"] > r.test_error  # ℰ(β*) < ℰ(1) for linear σ


def conditional_noise_direct(eff, Delta, T, rho, n_keep=20000, seed=5):
    """Δ̂_eff of the N' = ρ N̄' candidates with the smallest ‖σ(z) − σ(0)‖²_F, drawn directly
    from eq. (104) (a different parametrisation of 𝒬 than the library's eq. 47)."""
    rng = np.random.default_rng(seed)
    n = int(n_keep / rho)
    Q, M, A0 = eff.Q, eff.M, eff.Q0 + Delta / 2
    iu = np.triu_indices(T)
    s = np.where(iu[0] == iu[1], 2.0, 1.0)
    z1, z2 = rng.standard_normal((2, n, len(s)))
    z = np.sqrt(s) * np.sqrt(Q) * z1
    zs = np.sqrt(s) * (M / np.sqrt(Q) * z1 + np.sqrt(A0 - M * M / Q) * z2)
    Z = np.zeros((n, T, T))
    Z[:, iu[0], iu[1]] = z
    Z[:, iu[1], iu[0]] = z
    score = ((sigma(Z, "softmax") - 1.0 / T) ** 2).sum(axis=(1, 2))
    keep = np.argsort(score)[:n_keep]
    d = ((z - zs)[keep] ** 2 / s).mean(axis=1)
    return d.mean(), d.std() / np.sqrt(n_keep)


@pytest.mark.parametrize("rho", [1.0, 0.3, 0.05])
def test_active_selection_noise_matches_a_direct_selection(rho):
    eff = EffectivePretraining(Q0=2.0, Q=2.0, M=1.0)
    g, zeta = active_selection(eff, 0.0, 3, "softmax", 16384, 8, rho, seed=0)
    from hdlora.theory.laws import PretrainSamples, channel_fields
    from hdlora.theory.symmetric import to_matrix

    zs, zt, _ = channel_fields(eff.Q, eff.M, eff.Q0, 0.0, PretrainSamples(g, zeta), 3)
    measured = noise_variance(to_matrix(zs, 3), to_matrix(zt, 3))
    ref, ref_se = conditional_noise_direct(eff, 0.0, 3, rho)
    # the library's estimate has its own MC error, ~√(2/L)·Δ_eff/√16384 ≈ 0.013
    assert abs(measured - ref) < 4 * math.hypot(ref_se, 0.013)
    lo, hi = eff.Q0 - eff.M**2 / eff.Q, eff.delta_eff(0.0)  # eq. (28) and eq. (25)
    assert lo - 0.05 < measured < hi + 0.05
    if rho == 1.0:
        assert measured == pytest.approx(hi, abs=0.05)


def test_active_finetuning_reduces_training_noise_and_improves_overlap():
    eff = EffectivePretraining(Q0=2.0, Q=2.0, M=1.0)  # Δ_eff = 2, Δ_eff,ActFT = 1.5
    uni = finetune(SOFT, eff, 4096, seed=0)
    act = finetune(SOFT, eff, 4096, seed=0, rho=0.05)
    assert act.selection == "active" and act.rho == 0.05 and uni.selection == "uniform"
    assert act.stable and uni.stable
    assert act.info["Delta_eff_train"] < uni.info["Delta_eff_train"] - 0.25
    assert act.overlap - uni.overlap > 3 * math.hypot(act.overlap_se, uni.overlap_se)


def test_recalibrated_on_a_grid_of_beta_equals_one_call_per_beta():
    """A list of β shares one draw and one proximal: the records equal one call per β (RQMC,
    softmax), and a bad β anywhere in the list is refused."""
    pre = pretrain(SOFT.replace(lam=0.1), 2048, seed=0, progress=False)
    betas = [0.6, 1.0, 1.4]
    grid = recalibrated(SOFT, pre, betas, 2048, seed=1)
    for b, rec in zip(betas, grid, strict=True):
        one = recalibrated(SOFT, pre, b, 2048, seed=1)
        assert rec.beta == b and rec.test_error == one.test_error
        assert rec.train_error == one.train_error and rec.Q == pytest.approx(b * b * pre.Q)
    # the exact linear curve as a list
    lin_pre = pretrain(LIN, method="exact", progress=False)
    exact = recalibrated(LIN, lin_pre, betas, method="exact")
    assert [r.test_error for r in exact] == [
        recalibrated(LIN, lin_pre, b, method="exact").test_error for b in betas
    ]
    with pytest.raises(ValueError, match="beta must be finite numbers > 0"):
        recalibrated(SOFT, pre, [0.5, -1.0], 256)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rho=0.0), "rho must satisfy 0 < rho <= 1"),
        (dict(rho=1.5), "rho must satisfy 0 < rho <= 1"),
        (dict(beta=0.0), "beta must be a finite number > 0"),
        (dict(beta=math.inf), "beta must be a finite number > 0"),
    ],
)
def test_protocol_arguments_are_checked(kwargs, match):
    eff = EffectivePretraining(Q0=2.0, Q=2.0, M=1.0)
    with pytest.raises(ValueError, match=match):
        finetune(SOFT, eff, 64, **kwargs)


def test_active_finetuning_needs_fresh_sequences():
    eff = EffectivePretraining(Q0=2.0, Q=2.0, M=1.0, V=1.0)
    with pytest.raises(ValueError, match="e = 0"):
        finetune(SOFT.replace(reuse=True), eff, 64, rho=0.5)


def test_a_failed_continuation_start_is_retried_not_replaced_by_m_zero(monkeypatch):
    """Figure 2 (Δ = 0, α' = 3, Δ_eff = 10/3, replicon 1.26): from the neighbour's (m, q, v)
    the informed iteration once did not converge; the selection used to fall back to m = 0
    (o_w = 0, a jump in the curve) with ``converged=True``. Now the informed point is retried
    from the default start and selected by its free entropy, as from the default start directly.

    Which starts fail depends on the last bits of the arithmetic, so the failure is planted: the
    first full informed solve reports non-convergence, as the continuation start's did."""
    import importlib

    from hdlora.theory.fixed_point import FixedPointResult

    ft_module = importlib.import_module("hdlora.theory.driver")  # where the solves are made
    real_solve = ft_module.solve
    planted = []

    def solve(G, x, **kwargs):
        desc = kwargs.get("desc", "")
        if "(informed)" in desc and not planted:
            planted.append(desc)
            G(x)  # one evaluation, as a real solve makes, then the failure
            return FixedPointResult(x=x, converged=False, n_iter=200, residual=1e-3, message="x")
        return real_solve(G, x, **kwargs)

    p = SOFT.replace(alpha_ft=3.0)
    eff = EffectivePretraining.on_diagonal(10 / 3, 0.0)
    x0 = (0.8131033680308387, 0.8848598015955181, 0.39112941681841723)
    ref = finetune(p, eff, 8192, 0)
    monkeypatch.setattr(ft_module, "solve", solve)
    r = finetune(p, eff, 8192, 0, x0=x0)
    assert planted, "the planted failure was not reached"
    assert r.info["fixed_point"] == "informed" and r.converged
    assert "retried" in r.message
    assert r.overlap == pytest.approx(ref.overlap, abs=5 * ref.overlap_se)


def test_sweep_over_beta_scales_rows_carry_their_own_recalibration():
    """A grid of β/β* in the sweep (linear σ, exact pre-training): every row's pre-training
    fields are those of its own β — ℰ(β) of the closed form (T+1)/T (A0 − 2βM + β²Q) written
    here from (55), Q → β²Q, M → βM — and the fine-tuning of that row equals the independent
    prediction at the same β."""
    from hdlora.theory import sweep

    p = LIN.replace(alpha=0.5, lam=0.1)
    scales = [0.6, 1.0, 1.5]
    df = sweep(p, beta=None, beta_scale=scales, method="exact", n_mc=1024, seed=1, tol=1e-9)
    pre = pretrain(p, method="exact", progress=False)
    b_star = pre.M / pre.Q
    A0 = pre.Q0 + p.Delta / 2
    assert list(df["beta_scale"]) == scales
    for row in df.itertuples():
        b = row.beta_scale * b_star
        assert row.beta == pytest.approx(b, rel=1e-12)
        assert row.Q == pytest.approx(b * b * pre.Q) and row.M == pytest.approx(b * pre.M)
        E = (p.T + 1) / p.T * (A0 - 2 * b * pre.M + b * b * pre.Q)
        assert row.test_error == pytest.approx(E, rel=1e-10)
    one = finetune(p, pre, 1024, seed=1, beta=1.5 * b_star, tol=1e-9)
    assert df["ft_test_error"].iloc[-1] == pytest.approx(one.ft_test_error, rel=1e-6)
