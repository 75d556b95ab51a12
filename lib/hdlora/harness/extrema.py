"""The location of a curve's minimum or maximum, by a local fit, with its standard error.

A theory curve is a list of points (x_i, y_i ± s_i) on a grid. Reading its optimum off the grid
gives a grid point, not a location: :func:`locate_extremum` fits a parabola y = a u² + b u + c
(in u = log x on a log axis) by weighted least squares to the ``2 * half_width + 1`` points
around the grid optimum and returns its vertex u* = −b/(2a). The standard error of u* comes
from the covariance of (a, b) by the delta method, ∇u* = (b/(2a²), −1/(2a)); the covariance is
scaled by the reduced χ² of the fit when it exceeds 1 (the grid's curvature beyond the
parabola, or errors larger than the stated ones, widen the error; errors correlated along a
curve — common random numbers — make the stated ones conservative). An optimum at the edge of
the grid, fewer than 3 points, a fit without curvature of the right sign, or a vertex outside
the fitted points is not a location: the record says so (``located`` False, ``note``) and
gives the grid point with a NaN standard error.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Extremum:
    """A located minimum or maximum: ``x ± x_se`` (on the curve's axis), the fitted value
    ``y ± y_se`` there, the grid point it was started from, and whether it is a location."""

    kind: str
    x: float
    x_se: float
    y: float
    y_se: float
    grid_x: float
    located: bool
    n_points: int
    note: str = ""
    log: bool = True  # the axis the parabola was fitted on

    def agrees_with(self, value: float, n_se: float = 2.0) -> bool:
        """Whether ``value`` (a paper's reading) lies within ``n_se`` standard errors of the
        located optimum, on the fit's axis (relative on a log axis); False when not located."""
        if not self.located:
            return False
        if self.log:
            return abs(math.log(self.x / value)) <= n_se * self.x_se / self.x
        return abs(self.x - value) <= n_se * self.x_se


def _fit(u, y, w):
    """Weighted least squares of y on (u², u, 1): coefficients, covariance, reduced χ²."""
    X = np.column_stack([u * u, u, np.ones_like(u)])
    A = X.T @ (X * w[:, None])
    cov = np.linalg.inv(A)
    coef = cov @ (X.T @ (w * y))
    dof = len(u) - 3
    chi2 = float(((y - X @ coef) ** 2 * w).sum()) / dof if dof > 0 else math.nan
    return coef, cov, chi2


def locate_extremum(
    x, y, y_se=None, *, kind: str = "min", log: bool = True, half_width: int = 2
) -> Extremum:
    """The minimum (``kind="min"``) or maximum of the curve (x, y ± y_se) by a local
    parabola, see the module docstring. ``x`` increasing, > 0 when ``log`` (non-finite points
    are dropped; fewer than 3 left: not a location); ``y_se`` None or zeros: unit weights (the
    error then comes from the residuals alone)."""
    if kind not in ("min", "max"):
        raise ValueError(f"kind must be 'min' or 'max', got kind={kind!r}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    se = np.zeros_like(y) if y_se is None else np.asarray(y_se, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, se = x[keep], y[keep], se[keep]
    if np.any(np.diff(x) <= 0) or (log and len(x) and x[0] <= 0):
        raise ValueError(f"need increasing x (> 0 on a log axis), got x={x}")
    if len(x) == 0:
        return Extremum(
            kind=kind,
            x=math.nan,
            x_se=math.nan,
            y=math.nan,
            y_se=math.nan,
            grid_x=math.nan,
            located=False,
            n_points=0,
            note="no finite point",
            log=log,
        )
    i = int(np.argmin(y) if kind == "min" else np.argmax(y))
    grid = dict(
        kind=kind,
        x=float(x[i]),
        x_se=math.nan,
        y=float(y[i]),
        y_se=float(se[i]),
        grid_x=float(x[i]),
        located=False,
        log=log,
    )
    if len(x) < 3:
        return Extremum(**grid, n_points=len(x), note="fewer than 3 points")
    if i in (0, len(x) - 1):
        return Extremum(**grid, n_points=1, note="at the edge of the grid")
    lo, hi = max(0, i - half_width), min(len(x), i + half_width + 1)
    u = np.log(x[lo:hi]) if log else x[lo:hi]
    u0 = u[i - lo]  # centred: a better-conditioned fit
    w = 1.0 / se[lo:hi] ** 2 if np.all(se[lo:hi] > 0) else np.ones(hi - lo)
    coef, cov, chi2 = _fit(u - u0, y[lo:hi], w)
    a, b, c = coef
    if a <= 0 if kind == "min" else a >= 0:
        return Extremum(**grid, n_points=hi - lo, note="no curvature of the right sign")
    if np.all(se[lo:hi] > 0):
        cov = cov * max(1.0, chi2) if np.isfinite(chi2) else cov
    else:
        cov = cov * (chi2 if np.isfinite(chi2) else math.nan)
    v = -b / (2 * a)
    if not (u[0] - u0 <= v <= u[-1] - u0):
        return Extremum(**grid, n_points=hi - lo, note="vertex outside the fitted points")
    grad = np.array([b / (2 * a * a), -1 / (2 * a)])
    v_se = math.sqrt(max(float(grad @ cov[:2, :2] @ grad), 0.0))
    g_y = np.array([v * v, v, 1.0])  # y at the vertex; its error at fixed v (first order)
    y_star = float(g_y @ coef)
    y_star_se = math.sqrt(max(float(g_y @ cov @ g_y), 0.0))
    # 10 significant digits: a located x keys the tables computed at it (the inset of Fig. 1,
    # the right panel of Fig. 6), and the last bits of a least-squares fit move with the BLAS's
    # thread count; its standard error is many orders of magnitude above the rounding
    x_star = float(f"{math.exp(u0 + v) if log else u0 + v:.10g}")
    x_se = x_star * v_se if log else v_se
    return Extremum(
        kind=kind,
        x=x_star,
        x_se=x_se,
        y=y_star,
        y_se=y_star_se,
        grid_x=float(x[i]),
        located=True,
        n_points=hi - lo,
        log=log,
    )
