r"""Tables of results over lists of points, and their cache.

:func:`run_table` evaluates any solver of the project — :func:`hdlora.simulation.simulate`,
:func:`hdlora.theory.state_evolution`, :func:`hdlora.theory.pretrain`,
:func:`hdlora.theory.bayes_optimal` — over points × seeds (× a grid of keyword values such as
``D``), since they share one call shape ``solver(params, *, seed, progress, **kwargs)`` and one
result record. The result is tidy: one row per evaluation, parameters as columns
(:meth:`hdlora.Observables.to_dict`).

:func:`cached` keeps expensive tables apart from plotting: a CSV is reused only when its
``cache_key`` column equals the hash of what produced it — the points, the keyword arguments
and :func:`code_version` of the library modules the solver imports — so that a changed point,
seed or solver recomputes, and restyling a plot never does.

Each cached table has a provenance record beside it, ``data/provenance/<name>.json``: its key,
the description that was hashed into the key, and the code version of every library module
that entered the key. :func:`stale_tables` compares those versions with the code as it is now,
without recomputing anything: a library change that would recompute a committed table is found
by the unit tests until the table is recomputed (``make figures``) and committed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hdlora.harness.checkpoints import JobStore
from hdlora.harness.executors import map_jobs, open_executor
from hdlora.harness.io import OPTIMISER_DIAGNOSTICS, SIMULATION_RTOL, write_bytes, write_table
from hdlora.params import Params
from hdlora.progress import progress_enabled

PARAM_COLUMNS = list(Params().to_dict())


@functools.lru_cache(maxsize=256)
def _imports(module: str) -> tuple[str, ...]:
    """The hdlora modules imported by ``module`` (read from its source, not executed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return ()
    tree = ast.parse(Path(spec.origin).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hdlora"):
            package = importlib.util.find_spec(node.module).submodule_search_locations is not None
            subs = [f"{node.module}.{a.name}" for a in node.names] if package else []
            subs = [s for s in subs if importlib.util.find_spec(s) is not None]
            found |= set(subs)
            if len(subs) < len(node.names):  # names defined by the module itself
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hdlora")}
    return tuple(sorted(found))


@functools.lru_cache(maxsize=512)
def _normalised_source(module: str) -> str:
    """The module's syntax tree without docstrings: comments, formatting and prose do not
    change a code version. Read once per process (see :func:`snapshot_code`), so that every
    table of one run is keyed by the code that run imported, even if a file changes meanwhile."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def module_closure(module: str) -> list[str]:
    """``module`` and every hdlora module it imports, transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imports(name))
    return sorted(seen)


def snapshot_code() -> None:
    """Read the source of every hdlora module imported so far (call it right after the
    imports, as :class:`hdlora.harness.run.Run` does): later code versions in this process
    describe that code."""
    import sys

    for name in sorted(sys.modules):
        if name.startswith("hdlora"):
            try:
                _normalised_source(name)
            except (ValueError, AttributeError, OSError, TypeError, SyntaxError):
                continue


class CodeVersion(str):
    """A code version (the hash string itself) that remembers the module it was taken of, so
    that a key built from it can be checked against the code later (:func:`stale_tables`)."""

    module: str

    def __new__(cls, version: str, module: str) -> CodeVersion:
        obj = super().__new__(cls, version)
        obj.module = module
        return obj


def code_version(solver: Callable | str) -> CodeVersion:
    """A short hash of the code of ``solver``'s module and of every hdlora module it imports."""
    module = solver if isinstance(solver, str) else solver.__module__
    h = hashlib.sha256()
    for name in module_closure(module):
        h.update(name.encode())
        h.update(_normalised_source(name).encode())
    return CodeVersion(h.hexdigest()[:16], module)


def _canonical(value, code: dict[str, str]):
    """JSON-ready form of ``value``; every code version met is recorded in ``code``."""
    if isinstance(value, Params):
        return {"Params": value.to_dict()}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, code) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v, code) for v in value]
    if isinstance(value, CodeVersion):
        code[value.module] = str(value)
        return str(value)
    if callable(value):
        version = code_version(value)
        code[version.module] = str(version)
        return f"{value.__module__}.{value.__qualname__}@{version}"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(**what) -> dict:
    """The provenance record of a computation: ``key`` (:func:`cache_key`), ``description`` (the
    JSON that was hashed) and ``code`` (module → :func:`code_version` of each code in it)."""
    code: dict[str, str] = {}
    text = json.dumps(_canonical(what, code), sort_keys=True, default=repr)
    return {"key": _hash(text), "description": json.loads(text), "code": dict(sorted(code.items()))}


