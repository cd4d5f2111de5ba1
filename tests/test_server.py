"""The HTTP API on a real waitress server: queries, bad requests, auth, health, metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbgit import KnowledgeStore
from kbgit.config import StoreSpec
from server.run import Server

from .conftest import write_docs
from .serve_helpers import auth, get, post, start_server, wait_until


@pytest.fixture
def served(store: KnowledgeStore, docs: Path) -> Iterator[tuple[Server, KnowledgeStore]]:
    """A primary store with four documents, served by a real server (preloaded)."""
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)), max_body=4096, max_query_chars=500)
    wait_until(lambda: srv.services.ready)
    yield srv, store
    srv.stop()


def test_post_query_names_the_commit_and_returns_hits(served) -> None:
    srv, store = served
    r = post(srv.url + "/query", json={"query": "rotate API keys", "k": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["commit"] == store.repo.head()
    assert body["store"] == "default"
    assert 1 <= len(body["hits"]) <= 2
    top = body["hits"][0]
    assert top["source"] == "keys.md"
    assert set(top) >= {"score", "text", "source", "chunk_id"}
    assert "Rotate" in top["text"]


def test_get_query_and_filters(served) -> None:
    srv, _store = served
    r = get(srv.url + "/query", params={"q": "VPN handshake", "k": 1})
    assert r.status_code == 200 and r.json()["hits"][0]["source"] == "guide/vpn.md"
    r = post(
        srv.url + "/query", json={"query": "shifts keys", "k": 10, "filter": {"source": "guide/"}}
    )
    assert {h["source"] for h in r.json()["hits"]} <= {"guide/vpn.md", "guide/oncall.txt"}
    r = post(
        srv.url + "/query",
        json={"query": "backups", "k": 10, "filter": {"source": ["backup", "keys"]}},
    )
    assert {h["source"] for h in r.json()["hits"]} == {"backup.txt", "keys.md"}
    r = post(srv.url + "/query", json={"query": "backups", "k": 10, "score_threshold": 0.99})
    assert all(h["score"] >= 0.99 for h in r.json()["hits"])


BAD_BODIES = [
    ("not json", b"this is not json", "JSON object"),
    ("json list", b'["query"]', "JSON object"),
    ("no query", b'{"k": 3}', "query"),
    ("empty query", b'{"query": "   "}', "query"),
    ("query not str", b'{"query": 5}', "query"),
    ("k zero", b'{"query": "x", "k": 0}', "k must"),
    ("k too big", b'{"query": "x", "k": 101}', "k must"),
    ("k string", b'{"query": "x", "k": "5"}', "k must"),
    ("k bool", b'{"query": "x", "k": true}', "k must"),
    ("k float", b'{"query": "x", "k": 2.5}', "k must"),
    ("unknown filter key", b'{"query": "x", "filter": {"author": "me"}}', "filter key"),
    ("filter not object", b'{"query": "x", "filter": "guide/"}', "filter"),
    ("bad source", b'{"query": "x", "filter": {"source": 3}}', "source"),
    ("unknown field", b'{"query": "x", "top_k": 3}', "unknown field"),
    ("threshold string", b'{"query": "x", "score_threshold": "high"}', "score_threshold"),
    ("oversized query", json.dumps({"query": "x" * 501}).encode(), "longer than"),
    ("oversized body", json.dumps({"query": "x", "pad": "y" * 5000}).encode(), "larger than"),
]


@pytest.mark.parametrize("label,body,reason", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_post_is_400_with_json_reason(served, label: str, body: bytes, reason: str) -> None:
    srv, _store = served
    r = post(srv.url + "/query", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (label, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    assert reason in r.json()["error"]


@pytest.mark.parametrize(
    "params,reason",
    [
        ({}, "query"),
        ({"q": "x", "k": "abc"}, "k must"),
        ({"q": "x", "k": "0"}, "k must"),
        ({"q": "x", "kk": "1"}, "unknown parameter"),
        ({"q": "x", "score_threshold": "nan"}, "finite"),
    ],
)
def test_bad_get_is_400(served, params: dict, reason: str) -> None:
    srv, _store = served
    r = get(srv.url + "/query", params=params)
    assert r.status_code == 400
    assert reason in r.json()["error"]


def test_unknown_paths_and_methods_answer_json(served) -> None:
    srv, _store = served
    r = get(srv.url + "/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = requests_delete(srv.url + "/query")
    assert r.status_code == 405 and "error" in r.json()
    r = get(srv.url + "/kb/other/query", params={"q": "x"})
    assert r.status_code == 404 and r.json()["stores"] == ["default"]


def requests_delete(url: str):
    import requests

    return requests.delete(url, timeout=10)


def test_admin_needs_the_bearer_token(served) -> None:
    srv, _store = served
    for path in ("/admin/sync", "/admin/reload"):
        assert post(srv.url + path).status_code == 401
        assert post(srv.url + path, headers=auth("wrong")).status_code == 401
        assert post(srv.url + path, headers={"Authorization": "Basic x"}).status_code == 401
    assert post(srv.url + "/admin/sync", headers=auth()).status_code == 202
    r = post(srv.url + "/admin/reload", headers=auth())
    assert r.status_code == 200 and r.json()["results"]["default"]["changed"] is False


def test_admin_is_closed_without_a_configured_token(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)), token="")
    try:
        wait_until(lambda: srv.services.ready)
        r = post(srv.url + "/admin/sync", headers=auth(""))
        assert r.status_code == 401 and "no token" in r.json()["error"]
    finally:
        srv.stop()


def test_admin_reload_swaps_in_a_new_ingest(served, docs: Path) -> None:
    srv, store = served
    old = store.repo.head()
    write_docs(docs, {"new.md": "Zebras graze on the savanna at dawn."})
    store.ingest(docs)
    r = post(srv.url + "/admin/reload", headers=auth())
    assert r.status_code == 200 and r.json()["results"]["default"]["changed"] is True
    body = post(srv.url + "/query", json={"query": "zebras savanna", "k": 1}).json()
    assert body["commit"] == store.repo.head() != old
    assert body["hits"][0]["source"] == "new.md"


def test_primary_reloads_by_itself_after_an_ingest(served, docs: Path) -> None:
    srv, store = served
    write_docs(docs, {"ferry.md": "The ferry to the island leaves at noon."})
    store.ingest(docs)
    head = store.repo.head()
    wait_until(lambda: srv.services.single.commit == head, timeout=10)
    hits = post(srv.url + "/query", json={"query": "ferry island", "k": 1}).json()["hits"]
    assert hits[0]["source"] == "ferry.md"


def test_health_and_ready_before_and_after_preload(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)), preload=False)
    try:
        assert get(srv.url + "/ready").status_code == 503
        r = get(srv.url + "/health")
        assert r.status_code == 503
        assert r.json()["index"]["loaded"] is False and r.json()["model"]["ready"] is False
        assert post(srv.url + "/query", json={"query": "keys"}).status_code == 503
        srv.preload()
        assert get(srv.url + "/ready").status_code == 200
        h = get(srv.url + "/health").json()
        assert h["status"] == "ok"
        assert h["index"] == {
            "loaded": True,
            "vectors": 4,
            "segments": 1,
            "documents": 4,
            "ann_segments": 0,
        }
        assert h["model"] == {"id": "fake:64", "ready": True}
        assert h["head"]["commit"] == store.repo.head()
        assert h["lag"] == {"seconds": 0.0, "commits": 0}
    finally:
        srv.stop()


def test_metrics_export_queries_reloads_and_state(served) -> None:
    srv, _store = served
    post(srv.url + "/query", json={"query": "keys"})
    text = get(srv.url + "/metrics").text
    assert 'kbgit_query_seconds_count{store="default"} 1.0' in text
    assert 'kbgit_vectors{store="default"} 4.0' in text
    assert 'kbgit_reloads_total{store="default"} 1.0' in text
    for name in (
        "kbgit_reload_seconds_sum",
        "kbgit_sync_failures_total",
        "kbgit_lag_seconds",
        "kbgit_refused_commits_total",
        "kbgit_ready",
    ):
        assert name in text


def test_two_apps_in_one_process_keep_separate_metrics(served, tmp_path: Path) -> None:
    srv, store = served
    other = start_server(StoreSpec("default", str(store.root)))
    try:
        wait_until(lambda: other.services.ready)
        post(other.url + "/query", json={"query": "keys"})
        post(other.url + "/query", json={"query": "keys"})
        assert 'kbgit_query_seconds_count{store="default"} 2.0' in get(other.url + "/metrics").text
        assert (
            'kbgit_query_seconds_count{store="default"} 2.0' not in get(srv.url + "/metrics").text
        )
    finally:
        other.stop()


def test_serving_a_directory_that_is_not_a_store_fails_fast(tmp_path: Path) -> None:
    from kbgit.config import ServeConfig
    from kbgit.errors import ConfigError

    with pytest.raises(ConfigError, match="not a kbgit store"):
        Server(ServeConfig(bind="127.0.0.1:0", stores=(StoreSpec("default", str(tmp_path)),)))
