"""Slow clients and large bodies against a real kbgit server (issue 15, items 4 and 6).

Before: waitress's idle timeout restarted on every byte, so ~100 clients trickling one
header line every few seconds stopped a server from accepting anything; and a request
body was spooled whole (up to 1 GiB) before the application's size check.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbgit import KnowledgeStore
from kbgit.config import DEFAULT_MAX_UPLOAD, StoreSpec
from server.run import Server

from .serve_helpers import get, start_server, wait_until

SLOW_CLIENTS = 200


@pytest.fixture
def ingested(store: KnowledgeStore, docs: Path) -> KnowledgeStore:
    store.ingest(docs)
    return store


def _serve(store: KnowledgeStore, **settings: Any) -> Server:
    srv = start_server(StoreSpec("default", str(store.root)), **settings)
    wait_until(lambda: get(f"{srv.url}/ready").status_code == 200)
    return srv


@pytest.fixture
def server(ingested: KnowledgeStore) -> Iterator[Server]:
    """A primary with the default limits."""
    srv = _serve(ingested)
    yield srv
    srv.stop()


class Tricklers:
    """Slow clients: each sends a request line, then one header line every ``every`` s."""

    def __init__(self, port: int, count: int, every: float, first: bytes) -> None:
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.every = every
        self._stop = threading.Event()
        for s in self.socks:
            s.sendall(first)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for s in self.socks:
                with contextlib.suppress(OSError):  # closed by the server
                    s.sendall(b"X-Slow: 1\r\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.socks:
            s.close()


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Tell whether the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset
    return True


def test_health_answers_while_200_slow_clients_trickle_headers(server: Server) -> None:
    slow = Tricklers(server.port, SLOW_CLIENTS, 1.0, b"GET /health HTTP/1.1\r\nHost: kb\r\n")
    try:
        for _ in range(5):
            resp = get(f"{server.url}/health")  # 10 s client timeout
            assert resp.status_code == 200 and resp.json()["status"] == "ok"
            time.sleep(0.5)
    finally:
        slow.close()


def test_a_trickle_cannot_extend_the_header_deadline(ingested: KnowledgeStore) -> None:
    srv = _serve(ingested, header_timeout=2.0, request_timeout=4.0)
    try:
        slow = Tricklers(srv.port, 3, 0.3, b"GET /health HTTP/1.1\r\nHost: kb\r\n")
        try:
            assert all(_closed_by_server(s, 10.0) for s in slow.socks)
        finally:
            slow.close()
        body = socket.create_connection(("127.0.0.1", srv.port))
        body.sendall(b"POST /query HTTP/1.1\r\nHost: kb\r\nContent-Length: 200\r\n\r\n")

        def drip() -> None:
            for _ in range(40):
                time.sleep(0.25)
                try:
                    body.sendall(b" ")
                except OSError:
                    return

        threading.Thread(target=drip, daemon=True).start()
        assert _closed_by_server(body, 10.0)  # 40 drips would take 10 s
        assert get(f"{srv.url}/health").status_code == 200
    finally:
        srv.stop()


def test_one_client_holds_at_most_max_per_client_connections(ingested: KnowledgeStore) -> None:
    srv = _serve(ingested, max_per_client=5)
    try:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(12)]
        time.sleep(0.5)
        closed = sum(_closed_by_server(s, 1.0) for s in idle)
        assert closed >= 7  # the oldest ones were closed to keep the client at 5
        assert get(f"{srv.url}/health").status_code == 200
        for s in idle:
            s.close()
    finally:
        srv.stop()


def _answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_a_200_mb_body_is_refused_before_it_is_sent(server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /query HTTP/1.1\r\nHost: kb\r\nContent-Type: application/json\r\n"
        b"Content-Length: 209715200\r\n\r\n"
    )
    status, body = _answer(sock)  # answered on the header alone
    assert status == 400 and "request body larger than" in body["error"]


def test_a_chunked_200_mb_body_is_refused_after_the_limit(server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /query HTTP/1.1\r\nHost: kb\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    sent = 0
    try:
        while sent < 200 * 2**20:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server closed the connection
    # refused just past the largest body any endpoint takes (socket buffers hold a few MB)
    assert sent < DEFAULT_MAX_UPLOAD + 16 * 2**20 < 200 * 2**20
    status, body = _answer(sock)
    assert status == 400 and "larger than" in body["error"]
