"""Where results go, and atomic writes (a temp file in the same folder, then a rename).

Every notebook writes under one output folder ``out_dir``: tidy tables to ``out_dir/data/``
(CSV, one row per point, parameters as columns) and figures to ``out_dir/figures/`` (PDF + PNG).
``make figures`` passes the repository root, so the committed ``data/`` and ``figures/`` are
updated; any other run (papermill by hand, ``make test``) defaults to
``build/runs/<notebook>/`` and never touches tracked files.

A write whose bytes equal the file already there leaves the file alone (a rerun with nothing
changed writes nothing).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

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


def write_table(df, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame to CSV atomically (nothing is written if unchanged)."""
    return write_bytes(path, df.to_csv(index=False).encode())


def save_figure(fig, stem: str | os.PathLike) -> list[Path]:
    """Save a matplotlib figure as ``stem.pdf`` and ``stem.png`` atomically (same figure, same
    bytes: no creation date in the metadata)."""
    stem = Path(stem)
    out = []
    for ext in ("pdf", "png"):
        meta = {"CreationDate": None} if ext == "pdf" else {}
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        out.append(write_bytes(stem.with_suffix(f".{ext}"), buf.getvalue()))
    return out
