"""Per-segment term matrices kept on the serving machine's disk between restarts.

Derived data built locally from verified rows, stored as ``.npz`` (read with
``allow_pickle=False``: arrays only, never code) beside a sha256 of its key and bytes
(:func:`kbgit.fsio.cache_digest`). A file whose checksum fails, that is not a regular
file (a link is not followed, a FIFO not opened for reading), or whose arrays are not a
term matrix of the right types and sizes is ignored and rebuilt; the cache lives
under the store's ``.git`` directory, which is never committed or replicated. It is
bounded: :func:`prune` keeps the entries in use plus the :data:`DISK_SPARE` most
recently used others (a load or a write marks an entry used), so rolling back or
restarting on a recent commit still reads rather than tokenizes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..format.vector_index import Row
from ..fsio import prune_cache, read_cache_entry, write_cache_entry

logger = logging.getLogger(__name__)

#: where a store keeps its lexical cache (relative to the store root)
CACHE_SUBDIR = Path(".git") / "kbgit-lexical"
#: entries kept on disk beyond those in use, most recently used first
DISK_SPARE = 32
#: numpy dtype kinds each array may have (U: str, i/u: integer, f: float)
_KINDS = {"ids": "U", "terms": "U", "indptr": "iu", "indices": "iu", "data": "f", "lengths": "f"}
_FIELDS = tuple(_KINDS)


def _name(key: tuple[str, str]) -> str:
    return f"{key[0]}-{key[1]}"


def _paths(directory: Path, key: tuple[str, str]) -> tuple[Path, Path]:
    return directory / f"{_name(key)}.npz", directory / f"{_name(key)}.sha256"


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
        write_cache_entry(npz, digest, _name(key), data)
    except OSError as exc:
        logger.warning("lexical cache %s not written: %s", npz, exc)


def load_arrays(directory: Path, key: tuple[str, str]) -> dict[str, np.ndarray] | None:
    """Return the cached arrays of ``key`` if present and their checksum holds."""
    npz, digest = _paths(directory, key)
    try:
        data = read_cache_entry(npz, digest, _name(key))
        if data is None:
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {f: z[f] for f in _FIELDS}
        _check(arrays)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("lexical cache %s unreadable (%s): rebuilding", npz, exc)
        return None
    with contextlib.suppress(OSError):
        os.utime(npz)  # used now: prune keeps recently used entries
    return arrays


def _check(arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless the arrays form a term matrix (types, sizes, ranges)."""
    for field, kinds in _KINDS.items():
        if arrays[field].ndim != 1 or arrays[field].dtype.kind not in kinds:
            raise ValueError(f"{field} is {arrays[field].dtype} of {arrays[field].ndim} dims")
    n, v = len(arrays["ids"]), len(arrays["terms"])
    ptr, idx = arrays["indptr"], arrays["indices"]
    if len(ptr) != v + 1 or len(arrays["lengths"]) != n or len(idx) != len(arrays["data"]):
        raise ValueError("inconsistent array sizes")
    if ptr[0] != 0 or ptr[-1] != len(idx) or (np.diff(ptr) < 0).any():
        raise ValueError("term offsets out of order")
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise ValueError("row number out of range")
    if len(np.unique(arrays["ids"])) != n:
        raise ValueError("a chunk id appears twice")


def prune(directory: Path, keep: set[tuple[str, str]], spare: int = DISK_SPARE) -> int:
    """Delete entries not in ``keep`` beyond the ``spare`` most recent; return how many."""
    return prune_cache(directory, ".npz", {_paths(directory, k)[0].name for k in keep}, spare)


def rows_for(ids: Sequence[str], rows: Sequence[Row]) -> tuple[Row | None, ...]:
    """Return the Row of each id (None for ids no longer live: they are masked anyway)."""
    by_id = {r.id: r for r in rows}
    return tuple(by_id.get(i) for i in ids)
