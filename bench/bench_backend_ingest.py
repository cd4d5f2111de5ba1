"""Embedding backends end to end: `kbgit ingest`, retrieval on real questions, query at 100k.

For each backend, torch (PyTorch fp32, the reference) first, in one run:

- the export (first use of a backend on this machine: built from the bundled model files,
  cached; printed, not part of the ratio: it is paid once per machine and model);
- `kbgit init --backend B` and `kbgit ingest` of the corpus as whole CLI processes (scan,
  chunk, embed, commit; interpreter start and model load included), --rounds times per
  backend in ABBA order (a shared box's load drifts over minutes), summed wall seconds and
  the ratio to torch (goal >= 1.8x);
- `kbgit eval --json` of the questions against that store: recall@5 and MRR@10 per mode
  (dense, hybrid) and class (goal: within 0.01 of torch);
- one question's latency, encode + exact search over 100k vectors (1 thread, as serving
  pins it), p50 over 40 questions, and the ratio to torch.

The default corpus is git's release notes as Debian's git package ships them (copied from
/usr/share/doc/git/RelNotes into <workdir>/corpus/RelNotes: 485 files, ~2,800 chunks) with
the questions of bench/evals/gitnotes.jsonl; any folder and any eval set of `kbgit eval`'s
format can be given instead.

Run:  python bench/bench_backend_ingest.py
      python bench/bench_backend_ingest.py --backends torch,openvino-int8 --corpus DIR --evals F
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_retrieval import fetch_git

from kbgit.backends import BACKENDS
from kbgit.embeddings import load_embedder

HERE = Path(__file__).resolve().parent
KBGIT = str(Path(sys.executable).with_name("kbgit"))


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a kbgit command; return (wall seconds, stdout)."""
    t0 = time.perf_counter()
    out = subprocess.run([KBGIT, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 3):  # 3: some files unreadable, the rest committed
        sys.exit(f"kbgit {args[0]} failed ({out.returncode}): {out.stderr[-2000:]}")
    return wall, out.stdout


def export(backend: str, cache: str) -> float:
    """Build (or find) the backend's export; return the seconds it took."""
    t0 = time.perf_counter()
    load_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=cache).embed(["warm up"])
    return time.perf_counter() - t0


def ingest(backend: str, args: argparse.Namespace, env: dict[str, str]) -> tuple[float, int]:
    """Ingest the corpus into a fresh store with ``backend``; return (wall s, chunks)."""
    kb = Path(args.workdir) / f"kb-{backend}"
    shutil.rmtree(kb, ignore_errors=True)
    _run(["init", str(kb), "--backend", backend], env)
    wall, out = _run(["ingest", str(kb), str(args.corpus), "--json", "--no-progress"], env)
    return wall, json.loads(out)["chunks_added"]


def evaluate(backend: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """Return ``kbgit eval`` scores (dense and hybrid) of the backend's last store."""
    kb = Path(args.workdir) / f"kb-{backend}"
    _, out = _run(
        ["eval", str(kb), str(args.evals), "--json", "--mode", "dense", "--mode", "hybrid"], env
    )
    return json.loads(out)["scores"]


def query_latency(backend: str, cache: str, questions: list[str], base: np.ndarray) -> float:
    """Return the p50 seconds of encode + exact search over ``base`` (1 thread)."""
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    emb = load_embedder("all-MiniLM-L6-v2", backend=backend, threads=1, cache_dir=cache)
    emb.embed(questions[:2])
    lat = []
    for q in questions:
        t0 = time.perf_counter()
        index.search(emb.embed([q]), 10)
        lat.append(time.perf_counter() - t0)
    return statistics.median(lat)


def _questions(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()][:40]


def _row(name: str, r: dict, ref: dict) -> str:
    cells = [f"{name:14s}", f"{r['export']:7.1f}", f"{r['ingest']:8.1f}"]
    cells.append(f"{ref['ingest'] / r['ingest']:7.2f}")
    for mode in ("dense", "hybrid"):
        for cls, s in sorted(r["scores"][mode].items()):
            delta = s["recall"] - ref["scores"][mode][cls]["recall"]
            cells.append(f"{mode[:1]}:{cls[:10]} {s['recall']:.3f} ({delta:+.3f})")
    cells.append(f"{1000 * r['q50']:6.1f}ms {ref['q50'] / r['q50']:5.2f}x")
    return "  ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--corpus", type=Path, help="folder to ingest (default: git's notes)")
    ap.add_argument("--evals", type=Path, default=HERE / "evals" / "gitnotes.jsonl")
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2, help="ingests per backend, ABBA order")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="torch and openvino-int8 only")
    args = ap.parse_args()
    if args.quick:
        args.backends, args.rounds = "torch,openvino-int8", 1
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="kbgit-bench-backends-")
    if args.corpus is None:
        args.corpus = Path(args.workdir) / "corpus"
        fetch_git(args.corpus)  # git's release notes, as the retrieval eval uses them
    cache = str(Path(args.workdir) / "exports")
    env = {**os.environ, "KBGIT_MODEL_CACHE": cache}
    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.vectors, 384)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    questions = _questions(args.evals)
    print(f"corpus {args.corpus}, questions {args.evals}, {args.vectors} vectors for latency")
    print("load average before:", os.getloadavg())
    backends = args.backends.split(",")
    results: dict[str, dict] = {b: {"export": export(b, cache), "walls": []} for b in backends}
    for n in range(args.rounds):  # ABBA: the load of a shared box drifts between runs
        for backend in backends if n % 2 == 0 else backends[::-1]:
            wall, chunks = ingest(backend, args, env)
            results[backend]["walls"].append(wall)
            results[backend]["chunks"] = chunks
            print(f"# round {n + 1} {backend}: ingest {wall:.1f}s, load {os.getloadavg()[0]:.1f}")
    for backend, r in results.items():
        r["ingest"] = sum(r["walls"])
        r["scores"] = evaluate(backend, args, env)
        r["q50"] = query_latency(backend, cache, questions, base)
    ref = results[backends[0]]
    print(f"\n{ref['chunks']} chunks, {args.rounds} rounds; columns: export s, ingest s (sum)")
    print("ingest speed-up vs the first, recall@5 per mode:class (delta), query p50, speed-up")
    for backend, r in results.items():
        print(_row(backend, r, ref), flush=True)
    for backend, r in results.items():
        ok = r["ingest"] * 1.8 <= ref["ingest"]
        walls = ", ".join(f"{w:.1f}" for w in r["walls"])
        print(f"{backend:14s} ingest runs {walls} s; >= 1.8x: {'PASS' if ok else 'MISS'}")
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
