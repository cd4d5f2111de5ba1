"""Per-segment term matrices kept on the serving machine's disk between restarts.

Derived data built locally from verified rows, stored as ``.npz`` (read with
``allow_pickle=False``: arrays only, never code) beside a sha256 of the file. A file
whose checksum fails, or that cannot be read, is ignored and rebuilt; the cache lives
under the store's ``.git`` directory, which is never committed or replicated. It is
bounded: :func:`prune` keeps the entries in use plus the :data:`DISK_SPARE` most
recently used others (a load or a write marks an entry used), so rolling back or
restarting on a recent commit still reads rather than tokenizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..format.vector_index import Row
from ..fsio import prune_cache, write_atomic

logger = logging.getLogger(__name__)

#: where a store keeps its lexical cache (relative to the store root)
CACHE_SUBDIR = Path(".git") / "kbgit-lexical"
#: entries kept on disk beyond those in use, most recently used first
DISK_SPARE = 32
_FIELDS = ("ids", "terms", "indptr", "indices", "data", "lengths")


def _paths(directory: Path, key: tuple[str, str]) -> tuple[Path, Path]:
    name = f"{key[0]}-{key[1]}"
    return directory / f"{name}.npz", directory / f"{name}.sha256"


def save_terms(directory: Path, key: tuple[str, str], terms: object) -> None:
    """Write a segment's term matrix (best effort: a failure only costs a rebuild)."""
    buf = io.BytesIO()
    vocab = sorted(terms.vocab.items(), key=lambda kv: kv[1])  # type: ignore[attr-defined]
    np.savez(
        buf,
        ids=np.asarray(terms.ids, dtype=str),  # type: ignore[attr-defined]
        terms=np.asarray([t for t, _c in vocab], dtype=str),
        indptr=terms.tf.indptr,  # type: ignore[attr-defined]
        indices=terms.tf.indices,  # type: ignore[attr-defined]
        data=terms.tf.data,  # type: ignore[attr-defined]
        lengths=terms.lengths,  # type: ignore[attr-defined]
    )
    data = buf.getvalue()
    npz, digest = _paths(directory, key)
    if not directory.parent.is_dir():  # e.g. a replica's .git before its clone
        return
    try:
        directory.mkdir(exist_ok=True)
        # a checksummed cache: a file torn by a crash is rebuilt, so no fsync
        write_atomic(npz, data, durable=False)
        write_atomic(digest, hashlib.sha256(data).hexdigest().encode(), durable=False)
    except OSError as exc:
        logger.warning("lexical cache %s not written: %s", npz, exc)


def load_arrays(directory: Path, key: tuple[str, str]) -> dict[str, np.ndarray] | None:
    """Return the cached arrays of ``key`` if present and their checksum holds."""
    npz, digest = _paths(directory, key)
    try:
        data = npz.read_bytes()
        want = digest.read_text().strip()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != want:
        logger.warning("lexical cache %s fails its checksum: rebuilding", npz)
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {f: z[f] for f in _FIELDS}
        n, v = len(arrays["ids"]), len(arrays["terms"])
        ok = len(arrays["indptr"]) == v + 1 and len(arrays["lengths"]) == n
        ptr, idx = arrays["indptr"], arrays["indices"]
        if not ok or len(idx) != len(arrays["data"]) or (ptr[-1] if v else 0) != len(idx):
            raise ValueError("inconsistent array sizes")
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise ValueError("row number out of range")
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("lexical cache %s unreadable (%s): rebuilding", npz, exc)
        return None
    with contextlib.suppress(OSError):
        os.utime(npz)  # used now: prune keeps recently used entries
    return arrays


def prune(directory: Path, keep: set[tuple[str, str]], spare: int = DISK_SPARE) -> int:
    """Delete entries not in ``keep`` beyond the ``spare`` most recent; return how many."""
    return prune_cache(directory, ".npz", {_paths(directory, k)[0].name for k in keep}, spare)


def rows_for(ids: Sequence[str], rows: Sequence[Row]) -> tuple[Row | None, ...]:
    """Return the Row of each id (None for ids no longer live: they are masked anyway)."""
    by_id = {r.id: r for r in rows}
    return tuple(by_id.get(i) for i in ids)
