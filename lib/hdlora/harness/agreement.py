r"""Simulation against theory: finite-D extrapolation and an agreement criterion with power.

:func:`agreement_table` extrapolates the simulations of each point to D → ∞ (weighted
least-squares fit mean(D) = a + b/D of the seed means; with a single D, the value at that D)
and sets them beside the theory, one row per (point, observable). :func:`check_agreement`
applies a criterion fixed before looking at the data, with two parts:

1. **Each comparison** (a gross error at one point): z = (sim_∞ − theory)/√(se_sim² + se_th²),
   with the simulation's standard error from that point's own seeds, must stay below the
   Bonferroni threshold of Student's t with that point's degrees of freedom (family-wise error
   ``family_error`` over all comparisons).
2. **Each observable** (a bias common to all points — a factor, a normalisation): the mean
   relative deviation r̄ = mean_i (sim_∞,i − theory_i)/|theory_i| over the points with a
   non-zero theory value must stay below
   the Bonferroni threshold times its standard error. The points of a figure share their seeds
   (seed s draws one teacher for all of them), so their deviations are correlated: the
   standard error is the spread across seeds of each seed's mean deviation over the points
   (:func:`mean_deviation_se`; n_seeds − 1 degrees of freedom), which a shared finite-D effect
   such as the teacher's norm cannot fool. Without a ``seed`` column it falls back to the
   *pooled* relative variance of the seeds (many degrees of freedom, independent points
   assumed).

Non-finite values (theory, simulation or standard error) fail the check. Comparisons where both
the simulation and the theory are exactly zero (Q = M = 0 at the zero predictor, q = m = 0 at
λ' = ∞) carry no information: they are excluded before any floor and counted.
:func:`bias_power` reports the check's power: the smallest uniform relative bias of the theory
that it rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hdlora.params import Params

PARAM_COLUMNS = list(Params().to_dict())


def agreement_threshold(n_comparisons: int, dof: float, family_error: float = 0.01) -> float:
    r"""|t| threshold such that, if the theory is right, all ``n_comparisons`` Student-t statistics
    with ``dof`` degrees of freedom stay below it with probability ≥ 1 − ``family_error``
    (Bonferroni)."""
    if n_comparisons < 1:
        raise ValueError(f"n_comparisons must be >= 1, got n_comparisons={n_comparisons!r}")
    if not dof > 0:
        raise ValueError(f"dof must be > 0, got dof={dof!r}")
    return float(stats.t.ppf(1 - family_error / (2 * n_comparisons), dof))


def fit_intercept(x, y, se):
    """Weighted least squares y = a + b x (weights 1/se²); returns (a, se(a)). One point:
    (y, se). With x = 1/D this is the D → ∞ extrapolation of :func:`agreement_table`."""
    if len(x) == 1:
        return float(y[0]), float(se[0])
    if np.any(se <= 0) or not np.all(np.isfinite(se)):
        return float("nan"), float("nan")
    w = 1.0 / se**2
    A = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(A.T @ (w[:, None] * A))
    coef = cov @ (A.T @ (w * y))
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def pooled_relative_variance(
    sim: pd.DataFrame, keys: list[str], column: str, exclude: pd.DataFrame | None = None
):
    """Σ(n−1) s²/mean² / Σ(n−1) over the (point, D) groups of ``column`` with n ≥ 2 and a
    non-zero mean, leaving out the points listed in ``exclude`` (rows of ``keys``: those whose
    theory value is 0, where a relative spread means nothing); returns (relative variance,
    degrees of freedom)."""
    # only the columns used, consolidated: the tables of many records are fragmented frames,
    # and merging one made pandas print a PerformanceWarning per call in every notebook
    sim = sim[list(dict.fromkeys([*keys, "D", column]))].copy()
    if exclude is not None and len(exclude):
        drop = sim.merge(exclude[keys].drop_duplicates(), on=keys, how="left", indicator=True)
        sim = sim[(drop["_merge"] == "left_only").to_numpy()]
    g = sim.groupby([*keys, "D"], sort=False, dropna=False)[column].agg(["mean", "var", "count"])
    g = g[(g["count"] >= 2) & (g["mean"] != 0) & np.isfinite(g["mean"])]
    dof = float((g["count"] - 1).sum())
    if dof == 0:
        return float("nan"), 0.0
    return float(((g["count"] - 1) * g["var"] / g["mean"] ** 2).sum() / dof), dof


def seed_deviations(grp: pd.DataFrame, column: str, theory: float) -> dict[str, float]:
    r"""Per seed s, the relative deviation (y_s,∞ − theory)/|theory| of one point's ``column``,
    where y_s,∞ is the least-squares line y_s(D) = a + b/D through that seed's runs (its value
    when the point has one D); columns ``seed_rel_dev_{s}``. A seed that lacks one of the
    point's D gives NaN. Empty without a ``seed`` column or a relative scale (theory = 0).

    The seeds of a figure are shared by its points (seed s draws the same teacher at every
    point), so the points' deviations are correlated; :func:`check_agreement` averages these
    columns over the points seed by seed, and the spread of those averages across seeds (which
    are independent) is the standard error of the mean deviation whatever the correlation."""
    if "seed" not in grp or not theory or not np.isfinite(theory):
        return {}
    return {f"seed_rel_dev_{int(s)}": float((a - theory) / abs(theory))
            for s, a in seed_intercepts(grp, column).items()}  # fmt: skip


def seed_intercepts(grp: pd.DataFrame, column: str) -> dict:
    """Per seed of one point's runs ``grp``: the intercept a of the least-squares line
    ``column`` = a + b/D through that seed's runs (its mean when the point has one D); NaN when
    the seed lacks one of the point's D."""
    Ds = np.sort(grp["D"].unique())
    A = np.stack([np.ones(len(Ds)), 1.0 / Ds], axis=1)[:, : min(len(Ds), 2)]
    out = {}
    for s, runs in grp.groupby("seed", sort=True):
        y = runs.groupby("D")[column].mean().reindex(Ds).to_numpy(float)
        out[s] = np.linalg.lstsq(A, y, rcond=None)[0][0] if np.all(np.isfinite(y)) else np.nan
    return out


