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
import hashlib
import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import IntegrityError, QueryError
from .gitrepo import GitRepo
from .ledger import DOCS_DIR, LEDGER_PATH, Ledger
from .manifest import INDEX_DIR, MANIFEST_PATH, Manifest, SegmentRef, TombstoneRef
from .vector_index import LiveIndex, Segment, decode_segment

#: extensions that must never appear in a commit: loading them would mean unpickling
FORBIDDEN_SUFFIXES = (".pkl", ".pickle")


def sha256(data: bytes) -> str:
    """Return the hex sha256 of data."""
    return hashlib.sha256(data).hexdigest()


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


class SegmentCache:
    """Segments and documents already verified, keyed by their git blob ids.

    A git blob id is a hash of the content, so a blob verified once needs no second
    check; a server reloading after an ingest then reads only the new segments.
    """

    def __init__(self) -> None:
        self._segments: dict[tuple[str, str], tuple[Segment, tuple]] = {}
        #: document blob id -> (sha256, size) it was verified against
        self._docs: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Segment | None:
        """Return a cached segment."""
        with self._lock:
            hit = self._segments.get(key)
        return hit[0] if hit else None

    def claims(self, key: tuple[str, str]) -> tuple | None:
        """Return the manifest facts a cached segment was verified against."""
        with self._lock:
            hit = self._segments.get(key)
        return hit[1] if hit else None

    def put(self, key: tuple[str, str], segment: Segment, claims: tuple = ()) -> None:
        """Remember a verified segment and the manifest facts it matched."""
        with self._lock:
            self._segments[key] = (segment, claims)

    def doc_claims(self, blob: str) -> tuple[str, int] | None:
        """Return the (sha256, size) a document blob was verified against, if any."""
        with self._lock:
            return self._docs.get(blob)

    def add_doc(self, blob: str, sha: str, size: int) -> None:
        """Remember a verified document blob."""
        with self._lock:
            self._docs[blob] = (sha, size)

    def retain(self, keys: set[tuple[str, str]], docs: set[str]) -> None:
        """Forget everything not in use by the current snapshot."""
        with self._lock:
            self._segments = {k: v for k, v in self._segments.items() if k in keys}
            self._docs = {b: v for b, v in self._docs.items() if b in docs}


