r"""The run of one notebook: where it writes, what it caches, how it shows its results.

Each notebook starts with ``run = Run("02_pretraining_theory", out_dir, profile, recompute)``:

* ``run.data_dir``, ``run.fig_dir``: ``out_dir/data``, ``out_dir/figures``
  (:func:`hdlora.harness.io.resolve_out_dir`: ``make figures`` passes the repository root, any
  other run defaults to ``build/runs/<notebook>/`` and never touches tracked files);
* ``run.solve(name, solver, points, ...)``: a tidy table of ``solver`` over points × seeds × grid,
  cached under the hash of exactly these arguments and of the solver's code
  (:func:`hdlora.harness.tables.cache_key`); a table with the same key in the committed
  ``data/`` is reused, so a papermill run that changes nothing physical recomputes nothing;
* ``run.solve_jobs(name, solver, jobs, **common)``: the same over a list of jobs, each with its
  own point, seeds, grid and keyword arguments;
* ``run.calls(name, solver, calls, **common)``: the frames a solver returns itself (a
  :func:`hdlora.theory.sweep`), one per call, concatenated and cached under the key of exactly
  these calls, so no notebook lists a solver's arguments twice;
* ``run.table(name, compute, **key)``: the same cache for any other computation, keyed by
  ``key`` (name the code it runs in ``key``, e.g. ``code=code_version("hdlora.theory.bayes")``);
* ``run.compare(name, sim, theory, keys, observables)``: a figure's theory–simulation
  comparison (:func:`hdlora.harness.agreement.compare_at_points`), written, shown, and required
  at the replicon-stable points (at every profile but ``smoke``, whose few small runs have no
  power);
* ``run.write(df, name)``, ``run.save(fig, name)``: atomic writes of a table / a figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pandas as pd

from hdlora.harness.io import output_dirs, repo_root, save_figure, write_table
from hdlora.harness.profiles import check_profile, choose, size
from hdlora.harness.tables import cached, provenance, run_table, snapshot_code
from hdlora.params import Params


class Run:
    """Output folders, cache and writers of one notebook run (see the module docstring)."""

    def __init__(
        self, notebook: str, out_dir=None, profile: str = "quick", recompute: bool = False
    ) -> None:
        snapshot_code()  # the code this run imported keys its tables
        self.notebook = notebook
        self.profile = check_profile(profile)
        self.recompute = bool(recompute)
        self.data_dir, self.fig_dir = output_dirs(out_dir, notebook)
        committed = repo_root() / "data"
        self._also_from = [committed] if committed.resolve() != self.data_dir.resolve() else []
        self._cached: set[str] = set()  # the names of this run's cached tables

    def choose(self, value, *, smoke, quick, paper):
        """``value`` if given (not None), else the setting of this run's profile."""
        if value is not None:
            return value
        return choose(self.profile, smoke=smoke, quick=quick, paper=paper)

    def size(self, name: str, value=None):
        """``value`` if given (not None), else the shared setting ``name`` of this run's profile
        (:data:`hdlora.harness.profiles.SIZES`)."""
        return value if value is not None else size(self.profile, name)

    def table(self, name: str, compute: Callable[[], pd.DataFrame], **key) -> pd.DataFrame:
        """``compute()`` cached as ``data/<name>.csv`` under :func:`cache_key` of ``key``, with its
        provenance record in ``data/provenance/<name>.json``."""
        self._cached.add(name)
        return cached(
            self.data_dir / f"{name}.csv",
            provenance(table=name, **key),
            compute,
            recompute=self.recompute,
            also_from=self._also_from,
        )

    def solve(
        self,
        name: str,
        solver: Callable,
        points: Iterable[Params],
        *,
        seeds: Iterable[int] = (0,),
        grid: Mapping[str, Iterable] | None = None,
        progress: bool | None = None,
        **kwargs,
    ) -> pd.DataFrame:
        """:func:`hdlora.harness.tables.run_table` cached as ``data/<name>.csv``."""
        points, seeds = list(points), list(seeds)
        grid = {k: list(v) for k, v in (grid or {}).items()}
        return self.table(
            name,
            lambda: run_table(solver, points, seeds=seeds, grid=grid, progress=progress, **kwargs),
            solver=solver,
            points=points,
            seeds=seeds,
            grid=grid,
            kwargs=kwargs,
        )

    def solve_jobs(
        self,
        name: str,
        solver: Callable,
        jobs: Iterable[Mapping],
        *,
        progress: bool | None = None,
        **common,
    ) -> pd.DataFrame:
        """``solver`` over ``jobs``, one table cached as ``data/<name>.csv`` under the key of
        exactly these arguments (nothing is listed twice). Each job is a mapping of the
        arguments of :func:`~hdlora.harness.tables.run_table` for one point: ``point``, and any
        of ``seeds``, ``grid``, the solver's keyword arguments, and ``assign`` (columns added to
        its rows); ``common`` holds what every job shares (a job's own value wins)."""
        jobs = [dict(job) for job in jobs]

        def compute():
            frames = []
            for job in jobs:
                args = {**common, **job}
                point, assign = args.pop("point"), args.pop("assign", {})
                rows = run_table(solver, [point], progress=progress, **args)
                frames.append(rows.assign(**assign))
            return pd.concat(frames, ignore_index=True)

        return self.table(name, compute, solver=solver, jobs=jobs, common=common)

    def calls(
        self,
        name: str,
        solver: Callable[..., pd.DataFrame],
        calls: Iterable[Mapping],
        *,
        progress: bool | None = None,
        **common,
    ) -> pd.DataFrame:
        """``solver(**common, **call)`` for each mapping of ``calls`` (a call's own value wins;
        its ``assign``: columns added to its frame), concatenated and cached as
        ``data/<name>.csv`` under the key of exactly these arguments and of the solver's code
        (``progress`` is not part of the key)."""
        calls = [dict(call) for call in calls]

        def compute():
            frames = []
            for call in calls:
                args = {**common, **call}
                assign = args.pop("assign", {})
                frames.append(solver(**args, progress=progress).assign(**assign))
            return pd.concat(frames, ignore_index=True)

        return self.table(name, compute, solver=solver, calls=calls, common=common)

    def compare(
        self,
        name: str,
        sim: pd.DataFrame,
        theory: pd.DataFrame,
        keys: list[str],
        observables: list[str],
        **options,
    ):
        """:func:`~hdlora.harness.agreement.compare_at_points` (``options``: its ``partial``
        and ``pretraining``), written as ``data/<name>.csv`` and shown with its verdicts;
        raises AssertionError, with the failing rows, when the check at the replicon-stable
        points fails (not at ``smoke``). Returns (table, check, check of the other points)."""
        from IPython.display import display

        from hdlora.harness.agreement import (
            AGREEMENT_COLUMNS,
            agreement_summary,
            compare_at_points,
        )

        table, check, unstable = compare_at_points(sim, theory, keys, observables, **options)
        self.write(table, name)
        shown = [c for c in [*keys, *AGREEMENT_COLUMNS] if c in table]
        display(table[shown].round(4))
        display(agreement_summary(check, unstable))
        if self.profile != "smoke" and not check.passed:
            raise AssertionError(f"{name}: {check.summary()}\n{check.failures}")
        return table, check, unstable

    def write(self, df: pd.DataFrame, name: str, **tolerance) -> None:
        """Write ``df`` as ``data/<name>.csv`` (atomic; a table equal up to ``tolerance``, the
        ``rtol``/``atol``/``ignore`` of :func:`hdlora.harness.io.write_table`, is not
        rewritten). A cached table's name is refused: writing over a cache would make it
        stale, and the next run would recompute it."""
        if name in self._cached:
            raise ValueError(f"name {name!r} is a cached table of this run: write under another")
        write_table(df, self.data_dir / f"{name}.csv", **tolerance)

    def save(self, fig, name: str) -> None:
        """Save ``fig`` as ``figures/<name>.pdf`` and ``.png`` (the notebook shows it inline)."""
        save_figure(fig, self.fig_dir / name)
