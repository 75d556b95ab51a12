"""The fine-tuning-only simulator (hdlora.simulation.simulate_finetune) and the multi-start
machinery of both simulators.

References, all independent of the code under test: the covariance of Result 1 (eq. 13) for the
drawn frozen fields; the sequence loss and the errors written out in numpy (tests/direct.py) on
the simulator's own draws; the two-stage simulator run on real sequences with a frozen map of
prescribed alignment; App. C's effective noises for the active selection (hdlora.theory.noise,
imported here only); a teacher start that a random start cannot match.
"""

import math
import warnings

import direct
import numpy as np
import pytest
import torch

from hdlora import Params
from hdlora.diagnostics import StartsDisagreeWarning
from hdlora.params import EffectivePretraining
from hdlora.simulation import Experiment, FinetuneExperiment, simulate_finetune
from hdlora.simulation.finetune_only import draw_frozen_fields
from hdlora.theory.noise import delta_eff, delta_eff_active

P3 = Params(T=3, kappa0=1, kappa=1, Delta=0.5, alpha=0.02, alpha_ft=3.0, lam_ft=0.5)
EFF = EffectivePretraining(Q0=2.0, Q=1.2, M=1.0)


def _row(obs):
    row = obs.to_dict()
    row.pop("wall_time")
    return row


def test_frozen_fields_follow_result1():
    """Cov(z*_ab, z_ab) = (1 + δ_ab) [[Δ/2 + Q0, M], [M, Q]] (eq. 13), symmetric matrices,
    distinct entries independent; at ≤ 5 standard errors of a Gaussian sample covariance."""
    T, n, Delta = 3, 200_000, 0.7
    eff = EffectivePretraining(Q0=1.6, Q=0.9, M=0.8)
    gen = torch.Generator().manual_seed(3)
    zs, z = (t.numpy() for t in draw_frozen_fields(n, T, eff, Delta, gen))
    assert np.array_equal(zs, zs.transpose(0, 2, 1)) and np.array_equal(z, z.transpose(0, 2, 1))
    for a, b in ((0, 0), (1, 1), (0, 1), (1, 2)):
        s = 2 if a == b else 1
        theory = s * np.array([[Delta / 2 + eff.Q0, eff.M], [eff.M, eff.Q]])
        cov = np.cov(zs[:, a, b], z[:, a, b])
        se = np.sqrt((theory**2 + np.outer(np.diag(theory), np.diag(theory))) / n)
        assert np.all(np.abs(cov - theory) < 5 * se), (a, b, cov, theory)
    # entries (0, 1) and (1, 2) of z are independent: correlation within 5/√n of 0
    assert abs(np.corrcoef(z[:, 0, 1], z[:, 1, 2])[0, 1]) < 5 / math.sqrt(n)


@pytest.mark.parametrize("activation", ["softmax", "linear"])
def test_objective_and_errors_written_out(activation):
    """On the simulator's own draws: the objective is Σ_μ D⁻¹‖ŷ_μ − y_μ‖²_F + λ'‖w‖² with
    ŷ = σ(z + χχᵀ − qI) X, y = σ(z*_ext + χ*χ*ᵀ − q0 I) X; ℰ', ℰ'' (target σ(z*_ext)) and ℰ
    (frozen map σ(z)) are the means of the same expression on the test draw."""
    p = P3.replace(activation=activation, lam_ft=0.3)
    D = 15
    exp = FinetuneExperiment(p, EFF, D, seed=2, n_test=70, device="cpu")
    w = torch.from_numpy(np.random.default_rng(0).standard_normal(D))
    ws = exp.w_star.numpy()
    eye = np.eye(p.T)

    def student_and_target(X, zs, z, wv):
        chi, chis = X @ wv / math.sqrt(D), X @ ws / math.sqrt(D)
        zst = z + np.einsum("na,nb->nab", chi, chi) - wv @ wv / D * eye
        ztg = zs + np.einsum("na,nb->nab", chis, chis) - ws @ ws / D * eye
        return zst, ztg

    def err(X, Z_hat, Z_target):
        y_hat = direct.sigma(Z_hat, activation) @ X
        return direct.sequence_errors(y_hat, direct.sigma(Z_target, activation) @ X)

    X = exp.train.X.numpy()
    zst, ztg = student_and_target(X, exp.train.z_star_ext.numpy(), exp.z.numpy(), w.numpy())
    expected = err(X, zst, ztg).sum() + p.lam_ft * float(w @ w)
    assert float(exp.objective(w)) == pytest.approx(expected, rel=1e-12)

    (Xt, zs, z), *rest = [tuple(t.numpy() for t in block) for block in exp.test_blocks()]
    assert not rest and Xt.shape == (70, p.T, D)
    zst, ztg = student_and_target(Xt, zs, z, w.numpy())
    e = exp.errors(w)
    assert e["ft_test_error"] == pytest.approx(err(Xt, zst, ztg).mean(), rel=1e-12)
    assert e["forgetting_error"] == pytest.approx(err(Xt, zst, zs).mean(), rel=1e-12)
    assert e["test_error"] == pytest.approx(err(Xt, z, zs).mean(), rel=1e-12)
    assert e["ft_test_error_se"] == pytest.approx(err(Xt, zst, ztg).std(ddof=1) / math.sqrt(70))


