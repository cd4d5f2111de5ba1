"""Fencing: one writer per hub, recorded on the hub itself as ``refs/kbgit/writer``.

The ref points at a tiny commit (empty tree) whose trailers name the writer and an
epoch; each promotion adds a child commit with the next epoch, so the ref only ever
moves forward and its history is the list of promotions. Every change of the ref is
a compare-and-swap push (``--force-with-lease``): of two stores promoted at once, one
wins and the other learns it lost. A store keeps the claim it holds as its own local
``refs/kbgit/writer``.

- ``kbgit promote`` claims the next epoch (:func:`claim`); offline, the claim waits
  locally and the first write pushes it.
- A write checks the claim in its transaction (:func:`ensure_held`) and pushes its
  branch atomically with the unchanged writer ref under a lease
  (:func:`push_branch`): if a promotion moved the ref, the branch update is refused
  too, so no write of a fenced store lands, even one that raced the promotion.
- A serving primary checks at start and on every sync (:func:`check`) and reports
  itself fenced (not ready; nginx moves to the next upstream) when it lost the ref.

>>> check(GitRepo("./kb"), "hub").held                # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid

from .errors import FencedError, GitError
from .gitrepo import EMPTY_TREE, WRITER_REF, GitRepo, hub_ref, redact

logger = logging.getLogger(__name__)

# WRITER_REF (gitrepo.py): the hub's writer record; locally: the claim this store holds
#: git config key of this store's writer id (made once, kept across restarts)
ID_KEY = "kbgit.writerid"
ZERO = "0" * 40
#: writer records one push may add (a promotion adds one; an offline one is replaced)
MAX_NEW_RECORDS = 16


@dataclasses.dataclass(frozen=True)
class WriterRecord:
    """One writer claim: who, which epoch, from where, since when."""

    commit: str
    writer: str
    epoch: int
    host: str
    at: int

    def to_json(self) -> dict[str, object]:
        """Return the record as JSON for /health and the CLI."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FenceStatus:
    """What a check found: the hub's record, this store's claim, and whether it holds."""

    #: True: this store is the writer; False: another one is; None: no record on the hub
    held: bool | None
    hub: WriterRecord | None
    local: WriterRecord | None
    #: a claim made offline (promote without the hub) that the hub has not seen yet
    pending: bool = False

    def describe(self) -> str:
        """Say in one line who the writer is."""
        if self.hub is None:
            return "the hub records no writer yet"
        who = f"{self.hub.writer} (epoch {self.hub.epoch}, host {self.hub.host})"
        return f"writer is this store: {who}" if self.held else f"the writer is {who}"


def writer_id(repo: GitRepo) -> str:
    """Return this store's writer id, creating it on first use."""
    out = repo.run_bytes("config", "--get", ID_KEY, check=False).decode().strip()
    if out:
        return out
    new = uuid.uuid4().hex[:16]
    repo.run("config", ID_KEY, new)
    return new


def read_record(repo: GitRepo, commit: str | None) -> WriterRecord | None:
    """Parse a writer commit (None for None)."""
    if commit is None:
        return None
    body = repo.run("show", "-s", "--format=%(trailers:unfold,only)", commit)
    fields = {}
    for line in body.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    try:
        return WriterRecord(
            commit,
            fields["Kbgit-Writer"],
            int(fields["Kbgit-Epoch"]),
            fields.get("Kbgit-Host", ""),
            int(fields.get("Kbgit-Claimed-At", "0")),
        )
    except (KeyError, ValueError) as exc:
        raise GitError(f"{WRITER_REF} at {commit[:12]} is not a kbgit writer record") from exc


def fetch_hub_record(repo: GitRepo, remote: str) -> str | None:
    """Fetch the hub's writer record alone (a hub without one is not an error)."""
    repo.fetch_refs(remote, {WRITER_REF: hub_ref(remote)})
    return repo.rev_parse(hub_ref(remote))


