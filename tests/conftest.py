"""Shared fixtures: real bare hubs, real working stores, the fake embedder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kbgit import KnowledgeStore, StoreConfig, create_hub

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = REPO_ROOT / "examples" / "docs"

#: settings for fast tests: the deterministic 64-d fake embedder, small chunks
FAKE_CONFIG = StoreConfig(model="fake:64", chunk_size=40, chunk_overlap=5)


def write_docs(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write {relative path: text or bytes} under root and return root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """A real bare hub repo (git init --bare, non-fast-forward pushes refused)."""
    return create_hub(tmp_path / "hub.git")


@pytest.fixture
def store(tmp_path: Path, hub: Path) -> KnowledgeStore:
    """An empty working store with the fake embedder, pushing to ``hub``."""
    return KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=FAKE_CONFIG)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A small folder of text documents with distinct topics."""
    return write_docs(
        tmp_path / "docs",
        {
            "keys.md": "# Rotating keys\n\nRotate API keys every ninety days. Revoke the old key "
            "after the overlap window.\n",
            "backup.txt": "Backups run nightly. Restore drills happen each quarter on a scratch host.\n",
            "guide/vpn.md": "If the VPN handshake fails, check the WireGuard endpoint and the MTU.\n",
            "guide/oncall.txt": "On-call shifts last one week. Swap shifts in the pager schedule.\n",
        },
    )


@pytest.fixture
def sample_docs(tmp_path: Path) -> Path:
    """A copy of the sample documents shipped in examples/docs (txt, md, html, pdf, docx)."""
    return Path(shutil.copytree(SAMPLE_DOCS, tmp_path / "sample"))


def share_writer_claim(writer: KnowledgeStore, other: KnowledgeStore) -> KnowledgeStore:
    """Let ``other`` write as ``writer`` (fencing allows one writer per hub): copy its claim.

    Two stores holding one claim model two processes of one writer racing at the hub.
    """
    from kbgit.fencing import WRITER_REF

    other.repo.fetch("hub", other.config.branch)
    other.repo.run("update-ref", WRITER_REF, writer.repo.rev_parse(WRITER_REF))
    return other
