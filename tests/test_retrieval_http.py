"""Query modes over HTTP (/query and /kb/<name>/query), the HTTP retriever, /metrics evals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbgit import KnowledgeStore, QueryError
from kbgit.config import StoreSpec
from kbgit.langchain.retriever import KbgitHTTPRetriever, RemoteQueryError
from kbgit.langchain.vectorstore import KbgitVectorStore
from server.run import Server

from .conftest import write_docs
from .serve_helpers import get, post, start_server, wait_until

DOCS = {
    "pool.md": "Setting max_tasks_per_child replaces each worker after that many jobs.",
    "lock.md": "Use fcntl.flock to take an advisory lock on an open file.",
    "zh/lock.md": "主节点上的文件锁防止多个节点同时写入。",
    "guide/zip.md": "The zipapp module builds executable archives from a directory.",
}


@pytest.fixture
def served(store: KnowledgeStore, tmp_path: Path) -> Iterator[tuple[Server, KnowledgeStore]]:
    """A store with an eval set committed, served under the name ``docs``."""
    store.ingest(write_docs(tmp_path / "d", DOCS))
    evals = [
        {"id": "q1", "question": "max_tasks_per_child", "answers": ["pool.md"]},
        {"id": "q2", "question": "如何防止多个节点同时写入", "answers": ["zh/lock.md"]},
    ]
    store.save_eval_set("smoke", "".join(json.dumps(e) + "\n" for e in evals).encode())
    srv = start_server(StoreSpec("docs", str(store.root)))
    wait_until(lambda: srv.services.ready)
    yield srv, store
    srv.stop()


def test_every_mode_answers_and_hits_name_their_retrievers(served) -> None:
    srv, store = served
    for path in ("/query", "/kb/docs/query"):
        for mode in ("dense", "lexical", "hybrid"):
            r = post(srv.url + path, json={"query": "max_tasks_per_child", "k": 3, "mode": mode})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["commit"] == store.repo.head() and body["mode"]["mode"] == mode
            assert body["hits"] and all(body["hits"][0]["retrievers"])
            if mode != "dense":
                assert body["hits"][0]["source"] == "pool.md"
                assert body["hits"][0]["retrievers"]["lexical"] == 1
            if mode != "hybrid":
                assert all(set(h["retrievers"]) == {mode} for h in body["hits"])
    r = get(srv.url + "/query", params={"q": "如何防止多个节点同时写入", "mode": "lexical", "k": 1})
    assert r.status_code == 200 and r.json()["hits"][0]["source"] == "zh/lock.md"
    r = post(
        srv.url + "/query",
        json={"query": "lock archives", "k": 5, "mode": "lexical", "filter": {"source": "guide/"}},
    )
    assert {h["source"] for h in r.json()["hits"]} == {"guide/zip.md"}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"mode": "fuzzy"}, "mode must be one of"),
        ({"mode": 3}, "mode must be one of"),
        ({"alpha": 2}, "alpha must be"),
        ({"alpha": "high"}, "alpha must be"),
        ({"depth": 0}, "depth must be"),
        ({"rrf_k": -1}, "rrf_k must be"),
        ({"fusion": "max"}, "fusion must be"),
        ({"k": 0, "mode": "lexical"}, "k must be"),
    ],
)
def test_bad_mode_alpha_or_k_is_a_400_with_a_reason(served, body: dict, why: str) -> None:
    srv, _store = served
    r = post(srv.url + "/query", json={"query": "lock", **body})
    assert r.status_code == 400 and why in r.json()["error"], r.text


def test_bad_get_parameters_are_a_400(served) -> None:
    srv, _store = served
    for params in ({"mode": "x"}, {"alpha": "nan"}, {"alpha": "x"}, {"depth": "1.5"}):
        r = get(srv.url + "/query", params={"q": "lock", **params})
        assert r.status_code == 400 and r.json()["error"], (params, r.text)


def test_the_http_retriever_and_the_vector_store_take_a_mode(served) -> None:
    srv, store = served
    ret = KbgitHTTPRetriever(base_url=srv.url, k=2, mode="lexical")
    docs = ret.invoke("max_tasks_per_child")
    assert docs[0].metadata["source"] == "pool.md" and docs[0].metadata["retrievers"] == {
        "lexical": 1
    }
    with pytest.raises(RemoteQueryError, match="mode"):
        ret.invoke("lock", mode="nope")
    vs = KbgitVectorStore(store.root)
    hits = vs.similarity_search("flock", k=1, mode="hybrid", filter={"source": "lock.md"})
    assert [d.metadata["source"] for d in hits] == ["lock.md"]
    assert "lexical" in hits[0].metadata["retrievers"]
    # exact search (no ANN) passes through both, like mode
    want = ret.invoke("max_tasks_per_child", mode="dense")
    got = ret.invoke("max_tasks_per_child", mode="dense", exact=True)
    assert [d.id for d in got] == [d.id for d in want]
    with pytest.raises(RemoteQueryError, match="exact"):
        ret.invoke("lock", exact="maybe")
    exact = vs.similarity_search("flock", k=1, mode="dense", exact=True)
    assert [d.id for d in exact] == [d.id for d in vs.similarity_search("flock", k=1)]
    with pytest.raises(QueryError, match="exact"):
        vs.similarity_search("flock", k=1, exact="maybe")


def test_metrics_expose_the_served_commits_eval_score(served) -> None:
    srv, _store = served

    def scored() -> str | None:
        text = get(srv.url + "/metrics").text
        return text if 'kbgit_eval_recall{k="5",mode="hybrid",store="docs"}' in text else None

    text = wait_until(scored, timeout=60)
    line = next(x for x in text.splitlines() if x.startswith("kbgit_eval_recall{"))
    assert float(line.split()[-1]) == 1.0
