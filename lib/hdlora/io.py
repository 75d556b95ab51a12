"""Where results go, and atomic writes (a temp file in the same folder, then a rename).

Tidy tables go to ``data/`` (CSV, one row per point, parameters as columns) and figures to
``figures/`` (PDF + PNG). The ``smoke`` profile (CI) writes under ``build/smoke/`` instead, so a
test run never overwrites the committed results.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hdlora.profiles import check_profile


def repo_root() -> Path:
    """The project's root folder (the package is installed in editable mode from ``lib/``)."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists():
        return root
    return Path.cwd()


def output_dirs(profile: str) -> tuple[Path, Path]:
    """(data folder, figures folder) for a profile; created if missing."""
    check_profile(profile)
    base = repo_root() / "build" / "smoke" if profile == "smoke" else repo_root()
    data, figures = base / "data", base / "figures"
    data.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    return data, figures


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_table(df, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame to CSV atomically."""
    return _atomic(Path(path), lambda tmp: df.to_csv(tmp, index=False))


def save_figure(fig, stem: str | os.PathLike) -> list[Path]:
    """Save a matplotlib figure as ``stem.pdf`` and ``stem.png`` atomically."""
    stem = Path(stem)
    out = []
    for ext in ("pdf", "png"):
        target = stem.with_suffix(f".{ext}")
        meta = {"CreationDate": None} if ext == "pdf" else {}  # same run, same bytes

        def write(tmp, e=ext, m=meta):
            fig.savefig(tmp, format=e, dpi=150, bbox_inches="tight", metadata=m)

        out.append(_atomic(target, write))
    return out
