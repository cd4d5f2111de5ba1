"""Plan and build one ingest: scan, diff against the ledger, load, chunk, embed.

Pure data in, data out: nothing here touches git. :class:`kbgit.store.KnowledgeStore`
writes what :func:`build_ingest` returns and commits it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ..config import DEFAULT_MAX_DOCUMENT_BYTES
from ..embeddings import Embedder
from ..errors import DocumentError
from ..format.ledger import DocEntry, Ledger
from ..format.manifest import (
    INDEX_DIR,
    MANIFEST_PATH,
    Manifest,
    SegmentRef,
    TombstoneRef,
    new_segment,
    segment_name,
    sha256,
)
from ..format.shards import encode_ledger
from ..format.vector_index import Row
from ..fsio import open_regular, read_regular
from .chunking import Chunk, split_sections
from .documents import load_document, loader_for

logger = logging.getLogger(__name__)

#: ``progress(stage, done, total)``: stage is "hash", "load" or "embed"
ProgressFn = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class FileReport:
    """A source file that was not ingested, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """A file found in the source folder."""

    path: str
    abspath: Path
    sha256: str
    size: int


@dataclasses.dataclass
class Plan:
    """What an ingest would do, by document path."""

    unchanged: list[str] = dataclasses.field(default_factory=list)
    added: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    renamed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    reembed_all: bool = False

    @property
    def changed(self) -> bool:
        """Tell whether an ingest would commit anything."""
        return bool(self.added or self.updated or self.deleted or self.renamed)


def hidden_path(rel: str) -> bool:
    """Tell whether a path has a hidden segment (folder ingests neither read nor delete these)."""
    return any(part.startswith(".") for part in rel.split("/"))


def printable(rel: str) -> str:
    """Return a path safe to print and to commit: undecodable bytes shown as \\xNN."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def name_problem(rel: str) -> str | None:
    """Say why a file name cannot be stored (ledger, git, commit message), or None."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8: rename the file"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel):
        return "file name contains control characters: rename the file"
    return None


def _walk(root: Path) -> tuple[list[Path], list[FileReport]]:
    """List non-hidden files under root; report symbolic links (never followed)."""
    paths: list[Path] = []
    links: list[FileReport] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in [d for d in dirnames if (here / d).is_symlink()]:
            rel = printable((here / d).relative_to(root).as_posix())
            links.append(FileReport(rel, "symbolic link to a directory: not followed"))
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink()
        )
        paths += [here / f for f in sorted(filenames) if not f.startswith(".")]
    return paths, links


