"""The real all-MiniLM-L6-v2 model, offline, on the shipped sample documents (marked: model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbgit import KnowledgeStore, SentenceTransformerEmbedder, StoreConfig
from kbgit.retrieval.fusion import HybridOptions

pytestmark = pytest.mark.model

QUESTIONS = {
    "How often are API keys rotated?": "runbooks/rotate-api-keys.md",
    "How do we run the quarterly database restore drill?": "runbooks/restore-from-backup.md",
    "What is the difference between SEV1 and SEV2?": "runbooks/incident-response.txt",
    "What is the minimum password length?": "policies/password-policy.html",
    "How long are application logs kept?": "policies/data-retention.docx",
    "How often are production access reviews done?": "policies/access-control.pdf",
    "What is an error budget and what happens when it is spent?": "onboarding/glossary.txt",
    "The VPN is connected but internal hostnames don't resolve": "faq/vpn-troubleshooting.md",
    "How do I swap an on-call shift?": "faq/oncall-faq.txt",
}


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    emb = SentenceTransformerEmbedder.bundled()
    emb.load()
    return emb


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory, embedder) -> KnowledgeStore:
    from kbgit import create_hub

    from .conftest import SAMPLE_DOCS

    root = tmp_path_factory.mktemp("real")
    hub = create_hub(root / "hub.git")
    store = KnowledgeStore.init(root / "kb", hub=str(hub), config=StoreConfig(), embedder=embedder)
    result = store.ingest(SAMPLE_DOCS)
    assert result.ok and len(result.added) == 12
    return store


def test_model_is_offline_and_normalized(embedder: SentenceTransformerEmbedder) -> None:
    vecs = embedder.embed(["rotate the keys", "restore the database"])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"


def test_each_question_finds_its_document(real_store: KnowledgeStore) -> None:
    misses = []
    for question, expected in QUESTIONS.items():
        hits = real_store.query(question, k=3).hits
        if expected not in [h.source for h in hits]:
            misses.append((question, [h.source for h in hits]))
    assert not misses, misses


def test_chunks_fit_the_model_window(
    real_store: KnowledgeStore, embedder: SentenceTransformerEmbedder
) -> None:
    snap = real_store.verify()
    lengths = [embedder.count_tokens(row.text) for _s, row in snap.index.rows()]
    assert max(lengths) <= StoreConfig().chunk_size < 256
    assert snap.ledger.model_id == embedder.model_id and snap.ledger.dim == 384


def test_real_query_equals_exact_search(
    real_store: KnowledgeStore, embedder: SentenceTransformerEmbedder
) -> None:
    snap = real_store.verify()
    vectors = snap.index.vectors()
    q = embedder.embed(["who approves the database admin role"])[0]
    exact = np.sort(vectors @ q)[::-1][:5]
    dense = HybridOptions(mode="dense")  # exact cosine scores (the default is hybrid)
    got = [
        h.score
        for h in real_store.query("who approves the database admin role", k=5, options=dense).hits
    ]
    assert np.allclose(got, exact, atol=1e-5)


def test_reopened_store_queries_with_the_ledger_model(
    real_store: KnowledgeStore, tmp_path: Path
) -> None:
    reopened = KnowledgeStore(real_store.root)  # no embedder passed: resolved from kb.toml
    hits = reopened.query("minimum password length", k=1).hits
    assert hits[0].source == "policies/password-policy.html"
