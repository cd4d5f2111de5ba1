"""The HTTP write API on real servers: upload, update, delete, bad input, concurrency."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
import requests

from kbgit import KnowledgeStore
from kbgit.config import StoreSpec
from kbgit.errors import DocumentError
from kbgit.format.ledger import Ledger
from kbgit.format.shards import read_ledger_at
from kbgit.ingest.uploads import UPLOAD_DIR, check_name, upload_path, write_uploads

from .conftest import write_docs
from .serve_helpers import TOKEN, auth, get, start_server, wait_until


@pytest.fixture
def primary(store: KnowledgeStore, docs: Path):
    """A primary server over a store with a folder already ingested."""
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)))
    wait_until(lambda: get(f"{srv.url}/ready").status_code == 200)
    yield srv
    srv.stop()


def upload(url: str, files: dict[str, bytes], token: str = TOKEN, **form: str) -> requests.Response:
    """POST files as multipart 'files' parts."""
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    return requests.post(
        f"{url}/documents", files=parts, data=form, headers=auth(token), timeout=60
    )


def ledger(store: KnowledgeStore) -> Ledger:
    found = read_ledger_at(store.repo, "HEAD")
    assert found is not None
    return found


def test_upload_commits_pushes_and_is_served(primary, store: KnowledgeStore, hub: Path) -> None:
    resp = upload(primary.url, {"faq.md": b"# FAQ\n\nThe espresso machine descales on Fridays.\n"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["added"] == ["faq.md"] and body["failed"] == [] and body["pushed"] is True
    assert body["commit"] == store.repo.head()
    assert store.repo.run("rev-parse", "hub/main").strip() == body["commit"]
    assert f"{UPLOAD_DIR}/faq.md" in ledger(store).documents
    # served at once: the answer's commit is the commit queries see
    hits = get(f"{primary.url}/query", params={"q": "espresso descales", "k": 1}).json()
    assert hits["commit"] == body["commit"]
    assert hits["hits"][0]["source"] == f"{UPLOAD_DIR}/faq.md"
    listing = get(f"{primary.url}/documents").json()
    doc = next(d for d in listing["documents"] if d["path"] == f"{UPLOAD_DIR}/faq.md")
    assert doc["name"] == "faq.md" and doc["chunks"] >= 1 and doc["last_commit"] == body["commit"]


def test_same_bytes_again_is_no_commit_and_new_bytes_update(primary, store) -> None:
    first = upload(primary.url, {"a.txt": b"alpha beta gamma\n"}).json()
    again = upload(primary.url, {"a.txt": b"alpha beta gamma\n"}).json()
    assert again["commit"] is None and again["unchanged"] == ["a.txt"]
    assert store.repo.head() == first["commit"]
    changed = upload(primary.url, {"a.txt": b"alpha beta delta\n"}).json()
    assert changed["updated"] == ["a.txt"] and changed["commit"] != first["commit"]


def test_delete_by_name_and_unknown_name(primary, store) -> None:
    upload(primary.url, {"x/one.md": b"one\n", "x/two.md": b"two\n"}, folder="")
    resp = requests.delete(
        f"{primary.url}/documents", json={"names": ["x/one.md"]}, headers=auth(), timeout=30
    )
    assert resp.status_code == 200 and resp.json()["deleted"] == ["x/one.md"]
    assert f"{UPLOAD_DIR}/x/one.md" not in ledger(store).documents
    assert f"{UPLOAD_DIR}/x/two.md" in ledger(store).documents
    gone = requests.delete(f"{primary.url}/documents/x/one.md", headers=auth(), timeout=30)
    assert gone.status_code == 400
    assert gone.json()["failed"][0]["reason"] == "no such uploaded document"


def test_bad_files_are_reported_and_the_rest_committed(primary, store) -> None:
    resp = upload(
        primary.url,
        {"good.md": b"fine text\n", "bin.txt": b"\x00\x01\x02", "x.exe": b"MZ", "empty.md": b""},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["added"] == ["good.md"]
    assert sorted(f["path"] for f in body["failed"]) == ["bin.txt", "empty.md", "x.exe"]
    only_bad = upload(primary.url, {"y.exe": b"MZ"})
    assert only_bad.status_code == 400 and only_bad.json()["commit"] is None


@pytest.mark.parametrize(
    "name",
    ["../evil.md", "/etc/evil.md", "a/../../evil.md", ".git/hooks/x.md",
     ".uploads/x.md", "a//b.md", "ledger.json", "bad\x01name.md"],
)  # fmt: skip
def test_path_rules(primary, store, tmp_path: Path, name: str) -> None:
    before = store.repo.head()
    resp = upload(primary.url, {name: b"text\n"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["failed"][0]["path"] == name
    assert store.repo.head() == before
    assert not (tmp_path / "evil.md").exists() and not (store.root / "evil.md").exists()


def test_oversized_body_is_400(store, docs) -> None:
    store.ingest(docs)
    srv = start_server(StoreSpec("default", str(store.root)), max_upload=100_000)
    try:
        before = store.repo.head()
        resp = upload(srv.url, {"big.txt": b"x" * 120_000})
        assert resp.status_code == 400 and "larger than 100000 bytes" in resp.json()["error"]
        # far over the limit, waitress refuses before spooling it (server/limits.py: the
        # same JSON 400 as the app, no app involved)
        huge = upload(srv.url, {"huge.txt": b"x" * 1_000_000})
        assert huge.status_code == 400 and "request body larger than" in huge.json()["error"]
        assert upload(srv.url, {"ok.txt": b"small enough\n"}).status_code == 200
        assert store.repo.head() != before
    finally:
        srv.stop()


def test_wrong_or_missing_token_is_401(primary, store) -> None:
    before = store.repo.head()
    assert upload(primary.url, {"a.md": b"a\n"}, token="nope").status_code == 401
    resp = requests.post(f"{primary.url}/documents", files={"files": ("a.md", b"a")}, timeout=10)
    assert resp.status_code == 401
    assert store.repo.head() == before


def test_concurrent_uploads_lose_nothing(primary, store) -> None:
    results: list[requests.Response] = []

    def one(i: int) -> None:
        results.append(upload(primary.url, {f"c/{i}.md": f"document number {i}\n".encode()}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.status_code for r in results] == [200] * 6
    commits = {r.json()["commit"] for r in results}
    assert len(commits) == 6  # one commit each, serialized on the writer lock
    docs = ledger(store).documents
    assert all(f"{UPLOAD_DIR}/c/{i}.md" in docs for i in range(6))
    log = store.repo.run("log", "--format=%H").split()
    assert commits <= set(log)


def test_standby_refuses_with_the_primarys_address(primary, store, hub, tmp_path) -> None:
    standby = start_server(
        StoreSpec("default", str(tmp_path / "replica"), hub=str(hub)), primary_url=primary.url
    )
    try:
        wait_until(lambda: get(f"{standby.url}/ready").status_code == 200)
        resp = upload(standby.url, {"a.md": b"a\n"})
        assert resp.status_code == 409
        assert resp.json()["primary"] == primary.url
    finally:
        standby.stop()


def test_folder_ingest_never_deletes_uploads(primary, store, docs, tmp_path) -> None:
    upload(primary.url, {"kept.md": b"uploaded through the API\n"})
    empty = write_docs(tmp_path / "other", {"only.md": "the only file of the folder\n"})
    result = store.ingest(empty)  # full cleanup: every folder document not in `other` goes
    assert sorted(result.deleted) == sorted(
        ["backup.txt", "guide/oncall.txt", "guide/vpn.md", "keys.md"]
    )
    assert f"{UPLOAD_DIR}/kept.md" in ledger(store).documents


def test_reingest_rebuilds_uploads_from_stored_bytes(primary, store) -> None:
    upload(primary.url, {"r.md": b"re-ingest me\n"})
    resp = requests.post(f"{primary.url}/documents/reingest", json={}, headers=auth(), timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["updated"] == ["r.md"] and body["commit"] == store.repo.head()


@pytest.mark.parametrize(
    "name",
    ["a\\..\\evil.md", "C:/evil.md", "x/./y.md", "", "a/" + "b" * 600 + ".md", "a/.hidden/x.md"],
)
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(DocumentError):
        check_name(name)


def test_check_name_keeps_folders() -> None:
    assert upload_path("guides/intro.md") == f"{UPLOAD_DIR}/guides/intro.md"


def test_settings_change_reembeds_uploads_from_their_bytes(store: KnowledgeStore, docs) -> None:
    store.ingest(docs)
    text = b"an uploaded note about the cafeteria menu and its opening hours. " * 20
    write_uploads(store.writer, store.embedder, {"note.md": text})
    before = ledger(store).documents[f"{UPLOAD_DIR}/note.md"]
    rechunked = KnowledgeStore(store.root, dataclasses.replace(store.config, chunk_size=20))
    result = rechunked.ingest(docs)
    assert result.reembedded and f"{UPLOAD_DIR}/note.md" in result.updated
    after = ledger(store)
    assert after.chunking["size"] == 20
    assert len(after.documents[f"{UPLOAD_DIR}/note.md"].chunks) > len(before.chunks)
    rechunked.verify("HEAD")
