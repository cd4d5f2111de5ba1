"""Shared helpers for the serving benchmarks: a cached 100k-vector store, server processes.

The 100k-vector store is built through the library's own ingest (chunking, segments,
ledger, manifest, commit, push), with a deterministic hashing embedder that *labels*
its vectors as all-MiniLM-L6-v2 (384-d). Servers therefore load the real model for
query encoding (realistic query cost) while the build takes seconds instead of the
~1.5 hours the real model would need for 100k chunks. Search cost does not depend on
the vector values (exact inner product over every vector). ``--model fake`` labels the
store ``fake:384`` instead, so servers use the hashing embedder for queries too.
"""

from __future__ import annotations

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
    rng = random.Random(seed)
    for d in range(docs):
        body = " ".join(rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(words_per_doc))
        path = root / f"topic{d % 20:02d}" / f"doc{d:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Document {d}\n\n{body}\n", encoding="utf-8")


def build_store(vectors: int, kind: str) -> tuple[Path, Path, Path]:
    """Return (hub, primary store, docs dir) of a cached store with ``vectors`` vectors."""
    base = CACHE / f"{kind}-{vectors}"
    hub, kb, docs = base / "hub.git", base / "kb", base / "docs"
    if (base / "done").exists():
        return hub, kb, docs
    if base.exists():
        import shutil

        shutil.rmtree(base)
    base.mkdir(parents=True)
    create_hub(hub)
    # chunk_size 40 tokens (words, for the hashing embedder), no overlap: 49 chunks per doc
    cfg = StoreConfig(model=model_id(kind), chunk_size=40, chunk_overlap=0, batch_size=4096)
    emb = LabelledHashEmbedder(384, model_id(kind))
    store = KnowledgeStore.init(kb, hub=str(hub), config=cfg, embedder=emb)
    _write_docs(docs, -(-vectors // 49), words_per_doc=50 * 38)
    started = time.perf_counter()
    result = store.ingest(docs)
    snap = store.snapshot()
    print(
        f"# built {snap.vectors} vectors ({kind} label, hashing embedder) in "
        f"{time.perf_counter() - started:.1f}s: {base}",
        file=sys.stderr,
    )
    assert result.commit and snap.vectors >= vectors, snap.vectors
    (base / "done").write_text(result.commit)
    return hub, kb, docs


def open_store(kb: Path, kind: str) -> KnowledgeStore:
    """Open the cached primary with the labelled hashing embedder (for further ingests)."""
    return KnowledgeStore(kb, embedder=LabelledHashEmbedder(384, model_id(kind)))


class ServerProc(KbgitProc):
    """A ``kbgit serve`` / ``kbgit standby`` process on 127.0.0.1 (quiet log, bench token)."""

    def __init__(self, args: list[str], log: Path, token: str = "bench") -> None:
        super().__init__(args, log, token=token, log_level="warning")


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
