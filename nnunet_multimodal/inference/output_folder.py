"""Output folders that prediction runs write into: a run replaces only files that an earlier run of ours wrote,
and two runs at once into one folder are refused.

Which files our runs wrote is kept in a manifest in the folder (``.nnunet_mm_predict.json``): a file of an output
name that the manifest does not list (a copy of labelsTs, another tool's predictions) is the user's, and is
replaced only with ``--overwrite``. A lock file, created with O_EXCL so that only one run can create it, holds
the writing run's pid; a lock whose pid is gone was left by a killed run and is taken over.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from nnunet_multimodal.atomic_files import write_text_atomic

MANIFEST = ".nnunet_mm_predict.json"
LOCK = ".nnunet_mm_predict.lock"
SHOWN_FILES = 5


def files_written_earlier(folder: Path) -> set[str]:
    """The output names (relative to ``folder``) that earlier runs recorded; none for an unreadable manifest, so
    that its files are protected rather than replaced."""
    try:
        return set(json.loads((folder / MANIFEST).read_text())["written"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def refuse_files_we_did_not_write(folder: Path, names: list[str], overwrite_hint: str) -> None:
    """FileExistsError listing the files of ``names`` in ``folder`` that no earlier run wrote."""
    ours = files_written_earlier(folder)
    foreign = sorted(name for name in names if name not in ours and (folder / name).exists())
    if foreign:
        shown = ", ".join(foreign[:SHOWN_FILES]) + (f" and {len(foreign) - SHOWN_FILES} more"
                                                    if len(foreign) > SHOWN_FILES else "")
        raise FileExistsError(f"{folder} holds {len(foreign)} file(s) that this run would replace and that no "
                              f"earlier prediction run wrote: {shown}; choose another output folder (-o), or "
                              f"{overwrite_hint} to replace them")


def record_files_written(folder: Path, names: list[str]) -> None:
    """Add ``names`` to the manifest, before they are written: a run killed midway leaves its files claimed."""
    written = sorted(files_written_earlier(folder) | set(names))
    write_text_atomic(folder / MANIFEST, json.dumps({"written_by": "nnunet-mm prediction", "written": written},
                                                    indent=2))


def pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def create_lock(lock: Path) -> None:
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))


def lock_owner(lock: Path) -> int | None:
    """The pid in ``lock``; None while the run that created it has not written it yet (or for a damaged lock)."""
    try:
        return int(lock.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def output_folder_lock(folder: Path):
    """Hold ``folder``'s lock file while the block runs; FileExistsError naming the lock if a running process
    holds it."""
    lock = folder / LOCK
    try:
        create_lock(lock)
    except FileExistsError:
        owner = lock_owner(lock)
        if owner is None or pid_is_running(owner):
            raise FileExistsError(f"{lock} exists: another prediction run (pid {owner or 'unknown'}) is writing to "
                                  f"{folder}; wait for it to end or choose another output folder (-o). If no run "
                                  f"is writing there, delete the lock file") from None
        print(f"note: {lock} was left by process {owner}, which is gone; taking it over", file=sys.stderr)
        lock.unlink(missing_ok=True)
        create_lock(lock)  # a run starting at this moment may win: then this one is refused
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
