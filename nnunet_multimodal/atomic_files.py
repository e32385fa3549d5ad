"""Writing files so that a reader (or a kill mid-write) sees the old file or the new one, never half of it.

Every file the plugin writes goes through ``atomic_path``: the writer (``open``, ``torch.save``,
``SimpleITK.WriteImage``, ``savefig``) writes a temporary file in the target's folder, whose name keeps the
target's extension so that format-sniffing writers pick the right format; on success it is renamed onto the
target, on any error it is removed. Temporary files left by a writer killed outright (SIGKILL, power loss) are
removed at the next write of the same target.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial"


def _temporary_name(target: Path) -> Path:
    extension = "".join(target.suffixes[-2:])  # ".nii.gz", ".json", ".png": what writers choose the format by
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{PARTIAL_MARK}{extension}")


def _remove_stale_temporaries(target: Path) -> None:
    for stale in target.parent.glob(f".{target.name}.*{PARTIAL_MARK}*"):
        stale.unlink(missing_ok=True)


def is_temporary_of_any(name: str, targets: set[str]) -> bool:
    """Whether ``name`` (a path relative to a folder) is a temporary file of one of ``targets`` (relative to the
    same folder), e.g. left by a writer killed outright."""
    path = Path(name)
    return PARTIAL_MARK in path.name and any(
        path.parent == Path(target).parent and path.name.startswith(f".{Path(target).name}.") for target in targets)


@contextmanager
def atomic_path(target: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write to; rename it onto ``target`` when the block ends
    without an error, remove it otherwise. ``durable``: fsync the file before the rename, for files whose loss
    after a power cut costs hours (checkpoints)."""
    target = Path(target)
    _remove_stale_temporaries(target)
    temporary = _temporary_name(target)
    try:
        yield temporary
        if durable:
            with open(temporary, "rb") as f:
                os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
