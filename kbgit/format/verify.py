"""Verify one commit without building its index, trusting what an accepted base verified.

The hub's pre-receive hook verifies every pushed commit. Reading a whole 100k-vector
store per push (~200 MB of blobs, sha256, JSON rows) costs seconds; but the branch
already points at a commit the same hook accepted. :func:`verify_commit` with
``base=old`` trusts every index file and document whose path, git blob id and manifest
or ledger claims are identical in ``base``, and fully checks everything else: the
ledger <-> manifest hash, model, the file lists, new or changed segments (sha256,
decode, counts), new tombstone files, new document blobs, and each segment's live ids
against the ledger, incrementally for a trusted segment (docs/serving.md, Hub hooks).
It raises :class:`IntegrityError` for the same defects as ``load_snapshot``.
"""

from __future__ import annotations

import dataclasses

from ..errors import IntegrityError
from ..gitrepo import GitRepo
from .checks import (
    SegmentCache,
    check_docs,
    check_header,
    check_live,
    expected_ids,
    live_mismatch,
    load_segments,
    load_tombstones,
    no_such_revision,
    parse_tombstones,
    read_tree,
    segment_claims,
)
from .ledger import DOCS_DIR, Ledger
from .limits import DEFAULT_LIMITS, Limits, read_claimed
from .manifest import Manifest, SegmentRef, TombstoneRef
from .shards import ShardCache

_Tree = dict[str, str]


@dataclasses.dataclass(frozen=True)
class _Base:
    """The accepted commit a new one is checked against."""

    tree: _Tree
    ledger: Ledger
    segments: dict[str, SegmentRef]


@dataclasses.dataclass(frozen=True)
class Verified:
    """A commit :func:`verify_commit` accepted, with what it read of it."""

    commit: str
    tree: _Tree
    ledger: Ledger
    manifest: Manifest


def verify_commit(
    repo: GitRepo,
    rev: str,
    *,
    base: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    any_base: bool = False,
    shards: ShardCache | None = None,
) -> Verified:
    """Verify commit ``rev`` like ``load_snapshot``, trusting files unchanged since ``base``.

    ``base`` must be an ancestor of ``rev`` (the hub's case), unless ``any_base``: a
    verified commit anywhere in history (a rollback's HEAD, a served commit) vouches for
    each file it shares with ``rev`` all the same. ``shards``: ledger shards already read.
    """
    commit = repo.rev_parse(rev)
    if commit is None:
        raise no_such_revision(repo, rev)
    # shared with the base: a shard unchanged since it is parsed once
    shards = shards if shards is not None else ShardCache()
    known = _read_base(repo, base, commit, shards, any_base=any_base)
    tree, ledger, manifest, ledger_raw = read_tree(repo, commit, shards, limits)
    check_header(ledger, manifest, ledger_raw, tree)
    names = [s.name for s in manifest.segments]
    if len(set(names)) != len(names):  # its rows would be live twice
        twice = sorted(n for n in set(names) if names.count(n) > 1)[0]
        raise IntegrityError(f"manifest lists segment {twice} twice")
    if known is None:  # no accepted base: everything, as load_snapshot does
        segments, _keys = load_segments(repo, tree, manifest, SegmentCache())
        check_live(ledger, manifest, segments, load_tombstones(repo, tree, manifest, segments))
        check_docs(repo, tree, ledger, SegmentCache())
        return Verified(commit, tree, ledger, manifest)
    expected = expected_ids(ledger, manifest)
    base_expected = _segment_ids(known.ledger)
    full = []
    for seg in manifest.segments:
        if not _check_trusted(repo, tree, known, base_expected, seg, expected[seg.name]):
            full.append(seg)
    _check_full(repo, tree, manifest, full, expected)
    total = sum(s.vectors - s.deleted for s in manifest.segments)
    if total != manifest.live_vectors:
        raise IntegrityError(f"{total} live vectors, manifest says {manifest.live_vectors}")
    check_docs(repo, tree, ledger, _docs_cache(known))
    return Verified(commit, tree, ledger, manifest)


