"""ANN indexes of verified segments, kept in memory and on this machine's disk.

An entry is keyed by the segment's sha256 (from the verified manifest) and
:meth:`AnnSettings.key` (cells, codec, seed, build format), and is only ever built here
from the segment's verified vectors. On disk it is FAISS's own binary format (written by
``faiss.serialize_index``, never pickle) beside the sha256 of those bytes, both written
atomically under the store's ``.git`` (never committed or replicated). An entry whose
checksum fails, that cannot be read, or that does not match its segment is deleted and
rebuilt, never served.

>>> cache = AnnCache.for_store("./kb", AnnSettings(min_vectors=50_000))   # doctest: +SKIP
>>> cache.for_segments(manifest, segments)   # {segment name: AnnIndex} # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from ..fsio import prune_cache, write_atomic
from .ann import AnnIndex, AnnSettings, build_index, nlist_for
from .manifest import Manifest
from .vector_index import Segment

logger = logging.getLogger(__name__)

#: where a store keeps its ANN cache (relative to the store root)
CACHE_SUBDIR = Path(".git") / "kbgit-ann"
#: disk entries kept beyond the served ones, most recently used first (a 1M-vector entry
#: is ~0.4 GB: enough to roll back one compaction without a rebuild, and bounded)
DISK_SPARE = 2
_TYPES = {"flat": faiss.IndexIVFFlat, "sq8": faiss.IndexIVFScalarQuantizer}


class AnnCache:
    """ANN indexes by (segment sha256, settings), in memory and under ``directory``."""

    @classmethod
    def for_store(cls, root: str | Path, settings: AnnSettings) -> AnnCache:
        """Return a cache under a store's ``.git`` (used once the store's ``.git`` exists).

        A standby's replica is cloned after its service is created, so the directory is
        not required to exist yet; nothing is written while ``.git`` is missing.
        """
        return cls(settings, Path(root) / CACHE_SUBDIR)

    def __init__(self, settings: AnnSettings, directory: Path | None = None) -> None:
        self.settings = settings
        self.directory = directory
        #: disk entries kept beyond those in use
        self.spare = DISK_SPARE
        self._indexes: dict[str, AnnIndex] = {}
        self._lock = threading.Lock()
        #: indexes built here, read back from disk, and disk entries refused (deleted)
        self.built = 0
        self.loaded = 0
        self.refused = 0

    def key(self, sha256: str, vectors: int) -> str:
        """Return the cache key of a segment with this content and row count."""
        return f"{sha256}-{self.settings.key(vectors)}"

    def keys(self, manifest: Manifest) -> set[str]:
        """Return the keys of the segments of ``manifest`` that get an ANN index."""
        return {
            self.key(ref.faiss.sha256, ref.vectors)
            for ref in manifest.segments
            if self.settings.wants(ref.vectors)
        }

    def for_segments(self, manifest: Manifest, segments: Sequence[Segment]) -> dict[str, AnnIndex]:
        """Return {segment name: AnnIndex} for every segment at or above the threshold."""
        by_name = {s.name: s for s in segments}
        out = {}
        for ref in manifest.segments:
            seg = by_name.get(ref.name)
            if seg is not None and self.settings.wants(len(seg.rows)):
                out[ref.name] = self.get(ref.faiss.sha256, seg.vectors)
        return out

    def get(self, sha256: str, vectors: np.ndarray) -> AnnIndex:
        """Return the index of a segment: from memory, from disk (checked), or built now."""
        key = self.key(sha256, len(vectors))
        with self._lock:
            hit = self._indexes.get(key)
        if hit is not None:
            return hit
        index = self._load(key, vectors.shape)
        if index is None:
            started = time.perf_counter()
            index = build_index(vectors, self.settings.codec)
            self.built += 1
            logger.info("ANN %s built in %.1fs", key[:16], time.perf_counter() - started)
            self._save(key, index)
        ann = AnnIndex(index, self.settings)
        with self._lock:
            self._indexes[key] = ann
        return ann

    def retain(self, keys: set[str]) -> None:
        """Keep in memory only ``keys``; on disk, those plus the ``spare`` most recent others."""
        with self._lock:
            self._indexes = {k: v for k, v in self._indexes.items() if k in keys}
        if self.directory is not None:
            prune_cache(self.directory, ".faiss", {f"{k}.faiss" for k in keys}, self.spare)

    def paths(self, key: str) -> tuple[Path, Path]:
        """Return the index file and checksum file of ``key`` (directory must be set)."""
        assert self.directory is not None
        return self.directory / f"{key}.faiss", self.directory / f"{key}.sha256"

    def _load(self, key: str, shape: tuple[int, int]) -> faiss.IndexIVF | None:
        """Return the checked disk entry of ``key``, or None (a bad entry is deleted)."""
        if self.directory is None:
            return None
        path, digest = self.paths(key)
        try:
            data = path.read_bytes()
            want = digest.read_text().strip()
        except OSError:
            return None  # absent (or half there): built and written again
        problem = "fails its checksum"
        if hashlib.sha256(data).hexdigest() == want:
            try:
                index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
                problem = self._mismatch(index, shape)
            except RuntimeError as exc:  # FAISS refused the bytes
                problem = f"is unreadable ({exc})"
            if not problem:
                self.loaded += 1
                with contextlib.suppress(OSError):
                    path.touch()  # used now: pruning keeps recently used entries
                return index
        logger.warning("ANN cache %s %s: deleting and rebuilding", path.name, problem)
        self.refused += 1
        for p in (path, digest):
            with contextlib.suppress(OSError):
                p.unlink()
        return None

    def _mismatch(self, index: faiss.Index, shape: tuple[int, int]) -> str:
        """Return why a read index does not fit its segment and settings ('' if it does)."""
        want = _TYPES[self.settings.codec]
        if type(index) is not want or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            return f"is a {type(index).__name__}, not a {want.__name__}"
        if (index.ntotal, index.d, index.nlist) != (shape[0], shape[1], nlist_for(shape[0])):
            return f"holds {index.ntotal}x{index.d} in {index.nlist} lists, segment {shape}"
        return ""

    def _save(self, key: str, index: faiss.IndexIVF) -> None:
        """Write an entry and its checksum (best effort: a failure costs a rebuild later)."""
        if self.directory is None or not self.directory.parent.is_dir():
            return
        data = faiss.serialize_index(index).tobytes()
        path, digest = self.paths(key)
        try:
            self.directory.mkdir(exist_ok=True)
            # a checksummed cache: a file torn by a crash is rebuilt, so no fsync
            write_atomic(path, data, durable=False)
            write_atomic(digest, hashlib.sha256(data).hexdigest().encode(), durable=False)
        except OSError as exc:
            logger.warning("ANN cache %s not written: %s", path, exc)
