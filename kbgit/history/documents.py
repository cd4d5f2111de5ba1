"""Documents across history: a document's text at a revision, its line diff, its last change.

Documents are stored as their source bytes (``docs/<path>``), so a document's text is what
its loader extracts (the words of a PDF, not its bytes): the text that was chunked and
embedded, and what a reader wants to see change.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import DocumentError, QueryError
from ..format.ledger import DOCS_DIR
from ..gitrepo import GitRepo
from ..ingest.documents import load_document
from .log import resolve

#: lines of a text diff returned before it is cut
MAX_DIFF_LINES = 2000
#: commits searched for the last change of each document
MAX_COMMITS = 5000
_RECORD = "\x1e"


def document_text(repo: GitRepo, rev: str, path: str) -> str:
    """Return the extracted text of document ``path`` at ``rev`` ("" if it is absent)."""
    data = repo.read_file(resolve(repo, rev), f"{DOCS_DIR}/{path}")
    if data is None:
        return ""
    try:
        _loader, sections = load_document(path, data)
    except DocumentError:
        # no loader reads it as text (a LangChain document is JSON): show its bytes as text
        return data.decode("utf-8", errors="replace")
    return "\n\n".join(s.text for s in sections)


def document_diff(repo: GitRepo, a: str, b: str, path: str) -> list[str]:
    """Return the unified diff of document ``path``'s text from revision ``a`` to ``b``."""
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise QueryError(f"not a document path: {path!r}")
    ca, cb = resolve(repo, a), resolve(repo, b)
    lines = list(
        difflib.unified_diff(
            document_text(repo, ca, path).splitlines(),
            document_text(repo, cb, path).splitlines(),
            f"{ca[:12]}/{path}",
            f"{cb[:12]}/{path}",
            lineterm="",
            n=2,
        )
    )
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... {len(lines) - MAX_DIFF_LINES} more lines"]
    return lines


def last_changes(repo: GitRepo, rev: str, paths: Iterable[str]) -> dict[str, str]:
    """Return {path: the commit that last changed docs/<path>} along ``rev``'s first parents."""
    wanted = {f"{DOCS_DIR}/{p}": p for p in paths}
    if not wanted:
        return {}
    out = repo.run(
        "-c", "core.quotePath=false", "log", "--first-parent", f"--max-count={MAX_COMMITS}",
        f"--format={_RECORD}%H", "--name-only", resolve(repo, rev), "--", DOCS_DIR,
    )  # fmt: skip
    found: dict[str, str] = {}
    for record in out.split(_RECORD):
        commit, _, names = record.strip().partition("\n")
        for name in names.splitlines():
            path = wanted.get(name.strip())
            if path is not None and path not in found:
                found[path] = commit
        if len(found) == len(wanted):
            break
    return found


__all__ = ["document_diff", "document_text", "last_changes"]
