"""Plotting helpers shared by the figure notebooks (matplotlib): one style for every figure.

The marks mean the same in every figure, and :class:`Legend` gives each kind drawn an entry:

* a line: the theory (state evolution); a hollow circle on it: a point whose replicon is ≥ 1
  (the replica-symmetric prediction need not hold there); a cross: a point whose solver stopped
  before its tolerance;
* a filled marker with error bars: simulations (mean over runs ± standard error; the legend
  names D and the runs); a hollow one: simulations where the theory's replicon is ≥ 1, drawn
  apart (the simulation's lowest minimum need not be the one the theory describes); a white
  diamond: the uncalibrated baseline (Fig. 6);
* a dashed black line: the Bayes-optimal error; thin dark-red dashes: a located optimum.

Legends go below the axes (``layout="constrained"``, :meth:`Legend.draw`), off the data.

* :class:`InfAxis`: a log axis of a ridge (λ or λ') with the value ∞ drawn at its right end;
* :func:`seed_means`: mean, standard error and count of a column over seeds, per point;
* :func:`draw_curve`: a theory curve with its replicon-unstable and non-converged points marked;
* :func:`draw_simulation`: simulation means with error bars in the shared style, hollow where
  the theory is replica-unstable (:func:`stable_at`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


class InfAxis:
    """A log x-axis over [lo, hi] with an extra tick "∞" at ``gap`` × hi (where λ = ∞ goes)."""

    def __init__(self, lo: float, hi: float, gap: float = 4.0) -> None:
        if not 0 < lo < hi:
            raise ValueError(f"need 0 < lo < hi, got lo={lo!r}, hi={hi!r}")
        self.lo, self.hi, self.x_inf = lo, hi, hi * gap

    def x(self, values):
        """Positions of ``values`` (∞ → the ∞ tick)."""
        v = np.asarray(values, dtype=float)
        return np.where(np.isfinite(v), v, self.x_inf)

    def apply(self, ax, label: str) -> None:
        """Log scale, decade ticks within [lo, hi], the ∞ tick, limits and the label."""
        ax.set_xscale("log")
        decades = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
        ticks = [10.0**k for k in decades if self.lo <= 10.0**k <= self.hi]
        labels = [f"$10^{{{round(math.log10(t))}}}$" for t in ticks] + ["$\\infty$"]
        ax.set_xticks([*ticks, self.x_inf], labels)
        ax.minorticks_off()
        ax.set_xlim(self.lo / 1.5, self.x_inf * 1.5)
        ax.set_xlabel(label)


def seed_means(df: pd.DataFrame, by: list[str], column: str) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``sd`` (standard deviation across the rows, the error bar
    of App. D), ``se`` (standard error, sd/√n) and ``n``, the rows where ``column`` is defined:
    an undefined value (NaN, e.g. o_w at ŵ = 0) is left out of the mean and of n, never
    averaged in."""
    g = df.groupby(by, sort=False, dropna=False)[column]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n"])
    return out


def broken_at(x, y, branch):
    """(x, y) with a NaN inserted between consecutive points of different ``branch`` (e.g. the
    fixed point the free entropy selects), so that a first-order jump is drawn as a break, not
    as a sloped line through a value no fixed point takes."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    branch = np.array([str(b) for b in branch])  # a NaN branch (none recorded) equals itself
    cut = np.flatnonzero(branch[1:] != branch[:-1]) + 1
    return np.insert(x, cut, np.nan), np.insert(y, cut, np.nan)


def draw_curve(
    ax, x, y, stable=None, converged=None, *, branch=None, color=None, label=None, legend=None, **kw
):
    """A theory line through (x, y): a hollow circle where ``stable`` is False (a replicon ≥ 1),
    a cross where ``converged`` is False; the line is broken there (a cross is not a result),
    and between points of different ``branch`` (:func:`broken_at`). ``legend``: a
    :class:`Legend` that records the kinds drawn. Returns the line."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.ones(len(x), bool) if stable is None else np.asarray(stable, bool)
    conv = np.ones(len(x), bool) if converged is None else np.asarray(converged, bool)
    shown = np.where(conv, y, np.nan)
    lx, ly = (x, shown) if branch is None else broken_at(x, shown, branch)
    (line,) = ax.plot(lx, ly, "-", color=color, label=label, lw=1.4, **kw)
    c = line.get_color()
    if (~ok & conv).any():
        ax.plot(x[~ok & conv], y[~ok & conv], "o", color=c, ms=5, mfc="white", ls="none", zorder=3)
    if (~conv).any():
        ax.plot(x[~conv], y[~conv], "x", color=c, ms=6, ls="none", zorder=3)
    if legend is not None:
        legend.curve(line, unstable=bool((~ok & conv).any()), not_converged=bool((~conv).any()))
    return line