def scan_folder(
    root: str | os.PathLike[str], progress: ProgressFn | None = None
) -> tuple[dict[str, SourceFile], list[FileReport]]:
    """Hash every non-hidden file under root; return files by relative path and unreadables.

    Symbolic links are reported and never followed: a link can point anywhere on the
    machine, and whatever it points at would be committed, pushed and served.
    """
    root = Path(root)
    if not root.is_dir():
        raise DocumentError(f"{root} is not a directory")
    paths, problems = _walk(root)
    files: dict[str, SourceFile] = {}
    for n, path in enumerate(paths, start=1):
        rel = path.relative_to(root).as_posix()
        skip = name_problem(rel) or ("symbolic link: not followed" if path.is_symlink() else None)
        if skip:
            problems.append(FileReport(printable(rel), skip))
        else:
            try:
                with os.fdopen(open_regular(path), "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
                    size = os.fstat(fh.fileno()).st_size
                files[rel] = SourceFile(rel, path, digest, size)
            except OSError as exc:
                problems.append(FileReport(rel, f"unreadable: {exc.strerror or exc}"))
        if progress:
            progress("hash", n, len(paths))
    return files, sorted(problems, key=lambda p: p.path)


def plan_changes(
    ledger: Ledger, files: Mapping[str, SourceFile], *, keep_missing: bool, reembed_all: bool
) -> Plan:
    """Diff the source folder against the ledger by content hash."""
    plan = Plan(reembed_all=reembed_all)
    old = ledger.documents
    gone = [p for p in sorted(old) if p not in files and not hidden_path(p)]
    if reembed_all:
        plan.added = [p for p in sorted(files) if p not in old]
        plan.updated = [p for p in sorted(files) if p in old]
        plan.deleted = [] if keep_missing else gone
        return plan
    by_sha: dict[str, list[str]] = {}
    for path in gone:
        by_sha.setdefault(old[path].sha256, []).append(path)
    for path in sorted(files):
        if path in old:
            (plan.unchanged if old[path].sha256 == files[path].sha256 else plan.updated).append(
                path
            )
        elif by_sha.get(files[path].sha256):
            plan.renamed.append((by_sha[files[path].sha256].pop(0), path))
        else:
            plan.added.append(path)
    renamed_from = {a for a, _b in plan.renamed}
    plan.deleted = [] if keep_missing else [p for p in gone if p not in renamed_from]
    return plan


@dataclasses.dataclass
class LoadedDoc:
    """A document read and chunked, ready to embed."""

    path: str
    data: bytes
    loader: str
    chunks: list[Chunk]
    #: explicit chunk ids (one per chunk), e.g. a LangChain user's ids; None generates them
    ids: list[str] | None = None


def load_bytes(
    path: str, data: bytes, chunk_size: int, chunk_overlap: int, count_tokens: Callable[[str], int]
) -> LoadedDoc:
    """Read and chunk one document's bytes; raise DocumentError if it has no usable text."""
    loader, sections = load_document(path, data)
    chunks = split_sections(
        sections, size=chunk_size, overlap=chunk_overlap, count_tokens=count_tokens
    )
    if not chunks:
        raise DocumentError("no text content")
    return LoadedDoc(path, data, loader, chunks)


def load_changed(
    plan: Plan,
    files: Mapping[str, SourceFile],
    *,
    chunk_size: int,
    chunk_overlap: int,
    count_tokens: Callable[[str], int],
    progress: ProgressFn | None = None,
    max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
) -> tuple[list[LoadedDoc], list[FileReport]]:
    """Read and chunk every added or updated file; report the ones that fail or are too big."""
    todo = plan.added + plan.updated
    loaded: list[LoadedDoc] = []
    failed: list[FileReport] = []
    for n, path in enumerate(todo, start=1):
        try:
            loader_for(path)
            if files[path].size > max_bytes:
                raise DocumentError(
                    f"too large: {files[path].size} bytes, over the limit of {max_bytes} "
                    "(max_document_bytes)"
                )
            data = read_regular(files[path].abspath)
            loaded.append(load_bytes(path, data, chunk_size, chunk_overlap, count_tokens))
        except DocumentError as exc:
            failed.append(FileReport(path, str(exc)))
        except OSError as exc:
            failed.append(FileReport(path, f"unreadable: {exc.strerror or exc}"))
        if progress:
            progress("load", n, len(todo))
    return loaded, failed


def embed_docs(
    docs: list[LoadedDoc], embedder: Embedder, batch_size: int, progress: ProgressFn | None = None
) -> np.ndarray:
    """Embed every chunk of every document, in batches, in order."""
    texts = [c.text for d in docs for c in d.chunks]
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    # batch texts of similar length, as SentenceTransformer.encode does within one call:
    # document-order batches mix short tail chunks with full ones and pad every batch to
    # its longest text (~10% more tokens on bench/bench_ingest_overhead.py's corpus)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        out[idx] = embedder.embed([texts[i] for i in idx])
        if progress:
            progress("embed", min(start + batch_size, len(texts)), len(texts))
    return out


def chunk_id(
    path: str, sha: str, model_id: str, chunking: Mapping[str, object], i: int, taken: set[str]
) -> str:
    """Return a chunk id that is stable for the same input and unique among ``taken``."""
    salt = 0
    while True:
        key = json.dumps([path, sha, model_id, chunking, i, salt], sort_keys=True)
        cid = hashlib.sha256(key.encode()).hexdigest()[:32]
        if cid not in taken:
            taken.add(cid)
            return cid
        salt += 1


@dataclasses.dataclass
class Build:
    """Everything an ingest writes: new ledger and manifest, files to write and delete."""

    ledger: Ledger
    manifest: Manifest
    writes: dict[str, bytes]
    deletes: list[str]
    chunks_added: int
    chunks_deleted: int


def _tombstone(
    segments: dict[str, SegmentRef],
    victims: dict[str, list[str]],
    generation: int,
    writes: dict[str, bytes],
    deletes: list[str],
) -> list[SegmentRef]:
    kept: list[SegmentRef] = []
    for name, seg in segments.items():
        ids = sorted(victims.get(name, []))
        if seg.deleted + len(ids) >= seg.vectors:  # nothing live: drop the whole segment
            deletes += [f.path for f in (seg.faiss, seg.rows, *seg.tombstones)]
            continue
        if ids:
            raw = (json.dumps(ids) + "\n").encode()
            path = f"{INDEX_DIR}/{name}.del.{segment_name(generation)}.json"
            writes[path] = raw
            seg = dataclasses.replace(
                seg,
                tombstones=(*seg.tombstones, TombstoneRef(path, sha256(raw), len(raw), len(ids))),
            )
        kept.append(seg)
    return kept


def build_ingest(
    ledger: Ledger,
    manifest: Manifest | None,
    plan: Plan,
    loaded: list[LoadedDoc],
    vectors: np.ndarray,
    *,
    model_id: str,
    dim: int,
    chunking: Mapping[str, object],
) -> Build:
    """Compute the next commit's ledger, manifest and index files."""
    generation = (manifest.generation if manifest else 0) + 1
    seg_name = segment_name(generation)
    docs = {} if plan.reembed_all else dict(ledger.documents)
    victims: dict[str, list[str]] = {}
    replaced = set(ledger.documents) if plan.reembed_all else {d.path for d in loaded}
    for path in set(plan.deleted) | (replaced & ledger.documents.keys()):
        old = ledger.documents[path]
        victims.setdefault(old.segment, []).extend(old.chunks)
        docs.pop(path, None)
    for old_path, new_path in plan.renamed:
        docs[new_path] = docs.pop(old_path)
    taken = set(itertools.chain.from_iterable(d.chunks for d in docs.values()))
    rows: list[Row] = []
    for doc in loaded:
        sha = sha256(doc.data)
        if doc.ids is not None:
            if len(doc.ids) != len(doc.chunks) or taken & set(doc.ids):
                raise ValueError(f"{doc.path}: explicit chunk ids must be one per chunk, unused")
            ids = list(doc.ids)
            taken.update(ids)
        else:
            ids = [
                chunk_id(doc.path, sha, model_id, chunking, i, taken)
                for i in range(len(doc.chunks))
            ]
        rows += [Row(cid, c.text, c.meta) for cid, c in zip(ids, doc.chunks, strict=True)]
        docs[doc.path] = DocEntry(sha, len(doc.data), doc.loader, seg_name, tuple(ids))
    writes: dict[str, bytes] = {}
    deletes: list[str] = []
    old_segments = {s.name: s for s in manifest.segments} if manifest else {}
    segments = _tombstone(old_segments, victims, generation, writes, deletes)
    if rows:
        ref, files = new_segment(seg_name, vectors, rows, dim)
        writes.update(files)
        segments.append(ref)
    # a store keeps its format until `kbgit migrate`; format 2 writes only changed shards
    # the paths popped or set above: the only ones whose ledger entry may differ
    changed = None if plan.reembed_all else {d.path for d in loaded}.union(plan.deleted)
    if changed is not None:
        changed.update(p for pair in plan.renamed for p in pair)
    new_ledger = Ledger(model_id, dim, dict(chunking), docs, ledger.format)
    files = encode_ledger(new_ledger, ledger, changed)
    writes.update(files.writes)
    deletes += files.deletes
    live = sum(s.vectors - s.deleted for s in segments)
    new_manifest = Manifest(
        generation, model_id, dim, tuple(segments), live, sha256(files.root), ledger.format
    )
    writes[MANIFEST_PATH] = new_manifest.to_bytes()
    return Build(
        files.ledger,
        new_manifest,
        writes,
        deletes,
        len(rows),
        sum(len(v) for v in victims.values()),
    )