def agreement_table(
    sim: pd.DataFrame, theory: pd.DataFrame, keys: list[str], observables: list[str]
) -> pd.DataFrame:
    r"""Simulation (extrapolated to D → ∞) against theory, one row per (point, observable).

    ``theory`` may hold several Monte-Carlo seeds per point: the theory value is their mean and
    ``theory_se`` their standard error (or the solver's own ``<observable>_se`` with one seed).
    Columns: the ``keys``, ``observable``, ``sim_D{D}``, ``sim_se_D{D}`` (per D), ``sim_inf``,
    ``sim_inf_se`` (the point's own seeds), ``sim_inf_se_pooled`` (pooled relative variance),
    ``dof`` (the point's simulations minus the fitted coefficients), ``dof_pooled``, ``theory``,
    ``theory_se``, ``z``, ``rel_dev`` = (sim_inf − theory)/|theory| and ``exact_zero``.
    """
    missing = [c for c in [*keys, "D", *observables] if c not in sim]
    if missing:
        raise ValueError(f"sim lacks the columns {missing} (keys, D and the observables)")
    if sim.empty:
        raise ValueError("sim holds no run: there is nothing to compare with the theory")
    rows = []
    for col in observables:
        zero = theory[theory[col] == 0] if col in theory else None
        cv2, dof_pooled = pooled_relative_variance(sim, keys, col, exclude=zero)
        th = theory.groupby(keys, sort=False, dropna=False)
        for key, grp in sim.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            row = dict(zip(keys, key, strict=True))
            row["observable"] = col
            st = grp.groupby("D")[col].agg(["mean", "std", "count"]).sort_index()
            st["se"] = st["std"] / np.sqrt(st["count"])
            for D, s in st.iterrows():
                row[f"sim_D{D}"] = s["mean"]
                row[f"sim_se_D{D}"] = s["se"]
            x = 1.0 / st.index.to_numpy(float)
            y = st["mean"].to_numpy()
            row["sim_inf"], row["sim_inf_se"] = fit_intercept(x, y, st["se"].to_numpy())
            if not np.all(np.isfinite(grp[col].to_numpy(float))):  # a failed run fails the point
                row["sim_inf"] = row["sim_inf_se"] = float("nan")
            se_pooled = np.sqrt(cv2) * np.abs(y) / np.sqrt(st["count"].to_numpy())
            _, row["sim_inf_se_pooled"] = fit_intercept(x, y, se_pooled)
            row["dof"] = int(st["count"].sum()) - min(len(st), 2)
            row["dof_pooled"] = dof_pooled
            try:
                t = th.get_group(key)
            except KeyError:
                t = theory.iloc[:0]
            values = t[col].to_numpy(float)
            row["theory"] = float(values.mean()) if len(values) else float("nan")
            if len(values) >= 2:
                row["theory_se"] = float(values.std(ddof=1) / np.sqrt(len(values)))
            elif len(values) == 1 and f"{col}_se" in t:
                row["theory_se"] = float(t[f"{col}_se"].iloc[0])
            else:
                row["theory_se"] = float("nan")
            row["exact_zero"] = bool(row["theory"] == 0 and np.all(grp[col].to_numpy(float) == 0))
            row |= seed_deviations(grp, col, row["theory"])
            rows.append(row)
    out = pd.DataFrame(rows)
    out["z"] = (out["sim_inf"] - out["theory"]) / np.sqrt(
        out["sim_inf_se"] ** 2 + out["theory_se"] ** 2
    )
    scale = out["theory"].abs().where(out["theory"] != 0)  # no relative scale at theory = 0
    out["rel_dev"] = (out["sim_inf"] - out["theory"]) / scale
    return out


