"""LangChain integration costs, measured side by side with langchain-community FAISS.

All with the real all-MiniLM-L6-v2 (one loaded copy, shared by both sides) and 1 faiss thread:

1. write:   KbgitVectorStore.add_texts(N texts) (embed + ledger + segment + commit + push)
            vs FAISS.from_texts(N texts) + save_local, same texts, same model.
2. migrate: import-langchain of that FAISS folder keeping vectors vs re-embedding them
            (--source-model naming another model), and export-langchain.
3. query:   similarity_search (embed + search) and similarity_search_by_vector (search
            only) on kbgit vs FAISS over the same N vectors, median of Q queries.
4. commits: with the fake embedder, N/10 single-text add_texts calls vs one call: the
            per-call commit cost that "batch your writes" is about.

Run:  python bench/bench_langchain.py            (N=300 chunks, ~3 min)
      python bench/bench_langchain.py --quick    (N=60 chunks)
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import _common as c


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chunks", type=int, default=300, help="texts written and imported")
    p.add_argument("--queries", type=int, default=40, help="queries timed per side")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quick", action="store_true", help="60 chunks, 15 queries")
    args = p.parse_args()
    if args.quick:
        args.chunks, args.queries = 60, 15
    return args


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def bench_write(tmp: Path, texts: list[str], emb, lc_emb) -> tuple:  # noqa: ANN001
    from langchain_community.vectorstores import FAISS

    from kbgit import create_hub
    from kbgit.langchain import KbgitVectorStore

    metas = [{"n": i} for i in range(len(texts))]
    folder = tmp / "chatchat" / "ops" / "vector_store" / "all-MiniLM-L6-v2"
    t_faiss, faiss_vs = timed(FAISS.from_texts, texts, lc_emb, metadatas=metas)
    t_save, _ = timed(faiss_vs.save_local, str(folder))
    hub = create_hub(tmp / "hub.git")
    vs = KbgitVectorStore.open(tmp / "kb", emb, hub=str(hub))
    t_kb, _ = timed(vs.add_texts, texts, metas)
    faiss_total = t_faiss + t_save
    print(
        f"write {len(texts)} texts: kbgit {t_kb:.2f} s (1 commit, pushed) | "
        f"FAISS {faiss_total:.2f} s (from_texts {t_faiss:.2f} + save_local {t_save:.3f})"
    )
    print(f"   ratio kbgit / FAISS = {t_kb / faiss_total:.3f}")
    return vs, faiss_vs, folder


def bench_migrate(tmp: Path, folder: Path, emb) -> None:  # noqa: ANN001
    from kbgit import StoreConfig
    from kbgit.langchain.interop import export_langchain, import_langchain

    cfg = StoreConfig()
    t_keep, res = timed(import_langchain, folder.parent.parent, tmp / "imp-keep",
                        trust_pickle=True, config=cfg, embedder=emb)  # fmt: skip
    assert res.kept_vectors
    t_re, res = timed(import_langchain, folder, tmp / "imp-re", trust_pickle=True,
                      source_model="bge-small-zh", config=cfg, embedder=emb)  # fmt: skip
    assert not res.kept_vectors
    from kbgit import KnowledgeStore

    t_exp, _ = timed(export_langchain, KnowledgeStore(tmp / "imp-keep", embedder=emb),
                     tmp / "export")  # fmt: skip
    print(
        f"import {res.documents} docs: vectors kept {t_keep:.2f} s | re-embedded {t_re:.2f} s"
        f" | export {t_exp:.2f} s"
    )
    print(f"   ratio re-embed / keep = {t_re / t_keep:.1f}x")


def bench_query(vs, faiss_vs, emb, queries: list[str]) -> None:  # noqa: ANN001
    rows = {"search": [], "faiss_search": [], "by_vector": [], "faiss_by_vector": []}
    vecs = [emb.embed([q])[0] for q in queries]
    vs.similarity_search(queries[0], k=5)  # load the snapshot once (cached per commit)
    for q, v in zip(queries, vecs, strict=True):  # interleaved, so noise hits both sides
        rows["search"].append(timed(vs.similarity_search, q, k=5)[0])
        rows["faiss_search"].append(timed(faiss_vs.similarity_search, q, k=5)[0])
        rows["by_vector"].append(timed(vs.similarity_search_by_vector, v, k=5)[0])
        rows["faiss_by_vector"].append(
            timed(faiss_vs.similarity_search_by_vector, v.tolist(), 5)[0]
        )
    med = {k: statistics.median(v) * 1000 for k, v in rows.items()}
    print(
        f"query (median of {len(queries)}): similarity_search kbgit {med['search']:.2f} ms | "
        f"FAISS {med['faiss_search']:.2f} ms; by_vector kbgit {med['by_vector']:.2f} ms | "
        f"FAISS {med['faiss_by_vector']:.2f} ms"
    )
    print(
        f"   ratio kbgit / FAISS: with embedding {med['search'] / med['faiss_search']:.2f}, "
        f"search only {med['by_vector'] / med['faiss_by_vector']:.1f} "
        f"(+{med['by_vector'] - med['faiss_by_vector']:.2f} ms: HEAD check per call)"
    )


def bench_commits(tmp: Path, texts: list[str]) -> None:
    from kbgit import KnowledgeStore, StoreConfig, create_hub
    from kbgit.langchain import KbgitVectorStore

    n = max(5, len(texts) // 10)
    cfg = StoreConfig(model="fake:64")
    one = KbgitVectorStore(KnowledgeStore.init(tmp / "c1", hub=str(create_hub(tmp / "h1.git")),
                                               config=cfg))  # fmt: skip
    many = KbgitVectorStore(KnowledgeStore.init(tmp / "c2", hub=str(create_hub(tmp / "h2.git")),
                                                config=cfg))  # fmt: skip
    t_one, _ = timed(one.add_texts, texts[:n])
    t0 = time.perf_counter()
    for t in texts[:n]:
        many.add_texts([t])
    t_many = time.perf_counter() - t0
    print(
        f"commits (fake embedder, {n} texts): one call {t_one * 1000:.0f} ms | {n} calls "
        f"{t_many * 1000:.0f} ms = {t_many / n * 1000:.0f} ms per commit+push"
    )
    print(f"   ratio per-text calls / one batch = {t_many / t_one:.1f}x")


def main() -> None:
    args = parse_args()
    import faiss
    import torch

    from kbgit import SentenceTransformerEmbedder
    from kbgit.langchain import KbgitEmbeddings

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(1)
    c.banner(f"LangChain integration: {args.chunks} chunks, {args.threads} torch thread(s)")
    rng = random.Random(6)
    texts = [c.paragraph(rng, 2) for _ in range(args.chunks)]
    queries = [c.paragraph(rng, 1)[:80] for _ in range(args.queries)]
    emb = SentenceTransformerEmbedder.bundled()
    emb.load()
    emb.embed(["warm up"])
    with tempfile.TemporaryDirectory(prefix="kbgit-bench-lc-") as d:
        tmp = Path(d)
        vs, faiss_vs, folder = bench_write(tmp, texts, emb, KbgitEmbeddings(emb))
        bench_migrate(tmp, folder, emb)
        bench_query(vs, faiss_vs, emb, queries)
        bench_commits(tmp, texts)


if __name__ == "__main__":
    main()
