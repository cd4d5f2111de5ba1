"""The checks every verification runs: a commit's tree, header, segments, tombstones, docs.

Shared by :func:`kbgit.format.snapshot.load_snapshot` (full check + searchable index) and
:func:`kbgit.format.verify.verify_commit` (incremental check for the hub's hook). Each
raises :class:`IntegrityError` naming the first mismatch.
"""

from __future__ import annotations

import dataclasses
import threading

from ..errors import FormatError, IntegrityError, QueryError
from ..gitrepo import GitRepo
from ..models import check_model_id
from . import jsonio
from .ledger import DOCS_DIR, LEDGER_PATH, Ledger
from .limits import DEFAULT_LIMITS, Limits, check_capped, check_claims, read_claimed
from .manifest import INDEX_DIR, MANIFEST_PATH, Manifest, SegmentRef, TombstoneRef, sha256
from .shards import SHARD_DIR, ShardCache, read_ledger
from .tree import plain_files
from .vector_index import Segment, decode_segment

#: extensions that must never appear in a commit: loading them would mean unpickling
FORBIDDEN_SUFFIXES = (".pkl", ".pickle")


class SegmentCache:
    """Segments and documents already verified, keyed by their git blob ids.

    A git blob id is a hash of the content, so a blob verified once needs no second
    check; a server reloading after an ingest then reads only the new segments.
    """

    def __init__(self) -> None:
        self._segments: dict[tuple[str, str], tuple[Segment, tuple]] = {}
        #: document blob id -> (sha256, size) it was verified against
        self._docs: dict[str, tuple[str, int]] = {}
        #: ledger shards (format 2) verified, keyed by (shard key, blob id)
        self.shards = ShardCache()
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

    def retain(
        self,
        keys: set[tuple[str, str]],
        docs: set[str],
        shards: set[tuple[str, str]] | None = None,
    ) -> None:
        """Forget everything not in use by the current snapshot (shards too, if given)."""
        with self._lock:
            self._segments = {k: v for k, v in self._segments.items() if k in keys}
            self._docs = {b: v for b, v in self._docs.items() if b in docs}
        if shards is not None:
            self.shards.retain(shards)


#: eval sets versioned with the documents (kbgit/retrieval/evals.py reads them)
EVALS_DIR = "evals"


def segment_claims(ref: SegmentRef) -> tuple:
    """Return the manifest facts a segment's bytes are verified against."""
    return (ref.faiss.sha256, ref.faiss.size, ref.rows.sha256, ref.rows.size, ref.vectors, ref.dim)


