r"""Tables of simulations and theory over lists of points, cached in ``data/``, and the
finite-D extrapolation used to compare them.

Each function returns a tidy pandas DataFrame: one row per (point, D, seed) for simulations, one
row per point for theory, parameters as columns (:meth:`Observables.to_dict`). Expensive
compute is cached apart from plotting: :func:`cached` reuses a CSV when its ``profile`` column
matches, so that restyling a plot never reruns a simulation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hdlora.io import write_table
from hdlora.params import Params
from hdlora.progress import progress_enabled
from hdlora.simulate import simulate

log = logging.getLogger(__name__)

PARAM_COLUMNS = list(Params().to_dict())


def cached(
    path: Path, compute: Callable[[], pd.DataFrame], profile: str, recompute: bool = False
) -> pd.DataFrame:
    """Load ``path`` if it exists and was made with ``profile``; else compute, tag and write it."""
    path = Path(path)
    if path.exists() and not recompute:
        df = pd.read_csv(path)
        if "profile" in df and (df["profile"] == profile).all():
            log.info("loaded %s", path)
            return df
    df = compute().assign(profile=profile)
    write_table(df, path)
    return df


def simulation_table(
    points: Iterable[Params],
    Ds: Iterable[int],
    seeds: Iterable[int],
    *,
    finetune: bool = True,
    progress: bool | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Simulate every (point, D, seed); ``kwargs`` go to :func:`hdlora.simulate.simulate`."""
    jobs = [(p, D, s) for p in points for D in Ds for s in seeds]
    rows = []
    for p, D, s in tqdm(jobs, desc="simulations", disable=not progress_enabled(progress)):
        obs = simulate(p, D, seed=s, finetune=finetune, progress=False, **kwargs)
        if not obs.converged:
            log.warning("simulation not converged: %s D=%d seed=%d", p, D, s)
        rows.append(obs.to_dict())
    return pd.DataFrame(rows)


def theory_table(
    points: Iterable[Params], solver: Callable, *, progress: bool | None = None, **kwargs
) -> pd.DataFrame:
    """Solve ``solver(params, **kwargs)`` (returning an Observables) at every point."""
    rows = []
    points = list(points)
    show = progress_enabled(progress)
    for p in tqdm(points, desc="theory", disable=not show):
        rows.append(solver(p, progress=show, **kwargs).to_dict())
    return pd.DataFrame(rows)


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
