"""File names an ingest meets in the wild (issue 15, item 7): one bad name never aborts it.

A non-UTF-8 name (``printf x > $'docs/latin1-\\xe9.txt'``) used to abort the whole
ingest with a UnicodeEncodeError traceback, and a 244-byte name with ``File name too
long`` (the temp file prefix). Now the first is reported and the second ingested.
"""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main as cli


def test_a_non_utf8_name_is_reported_and_everything_else_ingested(
    store: KnowledgeStore, docs: Path
) -> None:
    with open(os.path.join(os.fsencode(docs), b"latin1-\xe9.txt"), "wb") as fh:
        fh.write(b"latin one text about gardens\n")
    (docs / "tab\there.txt").write_text("a control character in the name\n")
    res = CliRunner().invoke(cli, ["ingest", str(store.root), str(docs)])
    assert res.exit_code == 3, res.output
    assert "latin1-\\xe9.txt: file name is not valid UTF-8" in res.output
    assert "control characters" in res.output and "Traceback" not in res.output
    snap = store.verify()
    assert set(snap.ledger.documents) == {
        "keys.md",
        "backup.txt",
        "guide/vpn.md",
        "guide/oncall.txt",
    }


def test_a_244_byte_name_is_ingested(store: KnowledgeStore, docs: Path) -> None:
    name = "n" * 240 + ".txt"
    assert len(name.encode()) == 244
    (docs / name).write_text("a document with a very long file name about tides\n")
    result = store.ingest(docs)
    assert result.failed == [] and name in result.added
    assert store.query("tides long name", k=1).hits[0].source == name
    assert not [p for p in (store.root / "docs").iterdir() if p.name.startswith(".kbgit-tmp-")]
