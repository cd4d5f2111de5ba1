"""History of a store, read side: log, diff, show, and snapshots of past revisions.

Every commit is a complete snapshot, so history needs no extra format: :func:`log`
reads the ``Kbgit-*`` trailers each kbgit commit carries (and falls back to diffing
ledgers for commits made with plain git), :func:`diff` compares two ledgers, and
:class:`RevisionCache` serves read-only queries at any revision. Writing history
(rollback, tags) lives in :mod:`kbgit.history.rollback`, compaction and gc in
:mod:`kbgit.history.compaction`.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

from ..errors import QueryError
from ..format import trailers
from ..format.checks import SegmentCache, no_such_revision
from ..format.ledger import LEDGER_PATH, Ledger
from ..format.manifest import MANIFEST_PATH, Manifest
from ..format.shards import read_ledger_at
from ..format.snapshot import Snapshot, load_snapshot
from ..gitrepo import GitRepo

_FIELD, _RECORD = "\x1f", "\x1e"


def check_rev(rev: str) -> str:
    """Refuse revision strings git could read as options or that hold control characters."""
    if not rev or rev.startswith("-") or any(c.isspace() or ord(c) < 32 for c in rev):
        raise QueryError(f"not a revision: {rev!r}", hint="use a commit id, tag or HEAD~N")
    return rev


def resolve(repo: GitRepo, rev: str) -> str:
    """Return the commit id ``rev`` names (tags peeled); raise QueryError if none."""
    commit = repo.rev_parse(check_rev(rev))
    if commit is None:
        raise no_such_revision(repo, rev)
    return commit


# -- diff ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LedgerDiff:
    """Documents added, removed, modified and renamed between two revisions."""

    added: list[str]
    removed: list[str]
    modified: list[str]
    renamed: list[tuple[str, str]]
    unchanged: int
    chunks_added: int
    chunks_removed: int
    settings_changed: bool

    @property
    def empty(self) -> bool:
        """Tell whether the two ledgers hold the same documents."""
        return not (self.added or self.removed or self.modified or self.renamed)


def diff_ledgers(old: Ledger | None, new: Ledger) -> LedgerDiff:
    """Compare two ledgers by path and content hash (renames: same hash, new path)."""
    before = old.documents if old else {}
    after = new.documents
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    by_sha: dict[str, list[str]] = {}
    for path in removed:
        by_sha.setdefault(before[path].sha256, []).append(path)
    renamed = []
    for path in added:
        if by_sha.get(after[path].sha256):
            renamed.append((by_sha[after[path].sha256].pop(0), path))
    moved = {p for pair in renamed for p in pair}
    common = set(before) & set(after)
    modified = sorted(p for p in common if before[p].sha256 != after[p].sha256)
    old_ids = {c for d in before.values() for c in d.chunks}
    new_ids = {c for d in after.values() for c in d.chunks}
    return LedgerDiff(
        [p for p in added if p not in moved],
        [p for p in removed if p not in moved],
        modified,
        renamed,
        len(common) - len(modified),
        len(new_ids - old_ids),
        len(old_ids - new_ids),
        old is not None and not old.same_settings(new.model_id, new.dim, new.chunking),
    )


def read_state(repo: GitRepo, commit: str) -> tuple[Ledger, Manifest] | None:
    """Return the ledger and manifest of a commit, or None if it is not a kbgit commit."""
    manifest_raw = repo.read_file(commit, MANIFEST_PATH)
    ledger = read_ledger_at(repo, commit) if manifest_raw is not None else None
    if ledger is None or manifest_raw is None:
        return None
    return ledger, Manifest.from_bytes(manifest_raw)


def diff(repo: GitRepo, a: str, b: str) -> LedgerDiff:
    """Return what changed in the documents from revision ``a`` to revision ``b``."""
    states = []
    for rev in (a, b):
        state = read_state(repo, resolve(repo, rev))
        if state is None:
            raise QueryError(f"{rev} is not a kbgit commit (no {LEDGER_PATH})")
        states.append(state[0])
    return diff_ledgers(states[0], states[1])


# -- log ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One commit of a store's history, as ``kbgit log`` shows it."""

    commit: str
    parents: list[str]
    time: int
    author: str
    subject: str
    #: ingest, rollback, compact, or git (a commit made with plain git)
    kind: str
    added: int
    updated: int
    deleted: int
    renamed: int
    vectors: int | None
    vectors_added: int
    vectors_deleted: int
    generation: int | None
    rollback_to: str | None
    tags: list[str]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)


def tags_by_commit(repo: GitRepo) -> dict[str, list[str]]:
    """Map each tagged commit to its tag names."""
    out = repo.run(
        "for-each-ref", "--format=%(objectname) %(*objectname) %(refname:short)", "refs/tags"
    )
    tags: dict[str, list[str]] = {}
    for line in out.splitlines():
        obj, peeled, name = line.split(" ", 2)
        tags.setdefault(peeled or obj, []).append(name)
    return tags


def _entry_from_trailers(head: dict[str, Any], tr: dict[str, str]) -> LogEntry:
    kind = tr.get("operation", "ingest")
    return LogEntry(
        **head,
        kind=kind,
        added=trailers.count(tr, "added"),
        updated=trailers.count(tr, "updated"),
        deleted=trailers.count(tr, "deleted"),
        renamed=trailers.count(tr, "renamed"),
        vectors=trailers.count(tr, "vectors") if "vectors" in tr else None,
        vectors_added=trailers.count(tr, "vectors-added"),
        vectors_deleted=trailers.count(tr, "vectors-deleted"),
        generation=trailers.count(tr, "generation") if "generation" in tr else None,
        rollback_to=tr.get("rollback-to"),
    )


