"""Hybrid retrieval in the library: BM25 per segment with global IDF, modes, filters, --rev."""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np
import pytest

from kbgit import KnowledgeStore
from kbgit.errors import QueryError
from kbgit.retrieval.fusion import HybridOptions
from kbgit.retrieval.tokenize import tokenize

from .conftest import write_docs

LEX = HybridOptions(mode="lexical")
DENSE = HybridOptions(mode="dense")
HYBRID = HybridOptions(mode="hybrid")
MODES = (DENSE, LEX, HYBRID)

#: the answer names an identifier once, inside prose that shares no words with the question
POOL_DOC = (
    "Executors recycle their worker processes. Setting max_tasks_per_child replaces each "
    "worker after that many jobs, which bounds memory leaks in long running services. "
    "Workers start lazily, consume queued jobs in order and report exceptions back."
)
#: distractors full of the question's common words
DISTRACTORS = {
    f"pool/d{i}.md": f"What does the pool do? The pool does work. What does it do in the pool? "
    f"It does what the pool does, item {i}."
    for i in range(20)
}


def live_rows(store: KnowledgeStore, rev: str = "HEAD") -> list:
    """Return the live rows of ``rev`` in index order."""
    return [row for _seg, row in store.snapshot(rev).index.rows()]


def bm25s_scores(rows: list, query: str) -> dict[str, float]:
    """Score ``query`` over ``rows`` with bm25s itself (one index, Lucene BM25)."""
    ref = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    ref.index([tokenize(r.text) for r in rows], show_progress=False)
    scores = ref.get_scores(tokenize(query))
    return {r.id: float(s) for r, s in zip(rows, scores, strict=True) if s > 0}


def test_bm25_over_segments_equals_bm25s_over_live_rows(store: KnowledgeStore, tmp_path) -> None:
    docs = write_docs(tmp_path / "d", {"a.md": "alpha beta gamma. " * 3, "b.md": "beta delta"})
    store.ingest(docs)
    write_docs(docs, {"c.md": "alpha alpha epsilon", "d.md": "gamma zeta beta alpha"})
    store.ingest(docs)
    (docs / "b.md").unlink()  # its chunk is tombstoned in the first segment
    write_docs(docs, {"e.md": "zeta beta beta"})
    store.ingest(docs)
    snap = store.snapshot()
    assert len(snap.manifest.segments) == 3
    rows = live_rows(store)
    for query in ("alpha beta", "zeta", "delta gamma"):
        want = bm25s_scores(rows, query)
        got = {m.row.id: m.score for m in store.lexical.get(snap).search(query, 100)}
        assert got.keys() == want.keys()
        for cid, score in want.items():
            assert got[cid] == pytest.approx(score, rel=1e-5)
    # the deleted document's only term matches nothing any more
    assert store.query("delta", 5, options=LEX).hits == []


def test_the_stopwords_are_bm25s_english_list() -> None:
    from bm25s.stopwords import STOPWORDS_EN as WANT

    from kbgit.retrieval.tokenize import STOPWORDS_EN

    assert frozenset(WANT) == STOPWORDS_EN


def test_lexical_finds_an_identifier_that_dense_misses(store: KnowledgeStore, tmp_path) -> None:
    store.ingest(write_docs(tmp_path / "d", {"pool/answer.md": POOL_DOC, **DISTRACTORS}))
    question = "What does max_tasks_per_child do in the pool?"
    dense = store.query(question, 3, options=DENSE).hits
    lexical = store.query(question, 3, options=LEX).hits
    hybrid = store.query(question, 30, options=HYBRID).hits
    assert "pool/answer.md" not in [h.source for h in dense]
    assert lexical[0].source == "pool/answer.md"
    found = next(h for h in hybrid if h.source == "pool/answer.md")
    assert found.retrievers["lexical"] == 1


CHINESE = {
    "zh/lock.md": "知识库同一时刻只能有一个写入者。主节点上的文件锁防止多个节点同时写入，"
    "中心仓库拒绝非快进推送。",
    "zh/nav.md": "首页 | 文档 | 博客 | 关于我们 | 联系方式",
    "zh/weather.md": "今天天气晴朗，适合出门散步和骑自行车。",
    "en/lock.md": "Only one writer at a time: a file lock on the primary.",
}


