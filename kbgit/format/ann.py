"""Approximate nearest-neighbour search for large segments, built from verified vectors.

A segment with at least ``ann_min_vectors`` vectors gets a FAISS IVF index (inverted
lists over k-means cells, inner product) that this machine builds itself from the
segment's verified vectors: nothing of it is ever read from a repository. The lists hold
8-bit scalar-quantized codes by default (``ann_codec = "sq8"``, a quarter of the float32
bytes) or full vectors (``"flat"``); either way the candidates are re-scored exactly
against the segment's float32 vectors, so every score is the exact cosine and a hit
ranks as exact search would rank it among the candidates.

Training is deterministic (fixed seed, fixed sample), so two standbys build the same
bytes from the same segment. :mod:`kbgit.format.anncache` keeps built indexes on local
disk, keyed by the segment's sha256 and :meth:`AnnSettings.key`.

Measured (bench/bench_ann.py, bench/README.md): exact search costs ~0.3 ms per query
at 10k vectors and 7-11 ms at 100k on one thread; IVF answers in under 1 ms from ~50k
up, so that is the default threshold.
"""

from __future__ import annotations

import dataclasses
import math

import faiss
import numpy as np

from ..config import (
    DEFAULT_ANN_CODEC,
    DEFAULT_ANN_MIN_VECTORS,
    DEFAULT_ANN_NPROBE,
    ServeConfig,
    StoreConfig,
    check_ann,
)

#: bump when the build changes: it is part of every cache key
#: 2: the checksum file covers the key too (:func:`kbgit.fsio.cache_digest`)
ANN_FORMAT = 2
#: k-means seed: two machines train the same cells from the same vectors
SEED = 1234
#: training points per cell (FAISS warns below 39; more costs build time, not recall)
TRAIN_PER_LIST = 64
#: cells per sqrt(vectors): nlist = 4 * sqrt(n), capped so each cell has training points
LISTS_PER_SQRT = 4
#: candidates re-scored per hit asked for, when the lists hold compressed codes
RERANK = 4


@dataclasses.dataclass(frozen=True)
class AnnSettings:
    """When a segment gets an ANN index and how it is built and searched.

    ``min_vectors`` 0 turns ANN off (every query exact).
    """

    min_vectors: int = DEFAULT_ANN_MIN_VECTORS
    nprobe: int = DEFAULT_ANN_NPROBE
    codec: str = DEFAULT_ANN_CODEC

    def __post_init__(self) -> None:
        check_ann(self.min_vectors, self.nprobe, self.codec)

    @classmethod
    def of(cls, config: StoreConfig | ServeConfig) -> AnnSettings:
        """Return the ANN settings a store's or a server's configuration names."""
        return cls(config.ann_min_vectors, config.ann_nprobe, config.ann_codec)

    def wants(self, vectors: int) -> bool:
        """Tell whether a segment of ``vectors`` rows gets an ANN index."""
        return self.min_vectors > 0 and vectors >= self.min_vectors

    def key(self, vectors: int) -> str:
        """Return what the built bytes depend on besides the vectors (a cache key part)."""
        return f"ivf{nlist_for(vectors)}-{self.codec}-s{SEED}-f{ANN_FORMAT}"


def nlist_for(vectors: int) -> int:
    """Return the number of IVF cells for a segment of ``vectors`` rows."""
    return max(1, min(int(LISTS_PER_SQRT * math.sqrt(vectors)), vectors // 39))


def build_index(vectors: np.ndarray, codec: str) -> faiss.IndexIVF:
    """Train and fill an IVF index over ``vectors`` (deterministic for equal input)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    nlist = nlist_for(n)
    quantizer = faiss.IndexFlatIP(dim)
    if codec == "flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    index.cp.seed = SEED
    sample = min(n, TRAIN_PER_LIST * nlist)
    if sample < n:
        picked = np.sort(np.random.default_rng(SEED).choice(n, sample, replace=False))
        index.train(vectors[picked])
    else:
        index.train(vectors)
    index.add(vectors)
    return index


class AnnIndex:
    """A built IVF index of one segment and how it is searched.

    >>> ann = AnnIndex(build_index(vectors, "sq8"), AnnSettings())    # doctest: +SKIP
    >>> ann.candidates(query, vectors, k=10, bitmap=None)              # doctest: +SKIP
    """

    def __init__(self, index: faiss.IndexIVF, settings: AnnSettings) -> None:
        self.index = index
        self.nprobe = min(settings.nprobe, index.nlist)
        self.depth = 1 if settings.codec == "flat" else RERANK

    @property
    def ntotal(self) -> int:
        """Return how many vectors the index holds."""
        return int(self.index.ntotal)

    def candidates(self, query: np.ndarray, k: int, bitmap: np.ndarray | None) -> np.ndarray:
        """Return up to ``k * depth`` row numbers near ``query`` among rows set in ``bitmap``.

        ``bitmap`` packs the live mask little-endian (``np.packbits(mask, bitorder="little")``);
        None means every row is live.
        """
        sel = None
        if bitmap is not None:
            sel = faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=sel)
        want = min(self.ntotal, k * self.depth)
        _scores, ids = self.index.search(query.reshape(1, -1), want, params=params)
        found = ids[0]
        return found[found >= 0]
