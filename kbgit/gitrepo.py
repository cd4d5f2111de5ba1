"""Thin, leak-free access to git: working stores, hubs and blobs of any commit.

Every call is one short-lived ``git`` process. GitPython creates repositories and
clones, but its object database is never used: its README warns that it leaks
``git cat-file`` helpers in long-running processes, and the sync daemon runs for months.
Blobs are read with one bounded ``git cat-file --batch`` per call, which also works on
a hub's pre-receive quarantine (git passes the object directories in the environment).
A served repository (``GitRepo(path, keep_reader=True)``) instead keeps exactly one
``git cat-file --batch-command`` for object reads by id (kbgit/catfile.py): a standby's
sync then starts a few git processes instead of twenty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import git as gitpython

from .catfile import ObjectReader, spawn
from .errors import GitError

logger = logging.getLogger(__name__)

#: git settings of a working store (see :meth:`GitRepo.tune`); core.splitIndex goes last:
#: it marks a store as tuned
STORE_SETTINGS = {
    "core.fsync": "committed",
    "core.fsyncMethod": "batch",
    "index.version": "4",
    "core.untrackedCache": "true",
    "core.splitIndex": "true",
}

#: git's well-known empty tree, to diff a first commit against
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}

#: a git credential helper that answers from KBGIT_HUB_USERNAME / KBGIT_HUB_PASSWORD; it
#: comes after any helper the user configured and stays silent when the variable is unset.
#: The secret goes from the environment to git through the helper's stdout only: never in
#: a URL, an argument list, a config file or a log line.
ENV_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get && test -n "$KBGIT_HUB_PASSWORD" || exit 0; '
    'if test -n "$KBGIT_HUB_USERNAME"; then printf "username=%s\\n" "$KBGIT_HUB_USERNAME"; fi; '
    'printf "password=%s\\n" "$KBGIT_HUB_PASSWORD"; }; f'
)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/@:\s'\"]*)(:[^/@\s'\"]*)?@")


def _strip(match: re.Match[str]) -> str:
    scheme, user = match.group(1), match.group(2)
    if scheme.lower().startswith("ssh") and user:
        return f"{scheme}{user}@"  # an ssh login name is no secret, and the URL needs it
    return scheme  # http(s): the user part may be a token (https://TOKEN@host/...)


def redact(text: str) -> str:
    """Strip credentials from every URL in ``text`` before it is shown or logged."""
    return _URL_CREDENTIALS.sub(_strip, text)


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_GIT_ENV)
    count = int(env.get("GIT_CONFIG_COUNT", "0") or 0)  # keep the caller's own entries
    env[f"GIT_CONFIG_KEY_{count}"] = "credential.helper"
    env[f"GIT_CONFIG_VALUE_{count}"] = ENV_CREDENTIAL_HELPER
    env["GIT_CONFIG_COUNT"] = str(count + 1)
    if extra:
        env.update(extra)
    return env


def create_hub(path: str | os.PathLike[str], branch: str = "main") -> Path:
    """Create a bare hub repo that refuses non-fast-forward pushes and branch deletion."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GitError(f"{path} exists and is not empty", hint="choose a new path for the hub")
    try:
        repo = gitpython.Repo.init(path, bare=True, initial_branch=branch)
        with repo.config_writer() as cfg:
            cfg.set_value("receive", "denyNonFastForwards", "true")
            cfg.set_value("receive", "denyDeletes", "true")
            cfg.set_value("core", "fsync", "committed")
            # Large segment files are new data, never near-copies: no delta search on them,
            # while `kbgit gc HUB` (from cron) still stores ledger versions as deltas.
            cfg.set_value("core", "bigFileThreshold", "32m")
            # No surprise repacks during a push.
            cfg.set_value("gc", "auto", "0")
        repo.close()
    except gitpython.GitCommandError as exc:
        raise GitError(f"cannot create hub at {path}", stderr=str(exc.stderr)) from exc
    return path


@dataclasses.dataclass(frozen=True)
class TreeEntry:
    """One entry of a recursive ``git ls-tree``."""

    path: str
    #: git's file mode: 100644 file, 100755 executable, 120000 symlink, 160000 gitlink
    mode: str
    #: blob, or commit for a gitlink
    kind: str
    sha: str
    #: the path as git stores it (bytes: git does not require UTF-8)
    raw_path: bytes


