"""Wake the next tier: a standby tells the standbys that follow its replica about a new commit.

In chained replication a second-tier standby fetches from a first-tier standby's replica.
A hub wakes its standbys with its post-receive hook; a replica's branch moves by the
follower's fast-forward instead of a push, so the follower does the same job itself,
with the same settings and code: the replica's ``kbgit.notify`` URLs and ``kbgit.token``
(``kbgit hooks chain REPLICA --notify URL``), each POSTed ``/admin/sync`` in parallel
by :func:`kbgit.hub.hooks.post_receive` with its short timeout.

It never delays a swap or a query: :meth:`Downstream.poke` only sets a flag and starts
one daemon thread if none is running. New commits served while a round is in flight
are folded into one more round, so at most one thread per store exists at any time.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..hub.hooks import DEFAULT_NOTIFY_TIMEOUT, notify_targets, post_receive

logger = logging.getLogger(__name__)


class Downstream:
    """The standbys that follow one replica; notified after each commit it serves."""

    def __init__(self, git_dir: Path, name: str, timeout: float = DEFAULT_NOTIFY_TIMEOUT) -> None:
        self.git_dir, self.name, self.timeout = git_dir, name, timeout
        self._pending = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: report lines of the last round (one per standby), for tests and debugging
        self.last: list[str] = []
        #: (the config file's inode, mtime, size) when the targets were last read
        self._stamp: tuple[int, int, int] | None = None
        self._targets: tuple[list[str], str | None] = ([], None)

    def poke(self) -> None:
        """Ask for a round of notifications; return at once."""
        with self._lock:
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"kbgit-downstream-{self.name}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                self._pending = False
            try:
                self.notify_once()
            except Exception:  # noqa: BLE001 - a notification must never stop the follower
                logger.exception("%s: notifying the next tier failed", self.name)

    def targets(self) -> tuple[list[str], str | None]:
        """Return the URLs and token to notify; git config runs only when the file changed.

        A standby pokes after every commit it serves, mostly with nobody to wake: a stat
        instead of a ``git config`` process each time. (A file the config includes is not
        watched: ``kbgit hooks chain`` writes the replica's own config.)
        """
        try:
            st = (self.git_dir / "config").stat()
        except OSError:
            return [], None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            # the replica's own settings only: the server's KBGIT_TOKEN is its admin token
            self._targets = notify_targets(str(self.git_dir), {})
            self._stamp = stamp
        return self._targets

    def notify_once(self) -> list[str]:
        """POST /admin/sync to every configured standby now; return one report line each."""
        urls, token = self.targets()
        if not urls:
            return []
        self.last = post_receive(urls, token, timeout=self.timeout)
        for line in self.last:
            ok = ": notified (" in line
            (logger.debug if ok else logger.warning)("%s: next tier: %s", self.name, line)
        return self.last