def _claims(ref: SegmentRef) -> tuple:
    return (ref.faiss.sha256, ref.faiss.size, ref.rows.sha256, ref.rows.size, ref.vectors, ref.dim)


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
    ) -> list[Hit]:
        """Return the k best chunks for a query vector.

        ``source`` keeps only documents whose path starts with the given prefix (or one
        of several prefixes); ``score_threshold`` drops hits scoring below it.
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
            for m in self.index.search(vector, k, allowed)
        ]
        if score_threshold is not None:
            hits = [h for h in hits if h.score >= score_threshold]
        return hits


def _read_tree(repo: GitRepo, commit: str) -> tuple[dict[str, str], Ledger, Manifest, bytes]:
    tree = repo.ls_tree(commit)
    for path in tree:
        if path.lower().endswith(FORBIDDEN_SUFFIXES):
            raise IntegrityError(f"{path}: pickle files are refused (loading one runs code)")
    for required in (LEDGER_PATH, MANIFEST_PATH):
        if required not in tree:
            raise IntegrityError(f"commit {commit[:12]} has no {required}: not a kbgit store")
    blobs = repo.read_blobs([tree[LEDGER_PATH], tree[MANIFEST_PATH]])
    ledger_raw = blobs[tree[LEDGER_PATH]]
    ledger = Ledger.from_bytes(ledger_raw)
    manifest = Manifest.from_bytes(blobs[tree[MANIFEST_PATH]])
    return tree, ledger, manifest, ledger_raw


def _check_header(
    ledger: Ledger, manifest: Manifest, ledger_raw: bytes, tree: dict[str, str]
) -> None:
    if manifest.ledger_sha256 != sha256(ledger_raw):
        raise IntegrityError(f"{LEDGER_PATH} does not match the sha256 in {MANIFEST_PATH}")
    if (manifest.model_id, manifest.dim) != (ledger.model_id, ledger.dim):
        raise IntegrityError(
            f"manifest model {manifest.model_id}/{manifest.dim} differs from ledger "
            f"{ledger.model_id}/{ledger.dim}"
        )
    paths = [f.path for f in manifest.files()]
    names = [seg.name for seg in manifest.segments]
    if len(set(paths)) != len(paths) or len(set(names)) != len(names):
        raise IntegrityError(f"{MANIFEST_PATH}: a segment or index file is listed twice")
    named = set(paths)
    present = {p for p in tree if p.startswith(INDEX_DIR + "/")}
    if present - named:
        raise IntegrityError(f"index file not in manifest: {sorted(present - named)[0]}")
    if named - present:
        raise IntegrityError(f"index file missing: {sorted(named - present)[0]}")
    for seg in manifest.segments:
        if seg.dim != manifest.dim:
            raise IntegrityError(
                f"segment {seg.name} has dimension {seg.dim}, store {manifest.dim}"
            )


def _check_blob(ref_path: str, ref_sha: str, ref_size: int, data: bytes) -> None:
    if len(data) != ref_size:
        raise IntegrityError(f"{ref_path}: {len(data)} bytes, manifest says {ref_size}")
    if sha256(data) != ref_sha:
        raise IntegrityError(f"{ref_path}: sha256 mismatch (file changed or corrupt)")


def _load_segments(
    repo: GitRepo, tree: dict[str, str], manifest: Manifest, cache: SegmentCache
) -> tuple[list[Segment], set[tuple[str, str]]]:
    keys = {s.name: (tree[s.faiss.path], tree[s.rows.path]) for s in manifest.segments}
    missing = [s for s in manifest.segments if cache.get(keys[s.name]) is None]
    blobs = repo.read_blobs([b for s in missing for b in keys[s.name]])
    for seg in missing:
        faiss_raw, rows_raw = (blobs[b] for b in keys[seg.name])
        _check_blob(seg.faiss.path, seg.faiss.sha256, seg.faiss.size, faiss_raw)
        _check_blob(seg.rows.path, seg.rows.sha256, seg.rows.size, rows_raw)
        cache.put(
            keys[seg.name],
            decode_segment(seg.name, faiss_raw, rows_raw, vectors=seg.vectors, dim=seg.dim),
            _claims(seg),
        )
    segments = []
    for ref in manifest.segments:
        seg = cache.get(keys[ref.name])
        if seg is not None:
            # same bytes as a segment verified before: the manifest must still tell the truth
            if cache.claims(keys[ref.name]) != _claims(ref):
                raise IntegrityError(
                    f"{ref.faiss.path}: manifest sha256/size/vector count do not match its content"
                )
            # equal bytes can come back under another name (a document deleted, re-added,
            # then a rollback): the cache is keyed by content, the name is this commit's
            if seg.name != ref.name:
                seg = dataclasses.replace(seg, name=ref.name)
            segments.append(seg)
    return segments, set(keys.values())


def parse_tombstones(ref: TombstoneRef, raw: bytes) -> list[str]:
    """Check a tombstone file against its manifest entry and return its chunk ids."""
    _check_blob(ref.path, ref.sha256, ref.size, raw)
    try:
        ids = json.loads(raw)
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise IntegrityError(f"{ref.path}: not a JSON list of chunk ids")
    if len(ids) != ref.count:
        raise IntegrityError(f"{ref.path}: {len(ids)} ids, manifest says {ref.count}")
    return ids


def _load_tombstones(
    repo: GitRepo, tree: dict[str, str], manifest: Manifest, segments: list[Segment]
) -> dict[str, set[str]]:
    refs = [(seg, t) for seg in manifest.segments for t in seg.tombstones]
    blobs = repo.read_blobs(tree[t.path] for _seg, t in refs)
    by_name = {s.name: s for s in segments}
    dead: dict[str, set[str]] = {s.name: set() for s in manifest.segments}
    for seg, t in refs:
        ids = parse_tombstones(t, blobs[tree[t.path]])
        unknown = set(ids) - set(by_name[seg.name].ids)
        if unknown:
            raise IntegrityError(f"{t.path}: tombstones unknown chunk {sorted(unknown)[0]}")
        if dead[seg.name] & set(ids) or len(set(ids)) != len(ids):
            raise IntegrityError(f"{t.path}: chunk tombstoned twice")
        dead[seg.name].update(ids)
    return dead


def expected_ids(ledger: Ledger, manifest: Manifest) -> dict[str, set[str]]:
    """Return each segment's ledger ids; check segments exist and chunk ids are unique."""
    expected: dict[str, set[str]] = {s.name: set() for s in manifest.segments}
    seen: set[str] = set()
    for path, doc in ledger.documents.items():
        if doc.segment not in expected:
            raise IntegrityError(f"ledger: {path} points at missing segment {doc.segment}")
        if seen & set(doc.chunks) or len(set(doc.chunks)) != len(doc.chunks):
            raise IntegrityError(f"ledger: {path} reuses a chunk id")
        seen.update(doc.chunks)
        expected[doc.segment].update(doc.chunks)
    return expected


