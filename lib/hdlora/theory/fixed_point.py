r"""A fixed-point iterator, kept apart from the update maps of the state evolutions.

Solves x = G(x) for a deterministic map G on R^k (the state evolutions use one fixed set of
Monte-Carlo samples per solve, so G is deterministic and can be accelerated). Anderson mixing
(type II, memory m) with damping β:

    f_k = G(x_k) − x_k,   γ = argmin ‖f_k − ΔF γ‖,   x_{k+1} = x_k + β f_k − (ΔX + β ΔF) γ,

safeguarded: a proposal outside the domain (``project`` returns None) resets the memory and
falls back to the damped step x_k + β f_k; a point where G raises :class:`OutOfDomain` is
replaced by the midpoint towards the last good iterate.

Convergence: max_i |f_i| / max(1, |x_i|) ≤ ``tol``. The result says whether it converged; when it
did not, a :class:`hdlora.diagnostics.ConvergenceWarning` is raised as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hdlora.diagnostics import ConvergenceWarning, warn
from hdlora.progress import ConvergenceBar


class OutOfDomain(ValueError):
    """Raised by a map G at a point where it is not defined (the iterator then backtracks)."""


@dataclass
class FixedPointResult:
    """``x`` the last iterate, ``converged``, ``n_iter`` map evaluations, ``residual`` the final
    scaled residual, ``message``."""

    x: np.ndarray
    converged: bool
    n_iter: int
    residual: float
    message: str


def _scaled(f, x):
    return float(np.max(np.abs(f) / np.maximum(1.0, np.abs(x))))


def _next_iterate(x, f, dX: list, dF: list, damping: float, project):
    """The Anderson proposal from the memory (dX, dF); outside the domain (or non-finite) the
    memory is cleared and the damped step x + β f is halved until it is admissible (None when
    no step down to 1e-6 is)."""
    proposal = None
    if dX:
        DX, DF = np.array(dX).T, np.array(dF).T
        gamma, *_ = np.linalg.lstsq(DF, f, rcond=None)
        proposal = project(x + damping * f - (DX + damping * DF) @ gamma)
        if proposal is not None and not np.all(np.isfinite(proposal)):
            proposal = None
    if proposal is None:
        dX.clear()
        dF.clear()
        proposal = project(x + damping * f)
        step = damping
        while proposal is None and step > 1e-6:
            step /= 2
            proposal = project(x + step * f)
    return proposal


def solve(
    G: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
    memory: int = 4,
    damping: float = 0.5,
    project: Callable[[np.ndarray], np.ndarray | None] | None = None,
    progress: bool | None = None,
    desc: str = "fixed point",
    warn_failure: bool = True,
) -> FixedPointResult:
    """Anderson-accelerated damped iteration of x ↦ G(x) from x0 (see module docstring).

    ``warn_failure=False`` only for internal preliminary solves whose failure is handled by the
    caller (e.g. a coarse stage that only provides a starting point)."""
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got tol={tol!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got max_iter={max_iter!r}")
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got damping={damping!r}")
    project = project or (lambda y: y)
    x = np.asarray(x0, dtype=float).copy()
    dX, dF = [], []
    x_prev = f_prev = None
    n_eval = 0
    res = np.inf
    message = "max_iter reached"
    bar = ConvergenceBar(tol, desc, progress)
    try:
        for it in range(1, max_iter + 1):
            try:
                gx = np.asarray(G(x), dtype=float)
            except OutOfDomain as err:
                n_eval += 1
                bar.update(np.inf)
                if x_prev is None:
                    message = f"map undefined at the starting point: {err}"
                    break
                dX.clear()
                dF.clear()
                x = x_prev + 0.5 * (x - x_prev)  # halfway back to the last good point
                continue
            f = gx - x
            res_new = _scaled(f, x)
            n_eval += 1
            bar.update(res_new)
            if not np.all(np.isfinite(gx)):
                message = "non-finite value of the map"
                res = np.inf
                break
            res = res_new
            if res <= tol:
                message = "tolerance reached"
                return FixedPointResult(
                    x=x, converged=True, n_iter=it, residual=res, message=message
                )
            if f_prev is not None:
                dX.append(x - x_prev)
                dF.append(f - f_prev)
                if len(dX) > memory:
                    dX.pop(0)
                    dF.pop(0)
            x_prev, f_prev = x.copy(), f.copy()
            proposal = _next_iterate(x, f, dX, dF, damping, project)
            if proposal is None:
                message = "no admissible step"
                break
            x = np.asarray(proposal, dtype=float)
    finally:
        bar.close()
    if warn_failure:
        warn(
            ConvergenceWarning,
            f"{desc} did not converge: {message} (residual {res:.2e} > tol {tol:.1e})",
        )
    return FixedPointResult(x=x, converged=False, n_iter=n_eval, residual=res, message=message)
