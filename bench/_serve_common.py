"""Shared helpers for the serving benchmarks: a cached 100k-vector store, server processes.

The 100k-vector store is built through the library's own ingest (chunking, segments,
ledger, manifest, commit, push), with a deterministic hashing embedder that *labels*
its vectors as all-MiniLM-L6-v2 (384-d). Servers therefore load the real model for
query encoding (realistic query cost) while the build takes seconds instead of the
~1.5 hours the real model would need for 100k chunks. Search cost does not depend on
the vector values (exact inner product over every vector). ``--model fake`` labels the
store ``fake:384`` instead, so servers use the hashing embedder for queries too.

``layout="tiered"`` (the issue 10 scale table, 10k to 1M vectors) builds the store as a
growing store is built and compacted: ten ingests of ~10% each through the same ingest
path, each followed by ``kbgit compact --tiered`` (what a cron job runs), so the
segments are the tiers the design leaves (at 1M: 2 x ~400k + 2 x ~100k, each with an
IVF index). Its documents are clustered by topic (half of a chunk's words come from its
document's topic vocabulary), so neighbours are closer than random ones, as with a real
model: exact search cost does not depend on the values, ANN recall does.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from kbgit import KnowledgeStore, StoreConfig, create_hub  # noqa: E402
from kbgit.embeddings import BUNDLED_MODEL_ID, FakeEmbedder  # noqa: E402
from tests.integration.procs import KbgitProc  # noqa: E402

CACHE = Path(os.environ.get("KBGIT_BENCH_CACHE", "/tmp/kbgit-bench-serve"))
_WORDS_TEXT = (
    "backup restore rotate key certificate replica standby primary hub ingest query index "
    "vector segment ledger manifest commit verify refuse swap latency throughput outage lag "
    "policy runbook incident alert pager escalation window deploy rollback canary network "
    "firewall gateway tunnel storage bucket snapshot archive retention audit compliance"
)
WORDS = _WORDS_TEXT.split()
QUERIES = [
    "how do I rotate the API keys",
    "what happens when the standby refuses a commit",
    "restore a nightly backup on a scratch host",
    "who approves a firewall change",
    "rollback after a failed canary deploy",
    "how long are audit logs retained",
    "the VPN tunnel handshake fails",
    "escalation policy for the pager",
]


class LabelledHashEmbedder(FakeEmbedder):
    """The hashing fake, under another model id (the real model's, or fake:<dim>)."""

    def __init__(self, dim: int, model_id: str) -> None:
        super().__init__(dim)
        self.model_id = model_id


def model_id(kind: str) -> str:
    """Return the ledger model id for ``--model real|fake``."""
    return BUNDLED_MODEL_ID if kind == "real" else "fake:384"


def _write_docs(root: Path, docs: int, words_per_doc: int, seed: int = 7) -> None:
    write_docs(root, range(docs), words_per_doc, seed=seed)


def write_docs(
    root: Path, numbers: range, words_per_doc: int, *, seed: int = 7, topics: int = 0
) -> None:
    """Write documents ``numbers`` under ``root`` (deterministic per seed and number).

    ``topics`` > 0 clusters them: half the words of a document come from one of
    ``topics`` small vocabularies (24 words each), the rest from all 40,000 words.
    """
    rng = random.Random(seed)
    vocab: list[str] = []
    for d in numbers:
        if topics:
            rng.seed(seed * 1_000_003 + d)
            vocab = _topic_vocab(seed, rng.randrange(topics))
        words = []
        for _ in range(words_per_doc):
            if topics and rng.random() < 0.5:
                words.append(rng.choice(vocab))
            else:
                words.append(rng.choice(WORDS) + str(rng.randint(0, 999)))
        path = root / f"topic{d % 20:02d}" / f"doc{d:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Document {d}\n\n{' '.join(words)}\n", encoding="utf-8")


def _topic_vocab(seed: int, topic: int) -> list[str]:
    rng = random.Random(seed * 7919 + topic)
    return [rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(24)]


#: words per bench document: 49 chunks of 40 words
WORDS_PER_DOC = 50 * 38
CHUNKS_PER_DOC = 49


def store_config(kind: str) -> StoreConfig:
    """Return the bench stores' configuration (40-token chunks, no overlap)."""
    return StoreConfig(model=model_id(kind), chunk_size=40, chunk_overlap=0, batch_size=4096)


