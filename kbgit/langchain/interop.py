"""Move knowledge bases in and out of LangChain's FAISS ``save_local`` format.

A LangChain (and Langchain-Chatchat) FAISS folder is ``index.faiss`` plus ``index.pkl``, a
pickle of ``(InMemoryDocstore, index_to_docstore_id)``. Unpickling runs whatever code its
writer put in it, so :func:`import_langchain` opens ``index.pkl`` only when the caller
passes ``trust_pickle=True``, and even then through an unpickler that admits only the
LangChain docstore and Document classes (as inert stand-ins). The kbgit store it creates
holds no pickle. :func:`export_langchain` writes the folder with langchain-community's
own ``FAISS`` class, so ``FAISS.load_local`` opens it and returns kbgit's top-k.

>>> import_langchain("chatchat/knowledge_base/ops/vector_store/bge", "./kb",
...                  trust_pickle=True)                              # doctest: +SKIP
>>> export_langchain(KnowledgeStore("./kb"), "./faiss-out")          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_core.embeddings import Embeddings

from ..backends import TORCH, split_model_id
from ..config import StoreConfig
from ..embeddings import Embedder, load_embedder
from ..errors import ConfigError, FormatError, PickleRefusedError
from ..format.snapshot import Snapshot
from ..fsio import write_atomic
from ..gitrepo import GitRepo, redact
from ..ingest.plan import ProgressFn
from ..store import KnowledgeStore
from .documents import LcDoc, commit_documents

logger = logging.getLogger(__name__)

INDEX_FAISS = "index.faiss"
EXPORT_INFO = "kbgit-export.json"
#: the model Chatchat and most LangChain tutorials embed with, if the caller does not say
DEFAULT_SOURCE_MODEL = "all-MiniLM-L6-v2"
METRICS = ("ip", "l2")
INDEX_PKL = "index.pkl"


@dataclasses.dataclass(frozen=True)
class LangChainFolder:
    """What a LangChain FAISS folder holds: documents in index order, and their vectors."""

    path: Path
    docs: list[LcDoc]
    #: (n, d) float32 as stored (not normalized); None when the index cannot reconstruct
    vectors: np.ndarray | None
    #: "ip" or "l2": the FAISS metric the folder was searched with
    metric: str
    dim: int


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What ``import-langchain`` did."""

    store: str
    commit: str | None
    documents: int
    kept_vectors: bool
    source_model: str
    model_id: str
    source_metric: str
    pushed: bool


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What ``export-langchain`` wrote."""

    path: str
    commit: str
    documents: int
    model_id: str
    distance_strategy: str


# -- reading a LangChain folder --------------------------------------------------------
def locate_folder(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Find the save_local folder: ``path`` itself or Chatchat's ``vector_store/<model>/``.

    Returns the folder and, for the Chatchat layout, the embedding model named by it.
    """
    path = Path(path)
    if (path / INDEX_FAISS).is_file():
        return path, (path.name if path.parent.name == "vector_store" else None)
    found = sorted(p.parent for p in path.glob(f"vector_store/*/{INDEX_FAISS}"))
    if len(found) == 1:
        return found[0], found[0].name
    if len(found) > 1:
        raise ConfigError(
            f"{path} holds {len(found)} vector stores: {', '.join(p.name for p in found)}",
            hint="pass the one to import: DIR/vector_store/<model>",
        )
    raise ConfigError(
        f"{path} has no {INDEX_FAISS}",
        hint="pass a FAISS.save_local folder, or a Chatchat knowledge base folder",
    )


def _reconstruct(index: Any) -> np.ndarray | None:
    """Return every vector of a FAISS index, or None if it keeps only lossy codes."""
    kind = type(faiss.downcast_index(index)).__name__
    if "Flat" not in kind:  # PQ/SQ/LSH codes give approximations: re-embed instead
        logger.warning("%s is a %s (lossy codes): re-embedding", INDEX_FAISS, kind)
        return None
    try:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.make_direct_map()
        return np.asarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)
    except RuntimeError as exc:
        logger.warning("cannot reconstruct vectors from %s (%s): re-embedding", INDEX_FAISS, exc)
        return None