def cache_key(**what) -> str:
    """Hash of a description of a computation (points, solver, keyword arguments): callables
    count by name and :func:`code_version`, :class:`Params` by value."""
    return provenance(**what)["key"]


def provenance_path(table: str | Path) -> Path:
    """Where the provenance record of the table ``<folder>/<name>.csv`` lives."""
    table = Path(table)
    return table.parent / "provenance" / f"{table.stem}.json"


def write_provenance(table: str | Path, record: Mapping) -> Path:
    """Write the provenance record of ``table`` (atomic; unchanged bytes are not rewritten)."""
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    return write_bytes(provenance_path(table), text.encode())


def _stale_reason(csv: Path, record: Mapping) -> str | None:
    """Why the committed ``csv`` is not what the current code would key it with, or None."""
    keys = set(pd.read_csv(csv, usecols=["cache_key"])["cache_key"].astype(str))
    if keys != {record["key"]}:
        return f"its cache_key {sorted(keys)} differs from its provenance key {record['key']}"
    if _hash(json.dumps(record["description"], sort_keys=True)) != record["key"]:
        return "its provenance description does not hash to its key"
    for module, version in record["code"].items():
        try:
            now = code_version(module)
        except (ImportError, AttributeError, ValueError, OSError) as err:
            return f"the module {module} of its key cannot be read ({err})"
        if now != version:
            return f"the code of {module} (or of a module it imports) changed since it was computed"
    return None


def stale_tables(data_dir: str | Path) -> dict[str, str]:
    """The cached tables of ``data_dir`` that the current code would not reuse, with the reason:
    ``{file name: reason}`` (empty when every table is current). A table with a ``cache_key``
    column and no provenance record of its own is derived from cached tables (a figure's table
    that joins theory and simulation): each of its keys must be the key of a current cached
    table of ``data_dir``. Nothing is recomputed."""
    data_dir = Path(data_dir)
    stale, derived, current = {}, [], set()
    for csv in sorted(data_dir.glob("*.csv")):
        if "cache_key" not in pd.read_csv(csv, nrows=0).columns:
            continue
        path = provenance_path(csv)
        if not path.exists():
            derived.append(csv)
            continue
        record = json.loads(path.read_text())
        reason = _stale_reason(csv, record)
        if reason is None:
            current.add(record["key"])
        else:
            stale[csv.name] = reason
    for csv in derived:
        keys = set(pd.read_csv(csv, usecols=["cache_key"])["cache_key"].dropna().astype(str))
        unknown = sorted(keys - current)
        if unknown or not keys:
            stale[csv.name] = (
                f"it is derived from cached tables, but its cache_key(s) {unknown} are the key "
                "of no current cached table (or it has none)"
            )
    for path in sorted((data_dir / "provenance").glob("*.json")):
        if not (data_dir / f"{path.stem}.csv").exists():
            stale[path.name] = "a provenance record without its table"
    return stale


#: columns a recomputed cache may change without rewriting its file: the optimiser's path and
#: the wall time, the solver's message (it prints objectives) and the device it ran on (a
#: regular expression; see the source)
#:
#: :meta hide-value:
RECOMPUTE_IGNORES = OPTIMISER_DIAGNOSTICS + r"|message|info_device"


def cached(
    path: str | Path,
    key: str | Mapping,
    compute: Callable[[], pd.DataFrame],
    *,
    recompute: bool = False,
    also_from: Iterable[str | Path] = (),
) -> pd.DataFrame:
    """The table at ``path`` if its ``cache_key`` column equals ``key``; else the same file name
    in a folder of ``also_from`` (e.g. the committed ``data/``) with that key, copied to
    ``path``; else ``compute()``, tagged with ``key`` and written. ``recompute`` ignores caches;
    a recomputed table with the file's key and numbers within
    :data:`~hdlora.harness.io.SIMULATION_RTOL` (1e-6 relative, for theory tables too) outside
    :data:`RECOMPUTE_IGNORES` leaves the file untouched and is returned as the file holds it,
    so that ``RECOMPUTE=True`` rewrites only what moved.
    ``key`` may be a :func:`provenance` record, which is then written beside the table."""
    path = Path(path)
    record = key if isinstance(key, Mapping) else None
    key = record["key"] if record is not None else key
    df = None
    if not recompute:
        for candidate in [path, *(Path(d) / path.name for d in also_from)]:
            if candidate.exists():
                found = pd.read_csv(candidate)
                if (
                    "cache_key" in found
                    and len(found)
                    and (found["cache_key"].astype(str) == key).all()
                ):
                    df = found
                    if candidate != path:
                        write_table(df, path)
                    break
    if df is None:
        # a recomputation that reproduces the file's numbers (to SIMULATION_RTOL, the optimiser's
        # path and the wall time left out) leaves it as it is, and returns what it holds
        write_table(compute().assign(cache_key=key), path, rtol=SIMULATION_RTOL,
                    ignore=RECOMPUTE_IGNORES)  # fmt: skip
        df = pd.read_csv(path)  # the same dtypes whether computed or loaded
    if record is not None:
        write_provenance(path, record)
    return df


