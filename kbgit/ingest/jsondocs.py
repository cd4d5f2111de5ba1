"""Documents written through an API (LangChain), not read from a source folder.

Each is one JSON file ``docs/.langchain/<sha256(id)[:32]>.json`` holding its id, text and
metadata, with one chunk whose id IS the user's id. The folder is hidden, so a
``kbgit ingest`` of a source folder never deletes these documents; a model change
re-embeds them from these files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from ..errors import DocumentError, FormatError
from ..format import jsonio

LC_DIR = ".langchain"
LOADER = "langchain"


@dataclasses.dataclass(frozen=True)
class LcDoc:
    """One LangChain document to write: id, text, JSON metadata."""

    id: str
    text: str
    metadata: dict[str, Any]


def doc_path(doc_id: str) -> str:
    """Return the ledger path of the LangChain document with this id."""
    return f"{LC_DIR}/{hashlib.sha256(doc_id.encode('utf-8')).hexdigest()[:32]}.json"


def encode_doc(doc_id: str, text: str, metadata: dict[str, Any]) -> bytes:
    """Serialize one LangChain document as the JSON file kept under docs/."""
    data = {"id": doc_id, "metadata": metadata, "page_content": text}
    return (json.dumps(data, sort_keys=True, ensure_ascii=False, indent=1) + "\n").encode()


def decode_doc(data: bytes) -> LcDoc:
    """Parse a document file written by :func:`encode_doc`."""
    try:
        obj = jsonio.loads(data, "LangChain document")
        return LcDoc(str(obj["id"]), str(obj["page_content"]), dict(obj["metadata"]))
    except (FormatError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"malformed LangChain document file: {exc!r}") from exc


def normalize(vecs: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length (zero rows stay zero)."""
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
    return np.ascontiguousarray(vecs / np.where(norms == 0, 1.0, norms), dtype=np.float32)


def json_metadata(doc_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Return metadata as plain JSON values; raise DocumentError if it is not JSON."""
    try:
        meta = json.loads(json.dumps(dict(metadata or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DocumentError(
            f"metadata of document {doc_id!r} is not JSON-serializable: {exc}",
            hint="kbgit stores metadata as JSON (no pickle): use str/int/float/bool/list/dict",
        ) from exc
    return meta