class GitRepo:
    """A git repository on disk, driven through short-lived git processes.

    >>> repo = GitRepo.init("/tmp/kb")          # doctest: +SKIP
    >>> repo.head()                             # doctest: +SKIP
    None
    """

    def __init__(self, path: str | os.PathLike[str], *, keep_reader: bool = False) -> None:
        self.path = Path(path)
        #: one long-lived object reader (servers), or None: one git process per read
        self.reader = ObjectReader(self.path, _env) if keep_reader else None

    def close(self) -> None:
        """End the long-lived object reader, if any (the next read starts a new one)."""
        if self.reader is not None:
            self.reader.close()

    @classmethod
    def init(cls, path: str | os.PathLike[str], branch: str = "main") -> GitRepo:
        """Create a working repo with ``branch`` as its unborn HEAD."""
        try:
            gitpython.Repo.init(path, initial_branch=branch).close()
        except gitpython.GitCommandError as exc:
            raise GitError(f"git init {path} failed", stderr=str(exc.stderr)) from exc
        repo = cls(path)
        repo.run("config", "core.quotepath", "false")
        repo.tune()
        return repo

    @classmethod
    def clone(cls, url: str, path: str | os.PathLike[str], branch: str, remote: str) -> GitRepo:
        """Clone ``branch`` of ``url`` (no other branch, no tag) into ``path`` as ``remote``."""
        try:
            gitpython.Repo.clone_from(  # its branch only: see fetch
                url,
                path,
                origin=remote,
                branch=branch,
                single_branch=True,
                no_tags=True,
                env=_env(),
            ).close()
        except gitpython.GitCommandError as exc:
            stderr = redact(str(exc.stderr).strip())
            # not chained: GitPython's error repeats the command line, credentials included
            raise GitError(f"git clone {redact(url)} failed", stderr=stderr) from None
        repo = cls(path)
        repo.tune()
        return repo

    def tune(self) -> None:
        """Apply :data:`STORE_SETTINGS` to a working store (a no-op when already done).

        Git fsyncs the objects and refs of a commit before the branch moves (batched for
        loose objects), and its index costs the change, not the number of files: a split
        index writes only the entries that changed since its shared part (a 100k-file
        index is ~7 MB, rewritten whole by every ``update-index`` otherwise), version 4
        compresses paths, and the untracked cache spares ``git status`` a ``readdir`` of
        folders that did not change.
        """
        if self.run_bytes("config", "--get", "core.splitIndex", check=False).strip() == b"true":
            return
        for key, value in STORE_SETTINGS.items():
            self.run("config", key, value)

    def _exec(
        self, args: Iterable[str], input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                ["git", "-C", str(self.path), *args],
                input=input,
                capture_output=True,
                env=_env(env),
                check=False,
            )
        except OSError as exc:
            raise GitError(f"cannot run git: {exc}", hint="install git") from exc

    def run_bytes(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> bytes:
        """Run ``git args`` in this repo and return its stdout; raise GitError on failure."""
        proc = self._exec(args, input, env)
        if check and proc.returncode != 0:
            stderr = redact(proc.stderr.decode("utf-8", "replace").strip())
            raise GitError(f"git {redact(' '.join(args[:2]))} failed: {stderr}", stderr=stderr)
        return proc.stdout

    def run(
        self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        """Run ``git args`` and return stdout as stripped text."""
        return self.run_bytes(*args, input=input, env=env).decode("utf-8", "replace").strip()

    def rev_parse(self, rev: str) -> str | None:
        """Return the commit id ``rev`` names, or None if it names nothing."""
        if self.reader is not None and _FULL_ID.fullmatch(rev):
            found = self.reader.info([rev])[0]
            if found is not None and found[1] == "commit":
                return found[0]
        out = self.run_bytes("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        sha = out.decode().strip()
        return sha or None

    def head(self) -> str | None:
        """Return HEAD's commit id, or None on an unborn branch."""
        return self.rev_parse("HEAD")

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Tell whether ``ancestor`` is reachable from ``descendant``."""
        proc = self._exec(["merge-base", "--is-ancestor", ancestor, descendant])
        if proc.returncode not in (0, 1):
            raise GitError(f"merge-base failed: {proc.stderr.decode().strip()}")
        return proc.returncode == 0

    def count_commits(self, spec: str) -> int:
        """Return how many commits ``git rev-list spec`` lists."""
        return int(self.run("rev-list", "--count", spec) or 0)

    def commit_time(self, rev: str) -> int:
        """Return the committer time of ``rev`` as a Unix timestamp."""
        if self.reader is not None and _FULL_ID.fullmatch(rev):
            found, raw = self.reader.contents([rev])[0]
            if found is not None and found[1] == "commit":
                return _committer_time(raw)
        return int(self.run("show", "-s", "--format=%ct", rev))

    def ls_tree(self, rev: str, paths: Sequence[str] = ()) -> dict[str, str]:
        """Map every file path of ``rev``'s tree (or only under ``paths``) to its blob id.

        Modes (symlinks, gitlinks) are dropped here: verification reads :meth:`tree_entries`.
        """
        return {e.path: e.sha for e in self.tree_entries(rev, paths) if e.kind == "blob"}

    def tree_entries(self, rev: str, paths: Sequence[str] = ()) -> list[TreeEntry]:
        """Return every entry of ``rev``'s tree (or under ``paths``) with its git mode."""
        out = self.run_bytes("ls-tree", "-r", "-z", "--full-tree", rev, "--", *paths)
        entries = []
        for item in out.split(b"\0"):
            if not item:
                continue
            meta, _, raw = item.partition(b"\t")
            mode, kind, sha = meta.decode().split(" ")
            entries.append(TreeEntry(raw.decode("utf-8", "surrogateescape"), mode, kind, sha, raw))
        return entries

    def changed_files(self, old: str, new: str) -> dict[str, str | None]:
        """Map each file that differs between two trees to its blob id in ``new`` (None: gone).

        ``git diff-tree`` skips every folder whose tree id is equal on both sides, so this
        costs the difference, not the store.
        """
        out = self.run_bytes("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", old, new)
        fields = out.split(b"\0")
        changes: dict[str, str | None] = {}
        for meta, raw in zip(fields[0::2], fields[1::2], strict=False):
            if not meta:
                continue
            _old_mode, _new_mode, _old_sha, new_sha, status = meta.decode().split(" ")
            path = raw.decode("utf-8", "surrogateescape")
            changes[path] = None if status == "D" else new_sha
        return changes

    def blob_sizes(self, shas: Iterable[str]) -> dict[str, int]:
        """Return the size of each blob id without reading it (``cat-file --batch-check``)."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        if self.reader is not None:
            sizes: dict[str, int] = {}
            for sha, found in zip(wanted, self.reader.info(wanted), strict=True):
                if found is None:
                    raise GitError(f"object {sha} is missing from {self.path}")
                sizes[sha] = found[2]
            return sizes
        out = self.run_bytes("cat-file", "--batch-check", input=("\n".join(wanted) + "\n").encode())
        sizes = {}
        for sha, line in zip(wanted, out.decode().splitlines(), strict=True):
            if line.endswith(" missing"):
                raise GitError(f"object {sha} is missing from {self.path}")
            sizes[sha] = int(line.split(" ")[2])
        return sizes

    def read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Return the contents of the given blob ids, read in one ``cat-file --batch``."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        if self.reader is not None:
            blobs: dict[str, bytes] = {}
            for sha, (found, data) in zip(wanted, self.reader.contents(wanted), strict=True):
                if found is None:
                    raise GitError(f"object {sha} is missing from {self.path}")
                blobs[sha] = data
            return blobs
        out = self._read_batch(("\n".join(wanted) + "\n").encode())
        blobs = {}
        pos = 0
        for sha in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode()
            if header.endswith(" missing"):
                raise GitError(f"object {sha} is missing from {self.path}")
            _oid, _kind, size = header.split(" ")
            start = end + 1
            blobs[sha] = out[start : start + int(size)]
            pos = start + int(size) + 1
        return blobs

    def _read_batch(self, request: bytes) -> bytes:
        """Run ``git cat-file --batch``, reading its stdout in one call.

        ``subprocess.run(capture_output=True)`` reads through a select loop in 32 KiB
        chunks: 4.1 s for the 200 MB of a 100k-vector store, against 0.6 s here. stdin is
        fed from a thread so a long request can never deadlock against a full stdout.
        """
        proc = spawn(self.path, ["cat-file", "--batch"], _env())
        stdin, stdout, stderr_pipe = proc.stdin, proc.stdout, proc.stderr
        assert stdin is not None and stdout is not None and stderr_pipe is not None

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError), stdin:
                stdin.write(request)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            out = stdout.read()
            err = stderr_pipe.read()
        finally:
            writer.join()
            stdout.close()
            stderr_pipe.close()
            code = proc.wait()
        if code != 0:
            stderr = err.decode("utf-8", "replace").strip()
            raise GitError(f"git cat-file failed: {stderr}", stderr=stderr)
        return out

    def has_path(self, rev: str, path: str) -> bool:
        """Tell whether ``rev``'s tree holds ``path`` (a file or a directory)."""
        if self.reader is not None and _FULL_ID.fullmatch(rev):
            return self.reader.info([f"{rev}:{path}"])[0] is not None
        return self._exec(["cat-file", "-e", f"{rev}:{path}"]).returncode == 0

    def read_file(self, rev: str, path: str) -> bytes | None:
        """Return one file of ``rev``'s tree, or None if absent."""
        if self.reader is not None and _FULL_ID.fullmatch(rev):
            found, data = self.reader.contents([f"{rev}:{path}"])[0]
            return data if found is not None and found[1] == "blob" else None
        proc = self._exec(["cat-file", "blob", f"{rev}:{path}"])
        return proc.stdout if proc.returncode == 0 else None

    def remote_url(self, name: str) -> str | None:
        """Return the URL of a remote, or None if it is not configured."""
        out = self.run_bytes("remote", "get-url", name, check=False).decode().strip()
        return out or None

    def set_remote(self, name: str, url: str) -> None:
        """Point remote ``name`` at ``url``, adding it if needed."""
        if self.remote_url(name) is None:
            self.run("remote", "add", name, url)
        else:
            self.run("remote", "set-url", name, url)

    def fetch(self, remote: str, branch: str, *, config: Sequence[str] = ()) -> str | None:
        """Fetch ``branch`` and the hub's writer record from ``remote``; return the commit.

        Exact refspecs, never ``refs/heads/*``: on a hub that runs no kbgit hook (hosted
        git) anyone who can push may push other branches or refs, and no store downloads
        them. An empty hub (or one without a writer record) is not an error. The writer
        record (see fencing.py) comes in the same round trip. No FETCH_HEAD and no
        forced-update walk (nothing reads them). ``config``: ``key=value`` settings for
        this fetch only (a follower's, see serving/follower.py ``FETCH_CONFIG``).
        """
        self.fetch_refs(
            remote,
            {
                f"refs/heads/{branch}": f"refs/remotes/{remote}/{branch}",
                WRITER_REF: hub_ref(remote),
            },
            config=config,
        )
        return self.rev_parse(f"refs/remotes/{remote}/{branch}")

    def fetch_refs(
        self, remote: str, refs: Mapping[str, str], *, config: Sequence[str] = ()
    ) -> None:
        """Fetch each hub ref of ``refs`` (source -> local ref) that exists, forced.

        One round trip when all exist; when one is missing, ``ls-remote`` says which do.
        """
        settings = [arg for kv in config for arg in ("-c", kv)]
        fixed = [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-show-forced-updates",
        ]

        def fetch(srcs: Iterable[str]) -> None:
            self.run(*settings, *fixed, remote, *(f"+{src}:{refs[src]}" for src in srcs))

        try:
            fetch(refs)
            return
        except GitError as exc:
            if "couldn't find remote ref" not in (exc.stderr or ""):
                raise
        listed = self.run(*settings, "ls-remote", "--", remote, *refs)
        present = {line.split("\t", 1)[1] for line in listed.splitlines() if "\t" in line}
        if any(src in present for src in refs):
            fetch(src for src in refs if src in present)
        for src in refs.keys() - present:  # gone from the hub: as --prune would
            if self.rev_parse(refs[src]) is not None:
                self.run("update-ref", "-d", refs[src])

    def remote_head(self, remote: str, branch: str) -> str | None:
        """Return the last fetched commit of ``remote``/``branch``, or None."""
        return self.rev_parse(f"refs/remotes/{remote}/{branch}")


#: the hub's writer record (fencing.py): the one ref besides the branch a store fetches
WRITER_REF = "refs/kbgit/writer"


def hub_ref(remote: str) -> str:
    """Return where the hub's writer record is fetched to (``GitRepo.fetch`` fetches it)."""
    return f"refs/kbgit/{remote}/writer"


_FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _committer_time(raw: bytes) -> int:
    """Return the Unix time of a raw commit object's committer line."""
    for line in raw.split(b"\n"):
        if not line:
            break  # end of the headers
        if line.startswith(b"committer "):
            return int(line.rsplit(b" ", 2)[1])
    raise GitError("commit object without a committer line")


def absolute_remote(url: str) -> str:
    """Make a local repository path absolute (git resolves relative ones against the clone).

    URLs (``scheme://``) and scp-like ``host:path`` remotes are returned unchanged.
    """
    if not url or "://" in url or (":" in url.split("/")[0] and not Path(url).exists()):
        return url
    return str(Path(url).resolve())
