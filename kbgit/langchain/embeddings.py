"""Embedding adapters between LangChain and kbgit.

:class:`EmbeddingsEmbedder` lets a LangChain ``Embeddings`` write into a kbgit store (as
a kbgit ``Embedder``: a stable model id for the ledger, L2-normalized vectors);
:class:`KbgitEmbeddings` lets LangChain code (e.g. ``FAISS.load_local``) embed with a
kbgit model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from langchain_core.embeddings import Embeddings

from ..embeddings import Embedder
from ..errors import ConfigError
from .documents import normalize


class EmbeddingsEmbedder:
    """A LangChain ``Embeddings`` seen as a kbgit ``Embedder`` (vectors L2-normalized).

    >>> from langchain_core.embeddings import DeterministicFakeEmbedding
    >>> EmbeddingsEmbedder(DeterministicFakeEmbedding(size=6)).model_id
    'langchain:DeterministicFakeEmbedding'
    """

    def __init__(
        self, embeddings: Embeddings, *, model_id: str | None = None, dim: int | None = None
    ) -> None:
        self.embeddings = embeddings
        self.model_id = model_id or _lc_model_id(embeddings)
        self._dim = dim

    @property
    def dim(self) -> int:
        """Return the vector dimension (probed once with a query if not given)."""
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query("dimension probe"))
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents and normalize them so inner product is cosine."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize(np.array(self.embeddings.embed_documents(list(texts))))

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query with the model's query side, normalized."""
        return normalize(np.array(self.embeddings.embed_query(text)))

    def count_tokens(self, text: str) -> int:
        """Count whitespace-separated words (LangChain users split before adding)."""
        return len(text.split())


def _lc_model_id(embeddings: Embeddings) -> str:
    parts = ["langchain", type(embeddings).__name__]
    for attr in ("model_name", "model"):
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            parts.append(value)
            break
    return ":".join(parts)


class KbgitEmbeddings(Embeddings):
    """A kbgit ``Embedder`` seen as a LangChain ``Embeddings`` (e.g. for ``FAISS.load_local``).

    >>> from kbgit import FakeEmbedder
    >>> len(KbgitEmbeddings(FakeEmbedder(8)).embed_query("hello"))
    8
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with the kbgit model."""
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the kbgit model."""
        return self.embedder.embed([text])[0].tolist()


def as_embedder(embedding: Embeddings | Embedder, model_id: str | None = None) -> Embedder:
    """Return a kbgit Embedder for a LangChain Embeddings or an Embedder."""
    if isinstance(embedding, KbgitEmbeddings):
        return embedding.embedder
    if isinstance(embedding, Embeddings):
        return EmbeddingsEmbedder(embedding, model_id=model_id)
    if isinstance(embedding, Embedder):
        return embedding
    raise ConfigError(f"not an embedding model: {type(embedding).__name__}")


def embed_query(embedder: Embedder, text: str) -> np.ndarray:
    """Embed a query, using the model's query side when it has one."""
    fn = getattr(embedder, "embed_query", None)
    return fn(text) if callable(fn) else embedder.embed([text])[0]


__all__ = ["EmbeddingsEmbedder", "KbgitEmbeddings", "as_embedder", "embed_query"]
