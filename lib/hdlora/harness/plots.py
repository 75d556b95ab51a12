"""Small plotting helpers shared by the figure notebooks (matplotlib).

* :class:`InfAxis`: a log axis of a ridge (λ or λ') with the value ∞ drawn at its right end;
* :func:`seed_means`: mean, standard error and count of a column over seeds, per point;
* :func:`draw_curve`: a theory curve whose replicon-unstable points are drawn hollow and whose
  non-converged points are drawn as crosses.
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
    """Per group of ``by``: ``mean``, ``se`` (standard error over the rows) and ``n``."""
    g = df.groupby(by, sort=False, dropna=False)[column]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n"])
    return out.drop(columns="sd")


def draw_curve(
    ax, x, y, stable=None, converged=None, *, color=None, label=None, marker="o", ms=3, **kw
):
    """A line through (x, y) with markers: hollow where ``stable`` is False (a replicon ≥ 1:
    the replica-symmetric prediction need not hold there), a cross where ``converged`` is False
    (the solver stopped before its tolerance)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    (line,) = ax.plot(x, y, "-", color=color, label=label, **kw)
    ok = np.ones(len(x), bool) if stable is None else np.asarray(stable, bool)
    conv = np.ones(len(x), bool) if converged is None else np.asarray(converged, bool)
    c = line.get_color()
    ax.plot(x[ok & conv], y[ok & conv], marker, color=c, ms=ms, ls="none")
    if (~ok & conv).any():
        ax.plot(x[~ok & conv], y[~ok & conv], marker, color=c, ms=ms + 2, mfc="none", ls="none")
    if (~conv).any():
        ax.plot(x[~conv], y[~conv], "x", color=c, ms=ms + 3, ls="none")
    return line
