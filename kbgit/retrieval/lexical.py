"""BM25 over the live chunks of one commit, built per segment and cached by content.

Why not ``bm25s`` or ``tantivy`` as the index itself (bench/bench_retrieval.py, 100k
chunks, 1 thread): ``bm25s`` bakes IDF and the average length into its eager score
matrix, so global statistics across segments mean rebuilding the whole index on every
swap (26.8 s at 100k) and a query scores every document (p50 44 ms); ``tantivy`` keeps
its own segments with deleted documents still counted in IDF until a merge, and its
tokenizers cannot take a Chinese segmenter. Here each segment keeps a term-frequency
matrix (CSC layout, numpy) built once from its verified rows and cached by the sha256 of its
rows file; a commit's :class:`LexicalIndex` only adds a live-row mask per segment, and a
query computes Lucene BM25 (``bm25s``'s default variant, k1=1.5, b=0.75) with document
frequency and average length summed over the live rows of every segment, so IDF is
global and a tombstoned chunk neither matches nor counts.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..format.vector_index import Row
from .termstore import DISK_SPARE, load_arrays, prune, rows_for, save_terms
from .tokenize import DEFAULT_CJK, tokenize

K1 = 1.5
B = 0.75


@dataclasses.dataclass(frozen=True)
class Postings:
    """A term-major sparse matrix (CSC layout): rows ``indices[indptr[t]:indptr[t+1]]`` hold
    term t with frequencies ``data[...]``, row numbers ascending."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @classmethod
    def count(cls, terms: np.ndarray, docs: np.ndarray, n_docs: int, n_terms: int) -> Postings:
        """Count (term, doc) occurrences into postings."""
        keys, counts = np.unique(
            terms.astype(np.int64) * max(n_docs, 1) + docs.astype(np.int64), return_counts=True
        )
        term_of = keys // max(n_docs, 1)
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_of, minlength=n_terms), out=indptr[1:])
        return cls(indptr, (keys % max(n_docs, 1)).astype(np.int32), counts.astype(np.float32))


@dataclasses.dataclass(frozen=True)
class SegmentTerms:
    """One segment's rows as a term-frequency matrix (rows x terms), immutable."""

    ids: tuple[str, ...]
    #: the Row of each id (None for a row dead when the matrix was read from disk)
    rows: tuple[Row | None, ...]
    vocab: dict[str, int]
    tf: Postings
    lengths: np.ndarray

    @classmethod
    def build(cls, rows: Sequence[Row], cjk: str = DEFAULT_CJK) -> SegmentTerms:
        """Tokenize ``rows`` and count their terms."""
        vocab: dict[str, int] = {}
        doc_idx: list[int] = []
        term_idx: list[int] = []
        lengths = np.zeros(len(rows), dtype=np.float32)
        for i, row in enumerate(rows):
            terms = tokenize(row.text, cjk=cjk)
            lengths[i] = len(terms)
            term_idx.extend(vocab.setdefault(t, len(vocab)) for t in terms)
            doc_idx.extend([i] * len(terms))
        tf = Postings.count(np.asarray(term_idx), np.asarray(doc_idx), len(rows), len(vocab))
        return cls(tuple(r.id for r in rows), tuple(rows), vocab, tf, lengths)

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """Return (row numbers, term frequencies) of the rows holding ``term``."""
        col = self.vocab.get(term)
        if col is None:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        lo, hi = self.tf.indptr[col], self.tf.indptr[col + 1]
        return self.tf.indices[lo:hi], self.tf.data[lo:hi]


