"""Index segments and the live search index built from them.

A segment is two files written once: a FAISS ``IndexFlatIP`` (``faiss.write_index``
format) and a JSON-lines file with one row per vector (chunk id, text, metadata).
Segments are read without handing repo bytes to FAISS's deserializer: the flat-index
layout is checked field by field and its vectors are viewed with numpy, so a crafted
file can neither execute code nor crash the process; only then is a fresh FAISS index
built in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from ..errors import IntegrityError, QueryError
from . import jsonio

if TYPE_CHECKING:
    from .ann import AnnIndex

_FLAT_IP = b"IxFI"
# fourcc, d (int32), ntotal (int64), two unused int64, is_trained (bool), metric (int32),
# then the code vector: its length in floats (uint64) and the float32 data
_HEADER = struct.Struct("<4siqqq?iQ")
METRIC_INNER_PRODUCT = 0


@dataclasses.dataclass(frozen=True)
class Row:
    """One chunk stored in a segment."""

    id: str
    text: str
    meta: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Segment:
    """A parsed segment: vectors (n, dim) float32 and their rows, in the same order.

    A verified segment is cached by its blob ids (SegmentCache) and searched in place, so
    a reload decodes only new segments and a new commit's tombstones become masks.
    """

    name: str
    vectors: np.ndarray
    rows: tuple[Row, ...]

    @property
    def ids(self) -> list[str]:
        """Return the chunk ids in row order."""
        return [r.id for r in self.rows]

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """Map each chunk id to its row number (computed once per cached segment)."""
        return {r.id: i for i, r in enumerate(self.rows)}


def encode_segment(vectors: np.ndarray, rows: Sequence[Row]) -> tuple[bytes, bytes]:
    """Serialize a segment to (faiss file bytes, jsonl bytes)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(rows):
        raise ValueError(f"{vectors.shape} vectors for {len(rows)} rows")
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss_bytes = faiss.serialize_index(index).tobytes()
    lines = [
        json.dumps({"id": r.id, "text": r.text, "meta": r.meta}, sort_keys=True, ensure_ascii=False)
        + "\n"
        for r in rows
    ]
    return faiss_bytes, "".join(lines).encode("utf-8")


def decode_vectors(data: bytes, *, label: str) -> np.ndarray:
    """Return the (n, d) float32 vectors of a serialized ``IndexFlatIP``, checked."""
    if len(data) < _HEADER.size:
        raise IntegrityError(f"{label}: truncated FAISS file ({len(data)} bytes)")
    fourcc, dim, ntotal, _u1, _u2, _trained, metric, nfloats = _HEADER.unpack_from(data)
    if fourcc != _FLAT_IP or metric != METRIC_INNER_PRODUCT:
        raise IntegrityError(f"{label}: not a FAISS IndexFlatIP (type {fourcc!r})")
    if dim <= 0 or ntotal < 0 or nfloats != dim * ntotal:
        raise IntegrityError(f"{label}: inconsistent FAISS header (d={dim}, ntotal={ntotal})")
    if len(data) != _HEADER.size + 4 * nfloats:
        raise IntegrityError(
            f"{label}: FAISS file is {len(data)} bytes, header says {_HEADER.size + 4 * nfloats}"
        )
    vecs = np.frombuffer(data, dtype="<f4", count=nfloats, offset=_HEADER.size)
    return vecs.reshape(ntotal, dim)