@dataclass
class AgreementCheck:
    """Outcome of :func:`check_agreement`.

    ``passed``; ``point_threshold`` (Bonferroni |t| of part 1 at the smallest dof) and
    ``failures`` (its rows above their threshold, plus non-finite rows); ``by_observable``
    (part 2: mean relative deviation, its pooled standard error, the statistic and threshold);
    ``n_compared``, ``n_excluded`` (exact zeros), ``n_nonfinite``."""

    passed: bool
    point_threshold: float
    failures: pd.DataFrame
    by_observable: pd.DataFrame
    n_compared: int
    n_excluded: int
    n_nonfinite: int

    def summary(self) -> str:
        if self.by_observable.empty:
            return (
                f"FAILED: no comparison with a finite standard error ({self.n_compared} "
                f"comparisons, {self.n_nonfinite} non-finite: a point needs at least two seeds)"
            )
        obs = self.by_observable
        worst = obs.loc[obs["statistic"].abs().fillna(np.inf).idxmax()]  # NaN: the worst
        return (
            f"{'PASSED' if self.passed else 'FAILED'}: {self.n_compared} comparisons "
            f"({self.n_excluded} exact zeros excluded, {self.n_nonfinite} non-finite); "
            f"per point |z| < {self.point_threshold:.2f} (smallest dof), {len(self.failures)} "
            f"failures; per observable largest |mean rel. dev.|/se = "
            f"{abs(worst['statistic']):.2f} ({worst['observable']}; threshold "
            f"{worst['threshold']:.2f}, se {worst['se_method']}, {worst['dof']:.0f} dof)"
        )


def mean_deviation_se(grp: pd.DataFrame) -> tuple[float, float, str, int]:
    r"""Standard error of the mean relative deviation r̄ over the rows of one observable (the
    part 2 of :func:`check_agreement`); returns (se, dof, method, number of seeds).

    ``"seeds"`` (when ≥ 2 seeds have :func:`seed_deviations`): r_s = mean over the points of
    seed s's deviation, se² = Var_s(r_s)/n_s + Σ_i (se_th,i/|th_i|)²/K², dof = n_s − 1. Seeds
    are independent, so this holds however the points' runs are correlated: a teacher shared by
    all points of a seed (its norm ‖w*‖²/D is off by √(2/D)) moves every point alike, and the
    pooled estimate below, which assumes independent points, would call that a bias of the
    theory. ``"pooled"`` (no seed columns): the pooled relative variance of the seeds, many
    degrees of freedom but blind to such correlations."""
    K = len(grp)
    scale = grp["theory"].abs()
    se_th2 = float(((grp["theory_se"] / scale) ** 2).sum()) / K**2
    cols = [c for c in grp if c.startswith("seed_rel_dev_")]
    r = grp[cols].mean(axis=0, skipna=True).to_numpy(float) if cols else np.array([])
    r = r[np.isfinite(r)]
    if len(r) >= 2:
        return float(np.sqrt(r.var(ddof=1) / len(r) + se_th2)), len(r) - 1.0, "seeds", len(r)
    se_sim2 = float(((grp["sim_inf_se_pooled"] / scale) ** 2).sum()) / K**2
    dof = float(grp["dof_pooled"].iloc[0])
    return float(np.sqrt(se_sim2 + se_th2)), dof, "pooled", len(r)


