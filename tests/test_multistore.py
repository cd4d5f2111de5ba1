"""Several knowledge bases on one server: /kb/<name>/..., each with its own sync state."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbgit import KnowledgeStore, create_hub
from kbgit.config import ServeConfig, StoreSpec
from kbgit.errors import ConfigError
from server.run import Server

from .conftest import FAKE_CONFIG, write_docs
from .serve_helpers import auth, corrupt_commit, get, post, push_raw, wait_until


@pytest.fixture
def two_stores(tmp_path: Path):
    """Store 'wiki' served as a primary, store 'hr' followed from its hub as a standby."""
    wiki = KnowledgeStore.init(
        tmp_path / "wiki", hub=str(create_hub(tmp_path / "wiki.git")), config=FAKE_CONFIG
    )
    hr_hub = create_hub(tmp_path / "hr.git")
    hr = KnowledgeStore.init(tmp_path / "hr", hub=str(hr_hub), config=FAKE_CONFIG)
    wiki.ingest(
        write_docs(
            tmp_path / "wiki-docs",
            {"deploy.md": "Deploy with the blue green switch after the canary passes."},
        )
    )
    hr.ingest(
        write_docs(
            tmp_path / "hr-docs",
            {"leave.md": "Annual leave is twenty five days and carries over until March."},
        )
    )
    toml = tmp_path / "serve.toml"
    toml.write_text(
        '[serve]\nbind = "127.0.0.1:0"\ntoken = "tok"\ninterval = 60\n'
        f'[serve.stores.wiki]\npath = "{wiki.root}"\n'
        f'[serve.stores.hr]\npath = "{tmp_path / "hr-replica"}"\nhub = "{hr_hub}"\n'
    )
    srv = Server(ServeConfig.load(toml, env={}))
    srv.start()
    wait_until(lambda: srv.services.ready)
    yield srv, wiki, hr
    srv.stop()


def test_config_file_declares_the_stores(two_stores) -> None:
    srv, wiki, _hr = two_stores
    specs = {s.name: s for s in srv.config.stores}
    assert specs["wiki"].role == "primary" and specs["hr"].role == "standby"
    assert srv.config.token == "tok" and srv.config.interval == 60.0
    assert get(srv.url + "/kb").json()["stores"]["wiki"]["commit"] == wiki.repo.head()


def test_each_store_answers_from_its_own_commit(two_stores) -> None:
    srv, wiki, hr = two_stores
    w = post(srv.url + "/kb/wiki/query", json={"query": "annual leave deploy", "k": 5}).json()
    h = post(srv.url + "/kb/hr/query", json={"query": "annual leave deploy", "k": 5}).json()
    assert w["commit"] == wiki.repo.head() and [x["source"] for x in w["hits"]] == ["deploy.md"]
    assert h["commit"] == hr.repo.head() and [x["source"] for x in h["hits"]] == ["leave.md"]
    r = get(srv.url + "/kb/hr/query", params={"q": "leave"})
    assert r.status_code == 200 and r.json()["store"] == "hr"


def test_short_paths_need_a_single_store(two_stores) -> None:
    srv, _wiki, _hr = two_stores
    r = post(srv.url + "/query", json={"query": "leave"})
    assert r.status_code == 404 and sorted(r.json()["stores"]) == ["hr", "wiki"]
    h = get(srv.url + "/health")
    assert h.status_code == 200 and set(h.json()["stores"]) == {"hr", "wiki"}
    assert get(srv.url + "/ready").status_code == 200
    assert get(srv.url + "/kb/nope/health").status_code == 404


def test_stores_stay_independent(two_stores, tmp_path: Path) -> None:
    srv, wiki, hr = two_stores
    hr_before, wiki_before = hr.repo.head(), wiki.repo.head()
    # a bad commit reaches the hr hub: hr refuses it, wiki is untouched
    bad = corrupt_commit(hr)
    push_raw(hr)
    r = post(srv.url + "/kb/hr/admin/sync?wait=1", headers=auth("tok"))
    assert r.json()["results"]["hr"]["status"] == "refused"
    hr_health = get(srv.url + "/kb/hr/health").json()
    wiki_health = get(srv.url + "/kb/wiki/health").json()
    assert hr_health["refused"][0]["commit"] == bad and hr_health["head"]["commit"] == hr_before
    assert hr_health["lag"]["commits"] == 1 and hr_health["sync"]["last_result"] == "refused"
    assert wiki_health["refused"] == [] and wiki_health["lag"]["commits"] == 0
    assert wiki_health["sync"]["last_result"] == "ok"
    metrics = get(srv.url + "/metrics").text
    assert 'kbgit_refused_commits_total{store="hr"} 1.0' in metrics
    assert 'kbgit_refused_commits_total{store="wiki"} 0.0' in metrics
    # an ingest into wiki is picked up by wiki only
    write_docs(tmp_path / "wiki-docs", {"rollback.md": "Roll back by redeploying the last tag."})
    new = wiki.ingest(tmp_path / "wiki-docs").commit
    wait_until(lambda: srv.services.get("wiki").commit == new, timeout=10)
    assert srv.services.get("hr").commit == hr_before
    assert post(srv.url + "/kb/hr/query", json={"query": "x"}).json()["commit"] == hr_before
    assert wiki_before != new


def test_store_config_errors() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        ServeConfig(stores=(StoreSpec("a", "x"), StoreSpec("a", "y")))
    with pytest.raises(ConfigError, match="store name"):
        StoreSpec("a/b", "x")
    with pytest.raises(ConfigError, match="unknown setting"):
        ServeConfig.load(None, env={}, stores={"a": {"path": "x", "hubb": "y"}})
    with pytest.raises(ConfigError, match="bind"):
        ServeConfig(bind="localhost")
    assert ServeConfig.load(None, env={"KBGIT_TOKEN": "s", "KBGIT_INTERVAL": "2"}).token == "s"
