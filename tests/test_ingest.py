"""Ingest semantics: idempotence, modify/delete/rename, model change, bad files, commits."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore, StoreConfig
from kbgit.cli import main as cli
from kbgit.errors import FencedError
from kbgit.gitrepo import GitRepo
from kbgit.retrieval.fusion import HybridOptions
from kbgit.serving.failover import promote

from .conftest import FAKE_CONFIG, write_docs


def commits(store: KnowledgeStore) -> int:
    return store.repo.count_commits("HEAD") if store.repo.head() else 0


def test_first_ingest_commits_and_pushes(store: KnowledgeStore, docs: Path, hub: Path) -> None:
    result = store.ingest(docs)
    assert result.ok and result.pushed
    assert sorted(result.added) == ["backup.txt", "guide/oncall.txt", "guide/vpn.md", "keys.md"]
    assert result.commit == store.repo.head()
    assert GitRepo(hub).rev_parse("refs/heads/main") == result.commit
    snap = store.verify()
    assert set(snap.ledger.documents) == set(result.added)
    assert snap.vectors == result.chunks_added > 0
    for path in result.added:
        assert store.repo.read_file("HEAD", f"docs/{path}") == (docs / path).read_bytes()


def test_second_ingest_makes_no_commit(store: KnowledgeStore, docs: Path) -> None:
    first = store.ingest(docs)
    again = store.ingest(docs)
    assert again.commit is None
    assert again.skipped == 4 and not (again.added or again.updated or again.deleted)
    assert store.repo.head() == first.commit and commits(store) == 1


def test_modified_file_replaces_its_chunks(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    before = store.verify()
    old_ids = set(before.ledger.documents["keys.md"].chunks)
    (docs / "keys.md").write_text("Keys are now rotated every thirty days by the robot.\n")
    result = store.ingest(docs)
    assert result.updated == ["keys.md"] and result.skipped == 3
    snap = store.verify()
    new_ids = set(snap.ledger.documents["keys.md"].chunks)
    assert not old_ids & new_ids
    live_ids = {row.id for _seg, row in snap.index.rows()}
    assert not old_ids & live_ids and new_ids <= live_ids
    hit = store.query("rotated every thirty days robot", k=1).hits[0]
    assert hit.source == "keys.md" and "thirty days" in hit.text
    # other documents' chunks are untouched
    assert snap.ledger.documents["backup.txt"] == before.ledger.documents["backup.txt"]


def test_deleted_file_loses_its_chunks(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    (docs / "backup.txt").unlink()
    result = store.ingest(docs)
    assert result.deleted == ["backup.txt"]
    snap = store.verify()
    assert "backup.txt" not in snap.ledger.documents
    assert store.repo.read_file("HEAD", "docs/backup.txt") is None
    assert all(h.source != "backup.txt" for h in store.query("backups nightly restore", k=10).hits)


def test_keep_missing_keeps_absent_documents(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    (docs / "backup.txt").unlink()
    result = store.ingest(docs, keep_missing=True)
    assert result.commit is None and not result.deleted
    assert "backup.txt" in store.verify().ledger.documents


def test_pure_rename_reuses_vectors(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    before = store.verify()
    (docs / "guide/vpn.md").rename(docs / "network-vpn.md")
    result = store.ingest(docs)
    assert result.renamed == [("guide/vpn.md", "network-vpn.md")]
    assert result.chunks_added == 0 and result.chunks_deleted == 0
    snap = store.verify()
    assert (
        snap.ledger.documents["network-vpn.md"].chunks
        == before.ledger.documents["guide/vpn.md"].chunks
    )
    assert store.query("VPN handshake WireGuard", k=1).hits[0].source == "network-vpn.md"


def test_model_change_reembeds_everything(
    tmp_path: Path, store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    (store.root / "kb.toml").write_text(
        StoreConfig(model="fake:32", chunk_size=40, chunk_overlap=5, hub=store.config.hub).to_toml()
    )
    store2 = KnowledgeStore(store.root)
    result = store2.ingest(docs)
    assert result.reembedded and sorted(result.updated) == sorted(
        ["backup.txt", "guide/oncall.txt", "guide/vpn.md", "keys.md"]
    )
    snap = store2.verify()
    assert snap.ledger.model_id == "fake:32" and snap.ledger.dim == 32
    assert len(snap.manifest.segments) == 1  # the old model's segment is wholly dead: dropped
    assert store2.query("VPN handshake", k=1).hits[0].source == "guide/vpn.md"
    assert "re-embedded" in store2.repo.run("log", "-1", "--format=%B")


def test_chunking_change_reembeds_everything(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    cfg = StoreConfig(model="fake:64", chunk_size=20, chunk_overlap=2, hub=store.config.hub)
    result = KnowledgeStore(store.root, cfg).ingest(docs)
    assert result.reembedded and result.skipped == 0
    assert KnowledgeStore(store.root, cfg).verify().ledger.chunking["size"] == 20


def _docx_bytes(text: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "retention"
    table.rows[0].cells[1].text = "ninety days"
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def test_bad_files_are_reported_and_the_rest_ingested(
    store: KnowledgeStore, tmp_path: Path, sample_docs: Path
) -> None:
    good_pdf = (sample_docs / "policies/access-control.pdf").read_bytes()
    bad = write_docs(
        sample_docs,
        {
            "bad/corrupt.pdf": good_pdf[: len(good_pdf) // 3],
            "bad/garbage.pdf": b"%PDF-1.4\n this is not a pdf at all",
            "bad/binary.txt": b"\x00\x01\x02ELF\x00\x00",
            "bad/empty.md": "",
            "bad/latin1.txt": "caf\xe9 cr\xe8me".encode("latin-1"),
            "bad/broken.docx": b"PK\x03\x04 not really a zip",
            "bad/image.png": b"\x89PNG\r\n\x1a\n",
            "extra/table.docx": _docx_bytes("The data retention policy is strict."),
        },
    )
    result = store.ingest(bad)
    reasons = {f.path: f.reason for f in result.failed}
    assert set(reasons) == {
        "bad/corrupt.pdf",
        "bad/garbage.pdf",
        "bad/binary.txt",
        "bad/empty.md",
        "bad/latin1.txt",
        "bad/broken.docx",
        "bad/image.png",
    }
    assert "binary" in reasons["bad/binary.txt"]
    assert "empty" in reasons["bad/empty.md"]
    assert "UTF-8" in reasons["bad/latin1.txt"]
    assert "unsupported" in reasons["bad/image.png"]
    assert "docx" in reasons["bad/broken.docx"]
    assert "PDF" in reasons["bad/corrupt.pdf"] or "pdf" in reasons["bad/corrupt.pdf"].lower()
    assert result.commit is not None and len(result.added) == 13
    snap = store.verify()
    assert "policies/access-control.pdf" in snap.ledger.documents
    assert not any(p.startswith("bad/") for p in snap.ledger.documents)
    body = store.repo.run("log", "-1", "--format=%B")
    assert "bad/corrupt.pdf" in body and "Not ingested" in body
    assert "ninety days" in " ".join(
        row.text for _s, row in snap.index.rows() if snap.sources[row.id] == "extra/table.docx"
    )


def test_loaders_extract_the_right_text(store: KnowledgeStore, sample_docs: Path) -> None:
    store.ingest(sample_docs)
    snap = store.verify()
    texts: dict[str, str] = {}
    pages: set[int] = set()
    for _seg, row in snap.index.rows():
        src = snap.sources[row.id]
        texts[src] = texts.get(src, "") + row.text
        if src.endswith(".pdf"):
            pages.add(row.meta["page"])
    html = texts["policies/password-policy.html"]
    assert "SCRIPT_SENTINEL" not in html and "STYLE_SENTINEL" not in html
    assert "14" in html and "password" in html.lower()
    assert pages == {1, 2}
    assert "|" in texts["policies/data-retention.docx"]  # the table's cells
    assert "café" in texts["onboarding/glossary.txt"]


def test_failed_update_keeps_the_previous_version(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    before = store.verify().ledger.documents["keys.md"]
    (docs / "keys.md").write_bytes(b"\xff\xfe\x00broken")
    result = store.ingest(docs)
    assert [f.path for f in result.failed] == ["keys.md"] and result.commit is None
    assert store.verify().ledger.documents["keys.md"] == before


def test_commit_message_lists_counts_and_paths(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    (docs / "keys.md").write_text("changed text about keys\n")
    (docs / "new.md").write_text("a brand new document\n")
    (docs / "backup.txt").unlink()
    store.ingest(docs)
    body = store.repo.run("log", "-1", "--format=%B")
    assert body.splitlines()[0] == "kbgit ingest: 1 added, 1 updated, 2 skipped, 1 deleted"
    for line in (
        "A  new.md",
        "M  keys.md",
        "D  backup.txt",
        "Kbgit-Added: 1",
        "Kbgit-Generation: 2",
    ):
        assert line in body


def test_query_equals_exact_search(store: KnowledgeStore, sample_docs: Path) -> None:
    store.ingest(sample_docs)
    (sample_docs / "faq/oncall-faq.txt").write_text("Completely new on-call text, pager swap.\n")
    shutil.rmtree(sample_docs / "architecture")
    store.ingest(sample_docs)
    snap = store.verify()
    rows = snap.index.rows()
    vectors = snap.index.vectors()
    embedder = store.embedder
    for question in (
        "how often are API keys rotated",
        "VPN handshake fails",
        "minimum password length",
        "restore drill",
        "pager swap",
    ):
        q = embedder.embed([question])[0]
        exact = np.argsort(-(vectors @ q), kind="stable")[:5]
        scores = vectors @ q
        got = store.query(question, k=5, options=HybridOptions(mode="dense")).hits
        assert np.allclose([h.score for h in got], scores[exact], atol=1e-5)
        # same chunks, except where two chunks tie exactly on score
        for hit, i in zip(got, exact, strict=True):
            if np.sum(np.isclose(scores, scores[i], atol=1e-6)) == 1:
                assert hit.chunk_id == rows[i][1].id


def test_query_filters_by_source_and_threshold(store: KnowledgeStore, docs: Path) -> None:
    store.ingest(docs)
    hits = store.query("shifts keys backups", k=10, source="guide/").hits
    assert hits and all(h.source.startswith("guide/") for h in hits)
    hits = store.query("shifts keys backups", k=10, source=["keys.md", "backup.txt"]).hits
    assert {h.source for h in hits} == {"keys.md", "backup.txt"}
    top = store.query("rotate API keys", k=10).hits
    cut = top[1].score
    assert all(
        h.score >= cut for h in store.query("rotate API keys", k=10, score_threshold=cut).hits
    )


def test_no_pickle_in_any_commit(store: KnowledgeStore, sample_docs: Path) -> None:
    store.ingest(sample_docs)
    (sample_docs / "runbooks/rotate-api-keys.md").write_text("edited")
    store.ingest(sample_docs)
    for commit in store.repo.run("rev-list", "HEAD").split():
        tree = store.repo.ls_tree(commit)
        assert not [p for p in tree if p.endswith((".pkl", ".pickle"))]
        for path, blob in tree.items():
            if path.startswith("index/"):
                data = store.repo.read_blobs([blob])[blob]
                assert not data.startswith(b"\x80"), f"{path} looks like a pickle"


def test_init_from_a_hub_with_history_clones_it(
    tmp_path: Path, store: KnowledgeStore, docs: Path, hub: Path
) -> None:
    first = store.ingest(docs)
    other = KnowledgeStore.init(tmp_path / "kb2", hub=str(hub), config=FAKE_CONFIG)
    assert other.repo.head() == first.commit
    with pytest.raises(FencedError) as fenced:  # the hub records `store` as its writer
        other.ingest(docs)
    assert "kbgit promote" in (fenced.value.hint or "")
    assert promote(other.root).changed  # take the writer role over
    assert other.ingest(docs).commit is None  # same content: nothing to do
    with pytest.raises(FencedError):
        store.ingest(docs)


def test_docx_zip_bomb_style_garbage_is_reported(store: KnowledgeStore, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "not a word document")
    src = write_docs(tmp_path / "src", {"a.docx": buf.getvalue(), "b.md": "fine text here"})
    result = store.ingest(src)
    assert [f.path for f in result.failed] == ["a.docx"] and result.added == ["b.md"]


@pytest.mark.parametrize("name", ["notes.TXT", "Guide.Markdown", "page.HTM"])
def test_extensions_are_case_insensitive(store: KnowledgeStore, tmp_path: Path, name: str) -> None:
    src = write_docs(tmp_path / "src", {name: "<p>some words to index</p>"})
    assert store.ingest(src).added == [name]


def test_model_change_keeps_and_reembeds_langchain_documents(
    store: KnowledgeStore, docs: Path
) -> None:
    from kbgit.langchain import KbgitVectorStore

    store.ingest(docs)
    vs = KbgitVectorStore(store)
    vs.add_texts(["kept through a model change"], [{"team": "sre"}], ids=["lc-1"])
    (store.root / "kb.toml").write_text(
        StoreConfig(model="fake:32", chunk_size=40, chunk_overlap=5, hub=store.config.hub).to_toml()
    )
    store2 = KnowledgeStore(store.root)
    result = store2.ingest(docs)
    assert result.reembedded
    snap = store2.verify()
    assert snap.ledger.dim == 32
    rows = {row.id: row for _s, row in snap.index.rows()}
    assert rows["lc-1"].text == "kept through a model change"
    assert rows["lc-1"].meta == {"team": "sre"}


def test_status_without_a_hub_is_neither_ahead_nor_behind(tmp_path: Path, docs: Path) -> None:
    store = KnowledgeStore.init(tmp_path / "solo", config=FAKE_CONFIG)
    store.ingest(docs)
    st = store.status()
    assert st.hub is None and (st.ahead, st.behind) == (0, 0) and st.documents == 4


def test_status_says_a_settings_change_will_reembed_before_it_happens(
    store: KnowledgeStore, docs: Path
) -> None:
    store.ingest(docs)
    assert KnowledgeStore(store.root).status(fetch=False).reembed is None
    (store.root / "kb.toml").write_text(
        StoreConfig(model="fake:32", hub=store.config.hub).to_toml()
    )
    st = KnowledgeStore(store.root).status(fetch=False)  # no --source: still said
    assert st.reembed is not None and "fake:32" in st.reembed and "fake:64" in st.reembed
    res = CliRunner().invoke(cli, ["status", str(store.root), "--no-fetch"])
    assert res.exit_code == 0 and "re-embeds" in res.output and "fake:32" in res.output
