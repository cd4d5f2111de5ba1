"""Read source documents into text: .txt .md .html .pdf .docx.

Each loader wraps the library langchain-community's own loader wraps (pypdf for
PyPDFLoader, BeautifulSoup for BSHTMLLoader, python-docx) but works from the bytes
already hashed by the ingest, so a file is read once. Anything unreadable raises
:class:`DocumentError` with a reason a person can act on.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable
from pathlib import PurePosixPath

from ..errors import DocumentError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Section:
    """A run of text from one document, with metadata such as its page number."""

    text: str
    meta: dict[str, int | str] = dataclasses.field(default_factory=dict)


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not valid UTF-8 (byte {exc.start}: {exc.reason})") from exc


def load_text(data: bytes) -> list[Section]:
    """Read a UTF-8 text or Markdown file."""
    return [Section(_decode(data))]


def load_html(data: bytes) -> list[Section]:
    """Read the visible text of an HTML page (scripts, styles and templates removed)."""
    from bs4 import BeautifulSoup

    text = _decode(data)
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "template", "noscript"]):
        tag.decompose()
    meta: dict[str, int | str] = {}
    if soup.title and soup.title.string:
        meta["title"] = soup.title.string.strip()
    body = soup.body or soup
    lines = (line.strip() for line in body.get_text("\n").splitlines())
    return [Section("\n".join(line for line in lines if line), meta)]


def load_pdf(data: bytes) -> list[Section]:
    """Read a PDF's text layer page by page (page numbers from 1)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentError("encrypted PDF")
        pages = [
            Section(page.extract_text() or "", {"page": i})
            for i, page in enumerate(reader.pages, start=1)
        ]
    except DocumentError:
        raise
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OSError,
        RecursionError,
    ) as exc:
        raise DocumentError(f"corrupt PDF: {exc}") from exc
    if not any(s.text.strip() for s in pages):
        raise DocumentError("PDF has no text layer (scanned? OCR it first)")
    return pages


def load_docx(data: bytes) -> list[Section]:
    """Read a Word document's paragraphs and tables in body order."""
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise DocumentError(f"corrupt .docx: {exc}") from exc
    parts: list[str] = []
    for block in document.iter_inner_content():
        if hasattr(block, "rows"):
            for row in block.rows:
                cells = [c.text.strip() for c in row.cells]
                parts.append(" | ".join(c for c in cells if c))
        else:
            parts.append(block.text)
    return [Section("\n".join(p for p in parts if p.strip()))]


#: extension -> (loader name recorded in the ledger, function)
LOADERS: dict[str, tuple[str, Callable[[bytes], list[Section]]]] = {
    ".txt": ("text", load_text),
    ".md": ("markdown", load_text),
    ".markdown": ("markdown", load_text),
    ".html": ("html", load_html),
    ".htm": ("html", load_html),
    ".pdf": ("pdf", load_pdf),
    ".docx": ("docx", load_docx),
}


def loader_for(path: str) -> str:
    """Return the loader name for a path, or raise DocumentError if unsupported."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in LOADERS:
        raise DocumentError(
            f"unsupported file type {suffix or '(no extension)'!r}",
            hint=f"supported: {', '.join(sorted(LOADERS))}",
        )
    return LOADERS[suffix][0]


def load_document(path: str, data: bytes) -> tuple[str, list[Section]]:
    """Return (loader name, sections) for a file's bytes; raise DocumentError if unreadable."""
    name = loader_for(path)
    if not data.strip():
        raise DocumentError("empty file")
    sections = LOADERS[PurePosixPath(path).suffix.lower()][1](data)
    if not any(s.text.strip() for s in sections):
        raise DocumentError("no text content")
    return name, sections
