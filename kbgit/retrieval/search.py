"""Answer a query from one snapshot in any mode: dense, lexical or hybrid.

Both the library (``KnowledgeStore.query``, which also serves ``--rev``) and a server
(``KnowledgeService.query``) call :func:`search` with one snapshot and the lexical index
built from that same snapshot, so an answer never mixes two commits. Each hit says which
retrievers found it and at what rank (1-based, within that retriever's candidates).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import QueryError
from ..format.snapshot import Hit, Snapshot
from ..format.vector_index import Row
from .fusion import HybridOptions, fuse
from .lexical import LexicalIndex, SegmentTerms, TermsCache, covers, live_mask
from .termstore import CACHE_SUBDIR
from .tokenize import DEFAULT_CJK

#: lexical indexes kept per process (the served commit, the one being loaded, a --rev)
KEEP_INDEXES = 3
#: the most hits one query may ask for (a server caps k lower: config.MAX_K)
MAX_HITS = 10_000


@dataclasses.dataclass(frozen=True)
class RankedHit(Hit):
    """A hit and the rank each retriever gave it, e.g. ``{"dense": 3, "lexical": 1}``."""

    retrievers: dict[str, int] = dataclasses.field(default_factory=dict)


class LexicalIndexes:
    """Lexical indexes per commit, built from per-segment term matrices cached by content.

    ``directory`` keeps the matrices on local disk between restarts (checked by sha256).
    """

    @classmethod
    def for_store(cls, root: Path) -> LexicalIndexes:
        """Return indexes that cache under a store's ``.git``.

        A standby's replica is cloned after its service is created: nothing is written
        while ``.git`` is missing (a directory there would stop the clone).
        """
        return cls(directory=Path(root) / CACHE_SUBDIR)

    def __init__(self, cjk: str = DEFAULT_CJK, *, directory: Path | None = None) -> None:
        self.cjk = cjk
        self.terms = TermsCache(directory)
        self._by_commit: collections.OrderedDict[str, LexicalIndex] = collections.OrderedDict()
        #: the term-cache keys each kept index uses
        self._keys: dict[str, set[tuple[str, str]]] = {}
        #: term matrices found to hold their segment's rows in order (see _aligned)
        self._checked: dict[tuple[str, str], SegmentTerms] = {}
        #: the served commit (a server's last retain): never evicted by other revisions
        self._pinned: str | None = None
        self._lock = threading.Lock()

    def get(self, snap: Snapshot) -> LexicalIndex:
        """Return the lexical index of ``snap``'s commit, building only new segments."""
        with self._lock:
            idx = self._by_commit.get(snap.commit)
            if idx is not None:
                self._by_commit.move_to_end(snap.commit)
                return idx
        idx = self._build(snap)
        with self._lock:
            self._by_commit[snap.commit] = idx
            self._keys[snap.commit] = self._segment_keys(snap)
            evicted = False
            for old in [c for c in self._by_commit if c != self._pinned]:
                if len(self._by_commit) <= KEEP_INDEXES:
                    break
                del self._by_commit[old]
                self._keys.pop(old, None)
                evicted = True
            used = set().union(*self._keys.values()) if evicted else None
        if used is not None:  # a long-lived process forgets terms no kept index uses
            self._keep_terms(used)
        return idx

    def _segment_keys(self, snap: Snapshot) -> set[tuple[str, str]]:
        return {(ref.rows.sha256, self.cjk) for ref in snap.manifest.segments}

    def _build(self, snap: Snapshot) -> LexicalIndex:
        """Put together ``snap``'s index: O(segments) for segments seen before.

        A segment's term matrix covers every row of its rows file, in order, so the dense
        index's live mask (its tombstones) applies to it as is: no walk over the rows. An
        entry made by an older release from the rows live then is checked row by row.
        """
        live_parts = {seg.name: (seg, mask) for seg, mask in snap.index.parts()}
        parts = []
        for ref in snap.manifest.segments:
            found = live_parts.get(ref.name)
            if found is None:
                continue  # no live row: it neither matches nor counts
            seg, mask = found
            key = (ref.rows.sha256, self.cjk)
            terms = self.terms.get(key, seg.rows)
            if not self._aligned(key, terms, seg.rows):  # an older entry: from live rows only
                rows = seg.rows if mask is None else itertools.compress(seg.rows, mask)
                ids = {r.id for r in rows}
                if covers(terms, ids):
                    parts.append((ref.name, terms, live_mask(terms, ids)))
                    continue
                terms = self.terms.build(key, seg.rows)
                self._aligned(key, terms, seg.rows)
            live = mask if mask is not None else np.ones(len(seg.rows), dtype=bool)
            parts.append((ref.name, terms, live))
        return LexicalIndex(snap.commit, parts, self.cjk)

    def _aligned(self, key: tuple[str, str], terms: SegmentTerms, rows: Sequence[Row]) -> bool:
        """Tell whether ``terms`` holds exactly ``rows``' ids in order (checked once per
        matrix: a disk entry is trusted for its checksum, not for its row order)."""
        with self._lock:
            if self._checked.get(key) is terms:
                return True
        if terms.ids != tuple(r.id for r in rows):
            return False
        with self._lock:
            self._checked[key] = terms
        return True

    def retain(self, snap: Snapshot) -> None:
        """Keep only what ``snap`` uses (after a swap); later revisions never evict it."""
        with self._lock:
            self._pinned = snap.commit
            keep = {c: i for c, i in self._by_commit.items() if c == snap.commit}
            self._by_commit = collections.OrderedDict(keep)
            self._keys = {c: k for c, k in self._keys.items() if c in keep}
        self._keep_terms(self._segment_keys(snap))

    def _keep_terms(self, keys: set[tuple[str, str]]) -> None:
        self.terms.retain(keys)
        with self._lock:
            self._checked = {k: t for k, t in self._checked.items() if k in keys}