def check(repo: GitRepo, remote: str, *, fetch: bool = True) -> FenceStatus:
    """Compare the hub's writer record with this store's claim (``fetch``: one round trip)."""
    hub = fetch_hub_record(repo, remote) if fetch else repo.rev_parse(hub_ref(remote))
    local = repo.rev_parse(WRITER_REF)
    status = FenceStatus(None, read_record(repo, hub), read_record(repo, local))
    if hub is None:
        return dataclasses.replace(status, pending=local is not None)
    if local == hub:
        return dataclasses.replace(status, held=True)
    if local is not None and repo.is_ancestor(hub, local):
        return dataclasses.replace(status, held=True, pending=True)
    return dataclasses.replace(status, held=False)


def _new_record(repo: GitRepo, parent: str | None, epoch: int) -> str:
    me = writer_id(repo)
    message = (
        f"kbgit writer {me} epoch {epoch}\n\n"
        f"Kbgit-Writer: {me}\nKbgit-Epoch: {epoch}\n"
        f"Kbgit-Host: {socket.gethostname()}\nKbgit-Claimed-At: {int(time.time())}\n"
    )
    args = ["commit-tree", EMPTY_TREE, *(["-p", parent] if parent else []), "-F", "-"]
    env = {"GIT_AUTHOR_NAME": "kbgit", "GIT_AUTHOR_EMAIL": "kbgit@localhost"}
    env |= {"GIT_COMMITTER_NAME": "kbgit", "GIT_COMMITTER_EMAIL": "kbgit@localhost"}
    repo.run("hash-object", "-t", "tree", "-w", os.devnull)  # the empty tree, in this odb
    return repo.run(*args, input=message.encode(), env=env)


def _push_record(repo: GitRepo, remote: str, new: str, expected: str | None) -> None:
    """Compare-and-swap the hub's writer ref from ``expected`` to ``new``."""
    lease = f"--force-with-lease={WRITER_REF}:{expected or ''}"
    try:
        repo.run("push", "--quiet", lease, remote, f"{new}:{WRITER_REF}")
    except GitError as exc:
        current = _current(repo, remote)
        raise FencedError(
            f"could not claim the writer role: the hub's record moved ({current})",
            stderr=exc.stderr,
            hint="another store was promoted at the same time; promote again to take over",
        ) from exc
    repo.run("update-ref", hub_ref(remote), new)


def _current(repo: GitRepo, remote: str) -> str:
    try:
        rec = read_record(repo, fetch_hub_record(repo, remote))
    except GitError as exc:
        return f"unknown: {exc}"
    return "none" if rec is None else f"{rec.writer}, epoch {rec.epoch}"


def claim(repo: GitRepo, remote: str, *, reachable: bool = True) -> WriterRecord:
    """Take the writer role with the next epoch (promote); offline, keep it pending."""
    parent = fetch_hub_record(repo, remote) if reachable else repo.rev_parse(hub_ref(remote))
    previous = read_record(repo, parent)
    new = _new_record(repo, parent, (previous.epoch if previous else 0) + 1)
    if reachable:
        _push_record(repo, remote, new, parent)
    repo.run("update-ref", WRITER_REF, new)
    record = read_record(repo, new)
    assert record is not None
    logger.info("claimed the writer role on %s: epoch %d", redact(remote), record.epoch)
    return record


def ensure_held(
    repo: GitRepo, remote: str, *, fetch: bool = True, take_free: bool = True
) -> FenceStatus:
    """Make sure this store holds the writer role before it writes; raise FencedError.

    ``fetch=False``: the caller fetched the hub just now (``GitRepo.fetch`` brings the
    record). ``take_free=False``: only check, never claim or publish a claim.
    """
    status = check(repo, remote, fetch=fetch)
    if status.held is False:
        raise FencedError(
            f"this store is fenced: {status.describe()}; it must not write to the hub",
            hint="if a standby was promoted in its place, rejoin it as a standby: kbgit rejoin "
            f"{repo.path} (keeps unpushed commits on a branch); if this store must become the "
            f"writer, take the role over: kbgit promote {repo.path}",
        )
    local = repo.rev_parse(WRITER_REF)
    if not take_free:
        return status
    if status.held is None and local is None:  # a hub with no record: the first writer claims
        claim(repo, remote)
    elif status.pending and local is not None:  # promoted offline: publish the claim now
        _push_record(repo, remote, local, status.hub.commit if status.hub else None)
    return check(repo, remote, fetch=False) if status.held is not True or status.pending else status


