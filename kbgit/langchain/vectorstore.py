"""LangChain integration: a ``VectorStore`` backed by a kbgit store, and embedding adapters.

Every write goes through kbgit's own ingest path: one ledger document per LangChain
``Document`` (``docs/.langchain/<sha256(id)[:32]>.json`` holding its id, text and
metadata), one chunk whose id IS the user's id, and one commit per call, made under the
writer lock and pushed to the hub, so it replicates like any ingest. The folder is
hidden, so a ``kbgit ingest`` of a source folder never deletes these documents.

>>> from kbgit.langchain.vectorstore import KbgitVectorStore
>>> vs = KbgitVectorStore.open("./kb", hub="/srv/kb-hub.git")          # doctest: +SKIP
>>> vs.add_texts(["Rotate API keys every 90 days"], ids=["keys-1"])     # doctest: +SKIP
>>> vs.as_retriever(search_kwargs={"k": 3}).invoke("key rotation")     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..embeddings import Embedder
from ..errors import ConfigError, DocumentError
from ..format.snapshot import Snapshot
from ..retrieval.fusion import HybridOptions
from ..retrieval.search import search
from ..store import KnowledgeStore
from .documents import LC_DIR, LcDoc, commit_documents, json_metadata, normalize
from .embeddings import EmbeddingsEmbedder, KbgitEmbeddings, as_embedder, embed_query
from .filters import metadata_matcher

logger = logging.getLogger(__name__)


def hit_document(chunk_id: str, source: str, text: str, meta: dict[str, Any]) -> Document:
    """Return a stored chunk as a LangChain Document (file chunks get a ``source`` key)."""
    metadata = dict(meta)
    if not source.startswith(LC_DIR + "/"):
        metadata.setdefault("source", source)
    return Document(id=chunk_id, page_content=text, metadata=metadata)


class KbgitVectorStore(VectorStore):
    """A LangChain VectorStore whose writes are kbgit commits (replicated via the hub).

    >>> vs = KbgitVectorStore.open("./kb", embedding=my_lc_embeddings)   # doctest: +SKIP
    >>> vs.add_documents(docs, ids=[d.metadata["key"] for d in docs])    # doctest: +SKIP
    >>> vs.similarity_search("rotate keys", k=4, filter={"team": "sre"}) # doctest: +SKIP
    """

    def __init__(
        self,
        store: KnowledgeStore | str | os.PathLike[str],
        embedding: Embeddings | Embedder | None = None,
        *,
        model_id: str | None = None,
        push: bool = True,
        mode: str = "dense",
    ) -> None:
        self.store = store if isinstance(store, KnowledgeStore) else KnowledgeStore(store)
        #: default retrieval of similarity_search: dense (LangChain's vector semantics),
        #: lexical or hybrid; a ``mode=`` (and ``alpha=``) search argument overrides it
        self.options = HybridOptions(mode=mode)
        self._embedding = embedding
        self.embedder = as_embedder(embedding, model_id) if embedding else self.store.embedder
        self.push = push
        #: (ref stamp, HEAD, snapshot, {chunk id: (source, text, meta)}) of the last read
        self._cache: tuple[tuple, str, Snapshot, dict[str, tuple[str, str, dict]]] | None = None
        #: (commit, every live vector, {chunk id: row}) for MMR, built on first use
        self._mmr: tuple[str, np.ndarray, dict[str, int]] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        embedding: Embeddings | Embedder | None = None,
        *,
        hub: str = "",
        model: str | None = None,
        model_id: str | None = None,
        push: bool = True,
    ) -> KbgitVectorStore:
        """Open the store at ``path``, creating it (with ``hub`` and ``model``) if absent."""
        from ..config import StoreConfig

        if os.path.isdir(os.path.join(path, ".git")):
            kb = KnowledgeStore(path)
        else:
            kb = KnowledgeStore.init(
                path, hub=hub, config=StoreConfig(model=model) if model else None
            )
        return cls(kb, embedding, model_id=model_id, push=push)

    @property
    def embeddings(self) -> Embeddings:
        """Return the LangChain embeddings this store queries with."""
        if isinstance(self._embedding, Embeddings):
            return self._embedding
        return KbgitEmbeddings(self.embedder)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> KbgitVectorStore:
        """Create (or open) the store at ``path`` and add texts in one commit."""
        if path is None:
            raise ConfigError("KbgitVectorStore.from_texts needs path= (the store folder)")
        vs = cls.open(path, embedding, **kwargs)
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    # -- writing ----------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Upsert texts by id in one commit; generate uuid4 ids where none is given."""
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        given = list(ids) if ids is not None else [None] * len(texts)
        if not len(texts) == len(metadatas) == len(given):
            raise DocumentError(
                f"{len(texts)} texts, {len(metadatas)} metadatas and {len(given)} ids"
            )
        out = [str(i) if i else str(uuid.uuid4()) for i in given]
        docs = {
            i: LcDoc(i, t, json_metadata(i, m))
            for i, t, m in zip(out, texts, metadatas, strict=True)
        }
        if docs:  # a repeated id within one call: the last one wins
            commit_documents(self.store, self.embedder, list(docs.values()), push=self.push)
        return out

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id in one commit (missing ids are ignored; None deletes all)."""
        if ids is None:
            ledger = self.store.writer.head_state().ledger
            ids = [
                c for p, d in (ledger.documents if ledger else {}).items()
                if p.startswith(LC_DIR + "/") for c in d.chunks
            ]  # fmt: skip
        if ids:
            commit_documents(self.store, self.embedder, deletes=ids, push=self.push)
        return True

    # -- reading ----------------------------------------------------------------------
    def _ref_stamp(self) -> tuple:
        """Identify the state of HEAD's ref files: git replaces them (new inode) on update."""
        git = self.store.root / ".git"
        stamp = []
        for path in (
            git / "HEAD",
            git / "refs/heads" / self.store.config.branch,
            git / "packed-refs",
        ):
            try:
                st = path.stat()
                stamp.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def _snapshot(self) -> tuple[Snapshot, dict[str, tuple[str, str, dict]]] | None:
        stamp = self._ref_stamp()
        cached = self._cache
        if cached is not None and cached[0] == stamp:  # HEAD unchanged: no git process
            return cached[2], cached[3]
        head = self.store.repo.head()
        if head is None:
            return None
        if cached is None or cached[1] != head:
            snap = self.store.snapshot(head)
            rows = {r.id: (snap.sources[r.id], r.text, r.meta) for _s, r in snap.index.rows()}
        else:
            snap, rows = cached[2], cached[3]
        self._cache = (stamp, head, snap, rows)
        return snap, rows

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Return the documents with these ids, in order; missing ids are skipped."""
        state = self._snapshot()
        if state is None:
            return []
        rows = state[1]
        return [hit_document(i, *rows[i]) for i in dict.fromkeys(ids) if i in rows]

    def similarity_search_with_score_by_vector(
        self,
        embedding: Sequence[float] | np.ndarray,
        k: int = 4,
        filter: dict[str, Any] | Callable[[dict], bool] | None = None,  # noqa: A002
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Return (document, cosine similarity) pairs, best first.

        ``filter`` matches metadata exactly (see :func:`kbgit.langchain.filters.metadata_matcher`);
        ``source=`` keeps documents whose path starts with a prefix; ``score_threshold=``
        drops hits below it.
        """
        state = self._snapshot()
        if state is None or k < 1:
            return []
        snap, rows = state
        if (snap.ledger.model_id, snap.ledger.dim) != (self.embedder.model_id, self.embedder.dim):
            raise ConfigError(
                f"the store holds {snap.ledger.model_id} vectors; queries use "
                f"{self.embedder.model_id}",
                hint="open the store with the embedding model it was built with",
            )
        allowed = _allowed(snap, rows, filter, kwargs.get("source"))
        matches = snap.index.search(normalize(np.asarray(embedding)), k, allowed)
        threshold = kwargs.get("score_threshold")
        return [
            (hit_document(m.row.id, *rows[m.row.id]), m.score)
            for m in matches
            if threshold is None or m.score >= threshold
        ]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Any = None,
        **kwargs: Any,  # noqa: A002
    ) -> list[tuple[Document, float]]:
        """Return (document, score) pairs for a query, best first.

        ``mode=`` dense (cosine similarity, the default), lexical (BM25) or hybrid (fused);
        ``alpha=`` weighs dense in hybrid mode; ``exact=True`` scores every vector even
        where a large segment has an ANN index. Filters apply in every mode; in lexical
        and hybrid modes each Document's metadata says which retrievers found it.
        """
        state = self._snapshot()
        if state is None:
            return []
        opts = self._options(kwargs)
        if opts.mode == "dense":
            vector = embed_query(self.embedder, query)
            return self.similarity_search_with_score_by_vector(vector, k, filter, **kwargs)
        snap, rows = state
        match = metadata_matcher(filter) if filter is not None else None
        hits = search(
            snap,
            query,
            k,
            opts,
            embed=lambda t: normalize(np.asarray(embed_query(self.embedder, t))),
            lexical=lambda: self.store.lexical.get(snap),
            source=kwargs.get("source"),
            score_threshold=kwargs.get("score_threshold"),
            row_filter=None
            if match is None
            else lambda r: match(hit_document(r.id, rows[r.id][0], "", r.meta).metadata),
        )
        out = []
        for h in hits:
            doc = hit_document(h.chunk_id, *rows[h.chunk_id])
            doc.metadata["retrievers"] = dict(h.retrievers)
            out.append((doc, h.score))
        return out

    def _options(self, kwargs: dict[str, Any]) -> HybridOptions:
        given = {key: kwargs.pop(key) for key in ("mode", "alpha", "exact") if key in kwargs}
        return dataclasses.replace(self.options, **given) if given else self.options

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: Any = None,
        **kwargs: Any,  # noqa: A002
    ) -> list[Document]:
        """Return the k documents most similar to a query."""
        return [d for d, _s in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Any = None,
        **kwargs: Any,  # noqa: A002
    ) -> list[Document]:
        """Return the k documents most similar to a vector."""
        pairs = self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [d for d, _s in pairs]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: Sequence[float] | np.ndarray,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,  # noqa: A002
        **kwargs: Any,
    ) -> list[Document]:
        """Return k diverse documents among the fetch_k most similar (max marginal relevance)."""
        state = self._snapshot()
        if state is None or k < 1:
            return []
        snap, rows = state
        query = normalize(np.asarray(embedding))
        matches = snap.index.search(
            query, max(k, fetch_k), _allowed(snap, rows, filter, kwargs.get("source"))
        )
        if not matches:
            return []
        vectors, positions = self._vectors(snap)
        cand = vectors[[positions[m.row.id] for m in matches]]
        picked = maximal_marginal_relevance(query, cand, lambda_mult=lambda_mult, k=k)
        return [hit_document(matches[i].row.id, *rows[matches[i].row.id]) for i in picked]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,  # noqa: A002
        **kwargs: Any,
    ) -> list[Document]:
        """Embed the query, then return k diverse documents among the fetch_k most similar."""
        if self._snapshot() is None:
            return []
        vector = embed_query(self.embedder, query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    def _vectors(self, snap: Snapshot) -> tuple[np.ndarray, dict[str, int]]:
        """Return every live vector of ``snap`` and its row by chunk id (once per commit)."""
        mmr = self._mmr
        if mmr is None or mmr[0] != snap.commit:
            positions = {row.id: i for i, (_seg, row) in enumerate(snap.index.rows())}
            mmr = self._mmr = (snap.commit, snap.index.vectors(), positions)
        return mmr[1], mmr[2]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # cosine similarity in [-1, 1] -> relevance in [0, 1]
        return lambda score: (1.0 + score) / 2.0


def _allowed(
    snap: Snapshot,
    rows: dict[str, tuple[str, str, dict]],
    filter: Any,  # noqa: A002
    source: str | Sequence[str] | None,
) -> list[int] | None:
    if filter is None and source is None:
        return None
    match = metadata_matcher(filter) if filter is not None else (lambda _m: True)
    prefixes = None if source is None else ((source,) if isinstance(source, str) else tuple(source))
    allowed = []
    for i, (_seg, row) in enumerate(snap.index.rows()):
        src, _text, meta = rows[row.id]
        if prefixes is not None and not src.startswith(prefixes):
            continue
        if match(hit_document(row.id, src, "", meta).metadata):
            allowed.append(i)
    return allowed


__all__ = [
    "EmbeddingsEmbedder",
    "KbgitEmbeddings",
    "KbgitVectorStore",
    "as_embedder",
    "embed_query",
    "hit_document",
]
