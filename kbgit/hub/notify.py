"""Wake standbys: POST ``/admin/sync`` to each URL in a hub's (or replica's) notify list.

The hub's post-receive hook runs this file as a script, ``python -I -S notify.py
post-receive``, once per push and before ``git push`` returns, so it imports only what
it needs from the standard library (socket, threading, subprocess, urllib.parse): ~0.01
s of CPU to start, against ~0.07 s with ``urllib.request`` (which pulls in http.client,
email and ssl). A request is written by hand on a socket: one line and three headers,
the status line read back; https loads ``ssl`` only when a URL needs it. Nothing is
followed (a redirect would carry the token elsewhere) and no proxy is used.

A replica's follower wakes its own followers with the same code (serving/downstream.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

#: seconds the post-receive hook waits for all standbys together
DEFAULT_NOTIFY_TIMEOUT = 2.0


def valid_notify_url(url: str) -> bool:
    """Tell whether ``url`` is an http(s) URL with a host and no whitespace."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and url.split() == [url]


def notify_targets(git_dir: str | None, env: Mapping[str, str]) -> tuple[list[str], str | None]:
    """Return the standby URLs and the token (KBGIT_TOKEN overrides the config), one git call."""
    cmd = ["git", *(["--git-dir", git_dir] if git_dir else []), "config", "-z"]
    proc = subprocess.run(
        [*cmd, "--get-regexp", r"^kbgit\.(notify|token)$"], capture_output=True, check=False
    )
    urls, token = [], None
    for item in proc.stdout.decode("utf-8", "replace").split("\0"):
        key, _, value = item.partition("\n")
        if key == "kbgit.notify":
            urls += value.split()
        elif key == "kbgit.token":
            token = value.strip() or None  # the last one wins, as with git config --get
    return urls, env.get("KBGIT_TOKEN") or token


def _status(url: str, token: str | None, timeout: float) -> int:
    """POST ``url``/admin/sync; return the HTTP status code."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if parts.scheme == "https":
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        lines = [
            f"POST {parts.path.rstrip('/')}/admin/sync HTTP/1.1",
            f"Host: {parts.netloc.rpartition('@')[2]}",
            "Content-Length: 0",
            "Connection: close",
            *([f"Authorization: Bearer {token}"] if token else []),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = b""
        deadline = time.monotonic() + timeout  # for the whole answer, not per read
        while b"\r\n" not in head and len(head) < 1024:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the answer trickled past the timeout")
            sock.settimeout(left)
            chunk = sock.recv(1024)
            if not chunk:
                break
            head += chunk
    finally:
        sock.close()
    fields = head.split(b"\r\n", 1)[0].split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise OSError("not an HTTP answer")
    return int(fields[1])


def _report(url: str, token: str | None, timeout: float) -> str:
    if not valid_notify_url(url):
        return f"{url!r}: not an http(s) URL, skipped"
    if token is not None and any(c in token for c in "\r\n\0"):
        return f"{url}: the token holds a line break, not sent"
    try:
        code = _status(url, token, timeout)
    except TimeoutError:
        return f"{url}: cannot notify (timed out)"
    except (OSError, ValueError, UnicodeError) as exc:
        return f"{url}: cannot notify ({exc})"
    if 200 <= code < 300:
        return f"{url}: notified ({code})"
    why = "a redirect, not followed" if 300 <= code < 400 else "refused"
    return f"{url}: notify {why} ({code})"


def post_receive(
    urls: Sequence[str], token: str | None, *, timeout: float = DEFAULT_NOTIFY_TIMEOUT
) -> list[str]:
    """POST /admin/sync to every standby in parallel; return one report line each."""
    reports: dict[str, str] = {u: f"{u}: no answer within {timeout:g}s" for u in urls}

    def send(url: str) -> None:
        reports[url] = _report(url, token, timeout)

    threads = [threading.Thread(target=send, args=(u,), daemon=True) for u in urls]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 0.5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [reports[u] for u in urls]


def parse_updates(text: str) -> list[tuple[str, str, str]]:
    """Parse a receive hook's ``<old> <new> <ref>`` lines."""
    return [(p[0], p[1], p[2]) for p in (line.split() for line in text.splitlines()) if len(p) == 3]


def run_post_receive(stdin_text: str, env: Mapping[str, str], git_dir: str | None = None) -> None:
    """Notify the standbys after a push; print one line per standby; never raise."""
    try:
        if not parse_updates(stdin_text):
            return
        urls, token = notify_targets(git_dir, env)
        for line in post_receive(urls, token):
            print(f"kbgit: {line}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - post-receive must never fail a push
        print(f"kbgit: notify skipped: {exc}", file=sys.stderr)


if __name__ == "__main__":  # the post-receive shim: python -I -S .../kbgit/hub/notify.py
    if sys.argv[1:] != ["post-receive"]:
        print("usage: python notify.py post-receive", file=sys.stderr)
        sys.exit(2)
    run_post_receive(sys.stdin.read(), os.environ)
