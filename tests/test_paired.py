"""The paired gain of Algorithm 1 (hdlora.simulation.paired, hdlora.harness.paired).

References: at ρ = 1 Algorithm 1 keeps the whole pool, so the two selections of a paired run are
the same experiment and their gain is exactly 0; the uniform subset of the pool is an unselected
sample, whose measured effective noise is eq. (25) (hdlora.theory.noise, imported only), while
Algorithm 1's falls below it; the gain table is checked on runs written from a known gain
a + b/D + (per-run noise), whose extrapolation must return a.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hdlora import Params
from hdlora.harness.paired import gain_table, gain_verdict, run_gains
from hdlora.params import EffectivePretraining
from hdlora.simulation import FinetuneExperiment
from hdlora.simulation.paired import UniformFromPool, simulate_paired
from hdlora.theory.noise import delta_eff

P = Params(T=3, Delta=0.5, alpha_ft=3.0, lam_ft=0.5, activation="linear")
EFF = EffectivePretraining(Q0=2.0, Q=3.0, M=1.0)


def test_a_paired_run_shares_teacher_sequences_and_test_set():
    active = FinetuneExperiment(P, EFF, 20, 4, rho=0.25, n_test=40)
    uniform = UniformFromPool(P, EFF, 20, 4, rho=0.25, n_test=40)
    assert torch.equal(active.train.X, uniform.train.X)
    w = torch.randn(20, dtype=torch.float64)
    assert active.errors(w)["test_error"] == uniform.errors(w)["test_error"]
    assert not torch.equal(active.z, uniform.z)  # only the labelled fields differ
    # the same candidates: a uniform one is among Algorithm 1's N' with probability ρ, so the
    # two sets share about ρ N' = 15 fields (none if the pools were drawn apart)
    shared = (uniform.z.flatten(1)[:, None] == active.z.flatten(1)[None]).all(-1).sum()
    assert 3 <= int(shared) <= 40


def test_at_rho_one_the_two_selections_are_one_experiment():
    recs = simulate_paired(P, EFF, 15, 2, rho=1.0, lam_fts=[0.2, 1.0], n_test=40, progress=False)
    assert [r.selection for r in recs] == ["uniform"] * 2 + ["active"] * 2
    assert [r.params.lam_ft for r in recs] == [0.2, 1.0] * 2
    for u, a in zip(recs[:2], recs[2:], strict=True):
        assert u.ft_test_error == a.ft_test_error and u.overlap == a.overlap
        assert u.info["paired"] and u.rho == a.rho == 1.0
    # the records themselves through the gain table: every gain exactly 0
    gains = run_gains(pd.DataFrame([r.to_dict() for r in recs]))
    assert set(gains["lam_ft"]) == {"0.2", "1", "best"} and (gains["gain"] == 0).all()
    with pytest.raises(ValueError, match="rho"):
        simulate_paired(P, EFF, 15, 2, rho=None, lam_fts=[0.2])


def test_the_uniform_subset_is_unselected_and_algorithm1_lowers_the_noise():
    """Δ̂_eff of the uniform N' of a pool is eq. (25); Algorithm 1's N' of the same pool lie
    well below it (λ' = ∞: no fit, the data only). ≤ 4 standard errors."""
    p = P.replace(alpha_ft=300.0, lam_ft=math.inf)
    full = delta_eff(p.Delta, EFF.Q0, EFF.Q, EFF.M)
    uniform = UniformFromPool(p, EFF, 10, 0, rho=0.2, n_test=10)
    active = FinetuneExperiment(p, EFF, 10, 0, rho=0.2, n_test=10)
    (du, su), (da, sa) = uniform.train_delta_eff_hat, active.train_delta_eff_hat
    assert abs(du - full) < 4 * su
    assert da < du - 4 * math.hypot(su, sa)


def _runs(gain, slope, sd, Ds=(100, 300), seeds=range(40), lams=(0.1, 0.5)):
    """Paired rows whose gain at λ' is gain[λ'] + slope/D + noise(sd); the uniform error is
    1 + λ', so its best λ' is the smallest."""
    rng = np.random.default_rng(0)
    rows = []
    for D in Ds:
        for s in seeds:
            for lam in lams:
                g = gain[lam] + slope / D + sd * rng.standard_normal()
                base = dict(rho=0.1, Delta_eff=1.5, D=D, seed=s, lam_ft=lam, info_ft_n_minima=1)
                rows += [base | dict(selection="uniform", ft_test_error=1.0 + lam),
                         base | dict(selection="active", ft_test_error=1.0 + lam - g)]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_gain_table_extrapolates_a_known_gain():
    sim = _runs({0.1: -0.004, 0.5: 0.01}, slope=0.3, sd=0.002)
    # the uniform starts at λ' = 0.1 reach several minima in 4 of the 40 runs at D = 300
    trapped = (sim["D"] == 300) & (sim["seed"] < 4) & (sim["lam_ft"] == 0.1)
    sim.loc[trapped & (sim["selection"] == "uniform"), "info_ft_n_minima"] = 2
    theory = pd.DataFrame([
        dict(rho=0.1, Delta_eff=1.5, lam_ft=lam, selection=sel, ft_test_error=e,
             ft_test_error_se=1e-4, ft_replicon_stable=lam != 0.5 or sel == "active")
        for lam, eu, ea in ((0.1, 1.1, 1.104), (0.5, 1.5, 1.49))
        for sel, e in (("uniform", eu), ("active", ea))])  # fmt: skip
    table = gain_table(sim, theory).set_index("lam_ft")
    for lam, a in (("0.1", -0.004), ("0.5", 0.01)):
        row = table.loc[lam]
        assert row["runs_D100"] == row["runs_D300"] == 40
        assert abs(row["sim"] - a) < 4 * row["sim_se"] and row["sim_se"] < 0.002
        assert row["sim_D100"] == pytest.approx(a + 0.003, abs=4 * row["se_D100"])
        assert row["theory"] == pytest.approx(a, abs=1e-12)
        assert abs(row["z"]) < 4
    # best λ' per protocol: uniform's lowest is λ' = 0.1 (1.1), active's λ' = 0.1 (≈1.104)
    best = run_gains(sim).query("lam_ft == 'best'")
    assert len(best) == 80 and (best["lam_uniform"] == "0.1").all()
    assert (best["lam_active"] == "0.1").all()
    assert table.loc["best", "theory"] == pytest.approx(1.1 - 1.104)
    assert table.loc["best", "lam_uniform_D300"] == "0.1"
    assert table["replicon_stable"].tolist() == [True, False, True]  # 0.5: uniform unstable
    assert table["single_minimum_fraction"].tolist() == [0.9, 1.0, 0.9]  # best: λ' = 0.1
    assert not table["required"].any()
    # the same runs without the trapped ones: λ' = 0.1 and the best become required
    untrapped = gain_table(sim.assign(info_ft_n_minima=1), theory).set_index("lam_ft")
    assert untrapped["required"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="several rows"):
        run_gains(pd.concat([sim, sim.iloc[:1]]))


def test_the_best_lambda_is_chosen_on_run_averages_not_run_by_run():
    """Two λ' with the same mean error and independent noise: a minimum taken run by run
    would bias the gain by about −sd/√π; the run-averaged choice leaves it unbiased."""
    rng = np.random.default_rng(1)
    rows = []
    for s in range(400):
        for lam in (0.1, 0.5):
            base = dict(rho=0.1, Delta_eff=1.5, D=100, seed=s, lam_ft=lam)
            noisy = 1.0 + 0.01 * rng.standard_normal()
            rows += [base | dict(selection="uniform", ft_test_error=noisy),
                     base | dict(selection="active", ft_test_error=1.0 + 0.5 * lam)]  # fmt: skip
    best = run_gains(pd.DataFrame(rows)).query("lam_ft == 'best'")["gain"]
    # the true gain: 1.0 (either λ') − 1.05 (active at λ' = 0.1); run by run: −0.0556
    assert abs(best.mean() + 0.05) < 4 * best.std() / np.sqrt(len(best))


def test_gain_verdicts():
    assert gain_verdict(0.01, 0.002) == "positive"
    assert gain_verdict(-0.01, 0.002) == "negative"
    assert gain_verdict(0.003, 0.002) == "unresolved"
