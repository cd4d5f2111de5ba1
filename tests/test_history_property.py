"""Random histories: every revision answers exactly, and a standby ends where the hub is.

A random sequence of ingests (adds, edits, deletes), rollbacks, tags, compactions and
standby pulls. Then, at every revision of the history, the top-k of a fixed query set
must equal an exact brute-force search over that revision's chunks, re-derived from the
documents stored in that revision (re-chunked and re-embedded, not read from the
index); and a standby that follows the hub must end on the same HEAD with the same
answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kbgit import FakeEmbedder, KnowledgeStore, create_hub
from kbgit.format.ledger import DOCS_DIR
from kbgit.gitrepo import GitRepo
from kbgit.history.compaction import compact
from kbgit.history.rollback import rollback, tag
from kbgit.ingest.chunking import split_sections
from kbgit.ingest.documents import load_document
from kbgit.retrieval.fusion import HybridOptions

from .conftest import FAKE_CONFIG, write_docs

K = 4
QUERIES = ["alpha key rotation", "backup restore drill", "vpn mtu", "pager shift", "zeta"]
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "key",
    "rotation",
    "backup",
    "restore",
    "drill",
    "vpn",
    "mtu",
    "wireguard",
    "pager",
    "shift",
    "oncall",
    "zeta",
    "dns",
    "ttl",
    "vault",
    "audit",
    "quota",
]
PATHS = ["a.md", "b.txt", "sub/c.md", "sub/d.txt", "e.md"]

texts = st.lists(st.sampled_from(WORDS), min_size=3, max_size=70).map(" ".join)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(PATHS), texts),
        st.tuples(st.just("delete"), st.sampled_from(PATHS)),
        st.tuples(st.just("rollback"), st.integers(0, 99), st.booleans()),
        st.tuples(st.just("tag"), st.integers(0, 99)),
        st.tuples(st.just("compact")),
        st.tuples(st.just("pull")),
    ),
    min_size=3,
    max_size=12,
)


def exact_chunks(repo: GitRepo, commit: str, emb: FakeEmbedder) -> list[tuple[str, str]]:
    """Re-derive (source, text) of every chunk from the documents stored in ``commit``."""
    tree = repo.ls_tree(commit)
    prefix = DOCS_DIR + "/"
    out = []
    for path in sorted(p[len(prefix) :] for p in tree if p.startswith(prefix)):
        _loader, sections = load_document(path, repo.read_file(commit, prefix + path))
        chunks = split_sections(
            sections,
            size=FAKE_CONFIG.chunk_size,
            overlap=FAKE_CONFIG.chunk_overlap,
            count_tokens=emb.count_tokens,
        )
        out += [(path, c.text) for c in chunks]
    return out


def check_revision(kb: KnowledgeStore, commit: str, emb: FakeEmbedder) -> None:
    """Top-k at ``commit`` equals an exact search over that revision's own chunks."""
    chunks = exact_chunks(kb.repo, commit, emb)
    snap = kb.verify(commit)
    stored = sorted((snap.sources[row.id], row.text) for _seg, row in snap.index.rows())
    assert stored == sorted(chunks), f"index of {commit[:12]} differs from its documents"
    vectors = emb.embed([t for _s, t in chunks])
    for q in QUERIES:
        qv = emb.embed([q])[0]
        scores = vectors @ qv if chunks else np.zeros(0)
        exact = dict(zip(chunks, scores, strict=True)) if chunks else {}
        hits = kb.query(q, K, rev=commit, options=DENSE).hits  # exact cosine scores
        best = np.sort(scores)[::-1][:K]
        assert len(hits) == len(best)
        np.testing.assert_allclose([h.score for h in hits], best, atol=1e-5)
        for h in hits:  # each hit is a real chunk of this revision, with its exact score
            assert abs(exact[(h.source, h.text)] - h.score) < 1e-5


DENSE = HybridOptions(mode="dense")


def answers(kb: KnowledgeStore) -> list[list[tuple[str, float]]]:
    return [[(h.chunk_id, round(h.score, 5)) for h in kb.query(q, K).hits] for q in QUERIES]


def apply(op: tuple, kb: KnowledgeStore, src: Path, standby: KnowledgeStore, n: int) -> None:
    kind = op[0]
    event(kind)
    if kind == "put":
        write_docs(src, {op[1]: op[2]})
        kb.ingest(src)
    elif kind == "delete":
        (src / op[1]).unlink(missing_ok=True)
        kb.ingest(src)
    elif kind in ("rollback", "tag"):
        history = kb.repo.run("rev-list", "HEAD").split()
        target = history[op[1] % len(history)]
        if kind == "rollback":
            res = rollback(kb, target, linear=op[2])
            assert res.noop or kb.repo.read_file("HEAD", "ledger.json") == kb.repo.read_file(
                target, "ledger.json"
            )
        else:
            tag(kb, f"t{n}", target)
            rollback(kb, f"t{n}")  # a tag is a rollback point
    elif kind == "compact":
        compact(kb)
    else:
        standby.pull()


@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(sequence=ops)
def test_random_history_answers_exactly_and_standby_converges(
    tmp_path_factory: pytest.TempPathFactory, sequence: list[tuple]
) -> None:
    base = tmp_path_factory.mktemp("prop")
    hub = create_hub(base / "hub.git")
    kb = KnowledgeStore.init(base / "kb", hub=str(hub), config=FAKE_CONFIG)
    src = write_docs(base / "src", {"a.md": "alpha key rotation vault", "b.txt": "vpn mtu dns"})
    kb.ingest(src)
    standby = KnowledgeStore.init(base / "standby", hub=str(hub), config=FAKE_CONFIG)
    for n, op in enumerate(sequence):
        apply(op, kb, src, standby, n)
    emb = FakeEmbedder(64)
    for commit in kb.repo.run("rev-list", "HEAD").split():
        check_revision(kb, commit, emb)
    head = kb.repo.head()
    assert GitRepo(hub).rev_parse("main") == head
    assert standby.pull() == head
    assert answers(standby) == answers(kb)
    assert not kb.needs_repair() and not standby.needs_repair()


def test_follower_serves_each_rollback_and_compaction(
    store: KnowledgeStore, docs: Path, hub: Path, tmp_path: Path
) -> None:
    """The sync daemon's follower fast-forwards through rollbacks and a compaction."""
    from kbgit.serving import follower as sync
    from kbgit.serving import service as service_mod

    kb = store
    first = kb.ingest(docs).commit
    service = service_mod.KnowledgeService("kb", tmp_path / "replica", role="standby")
    follower = sync.Follower(service, hub=str(hub))
    follower.open()
    steps = [
        lambda: (
            write_docs(docs, {"extra.md": "pager shift swap rules for oncall"}) and kb.ingest(docs)
        ),
        lambda: rollback(kb, first),
        lambda: rollback(kb, "HEAD~1"),
        lambda: compact(kb),
        lambda: rollback(kb, first),
    ]
    for step in steps:
        step()
        result = follower.sync_once()
        assert result.ok and service.commit == kb.repo.head(), result
        for q in QUERIES:
            served = service.query(q, K)
            assert [h.chunk_id for h in served.hits] == [h.chunk_id for h in kb.query(q, K).hits]
