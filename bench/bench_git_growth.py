"""Git growth: 50 ingests each adding ~1% new chunks.

Goals (issue 2): hub size <= 1.3x the live data; commit+push time of the last 10 ingests
within 1.5x of the first 10.

* live data: the bytes of every file in the last commit's tree (docs/, index/ segments and
  tombstones, ledger.json, manifest.json): what a checkout of HEAD holds.
* hub size: the bytes of every file in the bare hub (objects, refs, config, hooks), as
  pushed, never gc'ed (the hub has gc.auto=0); allocated disk (du) is printed too.
* commit+push: for each ingest (library ``ingest(push=False)`` then ``push()``), the time
  from the end of embedding to the commit (build segment and ledger, write files, git add,
  git commit), plus the ``git push`` to the hub. Scan/hash/chunk/embed are excluded (they
  scale with the change, not the store); the whole ingest is printed too.

Embedders: ``dense`` (default) gives deterministic dense 384-d float32 vectors, so segment
files are as large and as incompressible as the real model's, at no model cost; ``fake``
is ``fake:64`` (sparse, compresses well: flatters the hub size); ``real`` is
all-MiniLM-L6-v2 (slow: use a smaller ``--base-files``).

Run:  python bench/bench_git_growth.py            (1,500 files ~4,000 chunks + 50 ingests, ~1 min)
      python bench/bench_git_growth.py --quick    (200 files, 20 ingests)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import _common as c


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-files", type=int, default=1500, help="files in the first ingest")
    p.add_argument("--paras", type=int, default=4, help="paragraphs (~1 chunk each) per file")
    p.add_argument("--ingests", type=int, default=50, help="growth ingests after the first")
    p.add_argument("--pct", type=float, default=1.0, help="new chunks per ingest, %% of live")
    p.add_argument("--embedder", choices=["dense", "fake", "real"], default="dense")
    p.add_argument("--window", type=int, default=10, help="first/last N ingests compared")
    p.add_argument("--size-goal", type=float, default=1.3)
    p.add_argument("--time-goal", type=float, default=1.5)
    p.add_argument("--profile", action="store_true", help="cProfile the last ingest+push")
    p.add_argument(
        "--repack", action="store_true", help="also size a copy of the hub after git repack"
    )
    p.add_argument("--quick", action="store_true", help="200 files, 20 ingests")
    args = p.parse_args()
    if args.quick:
        args.base_files, args.ingests = 200, 20
    return args


def make_store(tmp: Path, kind: str):  # noqa: ANN201 - (KnowledgeStore, hub path)
    """Create a hub and a store pushing to it, with the chosen embedder."""
    from kbgit import KnowledgeStore, StoreConfig, create_hub
    from kbgit.embeddings import SentenceTransformerEmbedder

    hub = create_hub(tmp / "hub.git")
    if kind == "dense":
        emb, model = c.DenseFakeEmbedder(384), "fake:384"
    elif kind == "fake":
        emb, model = None, "fake:64"
    else:
        emb, model = SentenceTransformerEmbedder.bundled(), "all-MiniLM-L6-v2"
    cfg = StoreConfig(model=model, hub=str(hub))
    return KnowledgeStore.init(tmp / "kb", hub=str(hub), config=cfg, embedder=emb), hub


class Clock:
    """A progress callback that remembers when embedding finished."""

    def __init__(self) -> None:
        self.embedded = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "embed" and done == total:
            self.embedded = time.perf_counter()


def one_ingest(store, corpus: Path) -> tuple[float, float, float, int]:  # noqa: ANN001
    """Ingest then push; return (whole ingest s, commit s, push s, chunks added)."""
    clock = Clock()
    t0 = time.perf_counter()
    result = store.ingest(corpus, push=False, progress=clock)
    t1 = time.perf_counter()
    assert result.commit and not result.failed, result
    pushed = store.push()
    t2 = time.perf_counter()
    assert pushed
    return t1 - t0, t1 - (clock.embedded or t0), t2 - t1, result.chunks_added


def hub_breakdown(hub: Path) -> str:
    """Sum the stored (compressed) size of every object in the hub by what it is."""
    objs = subprocess.run(
        ["git", "-C", str(hub), "rev-list", "--objects", "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sizes = subprocess.run(
        ["git", "-C", str(hub), "cat-file", "--batch-check=%(objecttype) %(objectsize:disk)"],
        input="\n".join(line.split(" ", 1)[0] for line in objs.splitlines()) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    groups: dict[str, list[int]] = {}
    for line, meta in zip(objs.splitlines(), sizes, strict=True):
        kind, size = meta.split()
        path = line.split(" ", 1)[1] if " " in line else ""
        if kind != "blob":
            key = f"{kind}s"
        elif path.startswith("docs/"):
            key = "docs/"
        elif path.startswith("index/"):
            key = "index/"
        else:
            key = path
        groups.setdefault(key, []).append(int(size))
    return ", ".join(
        f"{k} {sum(v) / 1e6:.2f} MB ({len(v)})"
        for k, v in sorted(groups.items(), key=lambda kv: -sum(kv[1]))
    )


def report_sizes(root: Path, hub: Path, goal: float) -> None:
    """Print live data vs hub size, with a breakdown."""
    live = c.head_tree_bytes(root)
    parts = {}
    for prefix in ("docs/", "index/", "ledger.json", "manifest.json"):
        out = subprocess.run(
            ["git", "-C", str(root), "ls-tree", "-r", "-l", "HEAD", "--", prefix],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        parts[prefix] = sum(int(line.split()[3]) for line in out.splitlines())
    hub_bytes, hub_disk = c.tree_bytes(hub), c.disk_bytes(hub)
    objects = subprocess.run(
        ["git", "-C", str(hub), "count-objects", "-v"], capture_output=True, text=True, check=True
    ).stdout.replace("\n", ", ")
    print(
        f"   live data (HEAD tree): {live / 1e6:.2f} MB = "
        + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in parts.items())
    )
    print(f"   hub: {hub_bytes / 1e6:.2f} MB of files, {hub_disk / 1e6:.2f} MB on disk (du)")
    print(f"   hub objects: {objects}")
    print("   hub bytes on disk by object (zlib-compressed, all history): " + hub_breakdown(hub))
    print(c.verdict("RESULT hub size / live data (file bytes)", hub_bytes / live, goal))
    print(c.verdict("   hub size / live data (disk blocks)", hub_disk / live, goal))


def repacked(hub: Path, live: int) -> None:
    """Print the size of a copy of the hub after a delta-compressing full repack."""
    copy = hub.parent / "hub-repacked.git"
    shutil.copytree(hub, copy)
    t0 = time.perf_counter()
    subprocess.run(
        ["git", "-C", str(copy), "-c", "pack.window=10", "repack", "-a", "-d", "-f", "-q"],
        check=True,
    )
    size = c.tree_bytes(copy)
    print(
        f"   (not a goal) hub copy after `git repack -a -d -f` with pack.window=10: "
        f"{size / 1e6:.2f} MB = {size / live:.3f}x live, repack took {time.perf_counter() - t0:.1f}s"
    )


def main() -> None:
    args = parse_args()
    c.banner(f"git growth: {args.ingests} ingests adding ~{args.pct:g}% new chunks each")
    c.print_load()
    with tempfile.TemporaryDirectory(prefix="kbgit-bench-growth-") as tmp:
        tmp_path = Path(tmp)
        corpus = tmp_path / "corpus"
        store, hub = make_store(tmp_path, args.embedder)
        c.write_corpus(corpus, args.base_files, args.paras, seed=5)
        whole, commit, push, added = one_ingest(store, corpus)
        live_chunks = added
        print(
            f"   base: {args.base_files} files, {added} chunks, embedder {args.embedder}; "
            f"ingest {whole:.2f}s (commit {commit:.2f}s, push {push:.2f}s)"
        )
        next_file, rows = args.base_files, []
        per_file = added / args.base_files  # chunks a generated file makes with this embedder
        for n in range(1, args.ingests + 1):
            want = max(1, round(live_chunks * args.pct / 100))
            files = max(1, round(want / per_file))
            c.write_corpus(corpus, files, args.paras, seed=5, start=next_file)
            next_file += files
            prof = cProfile.Profile() if args.profile and n == args.ingests else None
            if prof:
                prof.enable()
            whole, commit, push, added = one_ingest(store, corpus)
            if prof:
                prof.disable()
            live_chunks += added
            rows.append((whole, commit, push))
            print(
                f"   ingest {n:2d}: +{added:3d} chunks ({100 * added / (live_chunks - added):.2f}%)"
                f" -> {live_chunks}; ingest {whole:.3f}s, commit {commit:.3f}s, "
                f"push {push:.3f}s, commit+push {commit + push:.3f}s"
            )
        w = args.window
        first = [cm + p for _, cm, p in rows[:w]]
        last = [cm + p for _, cm, p in rows[-w:]]
        print(
            f"   commit+push first {w}: mean {statistics.mean(first):.3f}s "
            f"median {c.median(first):.3f}s; last {w}: mean {statistics.mean(last):.3f}s "
            f"median {c.median(last):.3f}s"
        )
        whole_first = statistics.mean(r[0] for r in rows[:w])
        whole_last = statistics.mean(r[0] for r in rows[-w:])
        print(f"   whole ingest first {w}: mean {whole_first:.3f}s; last {w}: {whole_last:.3f}s")
        report_sizes(store.root, hub, args.size_goal)
        if args.repack:
            repacked(hub, c.head_tree_bytes(store.root))
        ratio = statistics.mean(last) / statistics.mean(first)
        print(c.verdict(f"RESULT commit+push last {w} / first {w} (means)", ratio, args.time_goal))
        print(
            c.verdict(
                f"   commit+push last {w} / first {w} (medians)",
                c.median(last) / c.median(first),
                args.time_goal,
            )
        )
        c.print_load()
        if args.profile:
            print(f"\n== cProfile of ingest {args.ingests} + push (tottime, top 25)")
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