@pytest.mark.parametrize("cjk", ["jieba", "bigram"])
def test_a_chinese_question_finds_its_passage(tmp_path, hub, cjk: str) -> None:
    from kbgit.retrieval.search import LexicalIndexes

    from .conftest import FAKE_CONFIG

    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=FAKE_CONFIG)
    store.lexical = LexicalIndexes(cjk=cjk)
    store.ingest(write_docs(tmp_path / "d", CHINESE))
    for opts in (LEX, HYBRID):
        hits = store.query("如何防止多个节点同时写入", 2, options=opts).hits
        assert hits[0].source == "zh/lock.md", (opts.mode, cjk, hits)
        assert "lexical" in hits[0].retrievers


def test_deleted_and_updated_documents_never_match(store: KnowledgeStore, tmp_path) -> None:
    docs = write_docs(
        tmp_path / "d",
        {"zoo.md": "The quokka smiles.", "farm.md": "The zebra grazes.", "x.md": "Unrelated."},
    )
    old = store.ingest(docs).commit
    (docs / "zoo.md").unlink()
    write_docs(docs, {"farm.md": "The horse grazes."})
    store.ingest(docs)
    for opts in MODES:
        for word in ("quokka", "zebra"):
            hits = store.query(word, 10, options=opts).hits
            assert all(word not in h.text and h.source != "zoo.md" for h in hits), opts.mode
    # the old revision still has them, with its own statistics
    assert store.query("quokka", 1, rev=old, options=LEX).hits[0].source == "zoo.md"


def test_a_query_at_rev_uses_that_versions_statistics(store: KnowledgeStore, tmp_path) -> None:
    docs = write_docs(tmp_path / "d", {"a.md": "alpha beta", "b.md": "gamma delta"})
    first = store.ingest(docs).commit
    write_docs(docs, {f"more{i}.md": f"alpha filler {i}" for i in range(8)})
    store.ingest(docs)
    at_first = store.query("alpha", 1, rev=first, options=LEX).hits[0]
    at_head = store.query("alpha", 10, options=LEX).hits
    want_first = bm25s_scores(live_rows(store, first), "alpha")
    want_head = bm25s_scores(live_rows(store), "alpha")
    assert at_first.score == pytest.approx(want_first[at_first.chunk_id], rel=1e-5)
    head_a = next(h for h in at_head if h.source == "a.md")
    assert head_a.score == pytest.approx(want_head[head_a.chunk_id], rel=1e-5)
    assert head_a.score < at_first.score  # alpha is common at HEAD: lower IDF


def test_hybrid_ranking_is_deterministic_and_reports_ranks(store, tmp_path) -> None:
    store.ingest(write_docs(tmp_path / "d", {"pool/answer.md": POOL_DOC, **DISTRACTORS}))
    question = "what does the pool do with worker processes"
    runs = [store.query(question, 5, options=HYBRID).hits for _ in range(3)]
    fresh = KnowledgeStore(store.root).query(question, 5, options=HYBRID).hits
    assert all([h.chunk_id for h in r] == [h.chunk_id for h in fresh] for r in runs)
    dense = [h.chunk_id for h in store.query(question, 100, options=DENSE).hits]
    lexical = [h.chunk_id for h in store.query(question, 100, options=LEX).hits]
    for hit in fresh:
        assert hit.retrievers, hit
        if "dense" in hit.retrievers:
            assert dense[hit.retrievers["dense"] - 1] == hit.chunk_id
        if "lexical" in hit.retrievers:
            assert lexical[hit.retrievers["lexical"] - 1] == hit.chunk_id
    assert np.all(np.diff([h.score for h in fresh]) <= 0)


def test_source_filter_applies_in_every_mode(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    for opts in MODES:
        hits = store.query("keys shifts VPN backups", 10, source="guide/", options=opts).hits
        assert hits and {h.source for h in hits} <= {"guide/vpn.md", "guide/oncall.txt"}


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "fuzzy"},
        {"alpha": 1.5},
        {"alpha": float("nan")},
        {"depth": 0},
        {"rrf_k": 0},
        {"fusion": "max"},
    ],
)
def test_bad_options_are_refused_with_a_reason(kw: dict) -> None:
    with pytest.raises(QueryError, match=next(iter(kw))):
        HybridOptions(**kw)


