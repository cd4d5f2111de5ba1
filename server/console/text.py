"""Text helpers of the console: highlighted hits, dates, sizes, a document's text diff."""

from __future__ import annotations

import datetime
import re

from markupsafe import Markup, escape

#: query words shorter than this are not highlighted (a, of, to ...)
MIN_WORD = 3


def highlight(text: str, query: str | None) -> Markup:
    """Escape ``text`` and wrap the query's words in <mark>."""
    words = {w.lower() for w in re.findall(r"\w+", query or "") if len(w) >= MIN_WORD}
    if not words:
        return escape(text)
    pattern = re.compile(
        r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")",
        re.IGNORECASE,
    )
    out, last = [], 0
    for m in pattern.finditer(text):
        out += [escape(text[last : m.start()]), Markup("<mark>"), escape(m.group(0))]
        out.append(Markup("</mark>"))
        last = m.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


def when(ts: int | float | None) -> str:
    """Format a unix time as UTC."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def filesize(n: int) -> str:
    """Format a byte count."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def diff_kinds(lines: list[str]) -> list[tuple[str, str]]:
    """Classify unified-diff lines as add, del, hunk or ctx for styling."""
    out = []
    for line in lines:
        if line.startswith(("---", "+++", "@@", "...")):
            out.append(("hunk", line))
        else:
            out.append(({"+": "add", "-": "del"}.get(line[:1], "ctx"), line))
    return out
