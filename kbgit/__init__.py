"""kbgit: a git-backed RAG knowledge store with verified hot-standby replication.

>>> from kbgit import KnowledgeStore
>>> store = KnowledgeStore.init("./kb", hub="/srv/kb-hub.git")    # doctest: +SKIP
>>> store.ingest("./my-docs")                                     # doctest: +SKIP
"""

from .config import StoreConfig
from .embeddings import Embedder, FakeEmbedder, SentenceTransformerEmbedder, load_embedder
from .errors import (
    ConfigError,
    DocumentError,
    FormatError,
    GitError,
    HubMovedError,
    IntegrityError,
    KbgitError,
    LockedError,
    QueryError,
)
from .format.snapshot import Hit, Snapshot
from .gitrepo import create_hub
from .ingest.plan import FileReport
from .store import IngestResult, KnowledgeStore, QueryResult, StoreStatus

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DocumentError",
    "Embedder",
    "FakeEmbedder",
    "FileReport",
    "FormatError",
    "GitError",
    "Hit",
    "HubMovedError",
    "IngestResult",
    "IntegrityError",
    "KbgitError",
    "KnowledgeStore",
    "LockedError",
    "QueryError",
    "QueryResult",
    "SentenceTransformerEmbedder",
    "Snapshot",
    "StoreConfig",
    "StoreStatus",
    "create_hub",
    "load_embedder",
]
