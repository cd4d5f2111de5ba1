"""A local record of the commits this machine has verified, so a restart trusts them.

Kept in the clone's git directory (``.git/kbgit-verified.json``, never part of a commit
and never fetched), keyed by commit id, with its own sha256: a record that fails its
checksum or was written by another verifier version is discarded and everything is
verified again. A commit id pins every blob of its tree, so a commit verified once
needs no second sha256 pass over its segments and documents; the segments are still
decoded and checked structurally when they are loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

from ..fsio import write_atomic
from ..gitrepo import GitRepo
from .ledger import READABLE_FORMATS

logger = logging.getLogger(__name__)

RECORD_NAME = "kbgit-verified.json"
#: bump when verification checks more than before: older records are then ignored
VERIFIER = f"2/{'.'.join(map(str, READABLE_FORMATS))}"
#: commits remembered (oldest forgotten first); a standby needs only the last few
MAX_COMMITS = 1000


def record_path(repo: GitRepo) -> Path | None:
    """Return where ``repo``'s record lives (its git directory), or None if it has none yet."""
    root = Path(repo.path)
    if (root / ".git").is_dir():
        return root / ".git" / RECORD_NAME
    if (root / "objects").is_dir() and (root / "HEAD").is_file():  # a bare repository
        return root / RECORD_NAME
    return None


def _digest(commits: list[str]) -> str:
    return hashlib.sha256(json.dumps([VERIFIER, commits]).encode()).hexdigest()


class VerifiedRecord:
    """The commits verified on this machine, persisted next to the clone's git objects.

    >>> record = VerifiedRecord.open(repo)        # doctest: +SKIP
    >>> record.add(commit); commit in record      # doctest: +SKIP
    True
    """

    def __init__(self, repo: GitRepo, commits: list[str]) -> None:
        self.repo = repo
        self._commits = commits
        self._known = set(commits)
        self._lock = threading.Lock()

    @classmethod
    def open(cls, repo: GitRepo) -> VerifiedRecord:
        """Load the record of ``repo`` (empty if absent, unreadable or failing its checksum)."""
        path = record_path(repo)
        if path is None:
            return cls(repo, [])
        try:
            data = json.loads(path.read_bytes())
            commits = [str(c) for c in data["commits"]]
            ok = data["verifier"] == VERIFIER and data["sha256"] == _digest(commits)
        except FileNotFoundError:
            return cls(repo, [])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s is unreadable (%s): verifying from scratch", path, exc)
            return cls(repo, [])
        if not ok:
            logger.warning("%s fails its checksum: verifying from scratch", path)
            return cls(repo, [])
        return cls(repo, commits)

    def __contains__(self, commit: object) -> bool:
        return commit in self._known

    def add(self, commit: str) -> None:
        """Remember that ``commit`` passed full verification, and persist the record."""
        with self._lock:
            if commit in self._known:
                return
            self._commits = [*self._commits, commit][-MAX_COMMITS:]
            self._known = set(self._commits)
            data = {"verifier": VERIFIER, "commits": self._commits}
            data["sha256"] = _digest(self._commits)
            path = record_path(self.repo)
            if path is None:
                return
            try:
                write_atomic(path, (json.dumps(data, indent=0) + "\n").encode())
            except OSError as exc:  # a read-only clone still serves; it just re-verifies
                logger.warning("cannot write %s: %s", path, exc)
