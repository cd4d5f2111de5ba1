"""Rollback of a ~50k-vector store 20 commits back, vs one ingest of 1% new data.

Builds a store (fake 384-d embedder, the real model's dimension) with one large ingest
and 20 small ones (each edits ~0.5% of the documents and adds ~0.5% new ones), a hub,
and a standby cloned from the hub that has loaded HEAD. Then, side by side in one run:

* rollback to HEAD~20 (verify REV, write the commit, verify it, push), then
  ingest of 1% new data (fake embedder: this is the store's own overhead; the real model
  adds ~1 s per 16 chunks on this machine kind, DESIGN.md), then a rollback of the
  rollback and another 1% ingest (two rounds: medians printed);
* standby reload after each rollback: fetch + verify + fast-forward (``pull``) and the
  snapshot load with the standby's warm segment cache, vs a cold load of the same commit;
* hub growth from a rollback: bytes stored and bytes a push transfers, vs the ledger's
  size, and whether any index file blob is new to the hub (goal: none); and the same
  for ``--linear`` rollbacks (one parent), which make git resend REV's blobs.

* ``query --rev`` of an old revision: time to its answer in a store object that has
  just answered from HEAD, and in a fresh one (cold cache, like a CLI process).

Run:  python bench/bench_rollback.py               (~50k vectors, ~3-4 min)
      python bench/bench_rollback.py --docs 4600   (~100k vectors)
      python bench/bench_rollback.py --quick       (~5k vectors, ~30 s)
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kbgit import KnowledgeStore, StoreConfig, create_hub
from kbgit.format.checks import SegmentCache
from kbgit.format.snapshot import load_snapshot
from kbgit.history.compaction import objects_size
from kbgit.history.rollback import rollback
from kbgit.retrieval.fusion import HybridOptions

WORDS = [f"w{i}" for i in range(3000)]
CHUNK = 40  # fake tokens (words) per chunk


def doc_text(rng: random.Random, chunks: int) -> str:
    """A document of about ``chunks`` chunks: paragraphs of CHUNK - 5 words."""
    paras = [" ".join(rng.choices(WORDS, k=CHUNK - 5)) for _ in range(chunks)]
    return "\n\n".join(paras) + "\n"


def write(root: Path, docs: dict[str, str]) -> None:
    for rel, text in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def timed(fn):  # noqa: ANN001, ANN201 - bench helper
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def hub_object_ids(hub: Path) -> dict[str, tuple[str, int]]:
    out = subprocess.run(
        ["git", "-C", str(hub), "cat-file", "--batch-all-objects", "--batch-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {p[0]: (p[1], int(p[2])) for p in (line.split() for line in out.splitlines())}


def pack_bytes(repo: Path, new: str, old: str) -> int:
    """Bytes of the pack a push of ``new`` to a hub at ``old`` sends."""
    objs = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--objects", new, "--not", old],
        capture_output=True,
        check=True,
    ).stdout
    pack = subprocess.run(
        ["git", "-C", str(repo), "pack-objects", "--stdout", "--window=0"],
        input=objs,
        capture_output=True,
        check=True,
    ).stdout
    return len(pack)


def build(base: Path, docs: int, chunks_per_doc: int, commits: int) -> tuple:
    rng = random.Random(7)
    hub = create_hub(base / "hub.git")
    cfg = StoreConfig(model="fake:384", chunk_size=CHUNK, chunk_overlap=0, hub=str(hub))
    kb = KnowledgeStore.init(base / "kb", hub=str(hub), config=cfg)
    src = base / "src"
    write(src, {f"d/{i:05d}.md": doc_text(rng, chunks_per_doc) for i in range(docs)})
    t, res = timed(lambda: kb.ingest(src))
    print(f"initial ingest: {res.chunks_added} vectors in {t:.1f} s")
    step = max(1, docs // 200)  # ~0.5% of the documents per commit
    for c in range(commits):
        edits = rng.sample(range(docs), step)
        write(src, {f"d/{i:05d}.md": doc_text(rng, chunks_per_doc) for i in edits})
        write(src, {f"n/{c:03d}-{j}.md": doc_text(rng, chunks_per_doc) for j in range(step)})
        kb.ingest(src)
    snap = kb.verify()
    print(
        f"store: {snap.vectors} vectors, {len(snap.ledger.documents)} docs, "
        f"{len(snap.manifest.segments)} segments, {kb.repo.count_commits('HEAD')} commits, "
        f"ledger {len(snap.ledger.to_bytes()) / 1e6:.2f} MB"
    )
    standby = KnowledgeStore.init(base / "standby", hub=str(hub), config=cfg)
    t, _ = timed(lambda: standby.snapshot())
    print(f"standby cloned, HEAD loaded cold in {t:.2f} s")
    return rng, hub, kb, src, standby, step


def measure_rollback(kb, standby, hub, target: str, linear: bool = False) -> dict:  # noqa: ANN001
    """Roll back to ``target``, then let the standby follow; return the figures."""
    old_head = kb.repo.head()
    before = hub_object_ids(hub)
    size_before = objects_size(hub)
    t_rb, res = timed(lambda: rollback(kb, target, linear=linear))
    added = {k: v for k, v in hub_object_ids(hub).items() if k not in before}
    tree = kb.repo.ls_tree(res.commit)
    row = {
        "rollback_s": t_rb,
        "hub_stored_bytes": objects_size(hub) - size_before,
        "new_objects": len(added),
        "new_object_bytes": sum(size for _kind, size in added.values()),
        "push_pack_bytes": pack_bytes(kb.root, res.commit, old_head),
        "ledger_bytes": len(kb.repo.read_file(res.commit, "ledger.json") or b""),
        "index_blobs_new": sum(1 for p, b in tree.items() if p.startswith("index/") and b in added),
    }
    t_pull, _ = timed(lambda: standby.pull())
    t_warm, snap = timed(lambda: standby.snapshot())
    t_cold, _ = timed(lambda: load_snapshot(standby.repo, "HEAD", cache=SegmentCache()))
    assert snap.commit == res.commit
    row.update(standby_pull_s=t_pull, standby_load_warm_s=t_warm, standby_load_cold_s=t_cold)
    return row


def one_round(kb, standby, hub, src, rng, commits, new_docs, per_doc, n) -> dict:  # noqa: ANN001
    """Ingest 1% new data, roll back ``commits`` commits, then roll the rollback back."""
    write(src, {f"r/{n}-{j}.md": doc_text(rng, per_doc) for j in range(new_docs)})
    size_before = objects_size(hub)
    t_ing, ing = timed(lambda: kb.ingest(src))
    row = {
        "ingest_s": t_ing,
        "ingest_vectors": ing.chunks_added,
        "ingest_hub_bytes": objects_size(hub) - size_before,
    }
    standby.pull()
    standby.snapshot()
    back = measure_rollback(kb, standby, hub, kb.repo.rev_parse(f"HEAD~{commits}"))
    again = measure_rollback(kb, standby, hub, kb.repo.rev_parse("HEAD~1"))
    row.update(back)
    row.update({f"undo_{k}": v for k, v in again.items()})
    # the same pair with one parent only (kbgit rollback --linear), for comparison
    back = measure_rollback(kb, standby, hub, kb.repo.rev_parse(f"HEAD~{commits + 2}"), True)
    row.update({f"linear_{k}": v for k, v in back.items()})
    measure_rollback(kb, standby, hub, kb.repo.rev_parse("HEAD~1"), True)
    return row


def measure_query_rev(root: Path, commits: int, text: str) -> dict:
    """Time ``query --rev HEAD~commits`` up to its answer, as the library runs it.

    * warm: a store object that has just answered from HEAD (its segment cache is warm);
    * fresh: a new store object (cold cache, like a CLI process after its imports), with
      the record of commits verified on this machine left by the warm one.
    """
    old = f"HEAD~{commits}"
    warm = KnowledgeStore(root)
    t_head, _ = timed(lambda: warm.query(text, rev="HEAD"))
    t_warm, res = timed(lambda: warm.query(text, rev=old))
    assert res.hits
    t_again, _ = timed(lambda: warm.query(text, rev=old))
    t_fresh, _ = timed(lambda: KnowledgeStore(root).query(text, rev=f"HEAD~{commits + 1}"))
    dense = HybridOptions(mode="dense")
    t_dense, _ = timed(lambda: warm.query(text, rev=f"HEAD~{commits + 2}", options=dense))
    return {
        "query_head_first_s": t_head,
        "query_rev_warm_s": t_warm,
        "query_rev_again_s": t_again,
        "query_rev_fresh_s": t_fresh,
        "query_rev_dense_s": t_dense,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~5k vectors instead of ~50k")
    ap.add_argument("--commits", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--docs", type=int, help="documents of the first ingest (default 2,000)")
    args = ap.parse_args()
    docs = args.docs or (500 if args.quick else 2000)
    per_doc = 10 if args.quick else 22
    with tempfile.TemporaryDirectory(prefix="kbgit-bench-rollback-") as tmp:
        base = Path(tmp)
        rng, hub, kb, src, standby, _step = build(base, docs, per_doc, args.commits)
        new_docs = max(1, round(kb.verify().vectors * 0.01 / per_doc))
        rows = [
            one_round(kb, standby, hub, src, rng, args.commits, new_docs, per_doc, n)
            for n in range(args.rounds)
        ]
        report(rows)
        q = measure_query_rev(kb.root, args.commits, " ".join(WORDS[:8]))
        print(
            f"query --rev HEAD~{args.commits} (fake embedder): {q['query_rev_warm_s']:.3f} s "
            f"after answering from HEAD ({q['query_head_first_s']:.3f} s), "
            f"{q['query_rev_again_s']:.3f} s asked again; a fresh store object (cold cache, "
            f"like the CLI after its imports): {q['query_rev_fresh_s']:.3f} s; dense only "
            f"(no BM25 index to build), another revision: {q['query_rev_dense_s']:.3f} s"
        )


def report(rows: list[dict]) -> None:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print("\nper round:")
    for r in rows:
        print(
            "  "
            + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
            )
        )
    print(
        f"\nrollback 20 commits back: {med['rollback_s']:.2f} s; rolling that rollback back: "
        f"{med['undo_rollback_s']:.2f} s (medians of {len(rows)} rounds)"
    )
    print(
        f"ingest of 1% new data ({int(med['ingest_vectors'])} vectors, fake embedder): "
        f"{med['ingest_s']:.2f} s -> rollback/ingest = {med['rollback_s'] / med['ingest_s']:.2f}"
    )
    real_embed = med["ingest_vectors"] / 16.0
    print(
        f"  with the real model the ingest would add ~{real_embed:.0f} s of embedding "
        f"(16 chunks/s, DESIGN.md): rollback/ingest ~ "
        f"{med['rollback_s'] / (med['ingest_s'] + real_embed):.3f}"
    )
    print(
        f"standby after a rollback: pull (fetch+verify+ff) {med['standby_pull_s']:.2f} s, "
        f"load warm {med['standby_load_warm_s']:.3f} s vs cold {med['standby_load_cold_s']:.2f} s"
    )
    print(
        f"hub growth per rollback: stored {med['hub_stored_bytes'] / 1e3:.1f} kB, new objects "
        f"{int(med['new_objects'])} ({med['new_object_bytes'] / 1e3:.1f} kB), push pack "
        f"{med['push_pack_bytes'] / 1e6:.2f} MB; ledger {med['ledger_bytes'] / 1e6:.2f} MB "
        f"-> stored/ledger = {med['hub_stored_bytes'] / med['ledger_bytes']:.3f}"
    )
    print(
        f"  same rollback with --linear (one parent): {med['linear_rollback_s']:.2f} s, hub "
        f"stored {med['linear_hub_stored_bytes'] / 1e3:.1f} kB, push pack "
        f"{med['linear_push_pack_bytes'] / 1e6:.2f} MB; "
        f"standby pull {med['linear_standby_pull_s']:.2f} s"
    )
    new_index = max(r[k] for r in rows for k in ("index_blobs_new", "undo_index_blobs_new"))
    print(
        f"index files new to the hub after a rollback: {new_index} "
        f"(goal 0); an ingest of 1% stored {med['ingest_hub_bytes'] / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
