"""The agreement criterion of hdlora.harness.agreement: it must accept a right theory, reject a
10 % bias with the smoke profile's sizes, and never let a non-finite value through."""

import math

import numpy as np
import pandas as pd
import pytest

from hdlora import Params
from hdlora.harness.agreement import (
    agreement_table,
    agreement_threshold,
    bias_power,
    check_agreement,
    inject_bias,
)

KEYS = ["lam"]
OBS = ["err", "q"]


def synthetic(
    rng, n_points=7, Ds=(40, 80), n_seeds=4, cv=(0.06, 0.15), shared=0.0, finite_size=None
):
    """Simulations with a finite-size trend and per-run relative noise ``cv`` (the smoke
    profile's spreads: ~6 % on errors, ~15 % on q), and the exact D → ∞ theory.

    ``finite_size(D)`` is the relative finite-D term (default 3/D, which the 1/D fit removes).
    ``shared`` is the relative spread of an effect drawn once per (seed, D) and shared by every
    point of that seed, as a teacher with an unlucky norm is: Fig. 3's seeds 0 and 1 draw
    ‖w*‖²/D = 0.69 and 0.82 at D = 100, where √(2/D) = 0.14."""
    finite_size = (lambda D: 3.0 / D) if finite_size is None else finite_size
    truth = {"err": rng.uniform(0.2, 1.0, n_points), "q": rng.uniform(0.3, 0.9, n_points)}
    teacher = {(s, D): rng.standard_normal() for s in range(n_seeds) for D in Ds}
    rows, th = [], []
    for i in range(n_points):
        lam = 0.01 * (i + 1)
        th += [{"lam": lam, "err": truth["err"][i], "q": truth["q"][i], "err_se": 0.0, "q_se": 0.0}]
        for D in Ds:
            for s in range(n_seeds):
                row = {"lam": lam, "D": D, "seed": s}
                for k, c in zip(OBS, cv, strict=True):
                    mean = truth[k][i] * (1 + finite_size(D) + shared * teacher[s, D])
                    row[k] = mean * (1 + c * rng.standard_normal())
                rows.append(row)
    sim, theory = pd.DataFrame(rows), pd.DataFrame(th)
    return sim, theory


def test_threshold_is_bonferroni_student_t():
    # one comparison, 1 % two-sided, large dof: the normal quantile 2.5758
    assert agreement_threshold(1, 1e6, 0.01) == pytest.approx(2.5758, abs=1e-3)
    # 10 comparisons: the 0.05 % quantile of each tail
    assert agreement_threshold(10, 1e6, 0.01) == pytest.approx(3.2905, abs=1e-3)
    with pytest.raises(ValueError, match="n_comparisons"):
        agreement_threshold(0, 3)


def _rates(datasets, biases=(), **kw):
    """(false alarms of the right theory, passes of each biased theory) over ``datasets``."""
    false_alarms, missed = 0, 0
    for sim, theory in datasets:
        if not check_agreement(agreement_table(sim, theory, KEYS, OBS), **kw).passed:
            false_alarms += 1
        for b in biases:
            biased = inject_bias(theory, OBS, b)
            missed += check_agreement(agreement_table(sim, biased, KEYS, OBS), **kw).passed
    return false_alarms, missed


def test_right_theory_passes_and_a_twenty_percent_bias_fails():
    """The smoke profile's design (8 points, D = 40, 80, 6 seeds each), 40 synthetic data sets:
    the right theory passes (the family-wise error is 1 %: expected 0.4 false alarms, 2
    allowed) and a uniform ±20 % bias of the theory fails in at least 95 % of the 80 cases.
    The per-observable part has 6 − 1 degrees of freedom (the seeds), so 10 % is not resolved
    by 6 runs with 15 % spreads: the notebooks print the power of their own data."""
    rng = np.random.default_rng(0)
    false_alarms, missed = _rates(
        [synthetic(rng, n_points=8, n_seeds=6) for _ in range(40)], biases=(0.2, -0.2)
    )
    assert false_alarms <= 2
    assert missed <= 4


def test_power_is_reported_and_resolves_the_seeds_spread():
    """6 seeds, 15 % spread per run, extrapolated from D = 40, 80 (the intercept 2y₈₀ − y₄₀ has
    √5 × the spread): the mean over 8 points of one seed spreads by ≈ 15 % · √5/√8 ≈ 12 %, the
    mean of 6 seeds by ≈ 5 %, so a bias of a few of those standard errors (≤ 20 %) is rejected
    and one of 1 % is not."""
    sim, theory = synthetic(np.random.default_rng(1), n_points=8, n_seeds=6)
    power = bias_power(sim, theory, KEYS, OBS)
    assert 0.01 < power <= 0.20


