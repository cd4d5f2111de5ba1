"""Parse JSON from a commit or a request with a nesting limit, never a RecursionError.

``json.loads("[" * 100000 + "]" * 100000)`` raises RecursionError, which no caller
expects, and JSON nested a few hundred levels parses but breaks whoever serializes it
again later (Flask's jsonify, ``Ledger.to_bytes``). What kbgit reads from a commit
(ledger, manifest, rows, tombstones, LangChain documents) and every HTTP body goes
through :func:`loads`, which refuses both with one line.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import FormatError

#: deepest nesting accepted (kbgit's own files nest 5 levels; metadata rarely 3)
MAX_JSON_DEPTH = 64


def loads(raw: bytes | str, what: str) -> Any:
    """Parse JSON ``raw`` (named ``what`` in errors); raise FormatError if bad or too deep."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise FormatError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise FormatError(f"{what}: not valid JSON ({exc})") from None
    # cheap bound first: fewer brackets than the limit cannot nest deeper than it
    if _brackets(raw) > MAX_JSON_DEPTH and too_deep(value):
        raise FormatError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _brackets(raw: bytes | str) -> int:
    if isinstance(raw, bytes):
        return raw.count(b"[") + raw.count(b"{")
    return raw.count("[") + raw.count("{")


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Tell whether lists and objects in ``value`` nest deeper than ``limit`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in (node.values() if isinstance(node, dict) else node))
    return False