def check_agreement(agreement: pd.DataFrame, family_error: float = 0.01) -> AgreementCheck:
    """Apply the two-part criterion of the module docstring to an :func:`agreement_table`.
    It fails closed: an empty table, non-finite values or no standard error do not pass."""
    if agreement.empty:
        empty = pd.DataFrame()
        return AgreementCheck(False, float("nan"), empty, empty, 0, 0, 0)
    excluded = agreement["exact_zero"].astype(bool)
    rows = agreement[~excluded]
    needed = ["sim_inf", "sim_inf_se", "theory", "theory_se", "z"]
    finite = np.isfinite(rows[needed].to_numpy(float)).all(axis=1)
    finite &= rows["sim_inf_se"].to_numpy(float) > 0
    nonfinite = rows[~finite]
    rows = rows[finite]
    n_obs = max(rows["observable"].nunique(), 1)
    n = max(len(rows), 1)
    thr = np.array([agreement_threshold(n, max(d, 1), family_error / 2) for d in rows["dof"]])
    point_fail = rows[np.abs(rows["z"].to_numpy()) >= thr]
    per_obs = []
    relative = rows[rows["theory"] != 0]  # part 2 needs a relative scale
    for col, grp in relative.groupby("observable", sort=False):
        mean = float(grp["rel_dev"].mean())
        se, dof, method, n_seeds = mean_deviation_se(grp)
        threshold = agreement_threshold(n_obs, max(dof, 1), family_error / 2)
        per_obs.append(
            {
                "observable": col,
                "points": len(grp),
                "mean_rel_dev": mean,
                "se": se,
                "statistic": mean / se if se > 0 else float("nan"),
                "threshold": threshold,
                "dof": dof,
                "se_method": method,
                "seeds": n_seeds,
            }
        )
    by_obs = pd.DataFrame(per_obs)
    obs_ok = bool(len(by_obs) and np.all(np.abs(by_obs["statistic"]) < by_obs["threshold"]))
    failures = pd.concat([point_fail, nonfinite])
    return AgreementCheck(
        passed=bool(obs_ok and failures.empty),
        point_threshold=float(thr.max()) if len(thr) else float("nan"),
        failures=failures,
        by_observable=by_obs,
        n_compared=len(rows) + len(nonfinite),
        n_excluded=int(excluded.sum()),
        n_nonfinite=len(nonfinite),
    )


