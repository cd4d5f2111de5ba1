"""The ledger: what was ingested, with hashes. ``ledger.json`` at the top of every commit.

Deterministic JSON (sorted keys, fixed indent, trailing newline), so two ingests of the
same documents with the same settings write byte-identical ledgers and git diffs stay
readable.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import FormatError
from . import jsonio

FORMAT_VERSION = 1
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
        """Serialize deterministically."""
        data = {
            "format": self.format,
            "model": {"id": self.model_id, "dim": self.dim},
            "chunking": self.chunking,
            "documents": {p: d.to_json() for p, d in sorted(self.documents.items())},
        }
        return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ledger:
        """Parse and validate a ledger; raise FormatError if it is not one we can read."""
        try:
            data = jsonio.loads(raw, LEDGER_PATH)
            fmt = int(data["format"])
            if fmt != FORMAT_VERSION:
                raise FormatError(
                    f"ledger format {fmt} is not supported (this kbgit reads {FORMAT_VERSION})",
                    hint="upgrade kbgit on this host",
                )
            docs = {
                str(path): DocEntry(
                    str(d["sha256"]),
                    int(d["size"]),
                    str(d["loader"]),
                    str(d["segment"]),
                    tuple(str(c) for c in d["chunks"]),
                )
                for path, d in data["documents"].items()
            }
            return cls(
                str(data["model"]["id"]),
                int(data["model"]["dim"]),
                dict(data["chunking"]),
                docs,
                fmt,
            )
        except FormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{LEDGER_PATH} is malformed: {exc!r}") from exc