def test_a_bias_shared_by_the_points_of_a_seed_is_not_called_a_theory_error():
    """A teacher drawn once per seed moves all points of that seed alike (here 10 % per seed,
    on top of 6 % / 15 % per run). The right theory must still pass at the nominal rate: the
    per-observable standard error comes from the spread across seeds. The same data with the
    seed column dropped (the pooled estimate, as if the points were independent) calls it a
    bias in about a third of the data sets (nominal: 1 %): the pooled estimate is blind to the
    correlation."""
    rng = np.random.default_rng(4)
    data = [synthetic(rng, n_points=8, n_seeds=6, shared=0.10) for _ in range(30)]
    false_alarms, _ = _rates(data)
    assert false_alarms <= 2
    pooled = [(sim.drop(columns="seed"), th) for sim, th in data]
    false_alarms_pooled, _ = _rates(pooled)
    assert false_alarms_pooled >= 8


def test_standard_error_of_the_mean_deviation_matches_its_spread():
    """Both sides: over 40 data sets with the right theory and a shared teacher effect, the
    reported standard error of the mean relative deviation (per observable) lies within a
    factor 1.5 of the actual spread of that mean; likewise the per-point ``sim_inf_se``
    against the spread of ``sim_inf``."""
    rng = np.random.default_rng(5)
    means, ses, point_inf, point_se = [], [], [], []
    for _ in range(40):
        sim, theory = synthetic(rng, n_points=8, n_seeds=6, shared=0.10)
        table = agreement_table(sim, theory, KEYS, OBS)
        by_obs = check_agreement(table).by_observable.set_index("observable")
        means.append(by_obs["mean_rel_dev"].to_numpy())
        ses.append(by_obs["se"].to_numpy())
        rows = table[table["lam"] == 0.01].set_index("observable")
        point_inf.append(rows["rel_dev"].to_numpy())
        point_se.append((rows["sim_inf_se"] / rows["theory"].abs()).to_numpy())
    for est, spread in (
        (np.mean(ses, axis=0), np.std(means, axis=0, ddof=1)),
        (np.mean(point_se, axis=0), np.std(point_inf, axis=0, ddof=1)),
    ):
        ratio = est / spread
        assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), ratio


def test_a_finite_size_term_in_one_over_root_D_is_not_certified():
    """The extrapolation is a line in 1/D. A D^{-1/2} term of 3/√D (47 % at D = 40) leaves
    3 (2/√80 − 1/√40) ≈ 20 % in the intercept 2y₈₀ − y₄₀, which the check must reject although
    the theory is right; the 1/D term of the same size at D = 40 (12/D) is removed and passes."""
    rng = np.random.default_rng(6)
    root = [synthetic(rng, n_points=8, n_seeds=6, finite_size=lambda D: 3 / D**0.5)]
    assert _rates(root) == (1, 0)
    linear = [synthetic(rng, n_points=8, n_seeds=6, finite_size=lambda D: 12 / D)]
    assert _rates(linear) == (0, 0)


def test_a_single_biased_observable_is_named():
    """A 30 % bias of q alone fails the check, and its per-observable statistic names q, not
    the error."""
    sim, theory = synthetic(np.random.default_rng(7), n_points=8, n_seeds=6)
    biased = theory.assign(q=theory["q"] * 1.3)
    by_obs = check_agreement(agreement_table(sim, biased, KEYS, OBS)).by_observable
    over = by_obs.set_index("observable").eval("abs(statistic) >= threshold")
    assert over.to_dict() == {"err": False, "q": True}


def test_a_single_wrong_point_fails():
    sim, theory = synthetic(np.random.default_rng(2))
    theory.loc[3, "err"] *= 1.6
    check = check_agreement(agreement_table(sim, theory, KEYS, OBS))
    assert not check.passed
    assert (
        (check.failures["lam"] == theory.loc[3, "lam"]) & (check.failures["observable"] == "err")
    ).any()


def test_non_finite_values_fail_and_exact_zeros_are_excluded():
    sim, theory = synthetic(np.random.default_rng(3))
    bad = theory.copy()
    bad.loc[0, "q"] = math.nan
    check = check_agreement(agreement_table(sim, bad, KEYS, OBS))
    assert not check.passed and check.n_nonfinite == 1
    # an observable that is exactly zero in simulation and theory: excluded, counted, no floor
    sim0, th0 = sim.assign(q=np.where(sim["lam"] == 0.01, 0.0, sim["q"])), theory.copy()
    th0.loc[th0["lam"] == 0.01, "q"] = 0.0
    check = check_agreement(agreement_table(sim0, th0, KEYS, OBS))
    assert check.passed and check.n_excluded == 1
    # a zero spread that is not an exact zero has no standard error: it fails, not passes
    sim1 = sim.copy()
    sim1.loc[sim1["lam"] == 0.02, "err"] = 0.5
    th1 = theory.copy()
    th1.loc[th1["lam"] == 0.02, "err"] = 0.4
    assert not check_agreement(agreement_table(sim1, th1, KEYS, OBS)).passed


