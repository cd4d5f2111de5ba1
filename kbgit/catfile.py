"""One long-lived ``git cat-file --batch-command`` per served repository.

A standby reads a dozen objects per sync (ledger, manifest, segments, commit, sizes
first); one ``git`` process per read cost ~1.5 ms of fork in the server and ~2 ms of git
start-up each, about a third of a sync's CPU. :class:`ObjectReader` keeps one process
and asks it ``info`` (type and size, never the content) and ``contents`` by object id or
``rev:path``. Objects are content-addressed, so a long-lived reader can never return a
stale answer for an id; git rescans its packs when an id is not found, so objects fetched
after the process started are found too. Refs are never resolved here (they move).

Any failure (git died, a short read) kills the process; the next request starts a new
one, so the protocol can never be read out of step. A repack or gc deletes packs the
process still has open, and their disk space is freed only when it exits: when a pack it
has seen is gone (a stat of the pack directory per request, a listing when that
changed), the next request starts a new process. :meth:`close` ends it; so does
garbage collection of the owner (``weakref.finalize``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import GitError

#: bytes of commands written before their answers are read (below a pipe's 64 KiB, so
#: a write never blocks while git waits for us to read its output)
CHUNK_BYTES = 32 * 1024

#: (object id, type, size) of an object, or None when git has no such object
Info = tuple[str, str, int] | None


def spawn(
    path: Path, args: Sequence[str], env: Mapping[str, str], *, stderr: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """Start ``git -C path args`` with piped stdin and stdout; GitError if git cannot run."""
    try:
        return subprocess.Popen(
            ["git", "-C", str(path), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=dict(env),
        )
    except OSError as exc:
        raise GitError(f"cannot run git: {exc}", hint="install git") from exc


def _end(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class ObjectReader:
    """A ``git cat-file --batch-command`` process, started on first use, shared by threads.

    >>> reader = ObjectReader(Path("./kb"), env=dict)     # doctest: +SKIP
    >>> reader.info(["HEAD:ledger.json"])                 # doctest: +SKIP
    [('3b18e5...', 'blob', 5190)]
    """

    def __init__(self, path: Path, env: Callable[[], Mapping[str, str]]) -> None:
        self.path, self._env = path, env
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        #: how many processes this reader started (more after a failure or a repack)
        self.started = 0
        self._finalizer: weakref.finalize | None = None
        #: the pack directory's mtime and every pack seen in it since the process started
        self._seen: tuple[int, frozenset[str]] = (0, frozenset())

    def info(self, names: Sequence[str]) -> list[Info]:
        """Return (id, type, size) of each object name, or None for a missing one."""
        return [i for i, _ in self._ask("info", names)]

    def contents(self, names: Sequence[str]) -> list[tuple[Info, bytes]]:
        """Return (id, type, size) and the bytes of each object (None, b"" when missing)."""
        return self._ask("contents", names)

    def close(self) -> None:
        """End the git process, if any (the next request starts a new one)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is not None:
            _end(proc)

    def _packs(self) -> tuple[int, frozenset[str]]:
        # looked up each time: a replica's .git may appear after the reader was made
        git_dir = self.path / ".git" if (self.path / ".git").is_dir() else self.path
        pack_dir = git_dir / "objects" / "pack"
        try:
            mtime = os.stat(pack_dir).st_mtime_ns
            names = os.listdir(pack_dir) if mtime != self._seen[0] else self._seen[1]
        except OSError:
            return 0, frozenset()
        return mtime, frozenset(n for n in names if n.endswith(".pack"))

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            mtime, packs = self._packs()
            if mtime == self._seen[0] or self._seen[1] <= packs:
                self._seen = (mtime, self._seen[1] | packs)  # only added: git finds them
                return self._proc
        self._stop()  # none yet, it died, or packs it holds open were deleted
        self._seen = self._packs()
        proc = spawn(
            self.path, ["cat-file", "--batch-command"], self._env(), stderr=subprocess.DEVNULL
        )
        self._proc, self.started = proc, self.started + 1
        self._finalizer = weakref.finalize(self, _end, proc)
        return proc

    def _ask(self, command: str, names: Sequence[str]) -> list[tuple[Info, bytes]]:
        for name in names:
            if not name or "\n" in name:
                raise GitError(f"not an object name: {name!r}")
        with self._lock:
            try:
                return self._exchange(command, names)
            except (OSError, ValueError) as exc:
                self._stop()
                raise GitError(f"git cat-file in {self.path} failed: {exc}") from exc

    def _exchange(self, command: str, names: Sequence[str]) -> list[tuple[Info, bytes]]:
        proc = self._start()
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        out: list[tuple[Info, bytes]] = []
        start = 0
        while start < len(names):
            size, end = 0, start
            while end < len(names) and (end == start or size < CHUNK_BYTES):
                size += len(names[end]) + len(command) + 2
                end += 1
            stdin.write(b"".join(f"{command} {n}\n".encode() for n in names[start:end]))
            stdin.flush()
            for _ in range(start, end):
                out.append(self._answer(stdout, command == "contents"))
            start = end
        return out

    @staticmethod
    def _answer(stdout, with_body: bool) -> tuple[Info, bytes]:  # noqa: ANN001 - BufferedReader
        line = stdout.readline()
        if not line.endswith(b"\n"):
            raise ValueError("git cat-file ended unexpectedly")
        parts = line.decode("utf-8", "replace").rstrip("\n").rsplit(" ", 2)
        if parts[-1] in ("missing", "ambiguous") or len(parts) != 3:
            if parts[-1] not in ("missing", "ambiguous"):
                raise ValueError(f"unexpected answer {line[:200]!r}")
            return None, b""
        oid, kind, size = parts[0], parts[1], int(parts[2])
        if not with_body:
            return (oid, kind, size), b""
        body = stdout.read(size + 1)
        if len(body) != size + 1 or body[-1:] != b"\n":
            raise ValueError("short read from git cat-file")
        return (oid, kind, size), body[:-1]
