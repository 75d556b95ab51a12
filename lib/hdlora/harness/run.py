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

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor

import pandas as pd
from tqdm import tqdm

from hdlora.harness.checkpoints import JobStore
from hdlora.harness.executors import (
    InProcessExecutor,
    executor_setting,
    map_jobs,
    open_executor,
)
from hdlora.harness.io import output_dirs, repo_root, save_figure, write_table
from hdlora.harness.plan import (
    Planned,
    PlanningExecutor,
    describe,
    plan_file,
    record,
    stand_in,
    stand_in_summary,
)
from hdlora.harness.profiles import check_profile, choose, size
from hdlora.harness.tables import (
    cached,
    call_solver,
    provenance,
    run_table,
    snapshot_code,
    solve_one,
    table_jobs,
)
from hdlora.params import Params
from hdlora.progress import progress_enabled


class Run:
    """Output folders, cache and writers of one notebook run (see the module docstring)."""

    def __init__(
        self,
        notebook: str,
        out_dir=None,
        profile: str = "quick",
        recompute: bool = False,
        executor: str | Executor | None = None,
    ) -> None:
        snapshot_code()  # the code this run imported keys its tables
        self.notebook = notebook
        self.executor_setting = executor_setting(executor)
        self._executor: Executor | None = None
        self._close = contextlib.ExitStack()
        self.profile = check_profile(profile)
        self.recompute = bool(recompute)
        self.data_dir, self.fig_dir = output_dirs(out_dir, notebook)
        committed = repo_root() / "data"
        self._also_from = [committed] if committed.resolve() != self.data_dir.resolve() else []
        self._cached: set[str] = set()  # the names of this run's cached tables
        self.plan = plan_file()  # HDLORA_PLAN: list the jobs, compute nothing (make plan)

    @property
    def executor(self) -> Executor:
        """Where this run's jobs run (:func:`hdlora.harness.executors.open_executor` of the
        ``executor`` setting, else of ``HDLORA_EXECUTOR``), opened at the first table computed
        and shut down when the run is closed or garbage-collected. Not part of any cache key:
        the numbers do not depend on it."""
        if self._executor is None and self.plan is not None:
            self._executor = PlanningExecutor()
        if self._executor is None:
            self._executor = self._close.enter_context(open_executor(self.executor_setting))
            weakref.finalize(self, self._close.close)
        return self._executor

    def close(self) -> None:
        """Shut down this run's executor (a process pool, a dask client)."""
        self._close.close()
        self._executor = None

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
        return self._table(name, compute, key, by_jobs=False)

    def _table(self, name: str, compute: Callable, key: dict, by_jobs: bool) -> pd.DataFrame:
        """:meth:`table`; ``by_jobs``: ``compute(store)`` sends its jobs to :attr:`executor`
        (so that a planning run can list them instead of running them), keeping each finished
        job in ``store`` (:meth:`job_store`) until the table is written."""
        self._cached.add(name)
        record = provenance(table=name, **key)
        store = self.job_store(name, record["key"]) if by_jobs else None
        compute = functools.partial(compute, store) if by_jobs else compute
        if self.plan is not None:
            compute = self._planned(name, compute, by_jobs)
        df = cached(
            self.data_dir / f"{name}.csv",
            record,
            compute,
            recompute=self.recompute,
            also_from=self._also_from,
        )
        if store is not None and self.plan is None:
            store.clear()
        return df

    def job_store(self, name: str, key: str) -> JobStore:
        """The finished jobs of the table ``name`` being computed under ``key``
        (:mod:`hdlora.harness.checkpoints`): ``<out_dir>/build/jobs/<name>/<key>/``, so that a
        computation stopped half-way (``make figures`` interrupted) resumes where it stopped."""
        return JobStore(self.data_dir.parent / "build" / "jobs" / name / key)

    def _planned(self, name: str, compute: Callable, by_jobs: bool) -> Callable:
        """``compute`` of a planning run (:mod:`hdlora.harness.plan`): list the table's jobs
        (run none) and return the committed table of that name as a stand-in."""

        def listed() -> pd.DataFrame:
            jobs = []
            if by_jobs:
                self.executor.jobs.clear()
                try:
                    compute()
                except Planned:
                    pass
                jobs = [describe(fn, args) for fn, args in self.executor.jobs]
            standin = stand_in(name, repo_root() / "data")
            record(self.plan, notebook=self.notebook, profile=self.profile, table=name,
                   by_jobs=by_jobs, jobs=jobs, **stand_in_summary(standin))  # fmt: skip
            return standin

        return listed

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

        def compute(store):
            return run_table(
                solver,
                points,
                seeds=seeds,
                grid=grid,
                progress=progress,
                executor=self.executor,
                store=store,
                **kwargs,
            )

        key = dict(solver=solver, points=points, seeds=seeds, grid=grid, kwargs=kwargs)
        return self._table(name, compute, key, True)

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

        def compute(store):
            tables = []
            for job in jobs:
                args = {**common, **job}
                point, assign = args.pop("point"), args.pop("assign", {})
                seeds, grid = args.pop("seeds", (0,)), args.pop("grid", None)
                tables.append((point, seeds, grid, args, assign))
            flat = [
                (solver, p, s, c, args)
                for point, seeds, grid, args, _ in tables
                for p, s, c in table_jobs([point], seeds, grid)
            ]
            with tqdm(total=len(flat), desc=name, disable=not progress_enabled(progress)) as bar:
                records = iter(
                    map_jobs(solve_one, flat, self.executor, on_done=bar.update, store=store)
                )
            frames = []
            for point, seeds, grid, _, assign in tables:
                n = len(table_jobs([point], seeds, grid))
                rows = [row for _ in range(n) for row in next(records)]
                frames.append(pd.DataFrame(rows).assign(**assign))
            return pd.concat(frames, ignore_index=True)

        return self._table(name, compute, dict(solver=solver, jobs=jobs, common=common), True)

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

        def compute(store):
            args = [{**common, **call} for call in calls]
            assigns = [a.pop("assign", {}) for a in args]
            here = isinstance(self.executor, InProcessExecutor)  # a bar only where it shows
            jobs = [(solver, a, progress if here else False) for a in args]
            frames = map_jobs(call_solver, jobs, self.executor, store=store)
            return pd.concat(
                [f.assign(**assign) for f, assign in zip(frames, assigns, strict=True)],
                ignore_index=True,
            )

        return self._table(name, compute, dict(solver=solver, calls=calls, common=common), True)

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
