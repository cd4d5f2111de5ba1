"""Query modes and how a hybrid query fuses the dense and lexical rankings.

``rrf`` is reciprocal rank fusion, weighted: ``alpha / (k + rank_dense) + (1 - alpha) /
(k + rank_lexical)`` (``alpha`` 0.5 is plain RRF). ``minmax`` and ``zscore`` scale each
retriever's scores over its candidates (min-max to [0, 1], or to z-scores) and take the
convex combination ``alpha * dense + (1 - alpha) * lexical``; a chunk one retriever did
not return counts as that retriever's worst. ``dbsf`` is Qdrant's distribution-based
score fusion: each retriever's scores are scaled to [0, 1] between mean - 3 sd and mean
+ 3 sd of its candidates, a chunk it did not return counts 0, and the same convex
combination follows. bench/bench_retrieval.py measures them all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import QueryError

MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("rrf", "minmax", "zscore", "dbsf")
MAX_DEPTH = 1000


@dataclasses.dataclass(frozen=True)
class HybridOptions:
    """How a query retrieves: mode, fusion, weight of dense, RRF k, candidates, exact dense.

    ``exact`` scores every vector even in segments that have an ANN index (dense and
    hybrid modes; kbgit/format/ann.py).
    """

    # defaults from bench/bench_retrieval.py on two corpora (bench/README.md): RRF with a
    # small k (the top few of each list decide) and lexical weighted 0.6, over the top 20
    # of each retriever, came closest to "at least the better single retriever on every
    # class": one question short, on git's release notes, where plain RRF (k 60, alpha
    # 0.5) was five short; min-max, z-score and DBSF fusion came no closer
    mode: str = "hybrid"
    fusion: str = "rrf"
    alpha: float = 0.4
    rrf_k: int = 2
    depth: int = 20
    exact: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise QueryError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise QueryError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, int | float)
            or not math.isfinite(self.alpha)
            or not 0.0 <= self.alpha <= 1.0
        ):
            raise QueryError(f"alpha must be a number between 0 and 1, got {self.alpha!r}")
        for name, value, top in (("rrf_k", self.rrf_k, 10_000), ("depth", self.depth, MAX_DEPTH)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise QueryError(f"{name} must be an integer between 1 and {top}, got {value!r}")
        if not isinstance(self.exact, bool):
            raise QueryError(f"exact must be true or false, got {self.exact!r}")

    def to_json(self) -> dict[str, Any]:
        """Return the options as reported with an answer."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Fused:
    """One fused candidate: its key, fused score and its rank in each retriever (1-based)."""

    key: str
    score: float
    ranks: dict[str, int]


def fuse(rankings: Mapping[str, Sequence[tuple[str, float]]], opts: HybridOptions) -> list[Fused]:
    """Fuse ranked (key, score) lists from the ``dense`` and ``lexical`` retrievers."""
    weights = {"dense": opts.alpha, "lexical": 1.0 - opts.alpha}
    ranks: dict[str, dict[str, int]] = {}
    for name, ranking in rankings.items():
        for r, (key, _s) in enumerate(ranking, start=1):
            ranks.setdefault(key, {})[name] = r
    scores = dict.fromkeys(ranks, 0.0)
    for name, ranking in rankings.items():
        w = weights[name]
        if opts.fusion == "rrf":
            part = {key: 1.0 / (opts.rrf_k + r) for r, (key, _s) in enumerate(ranking, 1)}
            floor = 0.0
        else:
            part, floor = _normalized(ranking, opts.fusion)
        for key in scores:
            scores[key] += w * part.get(key, floor)
    order = sorted(scores, key=lambda key: (-scores[key], _best_rank(ranks[key]), key))
    return [Fused(key, scores[key], ranks[key]) for key in order]


def _best_rank(ranks: dict[str, int]) -> int:
    return min(ranks.values())


def _normalized(ranking: Sequence[tuple[str, float]], how: str) -> tuple[dict[str, float], float]:
    if not ranking:
        return {}, 0.0
    vals = [s for _k, s in ranking]
    if how == "dbsf":
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)) or 1.0
        lo = mean - 3 * std
        return {k: (s - lo) / (6 * std) for k, s in ranking}, 0.0
    if how == "minmax":
        lo, hi = min(vals), max(vals)
        span = hi - lo or 1.0
        return {k: (s - lo) / span for k, s in ranking}, 0.0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)) or 1.0
    z = {k: (s - mean) / std for k, s in ranking}
    return z, min(z.values())