def test_fusions_score_as_documented() -> None:
    from kbgit.retrieval.fusion import fuse

    lists = {"dense": [("a", 0.9), ("b", 0.5), ("c", 0.1)], "lexical": [("c", 9.0), ("d", 3.0)]}
    rrf = {f.key: f for f in fuse(lists, HybridOptions(alpha=0.4, rrf_k=2))}
    assert rrf["c"].score == pytest.approx(0.4 / 5 + 0.6 / 3)  # dense rank 3, lexical rank 1
    assert rrf["a"].score == pytest.approx(0.4 / 3) and rrf["c"].ranks == {"dense": 3, "lexical": 1}
    dbsf = {f.key: f.score for f in fuse(lists, HybridOptions(fusion="dbsf", alpha=0.5))}
    sd = float(np.std([0.9, 0.5, 0.1]))
    dense_a = (0.9 - (0.5 - 3 * sd)) / (6 * sd)
    lex_d = (3.0 - (6.0 - 3 * 3.0)) / 18.0  # lexical mean 6, sd 3
    assert dbsf["a"] == pytest.approx(0.5 * dense_a)  # no lexical score: counts 0
    assert dbsf["d"] == pytest.approx(0.5 * lex_d)
    assert [f.key for f in fuse(lists, HybridOptions(fusion="dbsf"))][0] == "c"