def _check_live(
    ledger: Ledger, manifest: Manifest, segments: list[Segment], dead: dict[str, set[str]]
) -> None:
    expected = expected_ids(ledger, manifest)
    total = 0
    for seg in segments:
        live = set(seg.ids) - dead[seg.name]
        total += len(live)
        if live != expected[seg.name]:
            extra = sorted(live - expected[seg.name])
            gone = sorted(expected[seg.name] - live)
            what = (
                f"live chunk {extra[0]} is in no ledger document"
                if extra
                else (f"ledger chunk {gone[0]} is not live in the segment")
            )
            raise IntegrityError(f"segment {seg.name}: {what}")
    if total != manifest.live_vectors:
        raise IntegrityError(f"{total} live vectors, manifest says {manifest.live_vectors}")


def _check_docs(
    repo: GitRepo, tree: dict[str, str], ledger: Ledger, cache: SegmentCache
) -> set[str]:
    prefix = DOCS_DIR + "/"
    present = {p[len(prefix) :]: b for p, b in tree.items() if p.startswith(prefix)}
    if set(present) - set(ledger.documents):
        raise IntegrityError(
            f"document not in ledger: {DOCS_DIR}/{sorted(set(present) - set(ledger.documents))[0]}"
        )
    if set(ledger.documents) - set(present):
        raise IntegrityError(
            f"document missing: {DOCS_DIR}/{sorted(set(ledger.documents) - set(present))[0]}"
        )
    todo = {}
    for path, blob in present.items():
        doc = ledger.documents[path]
        known = cache.doc_claims(blob)
        if known is None:
            todo[path] = blob
        elif known != (doc.sha256, doc.size):
            raise IntegrityError(
                f"{DOCS_DIR}/{path}: sha256 mismatch (ledger disagrees with content)"
            )
    blobs = repo.read_blobs(todo.values())
    for path, blob in todo.items():
        doc = ledger.documents[path]
        _check_blob(f"{DOCS_DIR}/{path}", doc.sha256, doc.size, blobs[blob])
        cache.add_doc(blob, doc.sha256, doc.size)
    others = [
        p
        for p in tree
        if not p.startswith((prefix, INDEX_DIR + "/")) and p not in (LEDGER_PATH, MANIFEST_PATH)
    ]
    if others:
        raise IntegrityError(f"unexpected file in the store: {others[0]}")
    return set(present.values())


def no_such_revision(repo: GitRepo, rev: str) -> QueryError:
    """Return the error for a revision that names nothing (saying so when HEAD is unborn)."""
    if repo.head() is None:
        return QueryError(
            f"{repo.path} has no commits yet",
            hint=f"ingest documents first: kbgit ingest {repo.path} DOCS",
        )
    return QueryError(f"no such revision: {rev}", hint="list revisions with: kbgit log STORE")


def load_snapshot(
    repo: GitRepo, rev: str = "HEAD", *, cache: SegmentCache | None = None
) -> Snapshot:
    """Verify commit ``rev`` completely and return it as a searchable snapshot."""
    commit = repo.rev_parse(rev)
    if commit is None:
        raise no_such_revision(repo, rev)
    cache = cache if cache is not None else SegmentCache()
    tree, ledger, manifest, ledger_raw = _read_tree(repo, commit)
    _check_header(ledger, manifest, ledger_raw, tree)
    segments, keys = _load_segments(repo, tree, manifest, cache)
    dead = _load_tombstones(repo, tree, manifest, segments)
    _check_live(ledger, manifest, segments, dead)
    docs = _check_docs(repo, tree, ledger, cache)
    index = LiveIndex(segments, dead, manifest.dim)
    return Snapshot(
        commit,
        repo.commit_time(commit),
        ledger,
        manifest,
        index,
        ledger.chunk_sources(),
        frozenset(keys),
        frozenset(docs),
    )


def verify_commit(repo: GitRepo, rev: str, *, base: str | None = None) -> None:
    """Verify ``rev`` without building its index, trusting files unchanged since ``base``.

    Raises IntegrityError for the same defects as :func:`load_snapshot`; ``base`` must be
    a commit verified before (kbgit/verify.py). Without one, every file is checked.
    """
    from .verify import verify_commit as _verify_commit

    _verify_commit(repo, rev, base=base)
