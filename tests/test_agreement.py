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


def synthetic(rng, n_points=7, Ds=(40, 80), n_seeds=4, cv=(0.06, 0.15), extra=None):
    """Simulations with a 1/D finite-size trend and per-seed relative noise ``cv`` (the smoke
    profile's spreads: ~6 % on errors, ~15 % on q), and the exact D → ∞ theory."""
    truth = {"err": rng.uniform(0.2, 1.0, n_points), "q": rng.uniform(0.3, 0.9, n_points)}
    rows, th = [], []
    for i in range(n_points):
        lam = 0.01 * (i + 1)
        th += [{"lam": lam, "err": truth["err"][i], "q": truth["q"][i], "err_se": 0.0, "q_se": 0.0}]
        for D in Ds:
            for s in range(n_seeds):
                row = {"lam": lam, "D": D, "seed": s}
                for k, c in zip(OBS, cv, strict=True):
                    mean = truth[k][i] * (1 + 3.0 / D)  # the finite-D bias, removed by the fit
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


def test_right_theory_passes_and_ten_percent_bias_fails():
    """The smoke profile's design (8 points, D = 40, 80, 6 seeds each), 40 synthetic data sets:
    the right theory passes (the family-wise error is 1 %: expected 0.4 false alarms, 2
    allowed) and a uniform ±10 % bias of the theory fails in at least 95 % of the 80 cases."""
    rng = np.random.default_rng(0)
    false_alarms, missed = 0, 0
    for _ in range(40):
        sim, theory = synthetic(rng, n_points=8, n_seeds=6)
        if not check_agreement(agreement_table(sim, theory, KEYS, OBS)).passed:
            false_alarms += 1
        for b in (0.1, -0.1):
            biased = inject_bias(theory, OBS, b)
            if check_agreement(agreement_table(sim, biased, KEYS, OBS)).passed:
                missed += 1
    assert false_alarms <= 2
    assert missed <= 4


def test_power_is_reported_and_below_ten_percent():
    sim, theory = synthetic(np.random.default_rng(1), n_points=8, n_seeds=6)
    power = bias_power(sim, theory, KEYS, OBS)
    assert 0 < power <= 0.10


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