def stable_at(x, x_theory, stable_theory) -> np.ndarray:
    """Whether the theory is replica-stable at each simulated x: the ``stable_theory`` flag of
    the theory point nearest to it (``x_theory``, in the coordinate the points are drawn in)."""
    x, xt = np.asarray(x, float), np.asarray(x_theory, float)
    flags = np.asarray(stable_theory, bool)
    if len(xt) == 0:
        return np.ones(len(x), bool)
    finite = np.where(np.isfinite(xt), xt, np.nan)
    nearest = [int(np.nanargmin(np.abs(finite - v))) if np.isfinite(v) else 0 for v in x]
    return flags[nearest]


def draw_simulation(
    ax, x, mean, err, *, color, marker="s", legend=None, kind=None, stable=None, **kw
):
    """Simulation means ± ``err`` in the shared style: filled markers with a black edge, no larger
    than their error bars, drawn above the lines. ``kind``: the legend's text for this marker
    (default: the legend's ``simulation``). ``stable`` (a flag per point, e.g. from
    :func:`stable_at`): where it is False the theory's replicon is ≥ 1, the lowest minimum the
    simulation finds need not be the one the theory describes, and the point is drawn apart,
    hollow."""
    x, mean, err = (np.asarray(v, float) for v in (x, mean, err))
    ok = np.ones(len(x), bool) if stable is None else np.asarray(stable, bool)
    style = dict(color=color, ms=4, mew=0.5, capsize=2.5, elinewidth=1.0, zorder=4, **kw)
    for part, face in ((ok, None), (~ok, "white")):
        if part.any():
            face_kw = {} if face is None else {"mfc": face}
            ax.errorbar(x[part], mean[part], err[part], fmt=marker, mec="k", **face_kw, **style)
    if legend is not None:
        legend.simulations.setdefault(marker, kind or legend.simulation or "simulation")
        legend.simulation_apart |= bool((~ok).any())


class Legend:
    """The legend of one figure: the curves by name, then one entry per kind of mark drawn
    (theory, simulations with their D and runs, replicon ≥ 1, not converged, extras such as the
    Bayes-optimal line or the baseline), placed below the axes."""

    def __init__(self, simulation: str | None = None) -> None:
        self.simulation = simulation  # e.g. "simulation, D = 100, 2 runs: mean ± se"
        self.simulations: dict[str, str] = {}  # marker -> text
        self.handles: list = []
        self.extras: list = []
        self.unstable = self.not_converged = self.simulation_apart = False

    def curve(self, line, *, unstable: bool = False, not_converged: bool = False) -> None:
        """Record a theory line (its label once) and the kinds of marks on it."""
        label = line.get_label()
        if not label.startswith("_") and label not in [h.get_label() for h in self.handles]:
            self.handles.append(line)
        self.unstable |= unstable
        self.not_converged |= not_converged

    def add(self, handle) -> None:
        """An extra entry (a proxy artist or a drawn line with a label)."""
        self.extras.append(handle)

    def kinds(self) -> list:
        """Proxy artists, in grey, for every kind of mark drawn."""
        from matplotlib.lines import Line2D

        out = [Line2D([], [], color="0.35", lw=1.4, label="theory (state evolution)")]
        for marker, text in self.simulations.items():
            out.append(
                Line2D([], [], color="0.6", marker=marker, mec="k", ms=4, ls="none", label=text)
            )
        if self.unstable:
            out.append(
                Line2D(
                    [],
                    [],
                    color="0.35",
                    marker="o",
                    mfc="white",
                    ms=5,
                    ls="none",
                    label="replicon ≥ 1 (RS prediction need not hold)",
                )
            )
        if self.simulation_apart:
            out.append(
                Line2D(
                    [],
                    [],
                    color="0.6",
                    marker="s",
                    mfc="white",
                    mec="k",
                    ms=4,
                    ls="none",
                    label="simulation where the replicon ≥ 1 (drawn apart)",
                )
            )
        if self.not_converged:
            out.append(
                Line2D(
                    [], [], color="0.35", marker="x", ms=6, ls="none", label="theory not converged"
                )
            )
        return out

    def draw(self, fig, ncol: int = 4, fontsize: float = 7.5) -> None:
        """Place the legend below the axes (the figure needs ``layout="constrained"``)."""
        handles = [*self.handles, *self.kinds(), *self.extras]
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(ncol, len(handles)),
            fontsize=fontsize,
            frameon=False,
        )


def simulation_text(sim: pd.DataFrame, by: list[str], what: str = "mean ± sd across runs") -> str:
    """The legend's text for simulations: their D and the runs per point (from the table
    itself), e.g. "simulation, D = 100, 4 runs: mean ± sd across runs" (App. D's error bars)."""
    Ds = sorted({int(d) for d in sim["D"].dropna()})
    runs = sim.groupby([*by, "D"], dropna=False).size()
    n = f"{runs.min()}" if runs.min() == runs.max() else f"{runs.min()}–{runs.max()}"
    plural = "" if runs.max() == 1 else "s"
    return f"simulation, D = {', '.join(map(str, Ds))}, {n} run{plural}: {what}"
