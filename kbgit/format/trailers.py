"""The ``Kbgit-*`` trailers every kbgit commit message ends with: written and parsed here.

They make ``kbgit log`` cheap (no ledger diff per commit) and let any git client read
what a commit did::

    Kbgit-Operation: rollback        (absent for a folder ingest)
    Kbgit-Rollback-To: <commit>      (operation-specific extras, in the order given)
    Kbgit-Added: 0
    Kbgit-Updated: 1
    Kbgit-Deleted: 1
    Kbgit-Renamed: 0
    Kbgit-Skipped: 8
    Kbgit-Vectors-Added: 12
    Kbgit-Vectors-Deleted: 9
    Kbgit-Vectors: 257
    Kbgit-Generation: 2
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

PREFIX = "Kbgit-"
_TRAILER = re.compile(r"^Kbgit-([A-Za-z-]+):\s*(.*)$")


@dataclasses.dataclass(frozen=True)
class Trailers:
    """What one commit did, as counts; ``extra`` holds operation-specific keys."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    renamed: int = 0
    skipped: int = 0
    vectors_added: int = 0
    vectors_deleted: int = 0
    vectors: int = 0
    generation: int = 0
    operation: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        """Return the trailer block, one ``Kbgit-Key: value`` per line."""
        head = [("Operation", self.operation)] if self.operation else []
        counts = [
            ("Added", self.added),
            ("Updated", self.updated),
            ("Deleted", self.deleted),
            ("Renamed", self.renamed),
            ("Skipped", self.skipped),
            ("Vectors-Added", self.vectors_added),
            ("Vectors-Deleted", self.vectors_deleted),
            ("Vectors", self.vectors),
            ("Generation", self.generation),
        ]
        return [f"{PREFIX}{key}: {value}" for key, value in [*head, *self.extra, *counts]]


def commit_message(subject: str, body: Sequence[str], trailers: Trailers) -> str:
    """Build a commit message: subject, blank line, body lines, blank line, trailers."""
    lines = [subject, ""]
    if body:
        lines += [*body, ""]
    return "\n".join(lines + trailers.lines()) + "\n"


def parse(message: str) -> dict[str, str]:
    """Return a message's trailers as lower-case keys without the prefix (``vectors-added``)."""
    found = (_TRAILER.match(line.strip()) for line in message.splitlines())
    return {m.group(1).lower(): m.group(2).strip() for m in found if m}


def count(trailers: dict[str, str], key: str) -> int:
    """Return an integer trailer, 0 when absent or malformed."""
    try:
        return int(trailers.get(key, "0"))
    except ValueError:
        return 0


__all__ = ["PREFIX", "Trailers", "commit_message", "count", "parse"]
