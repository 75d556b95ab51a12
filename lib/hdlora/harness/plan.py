r"""A notebook's jobs listed before they run: the input of the cost plan (``make plan``).

With ``HDLORA_PLAN=<file>`` in its environment, a notebook's :class:`~hdlora.harness.run.Run`
computes nothing that is not cached. Each table it would compute is appended to ``<file>`` (one
JSON line: notebook, table, and one summary per job: solver, sizes, seed), and the notebook goes
on with a stand-in: the committed table of that name (the ``quick`` profile's numbers), or an
empty table. A job is listed, not run, by :class:`PlanningExecutor`: the table's jobs are
submitted to it as to any executor, and asking for the first result raises :class:`Planned`.
:mod:`hdlora.harness.costs` prices the listed jobs; ``tools/plan.py`` executes the notebooks in
this mode and prints the plan.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path

import pandas as pd

from hdlora.params import Params

#: the point's fields that set a job's cost (with D)
SIZE_FIELDS = ("T", "kappa0", "kappa", "alpha", "alpha_ft", "activation", "reuse", "lam", "lam_ft")


class Planned(Exception):  # noqa: N818 -- a signal, not an error
    """Raised by the result of a job submitted to a :class:`PlanningExecutor`."""


class PlanningExecutor(Executor):
    """An executor that lists the jobs submitted to it and runs none of them."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable, tuple]] = []

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        """Record the job ``fn(*args)``; its future fails with :class:`Planned` (nothing runs)."""
        self.jobs.append((fn, args))
        future: Future = Future()
        future.set_exception(Planned())
        return future


def plan_file() -> Path | None:
    """The file named by ``HDLORA_PLAN`` (None: not planning)."""
    value = os.environ.get("HDLORA_PLAN")
    return Path(value) if value else None


def _solver_name(solver) -> str:
    return getattr(solver, "__name__", str(solver))


def describe(fn: Callable, args: tuple) -> dict:
    """A JSON-ready summary of one submitted job: ``call_catching_warnings(job_fn, *job)``
    of :func:`hdlora.harness.executors.map_jobs`, with ``job_fn`` one of
    :func:`hdlora.harness.tables.solve_one` (solver, point, seed, grid values, kwargs) or
    :func:`~hdlora.harness.tables.call_solver` (solver, arguments, progress)."""
    job_fn, *job = args
    if job_fn.__name__ == "solve_one":
        solver, point, seed, combo, kwargs = job
        out = {"solver": _solver_name(solver), "seed": seed}
        out |= {k: getattr(point, k) for k in SIZE_FIELDS}
        out |= {k: v for k, v in {**kwargs, **combo}.items() if isinstance(v, int | float | str)}
        for name in ("betas", "lam_fts"):  # a recalibration scan: fine-tunings per run
            if name in kwargs:
                out[f"n_{name}"] = len(kwargs[name])
        return out
    solver, call, _ = job
    out = {"solver": _solver_name(solver)}
    for k, v in call.items():
        if isinstance(v, int | float | str):
            out[k] = v
        elif isinstance(v, Params):
            out |= {f: getattr(v, f) for f in SIZE_FIELDS}
        elif isinstance(v, list | tuple):
            out[f"n_{k}"] = len(v)
    return out


def stand_in(name: str, committed: Path) -> pd.DataFrame:
    """The committed table ``<committed>/<name>.csv``, or an empty table."""
    path = committed / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def stand_in_summary(table: pd.DataFrame) -> dict:
    """What the plan needs of a stand-in: its rows, its measured seconds and Monte-Carlo
    samples (None when it has no such column)."""
    return dict(
        stand_in_rows=len(table),
        stand_in_seconds=float(table["wall_time"].sum()) if "wall_time" in table else None,
        stand_in_n_mc=float(table["n_mc"].median()) if "n_mc" in table else None,
    )


def record(path: Path, **entry) -> None:
    """Append one planned table to the plan file (one JSON line; appends of one line from
    one process are not interleaved)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")


def read_plan(path: Path) -> list[dict]:
    """The planned tables of a plan file, in the order they were met."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
