"""The manifest: every index file of a commit with its sha256, vector count and dimension.

``manifest.json`` at the top of every commit. The index is a list of append-only
segments (``index/g000007.faiss`` + ``index/g000007.jsonl``), each written once by the
ingest of that generation and never rewritten. Deletions are tombstone files
(``index/g000003.del.g000007.json``: ids of segment g000003 deleted at generation 7).
A segment whose rows are all tombstoned is dropped with its tombstones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import FormatError
from . import jsonio
from .ledger import FORMAT_VERSION, READABLE_FORMATS
from .vector_index import Row, encode_segment

MANIFEST_PATH = "manifest.json"
INDEX_DIR = "index"


def sha256(data: bytes) -> str:
    """Return the hex sha256 of data."""
    return hashlib.sha256(data).hexdigest()


def segment_name(generation: int) -> str:
    """Return the segment name written at a generation."""
    return f"g{generation:06d}"


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file of the index and the sha256 of its bytes."""

    path: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileRef:
        """Parse the JSON form."""
        return cls(str(d["path"]), str(d["sha256"]), int(d["size"]))


@dataclasses.dataclass(frozen=True)
class TombstoneRef(FileRef):
    """A tombstone file: ids of one segment deleted at one generation."""

    count: int = 0


@dataclasses.dataclass(frozen=True)
class SegmentRef:
    """One append-only segment: a FAISS index and its rows (ids, text, metadata)."""

    name: str
    vectors: int
    dim: int
    faiss: FileRef
    rows: FileRef
    tombstones: tuple[TombstoneRef, ...] = ()

    @property
    def deleted(self) -> int:
        """Return how many of this segment's rows are tombstoned."""
        return sum(t.count for t in self.tombstones)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "vectors": self.vectors,
            "dim": self.dim,
            "faiss": self.faiss.to_json(),
            "rows": self.rows.to_json(),
            "tombstones": [t.to_json() for t in self.tombstones],
        }


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The index files of one commit."""

    generation: int
    model_id: str
    dim: int
    segments: tuple[SegmentRef, ...]
    live_vectors: int
    ledger_sha256: str
    format: int = FORMAT_VERSION

    def files(self) -> list[FileRef]:
        """Return every file the manifest names."""
        out: list[FileRef] = []
        for seg in self.segments:
            out += [seg.faiss, seg.rows, *seg.tombstones]
        return out

    def to_bytes(self) -> bytes:
        """Serialize deterministically."""
        data = {
            "format": self.format,
            "generation": self.generation,
            "model": {"id": self.model_id, "dim": self.dim},
            "segments": [s.to_json() for s in self.segments],
            "live_vectors": self.live_vectors,
            "ledger_sha256": self.ledger_sha256,
        }
        return (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse and validate a manifest; raise FormatError if it is not one we can read."""
        try:
            data = jsonio.loads(raw, MANIFEST_PATH)
            fmt = int(data["format"])
            if fmt not in READABLE_FORMATS:
                raise FormatError(
                    f"manifest format {fmt} is not supported",
                    hint="upgrade kbgit on this host",
                )
            segs = tuple(
                SegmentRef(
                    str(s["name"]),
                    int(s["vectors"]),
                    int(s["dim"]),
                    FileRef.from_json(s["faiss"]),
                    FileRef.from_json(s["rows"]),
                    tuple(
                        TombstoneRef(
                            str(t["path"]), str(t["sha256"]), int(t["size"]), int(t["count"])
                        )
                        for t in s["tombstones"]
                    ),
                )
                for s in data["segments"]
            )
            return cls(
                int(data["generation"]),
                str(data["model"]["id"]),
                int(data["model"]["dim"]),
                segs,
                int(data["live_vectors"]),
                str(data["ledger_sha256"]),
                fmt,
            )
        except FormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{MANIFEST_PATH} is malformed: {exc!r}") from exc


def new_segment(
    name: str, vectors: np.ndarray, rows: Sequence[Row], dim: int
) -> tuple[SegmentRef, dict[str, bytes]]:
    """Encode a segment's FAISS and rows files; return its manifest entry and the files."""
    faiss_raw, rows_raw = encode_segment(vectors, rows)
    writes: dict[str, bytes] = {}
    refs = {}
    for kind, raw in (("faiss", faiss_raw), ("jsonl", rows_raw)):
        path = f"{INDEX_DIR}/{name}.{kind}"
        writes[path] = raw
        refs[kind] = FileRef(path, sha256(raw), len(raw))
    return SegmentRef(name, len(rows), dim, refs["faiss"], refs["jsonl"]), writes