def decode_rows(data: bytes, *, label: str) -> tuple[Row, ...]:
    """Parse a segment's JSON-lines rows, checked."""
    rows: list[Row] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{label}: not UTF-8") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            obj = jsonio.loads(line, f"{label}:{lineno}")
            row = Row(obj["id"], obj["text"], obj["meta"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{label}:{lineno}: malformed row: {exc!r}") from exc
        if (
            not isinstance(row.id, str)
            or not isinstance(row.text, str)
            or not isinstance(row.meta, dict)
        ):
            raise IntegrityError(f"{label}:{lineno}: row fields have the wrong types")
        rows.append(row)
    return tuple(rows)


def decode_segment(
    name: str, faiss_bytes: bytes, rows_bytes: bytes, *, vectors: int, dim: int
) -> Segment:
    """Parse and cross-check a segment against the counts its manifest entry claims."""
    vecs = decode_vectors(faiss_bytes, label=f"{name}.faiss")
    rows = decode_rows(rows_bytes, label=f"{name}.jsonl")
    if vecs.shape != (vectors, dim):
        raise IntegrityError(
            f"segment {name}: FAISS holds {vecs.shape[0]}x{vecs.shape[1]} vectors, "
            f"manifest says {vectors}x{dim}"
        )
    if len(rows) != vectors:
        raise IntegrityError(f"segment {name}: {len(rows)} rows for {vectors} vectors")
    if len({r.id for r in rows}) != len(rows):
        raise IntegrityError(f"segment {name}: duplicate chunk ids")
    return Segment(name, vecs, rows)


@dataclasses.dataclass(frozen=True)
class Match:
    """A search result: score and the row it points at."""

    score: float
    segment: str
    row: Row


class LiveIndex:
    """The searchable union of segments minus tombstoned rows (inner product).

    Each segment is scored in place (FAISS's SIMD inner products over its vectors, one
    thread); a segment's tombstones are a boolean live mask, so building a LiveIndex for
    a new commit costs O(segments + tombstones): no vector is copied. Ties rank by
    position in :meth:`rows` order, so results do not depend on how rows are split into
    segments (compaction keeps them identical).

    A segment given an :class:`~kbgit.format.ann.AnnIndex` (``ann``, by segment name) is
    searched approximately unless a query asks for ``exact``: the index proposes live
    rows (the mask is its ID selector) and they are scored exactly as above.

    >>> live = LiveIndex([segment], {"g000001": {"dead-id"}}, 384)   # doctest: +SKIP
    >>> live.search(query_vector, k=5)                               # doctest: +SKIP
    >>> for seg, mask in live.parts(): ...   # rows per segment, live mask (None: all live)
    """

    def __init__(
        self,
        segments: Iterable[Segment],
        tombstoned: dict[str, set[str]],
        dim: int,
        ann: Mapping[str, AnnIndex] | None = None,
    ) -> None:
        self.dim = dim
        self._parts: list[_Part] = []
        for seg in segments:
            dead = tombstoned.get(seg.name)
            mask = None
            if dead:  # O(tombstones) to mark
                mask = np.ones(len(seg.rows), dtype=bool)
                mask[[seg.positions[i] for i in dead if i in seg.positions]] = False
            part = _Part(seg, mask, (ann or {}).get(seg.name))
            if part.live:
                self._parts.append(part)
        self._offsets = np.cumsum([0] + [p.live for p in self._parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def with_ann(self, ann: Mapping[str, AnnIndex]) -> LiveIndex:
        """Return this index with ANN indexes (by segment name) for its segments."""
        out = object.__new__(LiveIndex)
        out.dim, out._offsets = self.dim, self._offsets
        out._parts = [_Part(p.segment, p.mask, ann.get(p.segment.name)) for p in self._parts]
        return out

    @property
    def approximate(self) -> int:
        """Return how many segments are searched with an ANN index by default."""
        return sum(p.ann is not None for p in self._parts)

    def parts(self) -> list[tuple[Segment, np.ndarray | None]]:
        """Return each segment with its live mask (None when every row is live)."""
        return [(p.segment, p.mask) for p in self._parts]

    def rows(self) -> list[tuple[str, Row]]:
        """Return (segment, row) for every live vector, in index order."""
        out: list[tuple[str, Row]] = []
        for p in self._parts:
            rows = p.segment.rows
            live = rows if p.mask is None else itertools.compress(rows, p.mask)
            out.extend(zip(itertools.repeat(p.segment.name), live))
        return out

    def vectors(self) -> np.ndarray:
        """Return a copy of every live vector, in index order."""
        blocks = [p.segment.vectors if p.mask is None else p.segment.vectors[p.mask]
                  for p in self._parts]  # fmt: skip
        if not blocks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: Sequence[int] | None = None,
        *,
        exact: bool = False,
    ) -> list[Match]:
        """Return the k best matches for one query vector, optionally among ``allowed`` rows.

        ``exact`` scores every live row even where a segment has an ANN index.
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dim:
            raise QueryError(f"query vector has dimension {query.shape[0]}, index has {self.dim}")
        if not len(self) or k < 1:
            return []
        parts = self._parts if allowed is None else self._restrict(allowed)
        found: list[tuple[float, int, int]] = []
        for n, part in enumerate(parts):
            scores, rows = part.search(query, k, exact=exact)
            found += [(-float(s), n, int(r)) for s, r in zip(scores, rows, strict=True)]
        found.sort()
        return [Match(-s, parts[n].segment.name, parts[n].segment.rows[r]) for s, n, r in found[:k]]

    def _restrict(self, allowed: Sequence[int]) -> list[_Part]:
        """Return the parts limited to ``allowed`` positions (in :meth:`rows` order)."""
        wanted = np.unique(np.asarray(allowed, dtype=np.int64))
        out = []
        for n, p in enumerate(self._parts):
            lo, hi = self._offsets[n], self._offsets[n + 1]
            local = wanted[(wanted >= lo) & (wanted < hi)] - lo
            if len(local):
                mask = np.zeros(len(p.segment.rows), dtype=bool)
                mask[p.live_rows()[local]] = True
                out.append(_Part(p.segment, mask, p.ann))
        return out


class _Part:
    """One segment of a LiveIndex, the mask of its live rows and its ANN index if any."""

    def __init__(
        self, segment: Segment, mask: np.ndarray | None, ann: AnnIndex | None = None
    ) -> None:
        self.segment = segment
        self.mask = mask if mask is not None and not mask.all() else None
        self.live = len(segment.rows) if self.mask is None else int(self.mask.sum())
        self.ann = ann
        #: the live mask packed as FAISS's ID-selector bitmap (little-endian bits)
        self.bitmap = None
        if ann is not None and self.mask is not None:
            self.bitmap = np.packbits(self.mask, bitorder="little")

    def live_rows(self) -> np.ndarray:
        """Return the row numbers of the live rows, ascending."""
        return np.arange(len(self.segment.rows)) if self.mask is None else np.flatnonzero(self.mask)

    def search(
        self, query: np.ndarray, k: int, *, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the best (scores, row numbers) among live rows; ties by lower row first.

        With an ANN index (and not ``exact``) only the rows it proposes are scored; if
        it proposes fewer than k live rows (a narrow filter), every row is scored.
        """
        if self.ann is not None and not exact:
            rows = self.ann.candidates(query, k, self.bitmap)
            if len(rows) >= min(k, self.live):
                return _best(_scores(query, self.segment.vectors[rows]), rows, k)
        vecs = np.ascontiguousarray(self.segment.vectors, dtype=np.float32)
        scores = _scores(query, vecs)
        rows = np.arange(len(vecs))
        if self.mask is not None:
            scores, rows = scores[self.mask], rows[self.mask]
        return _best(scores, rows, k)


def _scores(query: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """Return the inner product of ``query`` with each row of ``vecs`` (FAISS's kernel)."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    scores = np.empty(len(vecs), dtype=np.float32)
    faiss.fvec_inner_products_ny(
        faiss.swig_ptr(scores),
        faiss.swig_ptr(query),
        faiss.swig_ptr(vecs),
        len(query),
        len(vecs),
    )
    return scores


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the k best (scores, rows), best first, ties by lower row number."""
    if len(scores) > k:  # every row scoring at least the k-th best, then exact order
        cut = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = np.flatnonzero(scores >= cut)
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]
