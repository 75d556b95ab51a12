r"""The finished jobs of a table being computed, kept on disk so that an interrupted computation
resumes where it stopped.

A table of the quick profile can take an hour of one core (Fig. 4's paired runs), one of the
paper profile days; a computation stopped by a crash, a lost cluster node or the end of a
session would otherwise start again from its first job. :class:`JobStore` keeps each finished
job of one table (its output and the warnings it raised) in ``<folder>/<index>.pkl`` while the
table is computed. The folder is named by the table's cache key
(:func:`hdlora.harness.tables.cache_key`: the points, the arguments and the solver's code), so
a stored job is reused only by a computation of exactly the same jobs by the same code, and its
numbers are those the uninterrupted computation gives (same seed, same numbers). The folder is
removed once the table is written (:meth:`hdlora.harness.run.Run.solve` and the other writers of
:class:`~hdlora.harness.run.Run`); it lives under ``build/``, which git ignores.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
from pathlib import Path

from hdlora.harness.io import write_bytes


class JobStore:
    """The finished jobs of one table's computation: job ``index`` → (output, caught warnings),
    each in its own file of ``folder`` (written atomically as the job finishes)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, index: int) -> Path:
        return self.folder / f"{index}.pkl"

    def get(self, index: int) -> tuple | None:
        """The stored (output, caught warnings) of job ``index``, or None if it has not finished
        (or its file cannot be read: the job is then run again)."""
        path = self._path(index)
        if not path.exists():
            return None
        try:
            return pickle.loads(path.read_bytes())
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None

    def put(self, index: int, result: tuple) -> None:
        """Store the (output, caught warnings) of job ``index``."""
        write_bytes(self._path(index), pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))

    def clear(self) -> None:
        """Remove the folder and every job in it (and its parent folder, the table's, when no
        other computation of that table left jobs there)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()
