"""Crash-safe file writes: temp file + fsync + rename, then fsync the directory."""

from __future__ import annotations

import os
from pathlib import Path

TMP_MARK = ".kbgit-tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_MARK}{os.getpid()}-{path.name}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove(path: str | os.PathLike[str], stop: str | os.PathLike[str]) -> None:
    """Delete a file and every directory above it that became empty, up to ``stop``."""
    path, stop = Path(path), Path(stop)
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != stop and stop in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
