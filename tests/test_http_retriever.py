"""KbgitHTTPRetriever against a real standby server following a real hub."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbgit import KnowledgeStore, QueryError
from kbgit.config import StoreSpec
from kbgit.langchain import KbgitVectorStore
from kbgit.retriever import KbgitHTTPRetriever, RemoteQueryError, ServiceError
from server.run import Server

from .serve_helpers import start_server, wait_until

TEXTS = {
    "keys": ("Rotate API keys every ninety days and revoke the old key.", {"team": "sec"}),
    "backup": ("Backups run nightly; restore drills happen each quarter.", {"team": "ops"}),
    "vpn": ("If the VPN handshake fails check the WireGuard endpoint.", {"team": "net"}),
}


@pytest.fixture
def primary(store: KnowledgeStore) -> KbgitVectorStore:
    """A LangChain vector store over the primary (fake:64), pushed to the hub."""
    vs = KbgitVectorStore(store)
    vs.add_texts([t for t, _m in TEXTS.values()], [m for _t, m in TEXTS.values()], ids=list(TEXTS))
    return vs


@pytest.fixture
def standby(tmp_path: Path, hub: Path, primary: KbgitVectorStore) -> Iterator[Server]:
    """A real standby server: clones the hub, verifies, serves, follows every 0.1 s."""
    srv = start_server(StoreSpec("default", str(tmp_path / "standby"), hub=str(hub)), interval=0.1)
    wait_until(lambda: srv.services.ready)
    yield srv
    srv.stop()


def _served_commit(srv: Server) -> str | None:
    svc = srv.services.single
    return svc.commit if svc else None


def test_retriever_reads_what_the_primary_wrote(standby: Server, primary: KbgitVectorStore) -> None:
    retriever = KbgitHTTPRetriever(base_url=standby.url, k=2)
    docs = retriever.invoke("VPN handshake WireGuard")
    assert [d.id for d in docs] == [d.id for d in primary.similarity_search("VPN handshake", 2)]
    top = docs[0]
    assert top.id == "vpn" and top.page_content == TEXTS["vpn"][0]
    assert top.metadata["team"] == "net" and top.metadata["commit"] == primary.store.repo.head()
    assert top.metadata["source"].startswith(".langchain/") and top.metadata["score"] > 0


def test_a_new_write_replicates_to_the_retriever(
    standby: Server, primary: KbgitVectorStore
) -> None:
    retriever = KbgitHTTPRetriever(base_url=standby.url + "/kb/default", k=1)
    primary.add_texts(["Certificates for TLS renew through ACME every sixty days."], ids=["tls"])
    head = primary.store.repo.head()
    wait_until(lambda: _served_commit(standby) == head, timeout=20)
    (doc,) = retriever.invoke("TLS certificates ACME renew")
    assert doc.id == "tls" and doc.metadata["commit"] == head
    primary.delete(["tls"])
    head = primary.store.repo.head()
    wait_until(lambda: _served_commit(standby) == head, timeout=20)
    assert "tls" not in {d.id for d in retriever.invoke("TLS certificates ACME renew", k=3)}


def test_async_overrides_and_filters(standby: Server) -> None:
    retriever = KbgitHTTPRetriever(base_url=standby.url, k=3, score_threshold=-1.0)
    docs = asyncio.run(retriever.ainvoke("restore drills backups"))
    assert docs[0].id == "backup" and len(docs) == 3
    assert len(retriever.invoke("restore drills backups", k=1)) == 1
    assert retriever.invoke("backups", source="no-such-prefix/") == []
    high = KbgitHTTPRetriever(base_url=standby.url, k=3, score_threshold=0.99)
    assert high.invoke("restore drills backups") == []
    with pytest.raises(QueryError, match="unknown search option"):
        retriever.invoke("backups", filter={"team": "ops"})


def test_errors_are_clear(standby: Server) -> None:
    with pytest.raises(RemoteQueryError, match="k must be") as bad:
        KbgitHTTPRetriever(base_url=standby.url, k=0).invoke("backups")
    assert bad.value.status == 400
    with pytest.raises(RemoteQueryError, match="no store named") as missing:
        KbgitHTTPRetriever(base_url=standby.url + "/kb/nope").invoke("backups")
    assert missing.value.status == 404
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError, match="cannot reach"):
        KbgitHTTPRetriever(base_url=f"http://127.0.0.1:{port}", connect_timeout=1).invoke("x")


def test_a_silent_server_times_out() -> None:
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        retriever = KbgitHTTPRetriever(base_url=url, connect_timeout=1, read_timeout=0.3)
        with pytest.raises(ServiceError, match="timed out"):
            retriever.invoke("anything")
