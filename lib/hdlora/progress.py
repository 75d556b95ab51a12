"""Progress bars: the switch (a function argument, else the HDLORA_PROGRESS variable) and a bar
that measures real progress of an iterative solver.

Batch runs turn every bar off with ``HDLORA_PROGRESS=0``; plain ``tqdm`` is used (not
``tqdm.auto``, which misbehaves under papermill).
"""

from __future__ import annotations

import math
import os

from tqdm import tqdm


def progress_enabled(progress: bool | None = None) -> bool:
    """``progress`` when given, else True unless the environment sets HDLORA_PROGRESS=0."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("HDLORA_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


class ConvergenceBar:
    r"""A bar that fills as a residual falls from its first value r0 to the tolerance ``tol``,
    on a log scale: 100 log(r0/r)/log(r0/tol) % (never moving back), with the iteration count
    and the residual shown beside it. An iteration budget is not progress: a fit that converges
    in 100 of 20000 allowed iterations fills the bar, not 0.5 % of it."""

    def __init__(self, tol: float, desc: str, progress: bool | None = None) -> None:
        self.tol = tol
        self.r0: float | None = None
        self.done = 0.0
        self.n_iter = 0
        self.bar = tqdm(
            total=100,
            desc=desc,
            disable=not progress_enabled(progress),
            leave=False,
            bar_format="{desc}: {percentage:3.0f}%|{bar}|{postfix} [{elapsed}]",
        )

    def update(self, residual: float, n_iter: int = 1, **postfix) -> None:
        """Record ``n_iter`` more iterations ending at ``residual``."""
        self.n_iter += n_iter
        if self.r0 is None and math.isfinite(residual) and residual > 0:
            self.r0 = max(residual, self.tol * 10)
        if self.r0 is not None and math.isfinite(residual):
            span = math.log(self.r0 / self.tol)
            frac = 1.0 if residual <= self.tol else math.log(self.r0 / residual) / span
            new = 100 * min(max(frac, 0.0), 1.0)
            if new > self.done:
                self.bar.update(new - self.done)
                self.done = new
        self.bar.set_postfix(it=self.n_iter, residual=f"{residual:.1e}", **postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ConvergenceBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
