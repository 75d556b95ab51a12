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
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hdlora.harness.io import write_table
from hdlora.harness.progress import progress_enabled
from hdlora.params import Params

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


def code_version(solver: Callable | str) -> str:
    """A short hash of the code of ``solver``'s module and of every hdlora module it imports."""
    module = solver if isinstance(solver, str) else solver.__module__
    h = hashlib.sha256()
    for name in module_closure(module):
        h.update(name.encode())
        h.update(_normalised_source(name).encode())
    return h.hexdigest()[:16]


def _canonical(value):
    if isinstance(value, Params):
        return {"Params": value.to_dict()}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if callable(value):
        return f"{value.__module__}.{value.__qualname__}@{code_version(value)}"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def cache_key(**what) -> str:
    """Hash of a description of a computation (points, solver, keyword arguments): callables
    count by name and :func:`code_version`, :class:`Params` by value."""
    text = json.dumps(_canonical(what), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(
    path: str | Path,
    key: str,
    compute: Callable[[], pd.DataFrame],
    *,
    recompute: bool = False,
    also_from: Iterable[str | Path] = (),
) -> pd.DataFrame:
    """The table at ``path`` if its ``cache_key`` column equals ``key``; else the same file name
    in a folder of ``also_from`` (e.g. the committed ``data/``) with that key, copied to
    ``path``; else ``compute()``, tagged with ``key`` and written. ``recompute`` ignores caches."""
    path = Path(path)
    if not recompute:
        for candidate in [path, *(Path(d) / path.name for d in also_from)]:
            if candidate.exists():
                df = pd.read_csv(candidate)
                if "cache_key" in df and len(df) and (df["cache_key"].astype(str) == key).all():
                    if candidate != path:
                        write_table(df, path)
                    return df
    df = compute().assign(cache_key=key)
    write_table(df, path)
    return pd.read_csv(path)  # the same dtypes whether computed or loaded


def run_table(
    solver: Callable,
    points: Iterable[Params],
    *,
    seeds: Iterable[int] = (0,),
    grid: Mapping[str, Iterable] | None = None,
    progress: bool | None = None,
    desc: str | None = None,
    **kwargs,
) -> pd.DataFrame:
    """``solver(point, seed=s, progress=False, **grid_values, **kwargs)`` for every point, every
    seed and every combination of the ``grid`` values (e.g. ``grid={"D": [100, 200]}``); one row
    per record (a solver may return a list of records, as
    :func:`hdlora.simulation.recalibration_scan` does: one per (β, λ') of one run). The bar counts
    evaluations."""
    points = list(points)
    grid = dict(grid or {})
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    jobs = [(p, c, s) for p in points for c in combos for s in seeds]
    rows = []
    name = desc or getattr(solver, "__name__", "solver")
    for p, combo, s in tqdm(jobs, desc=name, disable=not progress_enabled(progress)):
        out = solver(p, seed=s, progress=False, **combo, **kwargs)
        rows.extend(rec.to_dict() for rec in (out if isinstance(out, list) else [out]))
    return pd.DataFrame(rows)
