"""Tiered compaction: merge runs of same-size segments so a query touches few segments.

A segment's size tier is 0 while it holds fewer than ``BASE * FANOUT`` live vectors (4,096)
and one more per factor ``FANOUT`` above that (16,384, 65,536, 262,144, ...). A run of at
least ``FANOUT`` neighbouring segments of one tier is merged into one segment in their
place (live rows in the same order, so ties rank as before and search results are
unchanged); the merged segment may complete a run one tier up, merged in the same commit.
A segment with at least half of its rows tombstoned is rewritten without them. Every
other segment keeps its files (and tombstones), so the hub grows by the merged segments
only: a vector is rewritten about log4(N / 1,024) times over its life, where a full
compaction rewrites the whole store each time.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from ..format.ledger import Ledger
from ..format.manifest import MANIFEST_PATH, Manifest, SegmentRef, new_segment, segment_name, sha256
from ..format.shards import encode_ledger
from ..format.snapshot import Snapshot
from ..format.vector_index import Row, Segment

#: segments of one tier merged once this many sit side by side
FANOUT = 4
#: live vectors below which every segment is tier 0 (times FANOUT)
BASE = 1024
#: tombstoned share of a segment's rows at which it is rewritten without them
DIRTY = 0.5


def size_tier(live: int, base: int = BASE) -> int:
    """Return the size tier of a segment holding ``live`` live vectors."""
    tier, top = 0, base * FANOUT
    while live >= top:
        tier, top = tier + 1, top * FANOUT
    return tier


@dataclasses.dataclass
class _Piece:
    """A segment of the planned manifest: kept as is (``ref``) or written from ``blocks``."""

    live: int
    ref: SegmentRef | None
    blocks: list[tuple[Segment, np.ndarray | None]]
    #: old segment names whose rows it holds
    sources: list[str]


def _merge_runs(pieces: list[_Piece], base: int) -> list[_Piece]:
    """Merge the first run of >= FANOUT same-tier neighbours, again until none is left."""
    while True:
        tiers = [size_tier(p.live, base) for p in pieces]
        start = 0
        for end in range(1, len(pieces) + 1):
            if end == len(pieces) or tiers[end] != tiers[start]:
                if end - start >= FANOUT:
                    run = pieces[start:end]
                    merged = _Piece(
                        sum(p.live for p in run),
                        None,
                        [b for p in run for b in p.blocks],
                        [s for p in run for s in p.sources],
                    )
                    pieces = [*pieces[:start], merged, *pieces[end:]]
                    break
                start = end
        else:
            return pieces


def _rows(blocks: list[tuple[Segment, np.ndarray | None]]) -> tuple[np.ndarray, list[Row]]:
    vecs = [seg.vectors if mask is None else seg.vectors[mask] for seg, mask in blocks]
    rows: list[Row] = []
    for seg, mask in blocks:
        rows += seg.rows if mask is None else itertools.compress(seg.rows, mask)
    return np.concatenate(vecs), rows


def plan_tiered(
    snap: Snapshot, base: int = BASE
) -> tuple[Ledger, Manifest, dict[str, bytes], list[str]] | None:
    """Return (ledger, manifest, writes, deletes) after a tiered merge; None: nothing to do.

    ``base``: live vectors per segment below which tier 0 ends (times FANOUT).
    """
    old = snap.manifest
    parts = {seg.name: (seg, mask) for seg, mask in snap.index.parts()}
    pieces = []
    for ref in old.segments:
        live = ref.vectors - ref.deleted
        blocks = [parts[ref.name]] if ref.name in parts else []
        dirty = ref.deleted >= DIRTY * ref.vectors
        pieces.append(_Piece(live, None if dirty else ref, blocks, [ref.name]))
    pieces = [p for p in _merge_runs(pieces, base) if p.live]
    if all(p.ref is not None for p in pieces) and len(pieces) == len(old.segments):
        return None
    generation, refs, writes, renamed = old.generation, [], {}, {}
    for piece in pieces:
        if piece.ref is not None:
            refs.append(piece.ref)
            continue
        generation += 1
        name = segment_name(generation)
        vectors, rows = _rows(piece.blocks)
        ref, files = new_segment(name, vectors, rows, old.dim)
        refs.append(ref)
        writes.update(files)
        renamed.update(dict.fromkeys(piece.sources, name))
    docs = {
        p: dataclasses.replace(d, segment=renamed.get(d.segment, d.segment))
        for p, d in snap.ledger.documents.items()
    }
    ledger: Ledger = dataclasses.replace(snap.ledger, documents=docs)
    files = encode_ledger(ledger, snap.ledger)
    live = sum(r.vectors - r.deleted for r in refs)
    manifest = Manifest(
        generation, old.model_id, old.dim, tuple(refs), live, sha256(files.root), old.format
    )
    writes.update(files.writes)
    writes[MANIFEST_PATH] = manifest.to_bytes()
    kept = {f.path for f in manifest.files()}
    deletes = [f.path for f in old.files() if f.path not in kept and f.path not in writes]
    return files.ledger, manifest, writes, deletes + files.deletes