def test_bad_k_is_refused_in_every_mode(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    for opts in MODES:
        with pytest.raises(QueryError, match="k must be"):
            store.query("keys", 0, options=opts)


def test_a_new_segment_is_the_only_lexical_work_of_a_swap(store, tmp_path) -> None:
    from kbgit.serving.service import KnowledgeService

    docs = write_docs(tmp_path / "d", {f"f{i}.md": f"topic {i} words" for i in range(5)})
    store.ingest(docs)
    svc = KnowledgeService("t", store.root)
    svc.reload()
    assert svc.lexical.terms.built == 1
    write_docs(docs, {"new.md": "fresh topic"})
    (docs / "f0.md").unlink()
    store.ingest(docs)
    svc.reload()
    assert svc.lexical.terms.built == 2  # only the new segment; f0's removal is a mask
    assert svc.query("fresh", 1, options=LEX).hits[0].source == "new.md"
    assert svc.query("topic 0", 10, options=LEX).hits[0].source != "f0.md"


def _lexical_entries(store: KnowledgeStore, tmp_path: Path):
    """A store of two segments served once (its lexical cache written); return the service."""
    from kbgit.serving.service import KnowledgeService

    docs = write_docs(tmp_path / "d", {"a.md": "alpha beta", "b.md": "gamma delta"})
    store.ingest(docs)
    write_docs(docs, {"c.md": "alpha epsilon"})
    store.ingest(docs)
    first = KnowledgeService("t", store.root)
    first.reload()
    return first


def test_a_restart_reads_term_matrices_from_the_checked_disk_cache(store, tmp_path) -> None:
    from kbgit.serving.service import KnowledgeService

    first = _lexical_entries(store, tmp_path)
    want = [(h.chunk_id, h.score) for h in first.query("alpha", 5, options=LEX).hits]
    assert first.lexical.terms.built == 2
    again = KnowledgeService("t", store.root)  # a restart: nothing tokenized again
    again.reload()
    assert (again.lexical.terms.built, again.lexical.terms.loaded) == (0, 2)
    assert [(h.chunk_id, h.score) for h in again.query("alpha", 5, options=LEX).hits] == want
    cached = sorted((store.root / ".git" / "kbgit-lexical").glob("*.npz"))
    assert len(cached) == 2
    cached[0].write_bytes(cached[0].read_bytes()[:-7] + b"garbage")  # fails its checksum
    third = KnowledgeService("t", store.root)
    third.reload()
    assert (third.lexical.terms.built, third.lexical.terms.loaded) == (1, 1)
    assert [(h.chunk_id, h.score) for h in third.query("alpha", 5, options=LEX).hits] == want


def test_the_disk_cache_keeps_the_served_segments_and_a_few_recent_others(store, tmp_path) -> None:
    import os

    from kbgit.history.compaction import compact
    from kbgit.serving.service import KnowledgeService

    docs = tmp_path / "d"
    for i, word in enumerate(("red", "green", "blue", "amber")):  # four ingests, four segments
        write_docs(docs, {f"f{i}.md": f"alpha {word} words"})
        store.ingest(docs)
    cache = store.root / ".git" / "kbgit-lexical"
    svc = KnowledgeService("t", store.root)
    svc.lexical.terms.spare = 1
    svc.reload()
    old = sorted(cache.glob("*.npz"))
    assert len(old) == 4 and len(list(cache.glob("*.sha256"))) == 4
    for n, path in enumerate(old):  # distinct last-use times: old[3] is the most recent
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
    compact(store)  # one new segment; the four old ones are no longer served
    snap = svc.reload()
    (served,) = snap.manifest.segments
    kept = sorted(p.name for p in cache.glob("*.npz"))
    assert kept == sorted([f"{served.rows.sha256}-jieba.npz", old[3].name])
    assert sorted(p.stem for p in cache.glob("*.sha256")) == sorted(p[:-4] for p in kept)
    want = [h.source for h in svc.query("green", 2, options=LEX).hits]
    again = KnowledgeService("t", store.root)  # a restart reads the served entry
    again.reload()
    assert (again.lexical.terms.built, again.lexical.terms.loaded) == (0, 1)
    assert [h.source for h in again.query("green", 2, options=LEX).hits] == want
    assert want == ["f1.md"]


def test_a_store_process_keeps_on_disk_what_it_used_plus_a_few_others(store, tmp_path) -> None:
    from kbgit.history.compaction import compact

    cache = store.root / ".git" / "kbgit-lexical"

    def query_in_a_new_process() -> set[str]:
        kb = KnowledgeStore(store.root)
        kb.lexical.terms.spare = 0
        assert kb.query("alpha", 1, options=LEX).hits
        return {p.name for p in cache.glob("*.npz")}

    docs = write_docs(tmp_path / "d", {"a.md": "alpha red"})
    store.ingest(docs)
    assert len(query_in_a_new_process()) == 1
    write_docs(docs, {"b.md": "alpha green"})
    store.ingest(docs)
    assert len(query_in_a_new_process()) == 2  # both segments are in use
    compact(store)
    (seg,) = store.snapshot().manifest.segments
    assert query_in_a_new_process() == {f"{seg.rows.sha256}-jieba.npz"}


def test_a_standby_caches_lexical_terms_in_the_replica_it_cloned(store, docs, tmp_path) -> None:
    from kbgit.serving.follower import Follower
    from kbgit.serving.service import KnowledgeService

    store.ingest(docs)
    replica = tmp_path / "replica"  # not there yet: the follower clones it after start
    svc = KnowledgeService("t", replica)
    follower = Follower(svc, hub=store.config.hub)
    follower.open()
    assert follower.sync_once().status == "updated"
    assert sorted((replica / ".git" / "kbgit-lexical").glob("*.npz"))
    again = KnowledgeService("t", replica)  # a restarted standby reads them back
    again.reload()
    assert again.lexical.terms.built == 0 and again.lexical.terms.loaded >= 1


def test_a_long_lived_store_keeps_in_memory_only_the_terms_of_the_indexes_it_keeps(
    store, tmp_path
) -> None:
    from kbgit.history.compaction import compact
    from kbgit.retrieval.search import KEEP_INDEXES

    docs = tmp_path / "d"
    for i in range(KEEP_INDEXES + 2):  # one segment per ingest; compaction then replaces them
        write_docs(docs, {f"f{i}.md": f"alpha word{i}"})
        store.ingest(docs)
        compact(store)
        assert store.query("alpha", 1, options=LEX).hits
    # a library process (a LangChain app) that queries every new commit: the terms of
    # segments no kept index uses are forgotten, not held for the life of the process
    kept = {seg.rows.sha256 for seg in store.snapshot().manifest.segments}
    assert len(store.lexical.terms.keys()) <= KEEP_INDEXES
    keys = store.lexical.terms.keys()  # a method: the cache is not a dict
    assert {sha for sha, _ in keys} >= kept


def test_a_fifo_or_symlink_in_the_lexical_cache_is_neither_read_nor_followed(
    store, tmp_path
) -> None:
    import os
    import threading

    from kbgit.serving.service import KnowledgeService

    first = _lexical_entries(store, tmp_path)
    want = [(h.chunk_id, h.score) for h in first.query("alpha", 5, options=LEX).hits]
    one, two = sorted((store.root / ".git" / "kbgit-lexical").glob("*.npz"))
    outside = tmp_path / "outside.npz"
    outside.write_bytes(one.read_bytes())
    one.unlink()
    one.symlink_to(outside)
    two.unlink()
    os.mkfifo(two)
    again = KnowledgeService("t", store.root)
    worker = threading.Thread(target=again.reload, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "reading the lexical cache blocked on a FIFO"
    assert (again.lexical.terms.built, again.lexical.terms.loaded) == (2, 0)
    assert [(h.chunk_id, h.score) for h in again.query("alpha", 5, options=LEX).hits] == want
    assert one.is_file() and not one.is_symlink() and two.is_file()


def test_a_lexical_entry_of_the_wrong_array_types_is_rebuilt(store, tmp_path) -> None:
    import io

    from kbgit.fsio import cache_digest
    from kbgit.serving.service import KnowledgeService

    first = _lexical_entries(store, tmp_path)
    want = [(h.chunk_id, h.score) for h in first.query("alpha", 5, options=LEX).hits]
    for npz in (store.root / ".git" / "kbgit-lexical").glob("*.npz"):
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["lengths"] = arrays["lengths"].astype(str)  # sizes right, types wrong
        arrays["indices"] = arrays["indices"].astype(np.float64)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        npz.write_bytes(buf.getvalue())  # with a checksum that holds: only the types are bad
        npz.with_suffix(".sha256").write_text(cache_digest(npz.stem, buf.getvalue()))
    again = KnowledgeService("t", store.root)
    again.reload()
    assert (again.lexical.terms.built, again.lexical.terms.loaded) == (2, 0)
    assert [(h.chunk_id, h.score) for h in again.query("alpha", 5, options=LEX).hits] == want


class _Boom:
    """Unpickling this creates a file: proof that a cache entry ran code."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_lexical_entry_holding_pickled_objects_is_never_unpickled(store, tmp_path) -> None:
    import io

    from kbgit.fsio import cache_digest
    from kbgit.serving.service import KnowledgeService

    first = _lexical_entries(store, tmp_path)
    want = [(h.chunk_id, h.score) for h in first.query("alpha", 5, options=LEX).hits]
    boom = _Boom()
    boom.marker = tmp_path / "ran"
    for npz in (store.root / ".git" / "kbgit-lexical").glob("*.npz"):
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["ids"] = np.array([boom] * len(arrays["ids"]), dtype=object)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # numpy pickles object arrays
        npz.write_bytes(buf.getvalue())
        npz.with_suffix(".sha256").write_text(cache_digest(npz.stem, buf.getvalue()))
    again = KnowledgeService("t", store.root)
    again.reload()
    assert not boom.marker.exists()
    assert (again.lexical.terms.built, again.lexical.terms.loaded) == (2, 0)
    assert [(h.chunk_id, h.score) for h in again.query("alpha", 5, options=LEX).hits] == want


def test_a_lexical_entry_naming_a_chunk_twice_is_rebuilt(store, tmp_path) -> None:
    # a chunk twice in ids counted twice in document frequency and came back as two hits
    import io

    from kbgit.fsio import cache_digest
    from kbgit.serving.service import KnowledgeService

    docs = write_docs(tmp_path / "d", {"a.md": "alpha beta", "b.md": "gamma delta"})
    store.ingest(docs)
    KnowledgeService("t", store.root).reload()  # the matrix of a and b is cached
    (docs / "b.md").unlink()
    write_docs(docs, {"c.md": "alpha epsilon"})
    store.ingest(docs)  # b's row is dead: ids (a, a) still cover the live rows
    first = KnowledgeService("t", store.root)
    first.reload()
    want = [(h.chunk_id, h.score) for h in first.query("alpha", 5, options=LEX).hits]
    for npz in (store.root / ".git" / "kbgit-lexical").glob("*.npz"):
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        if len(arrays["ids"]) < 2:
            continue
        arrays["ids"] = np.array([arrays["ids"][0]] * len(arrays["ids"]))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        npz.write_bytes(buf.getvalue())
        npz.with_suffix(".sha256").write_text(cache_digest(npz.stem, buf.getvalue()))
    again = KnowledgeService("t", store.root)
    again.reload()
    assert (again.lexical.terms.built, again.lexical.terms.loaded) == (1, 1)
    assert [(h.chunk_id, h.score) for h in again.query("alpha", 5, options=LEX).hits] == want


def test_tombstones_and_a_rollback_reviving_rows_reuse_the_term_matrix(store, tmp_path) -> None:
    """A segment's matrix covers all its rows: deletes and revivals are masks, not builds."""
    from kbgit.history.rollback import rollback
    from kbgit.serving.service import KnowledgeService

    docs = write_docs(tmp_path / "d", {"a.md": "alpha apricot", "b.md": "beta banana"})
    first = store.ingest(docs).commit
    (docs / "a.md").unlink()
    store.ingest(docs)  # a tombstone in the one segment
    svc = KnowledgeService("t", store.root)  # first seen with a.md's rows dead
    svc.reload()
    assert svc.lexical.terms.built == 1
    assert not any(h.source == "a.md" for h in svc.query("apricot", 5, options=LEX).hits)
    rollback(store, first)  # the tombstone is gone: a.md's rows live again
    svc.reload()
    assert [h.source for h in svc.query("apricot", 5, options=LEX).hits] == ["a.md"]
    assert svc.lexical.terms.built == 1  # nothing tokenized again (was: the segment rebuilt)
