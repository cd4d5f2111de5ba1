"""Hit text is never cut inside a character (issue 15, item 11), in the CLI or over HTTP.

The report was ``累�`` in ``kbgit query`` output. Chunks are split as Python strings
(code points, never bytes) and no output path shortens them; this pins it for CJK text,
emoji with joiners and combining accents.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main as cli
from kbgit.config import StoreSpec

from .conftest import write_docs
from .serve_helpers import get, start_server, wait_until

TEXT = (
    "长期以来，人们一直在积累关于知识库的经验。累计的数据需要定期备份。" * 12
    + "\n\nCafe\u0301 crème brûlée 👩‍👩‍👧 family 🇫🇷 flags " * 12
)


def test_hit_text_is_whole_characters_in_cli_and_http(
    tmp_path: Path, store: KnowledgeStore, docs: Path
) -> None:
    write_docs(docs, {"zh.txt": TEXT})
    store.ingest(docs)
    hits = store.query("累计 数据 备份 family", k=20, source="zh.txt").hits
    stored = {h.chunk_id: h.text for h in hits}
    assert stored and all("\ufffd" not in t and t in TEXT for t in stored.values())

    res = CliRunner().invoke(cli, ["query", str(store.root), "累计 数据 备份", "-k", "20"])
    assert res.exit_code == 0 and "\ufffd" not in res.output
    zh_hits = [t for t in stored.values() if "累" in t]
    assert any(t.strip().splitlines()[0] in res.output for t in zh_hits)

    srv = start_server(StoreSpec("default", str(store.root)))
    try:
        wait_until(lambda: srv.services.ready)
        params = {"q": "累计 数据 family", "k": 20, "source": "zh.txt"}
        got = get(f"{srv.url}/query", params=params).json()["hits"]
        assert got and all(h["text"] == stored.get(h["chunk_id"], h["text"]) for h in got)
        assert all("\ufffd" not in h["text"] and h["text"] in TEXT for h in got)
    finally:
        srv.stop()