def test_record_fields():
    obs = simulate_finetune(P3, EFF, 30, seed=1, n_init=2, progress=False)
    assert obs.source == "simulation" and obs.D == 30 and obs.converged
    assert (obs.Q0, obs.Q, obs.M) == (EFF.Q0, EFF.Q, EFF.M)
    assert obs.Delta_eff == pytest.approx(P3.Delta / 2 + 2.0 - 2 * 1.0 + 1.2)
    assert obs.selection == "uniform" and math.isnan(obs.rho) and obs.beta == 1.0
    assert obs.beta_star == pytest.approx(1.0 / 1.2)
    assert obs.overlap == pytest.approx(obs.m / math.sqrt(obs.q * obs.q0), rel=1e-12)
    assert obs.m >= 0 and np.isnan(obs.train_error)
    assert obs.info["ft_n_starts"] == 3  # n_init, then the start from the data
    assert [obs.info[f"ft_start{k}_kind"] for k in range(3)] == ["spectral", "random", "bayes"]
    # the train error is the objective minus the penalty, per sample
    exp = FinetuneExperiment(P3, EFF, 30, seed=1, device="cpu")
    penalty = P3.lam_ft * obs.q * 30
    assert obs.ft_train_error == pytest.approx(
        (obs.info["finetune_objective"] - penalty) / exp.sizes.N_ft, rel=1e-9
    )


def test_agrees_with_the_two_stage_simulator_on_a_prescribed_frozen_map():
    """Real sequences: Ŵ = a W* + b G (G independent Gaussian, P = P0), its Q0, Q, M measured by
    Experiment.order_parameters, ŵ fitted by Experiment.finetune; against simulate_finetune at
    those (Q0, Q, M). 10 seeds each, D = 80.

    Tolerance: 4 standard errors of the difference of the two seed means (the seed-to-seed
    spread: disorder of both simulators) plus, for the errors, the finite-D effect of the real
    model that the D → ∞ law of the frozen fields leaves out: there z*_ab ∋ √κ0 √D G_ab
    (S* ≈ √P0 I + …) is correlated with the Gram matrix G and χ*χ*ᵀ, a relative correction of
    O(D^{-1/2}). Measured (build/logs, 16 + 16 + 12 seeds at D = 60, 120, 240):
    ℰ'_short − ℰ'_real ≈ 0.17/√D (0.019 at D = 80), ℰ within 0.01; we allow 0.25/√D = 0.028
    (ℰ', ℰ''), 0.01 (ℰ). o_w, q, m agreed within 1.5 standard errors: no allowance. A wrong
    covariance (e.g. no 1 + δ_ab on the diagonal: ℰ +20 %) or a wrong target fails."""
    D, a, b, n_seeds = 80, 0.8, 0.6, 10
    real, short = [], []
    for seed in range(n_seeds):
        exp = Experiment(P3, D, seed, device="cpu")
        g = torch.Generator().manual_seed(1000 + seed)
        G = torch.randn(D, exp.sizes.P, generator=g, dtype=torch.float64)
        W = a * exp.teacher.W_star + b * G
        fit = exp.finetune(W, n_init=2, progress=False)
        o = exp.observables(W, fit.x, {"finetune": fit})
        s = simulate_finetune(
            P3, EffectivePretraining(Q0=o.Q0, Q=o.Q, M=o.M), D, seed, n_init=2, progress=False
        )
        keys = ("test_error", "ft_test_error", "forgetting_error", "overlap", "q", "m")
        real.append([getattr(o, k) for k in keys])
        short.append([getattr(s, k) for k in keys])
    real, short = np.array(real), np.array(short)
    se = np.sqrt(real.var(axis=0, ddof=1) / n_seeds + short.var(axis=0, ddof=1) / n_seeds)
    allowance = np.array([0.01, 0.25 / math.sqrt(D), 0.25 / math.sqrt(D), 0, 0, 0])
    diff = np.abs(real.mean(axis=0) - short.mean(axis=0))
    assert np.all(diff <= 4 * se + allowance), (keys, diff, se, allowance)