class TermsCache:
    """Per-segment term matrices keyed by (rows sha256, CJK mode); shared by snapshots.

    On disk it keeps what memory holds plus ``spare`` recently used entries.
    """

    def __init__(self, directory: Path | None = None, *, spare: int = DISK_SPARE) -> None:
        self._items: dict[tuple[str, str], SegmentTerms] = {}
        self._lock = threading.Lock()
        #: where matrices persist between restarts (None: memory only)
        self.directory = directory
        self.spare = spare
        self.built = 0
        self.loaded = 0

    def get(self, key: tuple[str, str], rows: Sequence[Row]) -> SegmentTerms:
        """Return the cached matrix for ``key`` (memory, then the checked disk cache), or
        build it from ``rows``: every row of the segment, tombstoned ones included, so
        that any later commit's live mask applies (tombstones added, or revived by a
        rollback). An entry of an older release may hold fewer rows (see
        ``LexicalIndexes._build``)."""
        with self._lock:
            terms = self._items.get(key)
        if terms is not None:
            return terms
        terms = self._from_disk(key, rows)
        if terms is not None:
            with self._lock:
                self._items[key] = terms
                self.loaded += 1
            return terms
        return self.build(key, rows)

    def build(self, key: tuple[str, str], rows: Sequence[Row]) -> SegmentTerms:
        """Tokenize ``rows`` into the matrix for ``key``; keep it in memory and on disk."""
        terms = SegmentTerms.build(rows, cjk=key[1])
        with self._lock:
            self._items[key] = terms
            self.built += 1
        if self.directory is not None:
            save_terms(self.directory, key, terms)
            prune(self.directory, self.keys(), self.spare)
        return terms

    def _from_disk(self, key: tuple[str, str], rows: Sequence[Row]) -> SegmentTerms | None:
        if self.directory is None:
            return None
        arrays = load_arrays(self.directory, key)
        if arrays is None:
            return None
        ids = tuple(str(i) for i in arrays["ids"])
        vocab = {str(t): c for c, t in enumerate(arrays["terms"])}
        tf = Postings(arrays["indptr"], arrays["indices"], arrays["data"])
        return SegmentTerms(ids, rows_for(ids, rows), vocab, tf, arrays["lengths"])

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Forget every matrix not in ``keys``; on disk keep ``spare`` others besides."""
        with self._lock:
            self._items = {k: v for k, v in self._items.items() if k in keys}
        if self.directory is not None:
            prune(self.directory, keys, self.spare)

    def keys(self) -> set[tuple[str, str]]:
        """Return the cached keys."""
        with self._lock:
            return set(self._items)


@dataclasses.dataclass(frozen=True)
class LexicalMatch:
    """One lexical hit: BM25 score and the row it points at."""

    score: float
    segment: str
    row: Row


class LexicalIndex:
    """BM25 over the live rows of one commit (global statistics, tombstones masked)."""

    def __init__(
        self,
        commit: str,
        parts: Sequence[tuple[str, SegmentTerms, np.ndarray]],
        cjk: str = DEFAULT_CJK,
    ) -> None:
        #: (segment name, term matrix, boolean live mask over its rows)
        self.commit = commit
        self.cjk = cjk
        self.parts = list(parts)
        self.docs = int(sum(int(live.sum()) for _n, _t, live in self.parts))
        total = sum(float(t.lengths[live].sum()) for _n, t, live in self.parts)
        self.avgdl = total / self.docs if self.docs else 0.0

    def keys(self) -> set[str]:
        """Return the chunk ids this index can match."""
        return {i for _n, t, live in self.parts for i in np.asarray(t.ids)[live]}

    def idf(self, terms: Sequence[str]) -> dict[str, float]:
        """Return the Lucene IDF of each term over the live rows of every segment."""
        out = {}
        for term in set(terms):
            df = 0
            for _n, t, live in self.parts:
                rows, _tf = t.postings(term)
                df += int(live[rows].sum())
            if df:
                out[term] = math.log(1 + (self.docs - df + 0.5) / (df + 0.5))
        return out

    def search(
        self,
        text: str,
        k: int,
        allowed: Callable[[Row], bool] | None = None,
    ) -> list[LexicalMatch]:
        """Return the k best live rows for ``text`` (only rows ``allowed`` accepts)."""
        terms = tokenize(text, cjk=self.cjk)
        idf = self.idf(terms)
        if not idf or k < 1:
            return []
        found: list[tuple[float, int, int]] = []
        for p, (_name, t, live) in enumerate(self.parts):
            scores = self._score(t, terms, idf)
            mask = live if allowed is None else live & _mask(t, allowed)
            cand = np.flatnonzero((scores > 0) & mask)
            if len(cand) > k:
                cand = cand[np.argpartition(-scores[cand], k - 1)[:k]]
            found.extend((float(scores[i]), p, int(i)) for i in cand)
        # ties broken by segment order, then row order: deterministic
        found.sort(key=lambda x: (-x[0], x[1], x[2]))
        return [
            LexicalMatch(s, self.parts[p][0], self.parts[p][1].rows[i]) for s, p, i in found[:k]
        ]

    def _score(self, t: SegmentTerms, terms: Sequence[str], idf: dict[str, float]) -> np.ndarray:
        scores = np.zeros(len(t.ids), dtype=np.float32)
        norm = K1 * (1 - B + B * t.lengths / self.avgdl)
        for term in terms:  # a repeated query term counts again, as in bm25s
            if term not in idf:
                continue
            rows, tf = t.postings(term)
            scores[rows] += idf[term] * tf / (tf + norm[rows])
        return scores


def _mask(t: SegmentTerms, allowed: Callable[[Row], bool]) -> np.ndarray:
    return np.fromiter(
        (r is not None and allowed(r) for r in t.rows), dtype=bool, count=len(t.rows)
    )


def covers(terms: SegmentTerms, live: set[str]) -> bool:
    """Tell whether ``terms`` holds every id of ``live``."""
    return len(live) <= len(terms.ids) and live.issubset(terms.ids)


def live_mask(terms: SegmentTerms, live: set[str]) -> np.ndarray:
    """Return which rows of ``terms`` are in ``live``."""
    return np.fromiter((i in live for i in terms.ids), dtype=bool, count=len(terms.ids))
