"""KbgitVectorStore beyond the standard suite: commits, replication, filters, errors."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from kbgit import ConfigError, DocumentError, KnowledgeStore, QueryError
from kbgit.langchain import EmbeddingsEmbedder, KbgitEmbeddings, KbgitVectorStore
from kbgit.langchain.documents import doc_path
from kbgit.langchain.filters import metadata_matcher

TEXTS = [
    (
        "keys",
        "Rotate API keys every ninety days and revoke the old key.",
        {"team": "sec", "y": 2024},
    ),
    (
        "backup",
        "Backups run nightly; restore drills happen each quarter.",
        {"team": "ops", "y": 2023},
    ),
    ("vpn", "If the VPN handshake fails check the WireGuard endpoint.", {"team": "net", "y": 2025}),
    (
        "oncall",
        "On-call shifts last one week; swap shifts in the pager.",
        {"team": "ops", "y": 2025},
    ),
]


@pytest.fixture
def vs(store: KnowledgeStore) -> KbgitVectorStore:
    """A vector store over the fake-embedder store (pushing to the hub) with four texts."""
    vs = KbgitVectorStore(store)
    vs.add_texts([t for _i, t, _m in TEXTS], [m for *_x, m in TEXTS], ids=[i for i, *_x in TEXTS])
    return vs


def _commits(store: KnowledgeStore) -> int:
    return store.repo.count_commits("HEAD")


def test_one_commit_per_call_through_the_ingest_path(vs: KbgitVectorStore, hub: Path) -> None:
    store = vs.store
    assert _commits(store) == 1
    snap = store.verify()  # full verification: ledger, manifest, segments, docs agree
    assert snap.vectors == 4
    entry = snap.ledger.documents[doc_path("keys")]
    assert entry.loader == "langchain" and entry.chunks == ("keys",)
    raw = json.loads((store.root / "docs" / doc_path("keys")).read_text())
    assert raw == {"id": "keys", "page_content": TEXTS[0][1], "metadata": TEXTS[0][2]}
    body = store.repo.run("log", "-1", "--format=%B")
    assert body.startswith("kbgit langchain: 4 added") and "Kbgit-Operation: langchain" in body
    assert store.repo.remote_head("hub", "main") == store.repo.head()  # pushed
    vs.add_texts(["one more", "and another"], ids=["a", "b"])
    assert _commits(store) == 2  # two texts, one commit


def test_upsert_tombstones_the_old_vector(vs: KbgitVectorStore) -> None:
    vs.add_texts(["Rotate signing certificates yearly."], [{"team": "sec"}], ids=["keys"])
    snap = vs.store.verify()
    assert snap.vectors == 4
    assert any(s.tombstones for s in snap.manifest.segments)
    (doc,) = vs.get_by_ids(["keys"])
    assert doc.page_content == "Rotate signing certificates yearly." and doc.metadata == {
        "team": "sec"
    }
    assert vs.similarity_search("signing certificates", k=1)[0].id == "keys"


def test_identical_readd_and_missing_delete_commit_nothing(vs: KbgitVectorStore) -> None:
    head = vs.store.repo.head()
    vs.add_texts([TEXTS[1][1]], [TEXTS[1][2]], ids=["backup"])
    assert vs.delete(["no-such-id", "nor-this"]) is True
    assert vs.store.repo.head() == head
    vs.delete(["backup", "no-such-id"])
    assert vs.store.repo.head() != head
    assert vs.get_by_ids(["backup", "keys"])[0].id == "keys"
    assert not (vs.store.root / "docs" / doc_path("backup")).exists()


def test_folder_ingest_and_langchain_documents_coexist(
    store: KnowledgeStore, docs: Path, vs: KbgitVectorStore
) -> None:
    store.ingest(docs)  # the folder lacks docs/.langchain/*: hidden, so they are kept
    assert len(vs.get_by_ids([i for i, *_x in TEXTS])) == 4
    hit = vs.similarity_search("WireGuard endpoint MTU", k=1, source="guide/")[0]
    assert hit.metadata["source"] == "guide/vpn.md"  # file chunks carry their path
    vs.delete()  # None: every LangChain document, and only those
    assert store.verify().ledger.documents.keys() == {
        "keys.md", "backup.txt", "guide/vpn.md", "guide/oncall.txt"
    }  # fmt: skip
    with pytest.raises(DocumentError, match="chunk of"):
        vs.add_texts(["steal"], ids=[next(iter(store.verify().sources))])


def test_metadata_filters(vs: KbgitVectorStore) -> None:
    def ids(filt, k: int = 4) -> set[str]:
        return {d.id for d in vs.similarity_search("shifts keys backups vpn", k=k, filter=filt)}

    assert ids({"team": "ops"}) == {"backup", "oncall"}
    assert ids({"team": ["sec", "net"]}) == {"keys", "vpn"}
    assert ids({"y": {"$gte": 2025}}) == {"vpn", "oncall"}
    assert ids({"$or": [{"team": "sec"}, {"y": {"$lt": 2024}}]}) == {"keys", "backup"}
    assert ids({"team": "ops", "y": 2025}) == {"oncall"}
    assert ids(lambda m: m["y"] != 2025) == {"keys", "backup"}
    assert ids({"team": "nobody"}) == set()
    assert ids({"team": "ops"}, k=1) <= {"backup", "oncall"} and len(ids({"team": "ops"}, 1)) == 1
    with pytest.raises(QueryError, match="unknown filter operator"):
        ids({"y": {"$near": 1}})


def test_scores_threshold_relevance_and_retriever(vs: KbgitVectorStore) -> None:
    pairs = vs.similarity_search_with_score("VPN handshake WireGuard", k=4)
    assert pairs[0][0].id == "vpn"
    assert [s for _d, s in pairs] == sorted((s for _d, s in pairs), reverse=True)
    assert vs.similarity_search("VPN handshake WireGuard", k=4, score_threshold=pairs[0][1]) == [
        pairs[0][0]
    ]
    rel = vs.similarity_search_with_relevance_scores("VPN handshake WireGuard", k=4)
    assert all(0.0 <= r <= 1.0 for _d, r in rel)
    retriever = vs.as_retriever(search_kwargs={"k": 2, "filter": {"team": "ops"}})
    assert {d.id for d in retriever.invoke("restore drills")} == {"backup", "oncall"}


def test_async_methods_use_the_same_path(store: KnowledgeStore) -> None:
    vs = KbgitVectorStore(store)

    async def scenario() -> tuple[list, list, list]:
        await vs.aadd_texts(["alpha beta", "gamma delta"], ids=["1", "2"])
        found = await vs.asimilarity_search("gamma", k=1)
        await vs.adelete(["1"])
        return found, await vs.aget_by_ids(["1", "2"]), await vs.asimilarity_search("beta", k=5)

    found, got, after = asyncio.run(scenario())
    assert [d.id for d in found] == ["2"]
    assert [d.id for d in got] == ["2"] and [d.id for d in after] == ["2"]
    assert _commits(store) == 2


def test_bad_metadata_and_model_mismatch_commit_nothing(vs: KbgitVectorStore) -> None:
    head = vs.store.repo.head()
    with pytest.raises(DocumentError, match="JSON"):
        vs.add_texts(["x"], [{"when": object()}], ids=["x"])
    other = KbgitVectorStore(vs.store, DeterministicFakeEmbedding(size=6))
    with pytest.raises(ConfigError, match="fake:64"):
        other.add_texts(["x"], ids=["x"])
    with pytest.raises(ConfigError, match="fake:64"):
        other.similarity_search("x")
    assert vs.store.repo.head() == head


def test_writes_replicate_to_a_clone_of_the_hub(
    vs: KbgitVectorStore, hub: Path, tmp_path: Path
) -> None:
    clone = KnowledgeStore.init(tmp_path / "replica", hub=str(hub))
    snap = clone.verify()
    assert snap.commit == vs.store.repo.head()
    replica = KbgitVectorStore(clone, KbgitEmbeddings(vs.embedder))
    assert [d.id for d in replica.similarity_search("pager swap shifts", k=1)] == ["oncall"]


def test_concurrent_writers_serialize_on_the_lock(store: KnowledgeStore) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            vs = KbgitVectorStore(KnowledgeStore(store.root))
            for j in range(3):
                vs.add_texts([f"writer {n} text {j}"], ids=[f"w{n}-{j}"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert _commits(store) == 6 and store.verify().vectors == 6


def test_from_texts_and_embedding_adapters(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=6)
    vs = KbgitVectorStore.from_texts(["foo", "bar"], emb, ids=["f", "b"], path=tmp_path / "kb")
    assert vs.store.verify().ledger.model_id == "langchain:DeterministicFakeEmbedding"
    assert vs.similarity_search("foo", k=1)[0].id == "f"
    wrapped = EmbeddingsEmbedder(emb, model_id="my-model")
    assert wrapped.dim == 6 and wrapped.model_id == "my-model"
    assert abs(float((wrapped.embed(["foo"]) ** 2).sum()) - 1.0) < 1e-5  # normalized
    with pytest.raises(ConfigError, match="path="):
        KbgitVectorStore.from_texts(["x"], emb)


def test_metadata_matcher_operators() -> None:
    m = metadata_matcher({"a": {"$exists": False}, "b": {"$nin": [1, 2], "$ne": 5}})
    assert m({"b": 3}) and not m({"a": 1, "b": 3}) and not m({"b": 2}) and not m({"b": 5})
    assert metadata_matcher({"$not": {"a": 1}})({"a": 2})
    assert not metadata_matcher({"a": {"$gt": 1}})({"a": "x"})  # incomparable: no match
    for bad in ({"$xor": []}, {"a": {"$in": 3}}, {"$and": {"a": 1}}):
        with pytest.raises(QueryError):
            metadata_matcher(bad)


def test_reads_see_writes_made_by_other_writers(vs: KbgitVectorStore) -> None:
    assert vs.get_by_ids(["late"]) == []  # snapshot now cached
    other = KbgitVectorStore(KnowledgeStore(vs.store.root))
    for n in range(3):  # back-to-back commits: each one must invalidate the cache
        other.add_texts([f"late arrival number {n}"], ids=["late"])
        assert vs.get_by_ids(["late"])[0].page_content == f"late arrival number {n}"
    vs.store.repo.run("reset", "--quiet", "--hard", "HEAD~3")  # even a plain-git rewind
    assert vs.get_by_ids(["late"]) == []


def test_max_marginal_relevance_prefers_diverse_documents(vs: KbgitVectorStore) -> None:
    dup = "Rotate API keys every ninety days and revoke the old key."
    vs.add_texts([dup, dup], [{"team": "sec"}, {"team": "sec"}], ids=["keys-2", "keys-3"])
    plain = {d.id for d in vs.similarity_search("rotate API keys", k=2)}
    assert plain <= {"keys", "keys-2", "keys-3"}  # two copies of the same text
    mmr = vs.max_marginal_relevance_search("rotate API keys", k=2, fetch_k=6, lambda_mult=0.3)
    assert mmr[0].id in {"keys", "keys-2", "keys-3"} and mmr[1].id in {"backup", "vpn", "oncall"}
    only_ops = vs.max_marginal_relevance_search("rotate API keys", k=2, filter={"team": "ops"})
    assert {d.id for d in only_ops} == {"backup", "oncall"}
    retriever = vs.as_retriever(search_type="mmr", search_kwargs={"k": 2, "lambda_mult": 0.3})
    assert len({d.page_content for d in retriever.invoke("rotate API keys")}) == 2