def read_tree(
    repo: GitRepo,
    commit: str,
    shards: ShardCache | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[dict[str, str], Ledger, Manifest, bytes]:
    """Read a commit's tree, ledger (format 1 or 2) and manifest; refuse pickles, big files."""
    tree = plain_files(repo.tree_entries(commit))
    for path in tree:
        if path.lower().endswith(FORBIDDEN_SUFFIXES):
            raise IntegrityError(f"{path}: pickle files are refused (loading one runs code)")
    for required in (LEDGER_PATH, MANIFEST_PATH):
        if required not in tree:
            raise IntegrityError(f"commit {commit[:12]} has no {required}: not a kbgit store")
    ledger_files = {
        p: b
        for p, b in tree.items()
        if p in (LEDGER_PATH, MANIFEST_PATH) or p.startswith("ledger/")
    }
    check_capped(repo, ledger_files, limits.max_index_file_bytes)  # before reading any
    ledger, ledger_raw = read_ledger(repo, tree, shards)
    manifest = Manifest.from_bytes(repo.read_blobs([tree[MANIFEST_PATH]])[tree[MANIFEST_PATH]])
    check_claims(ledger, manifest, limits)
    return tree, ledger, manifest, ledger_raw


def check_header(
    ledger: Ledger, manifest: Manifest, ledger_raw: bytes, tree: dict[str, str]
) -> None:
    """Check ledger hash, model, and that the index files are exactly the manifest's."""
    if manifest.ledger_sha256 != sha256(ledger_raw):
        raise IntegrityError(f"{LEDGER_PATH} does not match the sha256 in {MANIFEST_PATH}")
    if manifest.format != ledger.format:
        raise IntegrityError(
            f"{MANIFEST_PATH} is format {manifest.format}, {LEDGER_PATH} format {ledger.format}"
        )
    if (manifest.model_id, manifest.dim) != (ledger.model_id, ledger.dim):
        raise IntegrityError(
            f"manifest model {manifest.model_id}/{manifest.dim} differs from ledger "
            f"{ledger.model_id}/{ledger.dim}"
        )
    check_model_id(ledger.model_id, ledger.dim)
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


def check_blob(ref_path: str, ref_sha: str, ref_size: int, data: bytes) -> None:
    """Check one blob's size and sha256 against its manifest or ledger claim."""
    if len(data) != ref_size:
        raise IntegrityError(f"{ref_path}: {len(data)} bytes, manifest says {ref_size}")
    if sha256(data) != ref_sha:
        raise IntegrityError(f"{ref_path}: sha256 mismatch (file changed or corrupt)")


def load_segments(
    repo: GitRepo,
    tree: dict[str, str],
    manifest: Manifest,
    cache: SegmentCache,
    *,
    trusted: bool = False,
) -> tuple[list[Segment], set[tuple[str, str]]]:
    """Verify and decode the segments not in ``cache``; return all and their keys.

    ``trusted`` (a commit this machine verified before) skips the sha256 pass; the
    segments are still decoded and checked against the manifest's counts.
    """
    keys = {s.name: (tree[s.faiss.path], tree[s.rows.path]) for s in manifest.segments}
    missing = [s for s in manifest.segments if cache.get(keys[s.name]) is None]
    blobs = read_claimed(
        repo,
        {tree[ref.path]: (ref.path, ref.size) for s in missing for ref in (s.faiss, s.rows)},
    )
    for seg in missing:
        faiss_raw, rows_raw = (blobs[b] for b in keys[seg.name])
        if not trusted:
            check_blob(seg.faiss.path, seg.faiss.sha256, seg.faiss.size, faiss_raw)
            check_blob(seg.rows.path, seg.rows.sha256, seg.rows.size, rows_raw)
        cache.put(
            keys[seg.name],
            decode_segment(seg.name, faiss_raw, rows_raw, vectors=seg.vectors, dim=seg.dim),
            segment_claims(seg),
        )
    segments = []
    for ref in manifest.segments:
        seg = cache.get(keys[ref.name])
        if seg is not None:
            # same bytes as a segment verified before: the manifest must still tell the truth
            if cache.claims(keys[ref.name]) != segment_claims(ref):
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
    check_blob(ref.path, ref.sha256, ref.size, raw)
    try:
        ids = jsonio.loads(raw, ref.path)
    except FormatError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise IntegrityError(f"{ref.path}: not a JSON list of chunk ids")
    if len(ids) != ref.count:
        raise IntegrityError(f"{ref.path}: {len(ids)} ids, manifest says {ref.count}")
    return ids


def load_tombstones(
    repo: GitRepo, tree: dict[str, str], manifest: Manifest, segments: list[Segment]
) -> dict[str, set[str]]:
    """Read and check every tombstone file; return the dead ids per segment."""
    refs = [(seg, t) for seg in manifest.segments for t in seg.tombstones]
    blobs = read_claimed(repo, {tree[t.path]: (t.path, t.size) for _seg, t in refs})
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


def live_mismatch(name: str, live: set[str], expected: set[str]) -> None:
    """Raise IntegrityError if a segment's live ids differ from the ledger's."""
    if live != expected:
        extra, gone = sorted(live - expected), sorted(expected - live)
        what = (
            f"live chunk {extra[0]} is in no ledger document"
            if extra
            else f"ledger chunk {gone[0]} is not live in the segment"
        )
        raise IntegrityError(f"segment {name}: {what}")


def check_live(
    ledger: Ledger, manifest: Manifest, segments: list[Segment], dead: dict[str, set[str]]
) -> None:
    """Check each segment's live ids against the ledger, and the manifest's live count."""
    expected = expected_ids(ledger, manifest)
    total = 0
    for seg in segments:
        live = set(seg.ids) - dead[seg.name]
        total += len(live)
        live_mismatch(seg.name, live, expected[seg.name])
    if total != manifest.live_vectors:
        raise IntegrityError(f"{total} live vectors, manifest says {manifest.live_vectors}")


def check_docs(
    repo: GitRepo, tree: dict[str, str], ledger: Ledger, cache: SegmentCache
) -> set[str]:
    """Check docs/ against the ledger (blobs verified once per cache); return blob ids."""
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
    blobs = read_claimed(
        repo, {b: (f"{DOCS_DIR}/{p}", ledger.documents[p].size) for p, b in todo.items()}
    )
    for path, blob in todo.items():
        doc = ledger.documents[path]
        check_blob(f"{DOCS_DIR}/{path}", doc.sha256, doc.size, blobs[blob])
        cache.add_doc(blob, doc.sha256, doc.size)
    # format 2 shards were matched against the ledger root by read_ledger; format 1 has none
    dirs = (prefix, INDEX_DIR + "/") + ((SHARD_DIR + "/",) if ledger.format >= 2 else ())
    others = [
        p
        for p in tree
        if not p.startswith(dirs)
        and p not in (LEDGER_PATH, MANIFEST_PATH)
        and not (p.startswith(EVALS_DIR + "/") and p.endswith(".jsonl"))
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