def with_replicon(agreement: pd.DataFrame, theory: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The agreement table with the theory's replicon verdicts of each point (columns
    ``replicon_stable``: both the pre-training (75) and the fine-tuning (78) replicon < 1 where
    computed, and ``ft_replicon``). Where a replicon is ≥ 1 the replica-symmetric prediction
    need not describe the minimisers a simulation finds, so the notebooks apply
    :func:`check_agreement` to the stable points and report the others apart."""
    cols = [c for c in ("replicon_stable", "ft_replicon_stable", "ft_replicon") if c in theory]
    th = theory[keys + cols].drop_duplicates(subset=keys)
    stable = np.ones(len(th), bool)
    for c in ("replicon_stable", "ft_replicon_stable"):
        if c in th:
            stable &= ~(th[c].astype("boolean") == False).fillna(False).to_numpy()  # noqa: E712
    th = th.assign(stable=stable)[
        keys + ["stable"] + (["ft_replicon"] if "ft_replicon" in th else [])
    ]
    out = agreement.merge(th, on=keys, how="left")
    return out.rename(columns={"stable": "replicon_stable"})


def stable_agreement(agreement: pd.DataFrame) -> tuple[AgreementCheck, AgreementCheck | None]:
    """:func:`check_agreement` on the replicon-stable rows of a :func:`with_replicon` table (the
    check a notebook requires), and on the other rows (reported; None when there are none)."""
    stable = agreement["replicon_stable"].astype(bool)
    others = agreement[~stable]
    return check_agreement(agreement[stable]), (check_agreement(others) if len(others) else None)


#: the columns a notebook shows of an agreement table, after its keys
AGREEMENT_COLUMNS = (
    "observable",
    "sim_inf",
    "sim_inf_se",
    "theory",
    "theory_se",
    "z",
    "ft_replicon",
)


#: below this fine-tuning norm q = ‖ŵ‖²/D the LoRA vector is zero (the uninformed fixed point, a
#: fit that stayed at 0) and its direction, hence the overlap o_w, is undefined
Q_ZERO = 1e-6


def undefined_overlap(df: pd.DataFrame, q_zero: float = Q_ZERO) -> pd.DataFrame:
    """``df`` with ``overlap`` (and ``overlap_se``) set to NaN where ``q`` < ``q_zero``: o_w is
    the cosine of ŵ with w*, which has no value at ŵ = 0 (a theory point on the uninformed
    fixed point, a run whose LoRA stayed at 0, λ' = ∞). NaN keeps it out of every mean."""
    out = df.copy()
    zero = out["q"].to_numpy(float) < q_zero
    for col in ("overlap", "overlap_se"):
        if col in out:
            out.loc[zero, col] = np.nan
    return out


def compare_at_points(
    sim: pd.DataFrame,
    theory: pd.DataFrame,
    keys: list[str],
    observables: list[str],
    partial: tuple[str, ...] = (),
    pretraining: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, AgreementCheck, AgreementCheck | None]:
    """A figure's comparison in one call: the :func:`agreement_table` of ``sim`` against the
    theory at the simulated points, with the replicon verdicts (:func:`with_replicon`), and
    :func:`stable_agreement` on it (the check required, the one reported).

    ``partial``: observables that may be undefined (NaN, e.g. o_w after
    :func:`undefined_overlap`). Each is compared at the points where the theory defines it,
    over the runs that define it; an undefined value is left out, never counted as a failed
    run (a run that failed is NaN in every observable and stays in ``observables``).

    ``pretraining``: observables of the pre-training alone (E, L), which every fine-tuning
    ridge ``lam_ft`` of a run shares: compared once per pre-training (``keys`` without
    ``lam_ft``), with the pre-training's replicon verdict only, not once per λ' as if the
    repeated rows were independent comparisons."""
    tables = []
    if observables:
        tables.append(with_replicon(agreement_table(sim, theory, keys, observables), theory, keys))
    for col in partial:
        th = theory[theory[col].notna()]
        runs = sim[sim[col].notna()].merge(th[keys].drop_duplicates(), on=keys)
        if len(runs):
            tables.append(with_replicon(agreement_table(runs, th, keys, [col]), theory, keys))
    if pretraining:
        pre = [k for k in keys if k != "lam_ft"]
        runs = sim.drop_duplicates(subset=[*pre, "D", "seed"])
        th = theory.drop_duplicates(subset=pre).drop(
            columns=["ft_replicon_stable", "ft_replicon"], errors="ignore"
        )
        tables.append(with_replicon(agreement_table(runs, th, pre, list(pretraining)), th, pre))
    table = pd.concat(tables, ignore_index=True)
    return (table, *stable_agreement(table))


def agreement_summary(check: AgreementCheck, unstable: AgreementCheck | None) -> pd.DataFrame:
    """The verdicts a notebook shows under its agreement table: one row for the
    replicon-stable points (required) and one for the others (reported), when there are any."""
    rows = [{"points": "replicon-stable (required)", "verdict": check.summary()}]
    if unstable is not None:  # the replica-symmetric prediction need not hold there
        rows.append({"points": "replicon >= 1 (reported)", "verdict": unstable.summary()})
    return pd.DataFrame(rows)


def inject_bias(theory: pd.DataFrame, observables: list[str], bias: float) -> pd.DataFrame:
    """The theory table with every observable multiplied by (1 + ``bias``)."""
    out = theory.copy()
    for col in observables:
        out[col] = out[col] * (1 + bias)
        if f"{col}_se" in out:
            out[f"{col}_se"] = out[f"{col}_se"] * abs(1 + bias)
    return out


def bias_power(
    sim: pd.DataFrame,
    theory: pd.DataFrame,
    keys: list[str],
    observables: list[str],
    family_error: float = 0.01,
    biases=None,
) -> float:
    """The smallest uniform relative bias b (of either sign) of the theory table that
    :func:`check_agreement` rejects, scanned over ``biases`` (default 0.5 % … 50 %); NaN if none."""
    biases = np.geomspace(0.005, 0.5, 41) if biases is None else np.asarray(biases)
    for b in biases:
        for sign in (1, -1):
            biased = inject_bias(theory, observables, sign * b)
            check = check_agreement(agreement_table(sim, biased, keys, observables), family_error)
            if not check.passed:
                return float(b)
    return float("nan")