def _entry_from_ledgers(repo: GitRepo, head: dict[str, Any]) -> LogEntry:
    """Describe a plain-git commit by diffing its ledger with its first parent's."""
    state = read_state(repo, head["commit"])
    parent = read_state(repo, head["parents"][0]) if head["parents"] else None
    change = diff_ledgers(parent[0] if parent else None, state[0]) if state else None
    return LogEntry(
        **head,
        kind="git",
        added=len(change.added) if change else 0,
        updated=len(change.modified) if change else 0,
        deleted=len(change.removed) if change else 0,
        renamed=len(change.renamed) if change else 0,
        vectors=state[1].live_vectors if state else None,
        vectors_added=change.chunks_added if change else 0,
        vectors_deleted=change.chunks_removed if change else 0,
        generation=state[1].generation if state else None,
        rollback_to=None,
    )


def log(repo: GitRepo, rev: str = "HEAD", *, limit: int | None = None) -> list[LogEntry]:
    """Return the commits reachable from ``rev``, newest first."""
    commit = resolve(repo, rev)
    args = ["log", f"--format={_RECORD}%H{_FIELD}%P{_FIELD}%ct{_FIELD}%an <%ae>{_FIELD}%B"]
    if limit is not None:
        args.append(f"--max-count={limit}")
    out = repo.run(*args, commit, "--")
    tags = tags_by_commit(repo)
    entries = []
    for record in out.split(_RECORD):
        if not record.strip():
            continue
        sha, parents, ts, author, body = record.split(_FIELD, 4)
        subject = body.strip().split("\n", 1)[0]
        head = {
            "commit": sha.strip(),
            "parents": parents.split(),
            "time": int(ts),
            "author": author,
            "subject": subject,
            "tags": sorted(tags.get(sha.strip(), [])),
        }
        tr = trailers.parse(body)
        kbgit_made = subject.startswith("kbgit ") and "vectors" in tr
        entries.append(
            _entry_from_trailers(head, tr) if kbgit_made else _entry_from_ledgers(repo, head)
        )
    return entries


# -- show ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StoreView:
    """The store at one revision: settings, segments and documents."""

    commit: str
    time: int
    subject: str
    tags: list[str]
    model_id: str
    dim: int
    chunking: dict[str, Any]
    format: int
    generation: int
    vectors: int
    segments: list[dict[str, Any]]
    documents: dict[str, dict[str, Any]]
    verified: bool

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)


def show(repo: GitRepo, rev: str = "HEAD", *, verify: bool = False) -> StoreView:
    """Describe the store at ``rev``; with ``verify``, check every file first."""
    commit = resolve(repo, rev)
    if verify:
        snap = load_snapshot(repo, commit)
        ledger, manifest = snap.ledger, snap.manifest
    else:
        state = read_state(repo, commit)
        if state is None:
            raise QueryError(f"{rev} is not a kbgit commit (no {LEDGER_PATH})")
        ledger, manifest = state
    segments = [
        {
            "name": s.name,
            "vectors": s.vectors,
            "deleted": s.deleted,
            "tombstone_files": len(s.tombstones),
            "bytes": s.faiss.size + s.rows.size + sum(t.size for t in s.tombstones),
        }
        for s in manifest.segments
    ]
    documents = {
        path: {
            "sha256": d.sha256,
            "size": d.size,
            "loader": d.loader,
            "segment": d.segment,
            "chunks": len(d.chunks),
        }
        for path, d in sorted(ledger.documents.items())
    }
    return StoreView(
        commit,
        repo.commit_time(commit),
        repo.run("show", "-s", "--format=%s", commit),
        sorted(tags_by_commit(repo).get(commit, [])),
        ledger.model_id,
        ledger.dim,
        dict(ledger.chunking),
        manifest.format,
        manifest.generation,
        manifest.live_vectors,
        segments,
        documents,
        verify,
    )


# -- snapshots of past revisions (for servers answering a query at ``rev``) ---------------
class RevisionCache:
    """Verified, read-only snapshots of past revisions, least recently used first out.

    A revision name is resolved on every call (branches and tags move), the snapshot is
    cached by commit id (a commit never changes), and segments are shared between
    cached snapshots through one :class:`SegmentCache`, so neighbouring revisions cost
    little more memory than one.

    >>> revs = RevisionCache(GitRepo("./kb"), capacity=4)        # doctest: +SKIP
    >>> revs.get("v1").search(vector, k=5)                       # doctest: +SKIP
    """

    def __init__(self, repo: GitRepo, capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.repo = repo
        self.capacity = capacity
        self._snaps: collections.OrderedDict[str, Snapshot] = collections.OrderedDict()
        self._segments = SegmentCache()
        self._lock = threading.Lock()

    def get(self, rev: str) -> Snapshot:
        """Return the verified snapshot of ``rev``; raise QueryError or IntegrityError."""
        commit = resolve(self.repo, rev)
        with self._lock:
            snap = self._snaps.get(commit)
            if snap is not None:
                self._snaps.move_to_end(commit)
                return snap
        snap = load_snapshot(self.repo, commit, cache=self._segments)
        with self._lock:
            self._snaps[commit] = snap
            self._snaps.move_to_end(commit)
            while len(self._snaps) > self.capacity:
                self._snaps.popitem(last=False)
            kept = list(self._snaps.values())
            self._segments.retain(
                set().union(*(s.cache_keys for s in kept)),
                set().union(*(s.doc_blobs for s in kept)),
            )
        return snap

    def __len__(self) -> int:
        return len(self._snaps)
