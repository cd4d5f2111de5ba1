"""LangChain anchor: kbgit ingest vs LangChain index() + FAISS + save_local, same corpus.

Goal (issue 2): kbgit time (git commit and push to a hub included) <= 1.0x LangChain's.

LangChain side, timed: DirectoryLoader(TextLoader) -> RecursiveCharacterTextSplitter
sized by the model's own tokenizer (same 200/30 tokens as kbgit) -> ``index()`` with
``SQLRecordManager`` (sqlite file) and ``cleanup="full"`` into a langchain-community FAISS
-> ``save_local``. kbgit side, timed: ``KnowledgeStore.ingest`` (scan, hash, load, chunk,
embed, write segments, git commit, git push to a bare hub).

Both sides run in this process with the same all-MiniLM-L6-v2 files, the same torch thread
count, encode batch size 32, normalized vectors. Model and tokenizer loads are EXCLUDED
from both sides (loaded and warmed on the corpus before timing); creating the empty
store+hub / empty FAISS+record-manager schema is not timed either. Rounds are ABBA.

Run:  python bench/bench_langchain_anchor.py            (~300 chunks, 3 rounds, ~4 min)
      python bench/bench_langchain_anchor.py --quick    (~60 chunks, 1 round)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import _common as c


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=75, help="documents (4 chunks each by default)")
    p.add_argument("--paras", type=int, default=4, help="paragraphs (~1 chunk each) per document")
    p.add_argument("--rounds", type=int, default=3, help="ABBA rounds")
    p.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    p.add_argument("--batch-size", type=int, default=32, help="encode batch size (both sides)")
    p.add_argument(
        "--embedder",
        choices=["real", "dense"],
        default="real",
        help="dense: same pipelines, vectors from a hash (no model), token counts still real;"
        " isolates what each side costs besides embedding",
    )
    p.add_argument("--goal", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="~60 chunks, 1 round")
    args = p.parse_args()
    if args.quick:
        args.files, args.rounds = 15, 1
    return args


def import_langchain():  # noqa: ANN201 - a namespace of classes
    """Find index() and SQLRecordManager wherever the installed versions keep them."""
    import types

    try:
        from langchain_core.indexing import index
    except ImportError:  # older stacks
        from langchain.indexes import index  # type: ignore[no-redef]
    try:
        from langchain_classic.indexes import SQLRecordManager
    except ImportError:
        try:
            from langchain.indexes import SQLRecordManager  # type: ignore[no-redef]
        except ImportError:
            from langchain_community.indexes import SQLRecordManager  # type: ignore[no-redef]
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.document_loaders import DirectoryLoader, TextLoader
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_community.vectorstores import FAISS
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return types.SimpleNamespace(
        index=index,
        SQLRecordManager=SQLRecordManager,
        InMemoryDocstore=InMemoryDocstore,
        DirectoryLoader=DirectoryLoader,
        TextLoader=TextLoader,
        HuggingFaceEmbeddings=HuggingFaceEmbeddings,
        FAISS=FAISS,
        Splitter=RecursiveCharacterTextSplitter,
    )


class Anchor:
    """Both pipelines over one corpus, with models loaded once."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import torch

        from kbgit.embeddings import SentenceTransformerEmbedder

        self.args, self.tmp, self.n = args, tmp, 0
        self.corpus = tmp / "corpus"
        c.write_corpus(self.corpus, args.files, args.paras, seed=3)
        torch.set_num_threads(args.threads)
        self.lc = import_langchain()
        self.chunks = {"kbgit": 0, "langchain": 0}
        self.emb = SentenceTransformerEmbedder.bundled(batch_size=args.batch_size)
        if args.embedder == "dense":
            from langchain_core.embeddings import Embeddings
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.emb.path)
            dense = c.DenseFakeEmbedder(384, count_tokens=self.emb.count_tokens)

            class DenseEmbeddings(Embeddings):
                def embed_documents(self, texts: list[str]) -> list[list[float]]:
                    return dense.embed(texts).tolist()

                def embed_query(self, text: str) -> list[float]:
                    return dense.embed([text])[0].tolist()

            self.emb, self.lc_emb = dense, DenseEmbeddings()
            return
        self.emb.load()
        with warnings.catch_warnings():  # deprecated for langchain-huggingface, not installed
            warnings.simplefilter("ignore")
            self.lc_emb = self.lc.HuggingFaceEmbeddings(
                model_name=self.emb.path,
                model_kwargs={"device": "cpu"},
                encode_kwargs={"batch_size": args.batch_size, "normalize_embeddings": True},
            )
        self.tokenizer = self.lc_emb.client.tokenizer

    def kbgit(self) -> tuple[float, float]:
        """Time one kbgit ingest into a fresh store that pushes to a fresh hub."""
        from kbgit import KnowledgeStore, StoreConfig, create_hub

        self.n += 1
        hub = create_hub(self.tmp / f"hub-{self.n}.git")
        cfg = StoreConfig(batch_size=self.args.batch_size, hub=str(hub))
        store = KnowledgeStore.init(
            self.tmp / f"kb-{self.n}", hub=str(hub), config=cfg, embedder=self.emb
        )
        with c.Stopwatch() as sw:
            result = store.ingest(self.corpus)
        assert result.commit and result.pushed and not result.failed, result
        self.chunks["kbgit"] = result.chunks_added
        return sw.wall, sw.cpu

    def langchain(self) -> tuple[float, float]:
        """Time load + split + index(cleanup='full') + FAISS.save_local into fresh stores."""
        import faiss

        lc = self.lc
        self.n += 1
        manager = lc.SQLRecordManager(
            f"faiss/bench-{self.n}", db_url=f"sqlite:///{self.tmp / f'records-{self.n}.sqlite'}"
        )
        manager.create_schema()
        vstore = lc.FAISS(
            embedding_function=self.lc_emb,
            index=faiss.IndexFlatL2(self.emb.dim),
            docstore=lc.InMemoryDocstore(),
            index_to_docstore_id={},
        )
        sw = c.Stopwatch().__enter__()
        loader = lc.DirectoryLoader(
            str(self.corpus),
            glob="**/*.*",
            loader_cls=lc.TextLoader,
            loader_kwargs={"encoding": "utf-8"},
        )
        splitter = lc.Splitter.from_huggingface_tokenizer(
            self.tokenizer, chunk_size=200, chunk_overlap=30
        )
        chunks = splitter.split_documents(loader.load())
        stats = lc.index(chunks, manager, vstore, cleanup="full", source_id_key="source")
        vstore.save_local(str(self.tmp / f"faiss-{self.n}"))
        sw.__exit__()
        assert stats["num_added"] == len(chunks) > 0, stats
        self.chunks["langchain"] = len(chunks)
        return sw.wall, sw.cpu


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    c.banner("LangChain anchor: kbgit ingest vs index() + SQLRecordManager + FAISS.save_local")
    c.print_load()
    with tempfile.TemporaryDirectory(prefix="kbgit-bench-lc-") as tmp:
        bench = Anchor(args, Path(tmp))
        print(
            f"   corpus: {args.files} files x {args.paras} paragraphs; all-MiniLM-L6-v2; "
            f"torch threads {args.threads}; batch size {args.batch_size}; model load EXCLUDED; "
            f"embedder {args.embedder}"
        )
        bench.kbgit(), bench.langchain()  # warm-up on this very corpus, not counted
        print(f"   chunks: kbgit {bench.chunks['kbgit']}, langchain {bench.chunks['langchain']}")
        sides = {"kbgit": bench.kbgit, "langchain": bench.langchain}
        ratios = c.abba("anchor", sides, args.rounds, args.goal)
        for kind, ratio in ratios.items():
            print(c.verdict(f"RESULT kbgit/langchain ({kind})", ratio, args.goal))
        c.print_load()


if __name__ == "__main__":
    main()