def build_store(vectors: int, kind: str, layout: str = "one") -> tuple[Path, Path, Path]:
    """Return (hub, primary store, docs dir) of a cached store with ``vectors`` vectors.

    ``layout``: "one" (one ingest, one segment) or "tiered" (the module docstring).
    """
    name = f"{kind}-{vectors}" if layout == "one" else f"{kind}-{vectors}-{layout}"
    base = CACHE / name
    hub, kb, docs = base / "hub.git", base / "kb", base / "docs"
    if (base / "done").exists():
        return hub, kb, docs
    if base.exists():
        import shutil

        shutil.rmtree(base)
    base.mkdir(parents=True)
    create_hub(hub)
    emb = LabelledHashEmbedder(384, model_id(kind))
    store = KnowledgeStore.init(kb, hub=str(hub), config=store_config(kind), embedder=emb)
    ndocs = -(-vectors // CHUNKS_PER_DOC)
    started = time.perf_counter()
    if layout == "one":
        _write_docs(docs, ndocs, words_per_doc=WORDS_PER_DOC)
        commit = store.ingest(docs).commit
    else:
        commit = _build_tiered(store, docs, ndocs, topics=max(20, vectors // 500))
    snap = store.snapshot()
    print(
        f"# built {snap.vectors} vectors in {len(snap.manifest.segments)} segments "
        f"({kind} label, hashing embedder) in {time.perf_counter() - started:.1f}s: {base}",
        file=sys.stderr,
    )
    assert commit and snap.vectors >= vectors, snap.vectors
    (base / "done").write_text(snap.commit)
    return hub, kb, docs


def _build_tiered(
    store: KnowledgeStore, docs: Path, ndocs: int, topics: int, batches: int = 10
) -> str | None:
    """Ingest ``ndocs`` documents in ``batches`` commits, each followed by tiered compaction."""
    from kbgit.history.compaction import compact

    bounds = [ndocs * i // batches for i in range(batches + 1)]
    for lo, hi in itertools.pairwise(bounds):
        t0 = time.perf_counter()
        write_docs(docs, range(lo, hi), WORDS_PER_DOC, topics=topics)
        result = store.ingest(docs)
        t1 = time.perf_counter()
        merged = compact(store, tiered=True)
        print(
            f"# ingest docs {lo}-{hi}: {result.chunks_added} chunks {t1 - t0:.1f}s; "
            f"compact --tiered {merged.segments_before} -> {merged.segments_after} segments "
            f"{time.perf_counter() - t1:.1f}s",
            file=sys.stderr,
        )
    return store.repo.head()


def open_store(kb: Path, kind: str) -> KnowledgeStore:
    """Open the cached primary with the labelled hashing embedder (for further ingests)."""
    return KnowledgeStore(kb, embedder=LabelledHashEmbedder(384, model_id(kind)))


class ServerProc(KbgitProc):
    """A ``kbgit serve`` / ``kbgit standby`` process on 127.0.0.1 (quiet log, bench token)."""

    def __init__(
        self, args: list[str], log: Path, log_level: str = "warning", token: str = "bench"
    ) -> None:
        super().__init__(args, log, token=token, log_level=log_level)


def pct(values: list[float], q: float) -> float:
    """Return the q-th percentile (0..100) of values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def summary(values: list[float], unit: float = 1000.0) -> str:
    """Return 'p50 / p99 / mean (n)' in ms (by default)."""
    return (
        f"p50 {pct(values, 50) * unit:.1f}  p99 {pct(values, 99) * unit:.1f}  "
        f"mean {statistics.fmean(values) * unit:.1f}  (n={len(values)})"
    )


def replica_from(warm: Path | None, dst: Path) -> Path:
    """Return ``dst``: absent (the standby clones the hub), or a copy of a warm replica.

    ``warm`` is a replica a previous run left (``bench_cold_start.py --replica DIR``), with
    its ANN and lexical caches and verified record: at 1M a fresh clone costs minutes of
    fetch and ANN builds that are not what these benches measure. The copy hard-links
    files (git and the caches only ever replace files, never rewrite them in place), so
    it is instant and the original stays as it was. A new link changes each file's ctime,
    which git's index records: the copy's index is refreshed here (git hashes every
    file once, ~40 s at 1M), or the standby's first fast-forward would do it.
    """
    if warm is not None:
        import subprocess

        subprocess.run(["cp", "-al", str(warm), str(dst)], check=True)
        subprocess.run(["git", "-C", str(dst), "update-index", "-q", "--refresh"], check=False)
    return dst
