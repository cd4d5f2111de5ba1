"""The ledger: what was ingested, with hashes. ``ledger.json`` at the top of every commit.

Format 1 keeps every document in ``ledger.json``; format 2 (kbgit/format/shards.py)
keeps a small root there and the documents in ``ledger/<key>.json`` shards. Both are
deterministic JSON (sorted keys, trailing newline), so two ingests of the same documents
with the same settings write byte-identical files and git diffs stay readable.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import FormatError
from . import jsonio

#: the format new stores are written in; a store keeps its format until ``kbgit migrate``
FORMAT_VERSION = 2
#: every format this version reads
READABLE_FORMATS = (1, 2)
LEDGER_PATH = "ledger.json"
DOCS_DIR = "docs"


@dataclasses.dataclass(frozen=True)
class DocEntry:
    """One ingested source document."""

    sha256: str
    size: int
    loader: str
    #: the segment holding every chunk of this version of the document
    segment: str
    #: ids of this document's chunks, in document order
    chunks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "sha256": self.sha256,
            "size": self.size,
            "loader": self.loader,
            "segment": self.segment,
            "chunks": list(self.chunks),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DocEntry:
        """Parse the JSON form."""
        return cls(
            str(d["sha256"]),
            int(d["size"]),
            str(d["loader"]),
            str(d["segment"]),
            tuple(str(c) for c in d["chunks"]),
        )


# how a format 2 ledger is stored (kbgit/format/shards.py reads and writes it)
@dataclasses.dataclass(frozen=True)
class ShardClaim:
    """What the root says about one shard file."""

    sha256: str
    size: int
    documents: int
    chunks: int


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which paths sit in which shard, and the root's claim for each shard."""

    width: int
    claims: dict[str, ShardClaim]
    paths: dict[str, frozenset[str]]
    #: git blob id of each shard, when read from a commit (the ShardCache keys)
    blobs: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Ledger:
    """Every document in the store, plus the settings its vectors were made with.

    >>> led = Ledger.empty("fake:8", 8, {"size": 50})
    >>> led.chunk_count
    0
    """

    model_id: str
    dim: int
    chunking: dict[str, Any]
    documents: dict[str, DocEntry]
    format: int = FORMAT_VERSION
    #: format 2 only: where each document's entry is stored (set when read or encoded)
    layout: Layout | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def empty(cls, model_id: str, dim: int, chunking: dict[str, Any]) -> Ledger:
        """Return a ledger with no documents."""
        return cls(model_id, dim, dict(chunking), {})

    @property
    def chunk_count(self) -> int:
        """Return the number of live chunks."""
        return sum(len(d.chunks) for d in self.documents.values())

    def chunk_sources(self) -> dict[str, str]:
        """Map every live chunk id to its document path."""
        return {cid: path for path, doc in self.documents.items() for cid in doc.chunks}

    def same_settings(self, model_id: str, dim: int, chunking: dict[str, Any]) -> bool:
        """Tell whether vectors made with these settings can be mixed with this ledger's."""
        return (self.model_id, self.dim, self.chunking) == (model_id, dim, chunking)

    def to_bytes(self) -> bytes:
        """Serialize deterministically as one format 1 file."""
        data = {
            "format": 1,
            "model": {"id": self.model_id, "dim": self.dim},
            "chunking": self.chunking,
            "documents": {p: d.to_json() for p, d in sorted(self.documents.items())},
        }
        return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ledger:
        """Parse and validate a format 1 ledger; raise FormatError if it is not one."""
        data = parse_ledger_json(raw)
        if data["format"] != 1:
            raise FormatError(f"{LEDGER_PATH} is format {data['format']}: read it with read_ledger")
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        """Build a format 1 ledger from its parsed JSON; raise FormatError if malformed."""
        try:
            docs = {str(p): DocEntry.from_json(d) for p, d in data["documents"].items()}
            return cls(
                str(data["model"]["id"]),
                int(data["model"]["dim"]),
                dict(data["chunking"]),
                docs,
                1,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{LEDGER_PATH} is malformed: {exc!r}") from exc


def parse_ledger_json(raw: bytes) -> dict[str, Any]:
    """Parse ``ledger.json`` of any format; raise FormatError if this version cannot read it."""
    data = jsonio.loads(raw, LEDGER_PATH)
    try:
        fmt = int(data["format"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{LEDGER_PATH} is malformed: {exc!r}") from exc
    if fmt not in READABLE_FORMATS:
        raise FormatError(
            f"ledger format {fmt} is not supported (this kbgit reads "
            f"{', '.join(map(str, READABLE_FORMATS))})",
            hint="upgrade kbgit on this host",
        )
    data["format"] = fmt
    return data