def _read_base(
    repo: GitRepo, base: str | None, commit: str, shards: ShardCache, *, any_base: bool
) -> _Base | None:
    """Return the base's tree, ledger and segments, or None to verify in full."""
    base_commit = repo.rev_parse(base) if base else None
    if base_commit is None or not (any_base or repo.is_ancestor(base_commit, commit)):
        return None
    try:
        tree, ledger, manifest, _raw = read_tree(repo, base_commit, shards)
    except IntegrityError:  # an accepted base always parses; if not, trust nothing
        return None
    return _Base(tree, ledger, {s.name: s for s in manifest.segments})


def _segment_ids(ledger: Ledger) -> dict[str, set[str]]:
    """Map each segment a ledger names to the ids of its documents' chunks."""
    out: dict[str, set[str]] = {}
    for doc in ledger.documents.values():
        out.setdefault(doc.segment, set()).update(doc.chunks)
    return out


def _same_file(tree: _Tree, base: _Base, path: str) -> bool:
    return path in tree and base.tree.get(path) == tree[path]


def _check_trusted(
    repo: GitRepo,
    tree: _Tree,
    base: _Base,
    base_expected: dict[str, set[str]],
    seg: SegmentRef,
    expected: set[str],
) -> bool:
    """Check a segment unchanged since base incrementally; False if it must be read in full."""
    old = base.segments.get(seg.name)
    if (
        old is None
        or segment_claims(old) != segment_claims(seg)
        or (old.faiss.path, old.rows.path) != (seg.faiss.path, seg.rows.path)
        or not (_same_file(tree, base, seg.faiss.path) and _same_file(tree, base, seg.rows.path))
    ):
        return False
    kept = {t for t in seg.tombstones if t in old.tombstones and _same_file(tree, base, t.path)}
    # a tombstone of the base that is gone (a rollback to before it): its ids live again.
    # The base verified it (its ids were rows of this segment, dead only there), so its
    # ids plus the base's live ids are what the segment's other tombstones may kill
    dropped = [t for t in old.tombstones if t not in kept]
    revived = set().union(*_read_new_tombstones(repo, base.tree, dropped))
    alive = base_expected.get(seg.name, set()) | revived
    killed = _read_new_tombstones(repo, tree, [t for t in seg.tombstones if t not in kept])
    if any(not set(ids) <= alive for ids in killed) or sum(map(len, killed)) != len(
        set().union(*killed)
    ):
        return False  # unknown, dead or twice-tombstoned ids: the full check names them
    live_mismatch(seg.name, alive - set().union(*killed), expected)
    return True


def _read_new_tombstones(repo: GitRepo, tree: _Tree, refs: list[TombstoneRef]) -> list[list[str]]:
    """Read and check tombstone files of ``tree``: sha256, size, JSON list, count."""
    blobs = read_claimed(repo, {tree[t.path]: (t.path, t.size) for t in refs})
    out = []
    for t in refs:
        out.append(parse_tombstones(t, blobs[tree[t.path]]))
    return out


def _check_full(
    repo: GitRepo,
    tree: _Tree,
    manifest: Manifest,
    refs: list[SegmentRef],
    expected: dict[str, set[str]],
) -> None:
    """Read, decode and check segments new or changed since base, with all their tombstones."""
    if not refs:
        return
    part = dataclasses.replace(manifest, segments=tuple(refs))
    segments, _keys = load_segments(repo, tree, part, SegmentCache())
    dead = load_tombstones(repo, tree, part, segments)
    for seg in segments:
        live_mismatch(seg.name, set(seg.ids) - dead[seg.name], expected[seg.name])


def _docs_cache(base: _Base) -> SegmentCache:
    """Return a cache holding the base's document blobs and the ledger claims they met."""
    cache = SegmentCache()
    for path, doc in base.ledger.documents.items():
        blob = base.tree.get(f"{DOCS_DIR}/{path}")
        if blob is not None:
            cache.add_doc(blob, doc.sha256, doc.size)
    return cache