def _metadata(doc_id: str, raw: Any) -> dict[str, Any]:
    # migration is lenient: a value JSON cannot hold (a datetime, a Path) becomes its str()
    return json.loads(json.dumps(dict(raw or {}), default=str))


def read_folder(folder: str | os.PathLike[str], *, trust_pickle: bool = False) -> LangChainFolder:
    """Read a LangChain FAISS save_local folder; refuse to unpickle unless trusted."""
    folder = Path(folder)
    pkl = folder / INDEX_PKL
    if not (folder / INDEX_FAISS).is_file() or not pkl.is_file():
        raise ConfigError(
            f"{folder} is not a FAISS.save_local folder ({INDEX_FAISS} + {INDEX_PKL})"
        )
    if not trust_pickle:
        raise PickleRefusedError(
            f"{pkl} is a Python pickle: loading it runs any code its writer put in it",
            hint="if this folder comes from your own LangChain/Chatchat install, rerun with "
            "--trust-pickle (the kbgit store it creates holds no pickle)",
        )
    from .unpickler import InertDocument, unpickle_docstore  # the opt-in path only

    store_dict, mapping = unpickle_docstore(pkl)
    index = faiss.read_index(str(folder / INDEX_FAISS))
    if sorted(mapping) != list(range(index.ntotal)):
        raise FormatError(
            f"{folder}: index_to_docstore_id has {len(mapping)} entries, the index "
            f"{index.ntotal} vectors"
        )
    docs: list[LcDoc] = []
    for i in range(index.ntotal):
        doc_id = mapping[i]
        doc = store_dict.get(doc_id)
        if not isinstance(doc, InertDocument) or not isinstance(doc_id, str):
            raise FormatError(f"{folder}: vector {i} points at no document ({doc_id!r})")
        fields = doc.fields()
        text = fields.get("page_content")
        if not isinstance(text, str):
            raise FormatError(f"{folder}: document {doc_id!r} has no page_content")
        docs.append(LcDoc(doc_id, text, _metadata(doc_id, fields.get("metadata"))))
    if len({d.id for d in docs}) != len(docs):
        raise FormatError(f"{folder}: two vectors point at the same document id")
    metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
    return LangChainFolder(folder, docs, _reconstruct(index), metric, index.d)


# -- import ----------------------------------------------------------------------------
def same_model(source_model: str, embedder: Embedder, configured: str) -> bool:
    """Tell whether vectors made by ``source_model`` can be kept by a store using embedder.

    A bare model name (LangChain's HuggingFaceEmbeddings) means PyTorch fp32 vectors: a
    store of another backend re-embeds them rather than mix the two.
    """
    if source_model == embedder.model_id:
        return True
    if source_model == configured and split_model_id(embedder.model_id)[1] == TORCH:
        return True
    try:
        return load_embedder(source_model).model_id == embedder.model_id
    except ConfigError:
        return False


def _keep_torch(config: StoreConfig, source_model: str, has_vectors: bool) -> StoreConfig:
    """Pin torch for a new store that can keep LangChain's (PyTorch fp32) vectors.

    Only when kb.toml leaves the backend unset: a chosen backend re-embeds instead.
    """
    if config.backend or not has_vectors:
        return config
    torch_emb = load_embedder(config.model, backend=TORCH)
    if same_model(source_model, torch_emb, config.model):
        return dataclasses.replace(config, backend=TORCH)
    return config


def _check_new_hub(hub: str, config: StoreConfig | None) -> None:
    branch = config.branch if config else StoreConfig().branch
    if hub and GitRepo(".").run("ls-remote", "--heads", hub, branch):
        raise ConfigError(
            f"the hub {redact(hub)} already has history",
            hint="an import starts a new history: create a new hub (kbgit hub create PATH)",
        )


