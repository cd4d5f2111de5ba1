"""kbgit's LangChain face: the vector store, the HTTP retriever, import/export.

>>> from kbgit.langchain import KbgitVectorStore                  # doctest: +SKIP
>>> store = KbgitVectorStore.from_texts(["a"], embedding, path="./kb")  # doctest: +SKIP

``kbgit.langchain`` imports langchain-core; nothing else in kbgit needs it to load a store.
"""

from .embeddings import EmbeddingsEmbedder, KbgitEmbeddings, as_embedder, embed_query
from .vectorstore import KbgitVectorStore, hit_document

__all__ = [
    "EmbeddingsEmbedder",
    "KbgitEmbeddings",
    "KbgitVectorStore",
    "as_embedder",
    "embed_query",
    "hit_document",
]
