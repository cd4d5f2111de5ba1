"""Crash-safe file writes that never follow a symbolic link.

Writes are temp file + fsync + rename, then fsync of the directory. Every directory
between the store's root and the file is opened with ``O_NOFOLLOW`` relative to its
parent, so a symbolic link in the working tree (``docs/dir -> /elsewhere``) is refused
instead of written through.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import IntegrityError

logger = logging.getLogger(__name__)

TMP_MARK = ".kbgit-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _tmp_name(name: str) -> str:
    # short and unique per file and process: a 255-byte file name still gets a temp name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{TMP_MARK}{os.getpid()}-{digest}"


@contextlib.contextmanager
def _parent_fd(root: Path, parts: tuple[str, ...], *, create: bool) -> Iterator[int]:
    """Open root/parts[0]/... as a directory fd, refusing symbolic links on the way."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n, part in enumerate(parts):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = "/".join(parts[: n + 1])
                    raise IntegrityError(
                        f"{root / where} is a symbolic link or not a directory: refusing to "
                        "write through it",
                        hint="remove it (kbgit repair resets the working tree to HEAD)",
                    ) from None
                raise
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _split(path: Path, root: Path | None) -> tuple[Path, tuple[str, ...], str]:
    if root is None:
        return path.parent, (), path.name
    rel = path.relative_to(root)
    return root, rel.parts[:-1], rel.name


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    root: str | os.PathLike[str] | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file.

    With ``root``, no directory between ``root`` and ``path`` may be a symbolic link.
    ``durable=False`` skips both fsyncs (file and folder), for two kinds of file only:
    checksummed caches (a file a crash leaves torn fails its checksum and is rebuilt;
    the fsyncs cost a standby ~15-20 ms per sync before it can swap) and copies of data
    kept durably elsewhere (a store's working tree: git's objects, repaired from them).
    """
    path = Path(path)
    base, parts, name = _split(path, Path(root) if root is not None else None)
    if root is None:
        base.mkdir(parents=True, exist_ok=True)
    with _parent_fd(base, parts, create=True) as dfd:
        tmp = _tmp_name(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if durable:
            os.fsync(dfd)


def remove(path: str | os.PathLike[str], stop: str | os.PathLike[str]) -> None:
    """Delete a file and every directory above it that became empty, up to ``stop``.

    No directory between ``stop`` and the file may be a symbolic link.
    """
    stop = Path(stop)
    parts = Path(path).relative_to(stop).parts
    try:
        with (
            _parent_fd(stop, parts[:-1], create=False) as dfd,
            contextlib.suppress(FileNotFoundError),
        ):
            os.unlink(parts[-1], dir_fd=dfd)
    except FileNotFoundError:
        return
    for depth in range(len(parts) - 1, 0, -1):
        try:
            with _parent_fd(stop, parts[: depth - 1], create=False) as dfd:
                os.rmdir(parts[depth - 1], dir_fd=dfd)
        except OSError:
            break


def cache_digest(key: str, data: bytes) -> str:
    """Return the checksum a local cache entry is stored with: sha256 of its key and bytes.

    The key is part of it, so an entry copied or renamed to another key (another
    segment's bytes under this segment's name) fails its check instead of being served.
    """
    return hashlib.sha256(key.encode() + b"\0" + data).hexdigest()


def write_cache_entry(path: Path, digest: Path, key: str, data: bytes) -> None:
    """Write a cache entry, then its checksum file (each atomically; raises OSError).

    No fsync: a file torn by a crash fails its checksum and is rebuilt.
    """
    write_atomic(path, data, durable=False)
    write_atomic(digest, cache_digest(key, data).encode(), durable=False)


def read_cache_entry(path: Path, digest: Path, key: str) -> bytes | None:
    """Return a cache entry's bytes if its checksum holds; None if it is absent.

    Only regular files are read, never through a symbolic link and never blocking on a
    FIFO. :raises ValueError: the entry is there but is not a regular file, or its
    checksum fails (the caller deletes and rebuilds it).
    """
    try:
        data = read_regular(path)
        want = read_regular(digest, limit=256).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None  # absent (or half there): built and written again
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    if cache_digest(key, data) != want:
        raise ValueError("fails its checksum")
    return data


def open_regular(path: str | os.PathLike[str]) -> int:
    """Open a file for reading; refuse symbolic links, FIFOs, sockets and devices (OSError)."""
    # O_NOFOLLOW: a link is never read (it could point anywhere, e.g. /etc/passwd);
    # O_NONBLOCK: opening a FIFO must not block for ever
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError("not a regular file")
    return fd


def read_regular(path: str | os.PathLike[str], limit: int = -1) -> bytes:
    """Return a regular file's bytes (at most ``limit``; see :func:`open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as fh:
        return fh.read(limit)


def prune_cache(directory: Path, suffix: str, keep: set[str], spare: int) -> int:
    """Delete ``*suffix`` entries (and their ``.sha256``) not in ``keep`` beyond ``spare``.

    ``keep`` holds file names; of the others the ``spare`` most recently modified stay
    (a cache marks an entry used by touching it). Returns how many were deleted; failures
    are logged, never raised (a cache that cannot prune still serves).
    """
    try:
        found = [p for p in directory.glob(f"*{suffix}") if p.name not in keep]
    except OSError as exc:
        logger.warning("cache %s not pruned: %s", directory, exc)
        return 0
    others = sorted(found, key=_mtime, reverse=True)
    for entry in others[spare:]:
        for path in (entry, entry.with_suffix(".sha256")):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("cache entry %s not removed: %s", path, exc)
    return max(0, len(others) - spare)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0  # gone already: first to go