def _row_filter(
    snap: Snapshot,
    source: str | Sequence[str] | None,
    row_filter: Callable[[Row], bool] | None,
) -> Callable[[Row], bool] | None:
    """Return one predicate for the source prefix(es) and ``row_filter`` (None: all rows)."""
    if source is None:
        return row_filter
    prefixes = (source,) if isinstance(source, str) else tuple(source)
    if not all(isinstance(p, str) for p in prefixes):
        raise QueryError("filter.source must be a string or a list of strings")
    sources = snap.sources

    def ok(row: Row) -> bool:
        return sources[row.id].startswith(prefixes) and (row_filter is None or row_filter(row))

    return ok


def search(
    snap: Snapshot,
    text: str,
    k: int,
    opts: HybridOptions,
    *,
    embed: Callable[[str], np.ndarray],
    lexical: Callable[[], LexicalIndex],
    source: str | Sequence[str] | None = None,
    score_threshold: float | None = None,
    row_filter: Callable[[Row], bool] | None = None,
) -> list[RankedHit]:
    """Return the k best chunks of ``snap`` for ``text`` in mode ``opts.mode``.

    ``source`` keeps documents under a path prefix (or one of several), ``row_filter``
    keeps rows it accepts (LangChain metadata filters); both apply in every mode, before
    the top k is cut. ``score_threshold`` drops hits whose score (cosine, BM25 or fused,
    per mode) is below it.
    """
    if not text or not text.strip():
        raise QueryError("query text is empty")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_HITS:
        raise QueryError(f"k must be an integer between 1 and {MAX_HITS}, got {k!r}")
    if score_threshold is not None and not math.isfinite(score_threshold):
        raise QueryError(f"score_threshold must be a finite number, got {score_threshold}")
    ok = _row_filter(snap, source, row_filter)
    depth = k if opts.mode != "hybrid" else max(k, opts.depth)
    lists: dict[str, list[tuple[str, float]]] = {}
    rows: dict[str, Row] = {}
    if opts.mode in ("dense", "hybrid"):
        allowed = None
        if ok is not None:
            allowed = [i for i, (_s, row) in enumerate(snap.index.rows()) if ok(row)]
        found = snap.index.search(embed(text), depth, allowed, exact=opts.exact)
        lists["dense"] = [(m.row.id, m.score) for m in found]
        rows.update((m.row.id, m.row) for m in found)
    if opts.mode in ("lexical", "hybrid"):
        matches = lexical().search(text, depth, ok)
        lists["lexical"] = [(m.row.id, m.score) for m in matches]
        rows.update((m.row.id, m.row) for m in matches)
    out = [
        RankedHit(score, key, snap.sources[key], rows[key].text, rows[key].meta, ranks)
        for key, score, ranks in _rank(lists, opts)[:k]
    ]
    if score_threshold is not None:
        out = [h for h in out if h.score >= score_threshold]
    return out


def _rank(
    lists: dict[str, list[tuple[str, float]]], opts: HybridOptions
) -> list[tuple[str, float, dict[str, int]]]:
    if len(lists) == 1:
        ((name, ranking),) = lists.items()
        return [(key, s, {name: r}) for r, (key, s) in enumerate(ranking, start=1)]
    return [(f.key, f.score, f.ranks) for f in fuse(lists, opts)]
