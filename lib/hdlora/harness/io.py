"""Where results go, and atomic writes (a temp file in the same folder, then a rename).

Every notebook writes under one output folder ``out_dir``: tidy tables to ``out_dir/data/``
(CSV, one row per point, parameters as columns) and figures to ``out_dir/figures/`` (PDF + PNG).
``make figures`` passes the repository root, so the committed ``data/`` and ``figures/`` are
updated; any other run (papermill by hand, ``make test``) defaults to
``build/runs/<notebook>/`` and never touches tracked files.

A write leaves the file already there alone when its content is the same within a stated
tolerance, so that a rerun, another BLAS or another thread count leaves the repository as it
found it:

* a table (:func:`write_table`) is rewritten only when a column, the shape, a text cell or a
  number changes beyond ``rtol`` (:data:`TABLE_RTOL` = 1e-9 relative by default) and ``atol``.
  Numbers measured on weights trained by L-BFGS are known only to the optimiser's tolerance, so
  such tables state :data:`SIMULATION_RTOL` and leave the optimiser's path and stopping state
  (:data:`OPTIMISER_DIAGNOSTICS`: iteration counts, gradient norms at the stopping tolerance,
  gaps between starts at rounding level) out of the comparison;
* a figure (:func:`save_figure`) is rewritten (PDF and PNG together) only when its PNG rendering
  changes: another size, or a pixel channel off by more than :data:`FIGURE_PIXEL_TOL`.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

#: relative tolerance under which a number of a table counts as unchanged (rounding noise)
TABLE_RTOL = 1e-9
#: relative tolerance of numbers measured on a trained simulation: L-BFGS stops at a gradient
#: norm of 1e-6, and one iteration more or less (another BLAS, another thread count) moves the
#: minimiser by ~1e-8 relative
SIMULATION_RTOL = 1e-6
#: columns of a simulation record that describe the optimiser's path, not the result: compared
#: by no table (a regular expression matched against the whole column name; see the source)
#:
#: :meta hide-value:
OPTIMISER_DIAGNOSTICS = (
    r"residual|n_iter|wall_time"
    r"|info_\w*(grad_max|n_iter|n_evals|_gap|_gap_rel)"
    r"|info_\w*start\d+_\w+"
)
#: largest change of one PNG channel (0–1 scale) under which a figure counts as unchanged
FIGURE_PIXEL_TOL = 2 / 255

_UMASK = os.umask(0)
os.umask(_UMASK)


def repo_root() -> Path:
    """The project's root folder (the package is installed in editable mode from ``lib/``)."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").exists():
        return root
    return Path.cwd()


def resolve_out_dir(out_dir: str | os.PathLike | None, notebook: str) -> Path:
    """``out_dir`` as an absolute path; None gives ``<repo>/build/runs/<notebook>``. A relative
    path is taken from the repository root."""
    if out_dir is None or str(out_dir) == "":
        return repo_root() / "build" / "runs" / notebook
    path = Path(out_dir).expanduser()
    return (path if path.is_absolute() else repo_root() / path).resolve()


def output_dirs(out_dir: str | os.PathLike | None, notebook: str = "default") -> tuple[Path, Path]:
    """(data folder, figures folder) under :func:`resolve_out_dir`; created if missing."""
    base = resolve_out_dir(out_dir, notebook)
    data, figures = base / "data", base / "figures"
    data.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    return data, figures


def replace_between(text: str, start: str, end: str, block: str) -> str:
    """``text`` with what lies between the markers ``start`` and ``end`` (kept) replaced by
    ``block``: the README's generated blocks."""
    i, j = text.index(start) + len(start), text.index(end)
    return text[:i] + block + text[j:]


def publish_record(
    record: dict,
    result: str | os.PathLike,
    readme: str | os.PathLike,
    markers: tuple[str, str],
    block: str,
) -> None:
    """Store a benchmark's ``record`` as JSON at ``result`` and put its ``block`` between the
    ``markers`` of ``readme`` (both atomic): the README states what the benchmark measured."""
    write_bytes(result, (json.dumps(record, indent=1) + "\n").encode())
    readme = Path(readme)
    write_bytes(readme, replace_between(readme.read_text(), *markers, block).encode())


def write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically, unless the file already holds these bytes."""
    path = Path(path)
    if path.exists() and path.read_bytes() == payload:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def same_table(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    rtol: float = TABLE_RTOL,
    atol: float = 0.0,
    ignore: str | None = None,
) -> bool:
    """True when ``new`` equals ``old`` up to rounding: the same columns in the same order, the
    same shape, equal text cells and numbers within ``|a - b| <= atol + rtol |b|`` (NaN equals
    NaN, ±inf equals itself; in a column of text, a cell that reads as a number on both sides is
    compared as one). Columns whose name matches the regular expression ``ignore`` are
    not compared."""
    if list(old.columns) != list(new.columns) or old.shape != new.shape:
        return False
    for column in old.columns:
        if ignore is not None and re.fullmatch(ignore, str(column)):
            continue
        a, b = old[column], new[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                return False
        elif not _same_cells(a, b, rtol, atol):
            return False
    return True


def _same_cells(a: pd.Series, b: pd.Series, rtol: float, atol: float) -> bool:
    """Cells of a text column (e.g. a readings table's numbers among words): equal text, or two
    numbers within ``|x - y| <= atol + rtol |y|``."""
    for x, y in zip(a.astype(str), b.astype(str), strict=True):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not np.isclose(fx, fy, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def write_table(
    df,
    path: str | os.PathLike,
    *,
    rtol: float = TABLE_RTOL,
    atol: float = 0.0,
    ignore: str | None = None,
) -> Path:
    """Write a pandas DataFrame to CSV atomically, unless the file already holds the same
    table within ``rtol``/``atol`` outside the columns ``ignore`` (:func:`same_table`): rounding
    noise rewrites nothing."""
    path = Path(path)
    text = df.to_csv(index=False)
    if path.exists():
        try:
            old = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            old = None
        new = pd.read_csv(io.StringIO(text)) if len(df.columns) else None
        same = old is not None and new is not None
        if same and same_table(old, new, rtol=rtol, atol=atol, ignore=ignore):
            return path
    return write_bytes(path, text.encode())


def _same_picture(old_png: bytes, new_png: bytes, tol: float) -> bool:
    """True when two PNG images have the same size and no channel differs by more than tol."""
    import matplotlib.image as mpimg

    try:
        a = mpimg.imread(io.BytesIO(old_png), format="png")
    except (OSError, ValueError, SyntaxError):
        return False
    b = mpimg.imread(io.BytesIO(new_png), format="png")
    return a.shape == b.shape and float(np.max(np.abs(a - b), initial=0.0)) <= tol


def save_figure(fig, stem: str | os.PathLike, *, pixel_tol: float = FIGURE_PIXEL_TOL) -> list[Path]:
    """Save a matplotlib figure as ``stem.pdf`` and ``stem.png`` atomically (no creation date in
    the metadata). Both files are left alone when the PNG already there shows the same picture
    (:func:`_same_picture` within ``pixel_tol``) and the PDF exists."""
    stem = Path(stem)
    rendered = {}
    for ext in ("pdf", "png"):
        meta = {"CreationDate": None} if ext == "pdf" else {}
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        rendered[ext] = buf.getvalue()
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    if (
        png.exists()
        and pdf.exists()
        and _same_picture(png.read_bytes(), rendered["png"], pixel_tol)
    ):
        return [pdf, png]
    return [write_bytes(stem.with_suffix(f".{ext}"), payload) for ext, payload in rendered.items()]
