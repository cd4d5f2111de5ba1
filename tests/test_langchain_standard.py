"""LangChain's standard VectorStore tests (langchain-tests), sync and async, offline.

The suite's fake 6-d embedding (``DeterministicFakeEmbedding``) is wrapped as a kbgit
Embedder; every store is a real git working repo pushing to a real bare hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from kbgit import KnowledgeStore, create_hub
from kbgit.langchain import KbgitVectorStore

from .conftest import FAKE_CONFIG

# the suite's async tests carry no asyncio mark; marking the module also marks the sync ones,
# which pytest-asyncio then runs normally after a warning we silence
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:The test <Function.*is marked with '@pytest.mark.asyncio'"),
]


class TestKbgitVectorStoreStandard(VectorStoreIntegrationTests):
    """All 25 standard tests against a KbgitVectorStore over a fresh store and hub."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> KbgitVectorStore:
        """An empty store pushing to a fresh hub, embedding with the suite's fake model."""
        hub = create_hub(tmp_path / "hub.git")
        kb = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=FAKE_CONFIG)
        return KbgitVectorStore(kb, self.get_embeddings())