def push_branch(repo: GitRepo, remote: str, branch: str) -> None:
    """Push HEAD to ``branch`` atomically with the writer ref, leased on this store's claim."""
    local = repo.rev_parse(WRITER_REF)
    # no --porcelain: git then reports "[remote rejected] (pre-receive hook declined)" on
    # stderr, where the writer tells a declined commit from a full disk
    known = repo.rev_parse(hub_ref(remote))  # the hub's record as last fetched
    args = ["push", "--quiet", "--atomic", remote, f"HEAD:refs/heads/{branch}"]
    if local is not None:
        if known is not None and known != local and not repo.is_ancestor(known, local):
            raise FencedError(f"this store is fenced: the writer is {_current(repo, remote)}")
        # a hub without a record (e.g. a new hub in kb.toml) gets this store's claim with it
        args[1:1] = [f"--force-with-lease={WRITER_REF}:{known or ''}"]
        args.append(f"{local}:{WRITER_REF}")
    try:
        repo.run(*args)
        if local is not None:
            repo.run("update-ref", hub_ref(remote), local)
    except GitError as exc:
        if local is not None and _lost(repo, remote):
            raise FencedError(
                f"the push was refused: the hub's writer is now {_current(repo, remote)}; "
                "this store was fenced by a promotion and its commit did not land",
                stderr=exc.stderr,
                hint=f"rejoin it as a standby: kbgit rejoin {repo.path} (keeps the commit)",
            ) from exc
        raise


def _lost(repo: GitRepo, remote: str) -> bool:
    """Tell whether a refused push was refused because the writer record moved."""
    try:
        return check(repo, remote).held is False
    except GitError:
        return False


def update_problem(repo: GitRepo, old: str | None, new: str | None) -> str | None:
    """Say why the hub refuses to move its writer record from ``old`` to ``new`` (None: not).

    Only forward, one record per promotion: each new commit has an empty tree, names a
    writer and an epoch, and has one parent, the record before it, with the epoch before
    it (the first record: no parent, any epoch from 1). Every store reads this ref before
    it writes or promotes: a record it could not parse stopped both until someone with a
    shell on the hub moved the ref back.
    """
    if new is None:
        return "deleting the writer record is refused"
    if old is not None and not repo.is_ancestor(old, new):
        return f"the writer record only moves forward ({old[:12]} is not an ancestor)"
    spec = [new, "--not", old] if old else [new]
    lines = repo.run("rev-list", "--reverse", "--topo-order", "--parents", *spec).splitlines()
    if len(lines) > MAX_NEW_RECORDS:
        return f"{len(lines)} new writer records in one push (at most {MAX_NEW_RECORDS})"
    for line in lines:
        commit, *parents = line.split()
        problem = _record_problem(repo, commit, parents)
        if problem:
            return f"{commit[:12]}: {problem}"
    return None


def _record_problem(repo: GitRepo, commit: str, parents: list[str]) -> str | None:
    if repo.run("rev-parse", f"{commit}^{{tree}}") != EMPTY_TREE:
        return "not an empty tree: a writer record holds no files"
    if len(parents) > 1:
        return "more than one parent: a writer record follows the one before it"
    try:
        record = read_record(repo, commit)
        previous = read_record(repo, parents[0]).epoch if parents else 0  # type: ignore[union-attr]
    except GitError as exc:
        return str(exc)
    assert record is not None
    if not record.writer or (parents and record.epoch != previous + 1) or record.epoch < 1:
        return f"epoch {record.epoch} after epoch {previous}: each record takes the next one"
    return None


def release(repo: GitRepo) -> None:
    """Forget this store's claim (rejoin: it becomes a standby)."""
    repo.run_bytes("update-ref", "-d", WRITER_REF, check=False)


__all__ = [
    "WRITER_REF",
    "FenceStatus",
    "WriterRecord",
    "check",
    "claim",
    "ensure_held",
    "push_branch",
    "read_record",
    "release",
    "update_problem",
    "writer_id",
]
