"""Commits the hub refused: undo them so the store is left as it was before.

Two writers of one hub can both pass the hub check and commit; the hub takes the first
push and refuses the second (non-fast-forward). The loser must not be stuck with a
commit the hub will never take, so the writer records the commit it pushes
(``.git/kbgit-pushing``) and, when the push is refused because the hub moved (or its
pre-receive hook declined the commit), resets HEAD to the last commit the hub has. The
refused commit is kept under ``refs/kbgit/unpushed/<id>``: nothing is thrown away, and
the caller re-runs the operation on top of the hub's head after ``kbgit pull``.

The marker makes this crash-safe: a writer killed during its push leaves it behind, and
the next transaction (or pull) settles it the same way, under the writer lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .fsio import write_atomic
from .gitrepo import GitRepo

logger = logging.getLogger(__name__)

#: in .git while a push is under way: the commit being pushed
PUSHING_NAME = "kbgit-pushing"
#: refs under which commits the hub refused are kept
UNPUSHED_REFS = "refs/kbgit/unpushed/"


def _marker(repo: GitRepo) -> Path:
    return Path(repo.path) / ".git" / PUSHING_NAME


def mark_pushing(repo: GitRepo) -> None:
    """Record that HEAD is being pushed."""
    head = repo.head()
    if head is not None:
        write_atomic(_marker(repo), f"{head}\n".encode())


def clear_pushing(repo: GitRepo) -> None:
    """Forget the marker (the hub accepted HEAD)."""
    _marker(repo).unlink(missing_ok=True)


def settle_refused(
    repo: GitRepo, hub_head: str | None, *, declined: bool, repair: Callable[[], object]
) -> str | None:
    """Undo a pushed-but-refused HEAD; return the undone commit, or None.

    Call under the writer lock with the hub's freshly fetched head. HEAD is undone only
    if it is the commit the marker names and the hub moved past the point HEAD grew
    from (or, with ``declined``, the hub's hook refused it). The reset is one ref move
    plus a working-tree update that ``repair`` completes if it is interrupted.
    """
    marker = _marker(repo)
    try:
        pushing = marker.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    if hub_head is None:
        return None  # an empty hub moved nowhere
    head = repo.head()
    if head != pushing or repo.is_ancestor(pushing, hub_head):
        marker.unlink(missing_ok=True)  # pushed after all, or a newer HEAD since
        return None
    if repo.is_ancestor(hub_head, head) and not declined:
        return None  # the hub did not move: a later push can still succeed
    base = repo.run_bytes("merge-base", head, hub_head, check=False).decode().strip()
    repo.run("update-ref", f"{UNPUSHED_REFS}{head}", head)
    if base:
        repo.run("reset", "--quiet", "--hard", base)
    else:  # the hub got a history of its own before this store's first push
        repo.run("update-ref", "-d", "HEAD")
        repo.run("read-tree", "--empty")
        repair()
    marker.unlink(missing_ok=True)
    logger.warning(
        "the hub refused %s; the store is back at %s (the commit is kept as %s%s)",
        head[:12], (base or "no commit")[:12], UNPUSHED_REFS, head,
    )  # fmt: skip
    return head


def refused_hint(root: Path, undone: str | None, declined: bool) -> str:
    """Tell the user what a refused push left behind and what to run next."""
    if undone and declined:
        return (
            "the hub's checks refused it (reason above); this store is back where it was "
            f"(the commit is kept as {UNPUSHED_REFS}{undone}): fix the cause, run it again"
        )
    if undone:
        return (
            "another writer pushed first; this store is back where it was (the commit is "
            f"kept as {UNPUSHED_REFS}{undone}): kbgit pull {root}, then run it again"
        )
    return (
        "the commit is kept locally and the next ingest pushes it; see kbgit status. If a "
        f"standby was promoted, rejoin as a standby: kbgit rejoin {root}"
    )
