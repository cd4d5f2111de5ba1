"""Embedding backends side by side: throughput, cosine to torch fp32, retrieval, query latency.

Corpus: git's release notes as Debian ships them (/usr/share/doc/git/RelNotes, 485 files,
real technical English; kbgit's own examples/docs repeated if absent), cut by the model's
own tokenizer into chunks of 120-200 tokens. For every backend and thread count, in one
run: chunks/s encoding the corpus (ratio to torch fp32 at the same threads), cosine of each
vector to torch fp32 (mean/min; the bound is mean >= 0.99, min >= 0.97), known-item
recall@5 (the first 12 words of a chunk as the question, exact search over all chunk
vectors of that backend; compare to torch), and one short question's encode latency p50.

Run:  python bench/bench_embedding_backends.py                 (2,000 chunks, 1 and 2 threads)
      python bench/bench_embedding_backends.py --chunks 300 --threads 2   (quick look)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kbgit.backends import BACKENDS
from kbgit.embeddings import SentenceTransformerEmbedder, load_embedder

RELNOTES = Path("/usr/share/doc/git/RelNotes")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "docs"
QUESTION = "how do I rename a branch that was already pushed"


def corpus(n: int, seed: int = 0) -> list[str]:
    """Return n real chunks of 120-200 model tokens."""
    tok = SentenceTransformerEmbedder.bundled()._get_tokenizer()
    files = sorted(RELNOTES.glob("*.txt")) or sorted(EXAMPLES.rglob("*.md")) * 50
    rng = random.Random(seed)
    out: list[str] = []
    for path in files:
        ids = tok.encode(
            path.read_text(encoding="utf-8", errors="replace"), add_special_tokens=False
        )
        i = 0
        while i + 120 <= len(ids):
            size = rng.randint(120, 200)
            out.append(tok.decode(ids[i : i + size]))
            i += size
    rng.shuffle(out)
    return out[:n]


def measure(backend: str, threads: int, texts: list[str], cache: str) -> dict:
    """Encode the corpus, the questions and one query with one backend; return figures."""
    emb = load_embedder("all-MiniLM-L6-v2", backend=backend, threads=threads, cache_dir=cache)
    t0 = time.perf_counter()
    emb.embed(texts[:4])  # export (first use) + load + warm-up
    ready = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecs = emb.embed(texts)
    rate = len(texts) / (time.perf_counter() - t0)
    questions = [" ".join(t.split()[:12]) for t in texts[:200]]
    qvecs = emb.embed(questions)
    top5 = np.argsort(-(qvecs @ vecs.T), axis=1)[:, :5]
    recall = float(np.mean([i in row for i, row in enumerate(top5)]))
    lat = []
    for _ in range(30):
        t0 = time.perf_counter()
        emb.embed([QUESTION])
        lat.append(time.perf_counter() - t0)
    return {
        "vecs": vecs,
        "rate": rate,
        "recall": recall,
        "q50": statistics.median(lat),
        "ready": ready,
    }


def _verdict(r: dict, ref: dict, cos: np.ndarray) -> str:
    """Say PASS or MISS against the goals: cosine bound, recall within 0.01, 2x speed."""
    quality = cos.mean() >= 0.99 and cos.min() >= 0.97 and r["recall"] >= ref["recall"] - 0.01
    speed = r["rate"] >= 2 * ref["rate"] and r["q50"] * 2 <= ref["q50"]
    return f"quality {'PASS' if quality else 'MISS'}, 2x {'PASS' if speed else 'MISS'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--cache", help="export cache (default: a fresh temporary directory)")
    ap.add_argument("--quick", action="store_true", help="300 chunks, 2 threads")
    args = ap.parse_args()
    if args.quick:
        args.chunks, args.threads = 300, "2"
    texts = corpus(args.chunks)
    cache = args.cache or tempfile.mkdtemp(prefix="kbgit-bench-exports-")
    print(
        f"{len(texts)} chunks of 120-200 tokens from {RELNOTES if RELNOTES.is_dir() else EXAMPLES}"
    )
    print(
        "load average before:",
        subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    )
    for threads in (int(t) for t in args.threads.split(",")):
        ref = None
        print(f"\nthreads={threads}")
        print(f"{'backend':14s} {'chunks/s':>8s} {'x torch':>7s} {'cos mean':>8s} {'cos min':>8s} "
              f"{'recall@5':>8s} {'query p50':>9s} {'x torch':>7s} {'ready s':>7s}")  # fmt: skip
        for backend in args.backends.split(","):
            r = measure(backend, threads, texts, cache)
            ref = ref or r
            cos = (r["vecs"] * ref["vecs"]).sum(axis=1)
            print(
                f"{backend:14s} {r['rate']:8.1f} {r['rate'] / ref['rate']:7.2f} {cos.mean():8.4f} "
                f"{cos.min():8.4f} {r['recall']:8.3f} {1000 * r['q50']:7.1f}ms "
                f"{ref['q50'] / r['q50']:7.2f} {r['ready']:7.1f}  {_verdict(r, ref, cos)}",
                flush=True,
            )
    print(
        "\nload average after:",
        subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    )
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}")


if __name__ == "__main__":
    main()
