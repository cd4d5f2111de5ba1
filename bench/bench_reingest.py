"""Re-ingest of an unchanged 2,000-file corpus vs a full ingest of it.

Goal (issue 2): re-ingest <= 3% of the full ingest.

One run: build a 2,000-file corpus (one ~130-token paragraph each, so ~2,000 chunks), time
the full ingest with the real ``kbgit ingest`` console script (into a store that pushes to
a bare hub), then time ``kbgit ingest`` of the same, unchanged folder ``--repeats`` times
back-to-back (each must skip every file and commit nothing). Both are whole CLI processes:
interpreter start, imports, lock, hub fetch, hashing of every file, ledger diff.
The library call ``KnowledgeStore.ingest`` is timed too, for reference.

``--embedder real`` (default) builds the corpus with all-MiniLM-L6-v2 (~1.5-3 min on 2
cores); ``--embedder fake`` builds it with the deterministic ``fake:64`` embedder, which
makes the full ingest far cheaper and so the ratio far stricter.

Run:  python bench/bench_reingest.py                    (real model, 2,000 files, ~3 min)
      python bench/bench_reingest.py --embedder fake    (~30 s)
      python bench/bench_reingest.py --quick            (200 files)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
from pathlib import Path

import _common as c

MODELS = {"real": "all-MiniLM-L6-v2", "fake": "fake:64"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--paras", type=int, default=1, help="paragraphs (~1 chunk each) per file")
    p.add_argument("--embedder", choices=sorted(MODELS), default="real")
    p.add_argument("--repeats", type=int, default=3, help="unchanged re-ingests to time")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--goal", type=float, default=0.03)
    p.add_argument("--profile", action="store_true", help="cProfile one library re-ingest")
    p.add_argument("--quick", action="store_true", help="200 files")
    args = p.parse_args()
    if args.quick:
        args.files = 200
    return args


def cli_ingest(root: Path, corpus: Path, env: dict[str, str]) -> tuple[float, float, dict]:
    """Run ``kbgit ingest`` once; return (wall, cpu, its JSON result)."""
    argv = [*c.kbgit_cmd(), "ingest", str(root), str(corpus), "--json", "--no-progress"]
    wall, cpu, out = c.run_measured(argv, env)
    return wall, cpu, json.loads(out)


def main() -> None:
    args = parse_args()
    c.banner(f"re-ingest of an unchanged {args.files}-file corpus vs its full ingest")
    c.print_load()
    from kbgit import KnowledgeStore, create_hub

    env = c.thread_env(args.threads)
    with tempfile.TemporaryDirectory(prefix="kbgit-bench-re-") as tmp:
        tmp_path = Path(tmp)
        corpus = tmp_path / "corpus"
        c.write_corpus(corpus, args.files, args.paras, seed=4)
        hub = create_hub(tmp_path / "hub.git")
        root = tmp_path / "kb"
        model = MODELS[args.embedder]
        c.run_timed([*c.kbgit_cmd(), "init", str(root), "--hub", str(hub), "--model", model], env)
        print(f"   corpus: {args.files} files x {args.paras} paragraph(s); built with {model}")

        full_wall, full_cpu, full = cli_ingest(root, corpus, env)
        assert len(full["added"]) == args.files and full["pushed"], full
        print(
            f"   full ingest (kbgit CLI): wall {full_wall:.2f}s cpu {full_cpu:.2f}s, "
            f"{full['chunks_added']} chunks"
        )
        head = KnowledgeStore(root).repo.head()
        walls, cpus = [], []
        for n in range(args.repeats):
            wall, cpu, res = cli_ingest(root, corpus, env)
            assert res["skipped"] == args.files and res["commit"] is None, res
            walls.append(wall)
            cpus.append(cpu)
            print(f"   re-ingest {n + 1} (kbgit CLI): wall {wall:.3f}s cpu {cpu:.3f}s")
        lib = []
        for n in range(args.repeats):
            store = KnowledgeStore(root)
            with c.Stopwatch() as sw:
                res = store.ingest(corpus)
            assert res.skipped == args.files and res.commit is None
            lib.append(sw.wall)
            print(f"   re-ingest {n + 1} (library): wall {sw.wall:.3f}s cpu {sw.cpu:.3f}s")
        assert KnowledgeStore(root).repo.head() == head, "an unchanged re-ingest committed"

        print(
            c.verdict(
                "RESULT re-ingest/full (CLI, median wall)", c.median(walls) / full_wall, args.goal
            )
        )
        print(
            c.verdict(
                "RESULT re-ingest/full (CLI, median cpu)", c.median(cpus) / full_cpu, args.goal
            )
        )
        print(
            c.verdict(
                "   re-ingest/full (library re-ingest wall / CLI full wall)",
                c.median(lib) / full_wall,
                args.goal,
            )
        )
        c.print_load()
        if args.profile:
            prof = cProfile.Profile()
            store = KnowledgeStore(root)
            prof.enable()
            store.ingest(corpus)
            prof.disable()
            print("\n== cProfile of one library re-ingest (cumulative, top 25)")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
