"""Compare the tables under data/ with those of a git revision: which numbers moved, by how much.

A refactor must keep the numbers (DEVELOPERS.md: 1e-10 relative for the theory, 1e-12 for the
simulations with the same seeds); a change of physics or of a grid must say which tables moved.
For every CSV under data/ that differs from its version at REV (default HEAD), this prints one
line: "same shape" tables get the largest relative difference over their value columns and,
apart, over their error columns (standard errors ``*_se``, residuals, Jacobian radii: computed
by finite differences, they amplify floating-point noise), with the columns where each is
reached (wall times and cache keys left out); tables whose rows changed (a new grid) are listed
as such. Nothing is written.

Usage: python tools/compare_data.py [--base REV] [--rtol 1e-10] [NAME ...]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
#: columns that record how a number was computed, not the number
IGNORED = ("wall_time", "cache_key", "info_n_wall", "info_wall_time", "info_seconds")


def _old(rev: str, path: Path) -> pd.DataFrame | None:
    rel = path.relative_to(ROOT).as_posix()
    out = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True)
    return pd.read_csv(io.BytesIO(out.stdout)) if out.returncode == 0 else None


def is_error_column(name: str) -> bool:
    """Standard errors and solver diagnostics, as opposed to values."""
    return name.endswith("_se") or name == "residual" or "jacobian" in name


def compare(old: pd.DataFrame, new: pd.DataFrame) -> tuple[float, float, list[str], str]:
    """(largest relative difference of the values, of the error columns, the columns that reach
    1e-3 of the first, a note)."""
    if old.shape[0] != new.shape[0]:
        return np.inf, np.inf, [], f"rows {old.shape[0]} -> {new.shape[0]}"
    cols = [c for c in old.columns if c in new.columns and not c.startswith(IGNORED)]
    worst, where = 0.0, {}
    for c in cols:
        a, b = old[c], new[c]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            a, b = a.to_numpy(float), b.to_numpy(float)  # booleans as 0/1
            same_nan = np.isnan(a) & np.isnan(b)
            rel = np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
            rel = np.where(same_nan, 0.0, np.where(np.isnan(a) | np.isnan(b), np.inf, rel))
            where[c] = float(np.max(rel)) if len(rel) else 0.0
        elif not a.astype(str).equals(b.astype(str)):
            where[c] = np.inf
    values = {c: v for c, v in where.items() if not is_error_column(c)}
    worst = max(values.values(), default=0.0)
    worst_err = max((v for c, v in where.items() if is_error_column(c)), default=0.0)
    top = [c for c, v in values.items() if worst > 0 and v >= 1e-3 * worst]
    added = sorted(set(new.columns) - set(old.columns))
    return worst, worst_err, top, f"new columns {added}" if added else ""


def main(argv=None) -> int:
    np.seterr(invalid="ignore")  # NaN against NaN is compared below, not warned about
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="the git revision to compare with")
    ap.add_argument("--rtol", type=float, default=1e-10, help="a change below this is 'same'")
    ap.add_argument("names", nargs="*", help="table names (default: every changed CSV)")
    args = ap.parse_args(argv)
    paths = [ROOT / "data" / f"{n}.csv" for n in args.names] or sorted(
        (ROOT / "data").glob("*.csv")
    )
    moved = 0
    for path in paths:
        old = _old(args.base, path)
        if old is None:
            print(f"{path.stem:45s} new table")
            continue
        new = pd.read_csv(path)
        worst, worst_err, top, note = compare(old, new)
        if worst <= args.rtol and worst_err <= args.rtol and not note:
            continue
        moved += worst > args.rtol
        rows = note.startswith("rows")
        label = "rows changed" if rows else f"values {worst:.1e}, errors {worst_err:.1e}"
        print(
            f"{path.stem:40s} {label:>30s}  {', '.join(top[:5])}{'…' if len(top) > 5 else ''}"
            f"  {note}"
        )
    print(f"{moved} table(s) with a value that moved by more than {args.rtol:g} (relative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
