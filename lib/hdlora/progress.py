"""The switch for progress bars: a function argument, else the HDLORA_PROGRESS variable.

Batch runs turn every bar off with ``HDLORA_PROGRESS=0``; plain ``tqdm`` is used (not
``tqdm.auto``, which misbehaves under papermill).
"""

from __future__ import annotations

import os


def progress_enabled(progress: bool | None = None) -> bool:
    """``progress`` when given, else True unless the environment sets HDLORA_PROGRESS=0."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("HDLORA_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")