def import_langchain(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    source_model: str | None = None,
    config: StoreConfig | None = None,
    hub: str = "",
    embedder: Embedder | None = None,
    progress: ProgressFn | None = None,
) -> ImportResult:
    """Create a kbgit store at ``dest`` whose first commit holds a LangChain FAISS folder.

    Vectors are kept (normalized for inner product) when ``source_model`` is the store's
    model and the dimensions agree; otherwise every text is re-embedded.
    """
    folder, guessed = locate_folder(source)
    source_model = source_model or guessed or DEFAULT_SOURCE_MODEL
    dest = _require_empty(dest, "import")
    _check_new_hub(hub or (config.hub if config else ""), config)
    data = read_folder(folder, trust_pickle=trust_pickle)
    config = _keep_torch(config or StoreConfig(), source_model, data.vectors is not None)
    kb = KnowledgeStore.init(dest, hub=hub, config=config, embedder=embedder)
    emb = kb.embedder
    keep = data.vectors is not None and data.dim == emb.dim
    if not (keep and same_model(source_model, emb, kb.config.model)):
        keep = False
        logger.info("re-embedding %d documents with %s", len(data.docs), emb.model_id)
    result = commit_documents(
        kb,
        emb,
        data.docs,
        vectors=data.vectors if keep else None,
        subject=f"kbgit import-langchain {folder.name}",
        operation="import-langchain",
        progress=progress,
    )
    return ImportResult(
        str(dest), result.commit, len(data.docs), keep, source_model, emb.model_id,
        data.metric, result.pushed,
    )  # fmt: skip


# -- export ----------------------------------------------------------------------------
def _to_faiss(snap: Snapshot, metric: str) -> Any:
    """Build langchain-community's FAISS object holding every live chunk of a snapshot."""
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from langchain_core.documents import Document

    from .vectorstore import hit_document

    rows = [row for _seg, row in snap.index.rows()]
    docs = {
        r.id: Document(
            id=r.id,
            page_content=r.text,
            metadata=hit_document(r.id, snap.sources[r.id], r.text, r.meta).metadata,
        )
        for r in rows
    }
    dim = snap.ledger.dim
    index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    if rows:
        index.add(snap.index.vectors())
    return FAISS(
        embedding_function=_NoEmbeddings(),
        index=index,
        docstore=InMemoryDocstore(docs),
        index_to_docstore_id={i: r.id for i, r in enumerate(rows)},
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT
        if metric == "ip"
        else DistanceStrategy.EUCLIDEAN_DISTANCE,
    )


def export_langchain(
    store: KnowledgeStore, dest: str | os.PathLike[str], rev: str = "HEAD", *, metric: str = "ip"
) -> ExportResult:
    """Write revision ``rev`` as a folder that ``FAISS.load_local`` opens with kbgit's top-k.

    ``metric="ip"`` writes an inner-product index (scores are cosine similarities);
    ``"l2"`` an L2 index (scores are squared distances, 2 - 2*cosine): the ranking is the
    same either way because kbgit's vectors are normalized.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    dest = _require_empty(dest, "export")
    snap = store.snapshot(rev, ann=False)  # exported as a flat index: no ANN needed
    vs = _to_faiss(snap, metric)
    try:
        vs.save_local(str(dest))
    except OSError as exc:
        raise ConfigError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    strategy = str(vs.distance_strategy.value)
    info = {
        "commit": snap.commit,
        "model_id": snap.ledger.model_id,
        "dim": snap.ledger.dim,
        "documents": snap.vectors,
        "distance_strategy": strategy,
        "load_with": "FAISS.load_local(path, embeddings, allow_dangerous_deserialization=True, "
        f'distance_strategy="{strategy}")',
    }
    write_atomic(dest / EXPORT_INFO, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return ExportResult(str(dest), snap.commit, snap.vectors, snap.ledger.model_id, strategy)


class _NoEmbeddings(Embeddings):
    """Placeholder model of an export: save_local does not keep one, load_local takes yours."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Refuse: an export never embeds."""
        raise ConfigError("an exported folder is loaded with your own embeddings")

    def embed_query(self, text: str) -> list[float]:
        """Refuse: an export never embeds."""
        raise ConfigError("an exported folder is loaded with your own embeddings")


def _require_empty(path: str | os.PathLike[str], verb: str) -> Path:
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path} exists and is not empty", hint=f"{verb} into a new folder")
    return path


__all__ = [
    "ExportResult",
    "ImportResult",
    "LangChainFolder",
    "PickleRefusedError",
    "export_langchain",
    "import_langchain",
    "locate_folder",
    "read_folder",
]