def test_active_selection_lowers_the_effective_noise():
    """Algorithm 1 with linear σ: the measured Δ̂_eff of the selected set decreases as ρ
    decreases, stays between Δ_eff,ActFT (eq. 28) and Δ_eff (eq. 25), and for ρ = 1 equals
    Δ_eff; the pool is a uniform sample (Δ̂_eff = Δ_eff); the test data are not selected.
    λ' = ∞ skips the fit (ŵ = 0): only the data are compared. ≤ 4 standard errors."""
    p = Params(T=3, Delta=0.5, alpha_ft=300.0, lam_ft=math.inf, activation="linear")
    eff = EffectivePretraining(Q0=2.0, Q=3.0, M=1.0)
    full, act = delta_eff(p.Delta, 2.0, 3.0, 1.0), delta_eff_active(p.Delta, 2.0, 3.0, 1.0)
    assert full - act > 1  # a wide gap: (M/√Q − √Q)² = 1.33
    D = 10
    uniform = simulate_finetune(p, eff, D, seed=0, n_test=50, progress=False)
    rows = {r: simulate_finetune(p, eff, D, 0, rho=r, n_test=50) for r in (1.0, 0.5, 0.2, 0.05)}
    est = {r: (o.info["Delta_eff_train"], o.info["Delta_eff_train_se"]) for r, o in rows.items()}
    # ρ = 1 keeps the whole pool, in the drawn order: the uniform set itself
    assert est[1.0][0] == uniform.info["Delta_eff_train"]
    assert abs(est[1.0][0] - full) < 4 * est[1.0][1]
    for r, o in rows.items():
        assert o.selection == "active" and o.rho == r
        assert o.info["n_candidates"] == round(3000 / r)
        pool, pool_se = o.info["Delta_eff_pool"], o.info["Delta_eff_pool_se"]
        assert abs(pool - full) < 4 * pool_se
        d, se = est[r]
        assert act - 4 * se < d < full + 4 * se
        assert o.test_error == uniform.test_error  # fresh 𝒬 test data, not selected
    ds = [est[r] for r in (1.0, 0.5, 0.2, 0.05)]
    for (d1, s1), (d2, s2) in zip(ds, ds[1:], strict=False):
        assert d2 < d1 - 2 * math.hypot(s1, s2)
    assert ds[-1][0] < act + 0.5 * (full - act)  # ρ = 0.05 is well on its way to eq. (28)


def test_a_random_start_in_a_spurious_minimum_warns_and_the_best_is_kept():
    """T = 2, α' = 2, λ' = 0.1: the fine-tuning objective has many minima; from the random start
    L-BFGS stops at o_w ≈ 0.4 with a higher objective than from the teacher start w = w*
    (o_w ≈ 0.87). The record keeps the lowest objective, lists both starts, and warns."""
    p = Params(T=2, kappa0=0.5, Delta=0.5, alpha_ft=2.0, lam_ft=0.1)
    eff = EffectivePretraining(Q0=1.5, Q=1.0, M=0.9)
    kw = dict(n_init=1, spectral_start=False, teacher_start=True, progress=False)
    kw |= dict(bayes_start=False, basin_hops=0)  # the starts alone (the search: test_search.py)
    with pytest.warns(StartsDisagreeWarning, match="starts disagree"):
        obs = simulate_finetune(p, eff, 60, seed=3, **kw)
    info = obs.info
    assert [info["ft_start0_kind"], info["ft_start1_kind"]] == ["random", "teacher"]
    objectives = [info["ft_start0_objective"], info["ft_start1_objective"]]
    assert info["ft_best_start"] == 1 and objectives[1] < objectives[0]
    assert info["finetune_objective"] == min(objectives)
    assert info["ft_starts_disagree"] and info["ft_n_minima"] == 2
    assert info["ft_overlap_gap"] == pytest.approx(
        abs(info["ft_start0_overlap"] - info["ft_start1_overlap"])
    )
    assert info["ft_objective_gap"] == pytest.approx(objectives[0] - objectives[1])
    assert info["ft_start0_overlap"] < 0.6 < info["ft_start1_overlap"] == pytest.approx(obs.overlap)
    assert "starts disagree" in obs.message
    # without the teacher start the same random start is kept, with its poorer overlap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = simulate_finetune(p, eff, 60, seed=3, **(kw | {"teacher_start": False}))
    assert alone.overlap == pytest.approx(info["ft_start0_overlap"], rel=1e-12)
    # same seed, same numbers
    with pytest.warns(StartsDisagreeWarning):
        again = simulate_finetune(p, eff, 60, seed=3, **kw)
    assert _row(again) == _row(obs)


def test_starts_that_agree_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", StartsDisagreeWarning)
        obs = simulate_finetune(P3, EFF, 100, seed=0, n_init=3, teacher_start=True, progress=False)
    assert obs.info["ft_n_starts"] == 5 and not obs.info["ft_starts_disagree"]  # + Bayes, teacher
    assert obs.info["ft_overlap_gap"] < 1e-4 and obs.info["ft_n_minima"] == 1


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="reuse"):
        simulate_finetune(P3.replace(reuse=True), EFF, 20)
    for rho in (0, 1.5, -0.1, math.nan, True):
        with pytest.raises(ValueError, match="rho"):
            simulate_finetune(P3, EFF, 20, rho=rho)
    for n_init in (0, 1.5, True, -2):
        with pytest.raises(ValueError, match="n_init"):
            simulate_finetune(P3, EFF, 20, n_init=n_init)
    with pytest.raises(ValueError, match="effective"):
        simulate_finetune(P3, (2.0, 1.0, 1.0), 20)
    with pytest.raises(ValueError, match="seed"):
        simulate_finetune(P3, EFF, 20, seed=-1)
    with pytest.raises(ValueError, match="n_test"):
        simulate_finetune(P3, EFF, 20, n_test=0)