def solve_one(solver: Callable, point: Params, seed: int, combo: dict, kwargs: dict) -> list:
    """The records of one job of :func:`run_table`, as dicts (a job sent to an executor)."""
    out = solver(point, seed=seed, progress=False, **combo, **kwargs)
    return [rec.to_dict() for rec in (out if isinstance(out, list) else [out])]


def call_solver(solver: Callable[..., pd.DataFrame], args: dict, progress) -> pd.DataFrame:
    """``solver(**args, progress=progress)``: one job of :meth:`hdlora.harness.run.Run.calls`."""
    return solver(**args, progress=progress)


def table_jobs(
    points: Iterable[Params],
    seeds: Iterable[int] = (0,),
    grid: Mapping[str, Iterable] | None = None,
) -> list[tuple[Params, int, dict]]:
    """The jobs ``(point, seed, grid values)`` of :func:`run_table`, in the order of its rows:
    every point, every combination of the grid values, every seed."""
    grid = dict(grid or {})
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    seeds = list(seeds)
    return [(p, s, c) for p in points for c in combos for s in seeds]


def lam_ft_jobs(points: Iterable[Params]) -> list[dict]:
    """The jobs of :meth:`hdlora.harness.run.Run.solve_jobs` that run one pre-training per
    point of ``points`` that differs only in λ', fine-tuned at each of its λ'
    (:func:`hdlora.simulation.recalibration_scan` with ``betas=[1.0]``: each record is exactly
    that of :func:`hdlora.simulation.simulate` at its λ', for one pre-training instead of one
    per λ'): ``[{"point": the first such point, "lam_fts": [its λ' values]}, …]``, in the order
    the pre-trainings first appear. A λ' listed twice for one pre-training is an error."""
    groups: dict[Params, list[float]] = {}
    for p in points:
        lam_fts = groups.setdefault(p.replace(lam_ft=math.inf), [])
        if p.lam_ft in lam_fts:
            raise ValueError(f"points: lam_ft={p.lam_ft} is listed twice for the point {p}")
        lam_fts.append(float(p.lam_ft))
    return [
        {"point": p.replace(lam_ft=lam_fts[0]), "lam_fts": lam_fts} for p, lam_fts in groups.items()
    ]


def run_table(
    solver: Callable,
    points: Iterable[Params],
    *,
    seeds: Iterable[int] = (0,),
    grid: Mapping[str, Iterable] | None = None,
    progress: bool | None = None,
    desc: str | None = None,
    executor: str | Executor | None = None,
    store: JobStore | None = None,
    **kwargs,
) -> pd.DataFrame:
    """``solver(point, seed=s, progress=False, **grid_values, **kwargs)`` for every point, every
    seed and every combination of the ``grid`` values (e.g. ``grid={"D": [100, 200]}``); one row
    per record (a solver may return a list of records, as
    :func:`hdlora.simulation.recalibration_scan` does: one per (β, λ') of one run). The jobs run
    on ``executor`` (:func:`hdlora.harness.executors.open_executor`; default: this process),
    the rows come in the order of the jobs whatever the executor. The bar counts evaluations.
    ``store`` (:class:`~hdlora.harness.checkpoints.JobStore`) keeps each finished job, and a
    job it already holds is not run again."""
    jobs = [(solver, p, s, c, kwargs) for p, s, c in table_jobs(points, seeds, grid)]
    name = desc or getattr(solver, "__name__", "solver")
    with (
        tqdm(total=len(jobs), desc=name, disable=not progress_enabled(progress)) as bar,
        open_executor(executor) as pool,
    ):
        records = map_jobs(solve_one, jobs, pool, on_done=bar.update, store=store)
    return pd.DataFrame([row for rows in records for row in rows])
