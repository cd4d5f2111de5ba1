"""Compaction and gc: merge segments into one, drop tombstoned vectors; pack objects.

Append-only segments keep each ingest cheap to push, but after many small ingests a
store has many segments and tombstone files. Compaction writes one new segment holding
every live row (same chunk ids, same vectors, same order as the live index, so search
results are identical), points every ledger document at it, and deletes the old index
files from the tree. They stay in git history, so rollback to before the compaction
still works; the hub grows by one copy of the live index.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..format.checks import SegmentCache
from ..format.ledger import Ledger
from ..format.manifest import (
    MANIFEST_PATH,
    Manifest,
    SegmentRef,
    new_segment,
    segment_name,
    sha256,
)
from ..format.shards import encode_ledger
from ..format.snapshot import Snapshot, load_snapshot
from ..format.trailers import Trailers
from ..gitrepo import GitRepo
from .tiers import BASE, plan_tiered

if TYPE_CHECKING:
    from ..store import KnowledgeStore

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CompactResult:
    """What a compaction did."""

    commit: str | None
    segments_before: int
    segments_after: int
    tombstone_files_before: int
    vectors: int
    vectors_dropped: int
    index_bytes_before: int
    index_bytes_after: int
    pushed: bool
    dry_run: bool = False

    @property
    def noop(self) -> bool:
        """Tell whether the store was already compact (nothing to commit)."""
        return self.commit is None and not self.dry_run


@dataclasses.dataclass(frozen=True)
class Compaction:
    """The files of a compacted commit."""

    ledger: Ledger
    manifest: Manifest
    writes: dict[str, bytes]
    deletes: list[str]


def build_compaction(snap: Snapshot) -> Compaction:
    """Return the ledger, manifest and files of ``snap`` with all live rows in one segment."""
    old = snap.manifest
    generation = old.generation + 1
    name = segment_name(generation)
    rows = [row for _seg, row in snap.index.rows()]
    writes: dict[str, bytes] = {}
    segments: tuple[SegmentRef, ...] = ()
    if rows:
        ref, writes = new_segment(name, snap.index.vectors(), rows, old.dim)
        segments = (ref,)
    docs = {p: dataclasses.replace(d, segment=name) for p, d in snap.ledger.documents.items()}
    files = encode_ledger(dataclasses.replace(snap.ledger, documents=docs), snap.ledger)
    manifest = Manifest(
        generation, old.model_id, old.dim, segments, len(rows), sha256(files.root), old.format
    )
    writes.update(files.writes)
    writes[MANIFEST_PATH] = manifest.to_bytes()
    deletes = [f.path for f in old.files() if f.path not in writes] + files.deletes
    return Compaction(files.ledger, manifest, writes, deletes)


def is_compact(manifest: Manifest) -> bool:
    """Tell whether a manifest has at most one segment and no tombstones."""
    return len(manifest.segments) <= 1 and not any(s.tombstones for s in manifest.segments)


def _unchanged(snap: Snapshot, dry_run: bool) -> CompactResult:
    """Return the result of a compaction that has nothing to merge."""
    old = snap.manifest
    size = sum(f.size for f in old.files())
    segments, tombstones = len(old.segments), sum(len(s.tombstones) for s in old.segments)
    dropped = sum(s.vectors for s in old.segments) - old.live_vectors
    return CompactResult(
        None, segments, segments, tombstones, old.live_vectors, dropped, size, size, False, dry_run
    )


def _describe(
    snap: Snapshot, result: CompactResult, generation: int
) -> tuple[str, list[str], Trailers]:
    subject = (
        f"kbgit compact: {result.segments_before} segments -> {result.segments_after}, "
        f"{result.vectors_dropped} tombstoned vectors dropped"
    )
    where = "one segment" if result.segments_after <= 1 else "merged size tiers"
    body = [
        f"The live vectors of {snap.commit[:12]} now sit in {where}; search results",
        "are unchanged. Older segments remain in history for rollback.",
    ]
    trailers = Trailers(
        vectors=result.vectors,
        generation=generation,
        operation="compact",
        extra=(
            ("Compacted-Segments", str(result.segments_before)),
            ("Vectors-Dropped", str(result.vectors_dropped)),
        ),
    )
    return subject, body, trailers


def compact(
    store: KnowledgeStore,
    *,
    force: bool = False,
    dry_run: bool = False,
    push: bool = True,
    wait: bool = True,
    tiered: bool = False,
    tier_base: int = BASE,
) -> CompactResult:
    """Merge HEAD's segments into one, drop tombstoned rows, commit, verify and push.

    ``tiered`` merges only runs of same-size segments (kbgit/history/tiers.py): a
    no-op when no tier is full, and ``force`` then means a full compaction. ``tier_base``
    sets where tier 0 ends (tiers.BASE * tiers.FANOUT live vectors by default).
    """
    with store.writer.transaction(wait=wait) as txn:
        cache = SegmentCache()
        snap = load_snapshot(store.repo, "HEAD", cache=cache)
        old = snap.manifest
        tiers = plan_tiered(snap, tier_base) if tiered and not force else None
        if tiered and not force and tiers is None:
            return _unchanged(snap, dry_run)
        plan = Compaction(*tiers) if tiers is not None else build_compaction(snap)
        result = CompactResult(
            None,
            len(old.segments),
            len(plan.manifest.segments),
            sum(len(s.tombstones) for s in old.segments),
            old.live_vectors,
            sum(s.vectors for s in old.segments) - sum(s.vectors for s in plan.manifest.segments),
            sum(f.size for f in old.files()),
            sum(f.size for f in plan.manifest.files()),
            False,
        )
        if dry_run or (is_compact(old) and not force and not tiered):
            return dataclasses.replace(result, dry_run=dry_run)
        for path in plan.deletes:
            txn.delete(path)
        for path, data in plan.writes.items():
            txn.write(path, data)
        commit = txn.commit(*_describe(snap, result, plan.manifest.generation), verify=cache)
        logger.info("compacted %d segments into %s", len(old.segments), commit[:12])
        pushed = txn.push() if push else False
        return dataclasses.replace(result, commit=commit, pushed=pushed)


# -- gc -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GcResult:
    """Size of a repository's object store before and after ``git gc``."""

    path: str
    bytes_before: int
    bytes_after: int


def objects_size(git_dir: str | os.PathLike[str]) -> int:
    """Return the bytes used by a repository's object store."""
    objects = Path(git_dir) / "objects"
    return sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())


def git_dir(path: str | os.PathLike[str]) -> Path:
    """Return the git directory of a working repo or bare hub."""
    path = Path(path)
    if (path / ".git").is_dir():
        return path / ".git"
    if (path / "objects").is_dir() and (path / "HEAD").is_file():
        return path
    raise ConfigError(f"{path} is neither a kbgit store nor a bare hub")


def gc(path: str | os.PathLike[str]) -> GcResult:
    """Pack a store's or hub's objects with ``git gc`` (unreachable objects kept 2 weeks)."""
    gdir = git_dir(path)
    before = objects_size(gdir)
    # hubs set core.bigFileThreshold: big segments are packed whole, ledgers as deltas
    GitRepo(gdir).run("gc", "--quiet")
    return GcResult(str(path), before, objects_size(gdir))
