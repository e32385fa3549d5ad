"""Writing result files so that a reader (or a kill mid-write) sees the old file or the new one, never half."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``.NAME.partial`` beside ``path``, then rename it into place."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)
