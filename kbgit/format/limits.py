"""Size limits on what a pushed commit may make a hub or standby read into memory.

A commit's documents and index files are read whole to be verified. Without limits a
pusher decides how much memory every standby spends: a 50 MB "document" with a matching
ledger entry was read whole. Two checks, both before any blob is read:

- the claims: every ledger document size <= ``max_document_bytes`` and every manifest
  index file size <= ``max_index_file_bytes`` (:func:`check_claims`);
- the bytes: each blob's real size, from ``git cat-file --batch-check``, must equal its
  claim before it is read (:func:`read_claimed`), so a small claim cannot hide a big blob.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..config import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    DEFAULT_MAX_INDEX_FILE_BYTES,
    ServeConfig,
    StoreConfig,
)
from ..errors import IntegrityError
from ..gitrepo import GitRepo
from .ledger import DOCS_DIR, Ledger
from .manifest import Manifest


@dataclasses.dataclass(frozen=True)
class Limits:
    """Largest document and index file (segment, rows, tombstones, ledger) a commit may hold."""

    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    max_index_file_bytes: int = DEFAULT_MAX_INDEX_FILE_BYTES

    @classmethod
    def of(cls, config: StoreConfig | ServeConfig) -> Limits:
        """Return the limits a store's or a server's settings name."""
        return cls(config.max_document_bytes, config.max_index_file_bytes)


DEFAULT_LIMITS = Limits()


def check_claims(ledger: Ledger, manifest: Manifest, limits: Limits) -> None:
    """Refuse a commit whose ledger or manifest claims a file over the limits."""
    for path, doc in ledger.documents.items():
        if doc.size > limits.max_document_bytes:
            raise IntegrityError(
                f"{DOCS_DIR}/{path}: {doc.size} bytes, over the limit of "
                f"{limits.max_document_bytes} (max_document_bytes)"
            )
    for ref in manifest.files():
        if ref.size > limits.max_index_file_bytes:
            raise IntegrityError(
                f"{ref.path}: {ref.size} bytes, over the limit of "
                f"{limits.max_index_file_bytes} (max_index_file_bytes)"
            )


def read_claimed(repo: GitRepo, claims: Mapping[str, tuple[str, int]]) -> dict[str, bytes]:
    """Read blobs ``{blob id: (path, claimed size)}`` once their real sizes match the claims."""
    sizes = repo.blob_sizes(claims)
    for sha, (path, size) in claims.items():
        if sizes[sha] != size:
            raise IntegrityError(f"{path}: {sizes[sha]} bytes, the commit says {size}")
    return repo.read_blobs(claims)


def check_capped(repo: GitRepo, named: Mapping[str, str], cap: int) -> None:
    """Refuse blobs ``{path: blob id}`` over ``cap`` bytes, without reading them."""
    sizes = repo.blob_sizes(named.values())
    for path, sha in named.items():
        if sizes[sha] > cap:
            raise IntegrityError(
                f"{path}: {sizes[sha]} bytes, over the limit of {cap} (max_index_file_bytes)"
            )