def test_uses_the_real_param_columns():
    # the tables of the notebooks key points by Params fields
    assert set(KEYS) <= set(Params().to_dict())


def _overlap_runs():
    """Two points × 3 seeds × one D: at lam = 1 every run is informed except seed 2, whose LoRA
    stayed at 0 (q = 0, a stray cosine 0.3); at lam = 2 the theory is uninformed (q = 0)."""
    sim = pd.DataFrame(
        {
            "lam": [1.0] * 3 + [2.0] * 3,
            "seed": [0, 1, 2] * 2,
            "D": 100,
            "err": [0.50, 0.52, 0.61, 0.80, 0.81, 0.79],
            "q": [0.4, 0.5, 0.0, 0.0, 0.0, 0.0],
            "overlap": [0.90, 0.92, 0.30, 0.10, 0.20, 0.15],
        }
    )
    theory = pd.DataFrame(
        {
            "lam": [1.0, 2.0],
            "err": [0.53, 0.80],
            "err_se": [1e-3, 1e-3],
            "q": [0.45, 0.0],
            "overlap": [0.91, 0.0],
            "overlap_se": [1e-3, 0.0],
        }
    )
    return sim, theory


def test_an_undefined_overlap_is_left_out_of_the_comparison_not_averaged_in():
    from hdlora.harness.agreement import compare_at_points, undefined_overlap

    sim, theory = _overlap_runs()
    table, _, _ = compare_at_points(
        undefined_overlap(sim), undefined_overlap(theory), KEYS, ["err"], partial=("overlap",)
    )
    ow = table[table["observable"] == "overlap"]
    # compared only where the theory defines o_w (lam = 1), over the two runs with ŵ != 0
    assert ow["lam"].tolist() == [1.0]
    assert ow["sim_inf"].iloc[0] == pytest.approx((0.90 + 0.92) / 2, rel=1e-12)
    assert ow["sim_inf_se"].iloc[0] == pytest.approx(np.std([0.90, 0.92], ddof=1) / np.sqrt(2))
    # the error is compared at both points over all runs
    err = table[table["observable"] == "err"].set_index("lam")["sim_inf"]
    assert err.loc[1.0] == pytest.approx(np.mean([0.50, 0.52, 0.61]), rel=1e-12)
    assert err.loc[2.0] == pytest.approx(np.mean([0.80, 0.81, 0.79]), rel=1e-12)


def test_a_failed_run_still_fails_its_point_when_another_observable_is_partial():
    from hdlora.harness.agreement import compare_at_points, undefined_overlap

    sim, theory = _overlap_runs()
    sim.loc[0, ["err", "q", "overlap"]] = np.nan  # a run that failed: NaN everywhere
    _, check, _ = compare_at_points(
        undefined_overlap(sim), undefined_overlap(theory), KEYS, ["err"], partial=("overlap",)
    )
    assert not check.passed and check.n_nonfinite >= 1


def test_a_pretraining_observable_is_compared_once_per_pretraining():
    """E is shared by every λ' of a run: three λ' must not make three comparisons of it."""
    from hdlora.harness.agreement import compare_at_points

    rng = np.random.default_rng(0)
    rows = []
    for lam in (0.1, 1.0):
        for seed in range(4):
            e = 0.4 + lam / 10 + 0.01 * rng.standard_normal()
            rows += [
                {
                    "lam": lam,
                    "lam_ft": lf,
                    "seed": seed,
                    "D": 100,
                    "test_error": e,
                    "ft_test_error": e - lf / 10 + 0.01 * rng.standard_normal(),
                }
                for lf in (0.1, 0.5, 2.0)
            ]
    sim = pd.DataFrame(rows)
    theory = sim.groupby(["lam", "lam_ft"], as_index=False)[["test_error", "ft_test_error"]].mean()
    theory = theory.assign(test_error_se=1e-3, ft_test_error_se=1e-3)
    table, check, _ = compare_at_points(
        sim, theory, ["lam", "lam_ft"], ["ft_test_error"], pretraining=("test_error",)
    )
    counts = table["observable"].value_counts()
    assert counts["test_error"] == 2 and counts["ft_test_error"] == 6
    pre = table[table["observable"] == "test_error"].set_index("lam")
    assert pre.loc[1.0, "dof"] == 3  # four runs, not twelve
    assert check.passed
