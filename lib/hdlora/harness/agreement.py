r"""Simulation against theory: finite-D extrapolation and the agreement criterion.

:func:`agreement_table` extrapolates the simulations to D → ∞ (weighted fit a + b/D of the seed
means) and compares them with the theory, one row per (point, observable);
:func:`check_agreement` applies a criterion fixed before looking at the data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hdlora.params import Params

PARAM_COLUMNS = list(Params().to_dict())


def agreement_threshold(n_comparisons: int, dof: float, family_error: float = 0.01) -> float:
    r"""|t| threshold such that, if the theory is right, all ``n_comparisons`` Student-t statistics
    with ``dof`` degrees of freedom stay below it with probability ≥ 1 − ``family_error``
    (Bonferroni). Decided before looking at the data; small dof (few seeds) gives a weak test."""
    from scipy import stats

    return float(stats.t.ppf(1 - family_error / (2 * n_comparisons), dof))


def extrapolate(sim: pd.DataFrame, column: str, by: list[str] | None = None) -> pd.DataFrame:
    r"""Per point: the mean ± standard error over seeds at each D, and the weighted least-squares
    fit mean(D) = a + b/D, whose intercept a ± se(a) is the D → ∞ value.

    Returns one row per point with ``{column}_D{D}``, ``{column}_se_D{D}`` for each D,
    ``{column}_inf`` and ``{column}_inf_se`` (NaN with a single D), and ``dof`` (number of
    simulations minus the number of fitted coefficients).
    """
    by = by or PARAM_COLUMNS
    out = []
    for key, grp in sim.groupby(by, sort=False, dropna=False):
        stats = grp.groupby("D")[column].agg(["mean", "std", "count"]).sort_index()
        stats["se"] = stats["std"] / np.sqrt(stats["count"])
        row = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        for D, st in stats.iterrows():
            row[f"{column}_D{D}"] = st["mean"]
            row[f"{column}_se_D{D}"] = st["se"]
        row["dof"] = int(stats["count"].sum()) - min(len(stats), 2)
        if len(stats) >= 2:
            x = 1.0 / stats.index.to_numpy(float)
            w = 1.0 / np.maximum(stats["se"].to_numpy(), 1e-12) ** 2
            A = np.stack([np.ones_like(x), x], axis=1)
            cov = np.linalg.inv(A.T @ (w[:, None] * A))
            coef = cov @ (A.T @ (w * stats["mean"].to_numpy()))
            row[f"{column}_inf"] = coef[0]
            row[f"{column}_inf_se"] = float(np.sqrt(cov[0, 0]))
        else:
            row[f"{column}_inf"] = np.nan
            row[f"{column}_inf_se"] = np.nan
        out.append(row)
    return pd.DataFrame(out)


def agreement_table(
    sim: pd.DataFrame, theory: pd.DataFrame, keys: list[str], observables: list[str]
) -> pd.DataFrame:
    r"""Simulation (extrapolated to D → ∞) against theory, one row per (point, observable).

    ``theory`` may hold several Monte-Carlo seeds per point: the theory value is their mean and
    ``theory_se`` their standard error. Columns: the ``keys``, ``observable``, ``sim_D{D}``,
    ``sim_se_D{D}``, ``sim_inf``, ``sim_inf_se``, ``dof``, ``theory``, ``theory_se`` and
    ``z = (sim_inf − theory)/√(sim_inf_se² + theory_se²)``.
    """
    tables = []
    for col in observables:
        ex = extrapolate(sim, col, by=keys)
        th = theory.groupby(keys, sort=False, dropna=False)[col].agg(["mean", "std", "count"])
        th = th.reset_index().rename(columns={"mean": "theory", "std": "theory_std"})
        m = ex.merge(th, on=keys)
        m["theory_se"] = m["theory_std"].fillna(0.0) / np.sqrt(m["count"])
        m["z"] = (m[f"{col}_inf"] - m["theory"]) / np.sqrt(
            m[f"{col}_inf_se"] ** 2 + m["theory_se"] ** 2
        )
        m = m.rename(
            columns={
                c: c.replace(f"{col}_", "sim_", 1) for c in m.columns if c.startswith(f"{col}_")
            }
        )
        m.insert(len(keys), "observable", col)
        tables.append(m.drop(columns=["theory_std", "count"]))
    return pd.concat(tables, ignore_index=True)


def check_agreement(
    agreement: pd.DataFrame, family_error: float = 0.01
) -> tuple[float, pd.DataFrame]:
    """The Bonferroni Student-t threshold of :func:`agreement_threshold` for the comparisons of
    an :func:`agreement_table` whose simulations vary (a zero spread, e.g. Q = 0 exactly at the
    zero predictor, has no t statistic), and the rows above it."""
    valid = agreement[agreement["sim_inf_se"] > 0]
    threshold = agreement_threshold(len(valid), valid["dof"].min(), family_error)
    return threshold, valid[np.abs(valid["z"]) >= threshold]
