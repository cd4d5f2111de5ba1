"""Load one commit of a store as a verified, searchable snapshot.

:func:`load_snapshot` is both ``kbgit verify`` and the loader every server uses: it
reads the commit's blobs straight from git (never the working tree, which a concurrent
ingest may be rewriting), checks every file against the manifest and the manifest
against the ledger, and raises :class:`IntegrityError` naming the first mismatch. A
snapshot is immutable, so a server swaps one in with a single reference assignment and
every query is answered wholly from one commit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import QueryError
from ..gitrepo import GitRepo
from .anncache import AnnCache
from .checks import (
    SegmentCache,
    check_docs,
    check_header,
    check_live,
    load_segments,
    load_tombstones,
    no_such_revision,
    read_tree,
)
from .ledger import DOCS_DIR, Ledger
from .limits import DEFAULT_LIMITS, Limits
from .manifest import Manifest
from .shards import shard_keys
from .vector_index import LiveIndex
from .verified import VerifiedRecord


@dataclasses.dataclass(frozen=True)
class Hit:
    """One ranked chunk of a query answer."""

    score: float
    chunk_id: str
    source: str
    text: str
    meta: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form used by the CLI and the HTTP API."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One verified commit of a store, ready to search."""

    commit: str
    commit_time: int
    ledger: Ledger
    manifest: Manifest
    index: LiveIndex
    sources: dict[str, str]
    cache_keys: frozenset[tuple[str, str]] = frozenset()
    doc_blobs: frozenset[str] = frozenset()
    #: (shard key, blob id) of each format 2 ledger shard (SegmentCache.shards keys)
    shard_keys: frozenset[tuple[str, str]] = frozenset()

    @property
    def vectors(self) -> int:
        """Return the number of live vectors."""
        return len(self.index)

    def search(
        self,
        vector: np.ndarray,
        k: int = 5,
        *,
        source: str | Sequence[str] | None = None,
        score_threshold: float | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Return the k best chunks for a query vector.

        ``source`` keeps only documents whose path starts with the given prefix (or one
        of several prefixes); ``score_threshold`` drops hits scoring below it; ``exact``
        scores every row even in segments that have an ANN index.
        """
        if not 1 <= k <= 10_000:
            raise QueryError(f"k must be between 1 and 10000, got {k}")
        if score_threshold is not None and not math.isfinite(score_threshold):
            raise QueryError(f"score_threshold must be a finite number, got {score_threshold}")
        allowed = None
        if source is not None:
            prefixes = (source,) if isinstance(source, str) else tuple(source)
            if not all(isinstance(p, str) for p in prefixes):
                raise QueryError("filter.source must be a string or a list of strings")
            allowed = [
                i
                for i, (_seg, row) in enumerate(self.index.rows())
                if self.sources[row.id].startswith(prefixes)
            ]
        hits = [
            Hit(m.score, m.row.id, self.sources[m.row.id], m.row.text, m.row.meta)
            for m in self.index.search(vector, k, allowed, exact=exact)
        ]
        if score_threshold is not None:
            hits = [h for h in hits if h.score >= score_threshold]
        return hits


def load_snapshot(
    repo: GitRepo,
    rev: str = "HEAD",
    *,
    cache: SegmentCache | None = None,
    limits: Limits = DEFAULT_LIMITS,
    record: VerifiedRecord | None = None,
    ann: AnnCache | None = None,
) -> Snapshot:
    """Verify commit ``rev`` completely and return it as a searchable snapshot.

    With ``record``, a commit it lists (verified on this machine before) is loaded
    without the sha256 pass and the ledger <-> vectors <-> documents checks; a commit it
    does not list is verified in full and then added to it. With ``ann``, segments at or
    above its threshold get their ANN index (from ``ann``, else built now from the
    verified vectors), so a snapshot is ready to serve when this returns.
    """
    commit = repo.rev_parse(rev)
    if commit is None:
        raise no_such_revision(repo, rev)
    cache = cache if cache is not None else SegmentCache()
    tree, ledger, manifest, ledger_raw = read_tree(repo, commit, cache.shards, limits)
    check_header(ledger, manifest, ledger_raw, tree)
    trusted = record is not None and commit in record
    segments, keys = load_segments(repo, tree, manifest, cache, trusted=trusted)
    dead = load_tombstones(repo, tree, manifest, segments)
    if trusted:
        docs = trusted_docs(tree, ledger, cache)
    else:
        check_live(ledger, manifest, segments, dead)
        docs = check_docs(repo, tree, ledger, cache)
        if record is not None:
            record.add(commit)
    index = LiveIndex(segments, dead, manifest.dim)
    snap = Snapshot(
        commit,
        repo.commit_time(commit),
        ledger,
        manifest,
        index,
        ledger.chunk_sources(),
        frozenset(keys),
        frozenset(docs),
        frozenset(shard_keys(ledger)),
    )
    return with_ann(snap, ann) if ann is not None else snap


def trusted_docs(tree: dict[str, str], ledger: Ledger, cache: SegmentCache) -> set[str]:
    """Return the document blobs of a recorded commit, remembered as verified in ``cache``.

    The record says these blobs matched the ledger's claims when the commit was verified,
    so the next commit's check reads only documents new since (not all of them again).
    """
    prefix = DOCS_DIR + "/"
    docs = set()
    for path, blob in tree.items():
        if path.startswith(prefix):
            docs.add(blob)
            doc = ledger.documents.get(path[len(prefix) :])
            if doc is not None:
                cache.add_doc(blob, doc.sha256, doc.size)
    return docs


def with_ann(snap: Snapshot, ann: AnnCache) -> Snapshot:
    """Return ``snap`` with the ANN index of each segment at or above ``ann``'s threshold.

    An index comes from ``ann`` (memory, or its checked disk file) or is built now from
    the segment's verified vectors.
    """
    segments = [seg for seg, _mask in snap.index.parts()]
    found = ann.for_segments(snap.manifest, segments)
    return dataclasses.replace(snap, index=snap.index.with_ann(found)) if found else snap
