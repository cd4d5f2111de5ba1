"""Split document sections into chunks sized in the embedding model's own tokens.

all-MiniLM-L6-v2 reads at most 256 tokens and silently truncates the rest, so chunk
length is measured with the model's tokenizer (``Embedder.count_tokens``), not in
characters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from .documents import Section


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One piece of a document that gets one vector."""

    text: str
    meta: dict[str, int | str]


def split_sections(
    sections: Sequence[Section],
    *,
    size: int,
    overlap: int,
    count_tokens: Callable[[str], int],
) -> list[Chunk]:
    """Split sections into chunks of at most ``size`` tokens with ``overlap`` tokens shared."""
    # imported here: langchain costs ~0.2 s at import, and hooks and servers never chunk
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=size,
        chunk_overlap=overlap,
        length_function=count_tokens,
        separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
        strip_whitespace=True,
    )
    chunks: list[Chunk] = []
    for section in sections:
        if not section.text.strip():
            continue
        for piece in splitter.split_text(section.text):
            if piece.strip():
                chunks.append(Chunk(piece, dict(section.meta)))
    return chunks
