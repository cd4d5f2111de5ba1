"""Embedding backends with the real model: offline exports, the cosine bound, the ledger.

Marked ``model``: each backend is exported once per run from the bundled model files into
a temporary cache (torch.onnx.export, onnxruntime's quantizer, openvino, nncf).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore, StoreConfig
from kbgit.cli import main
from kbgit.embeddings import load_embedder
from kbgit.model_export import MANIFEST, MODEL_FILES
from kbgit.serving.follower import UPDATED, Follower
from kbgit.serving.service import KnowledgeService

from .conftest import SAMPLE_DOCS

pytestmark = pytest.mark.model

SAMPLE = [
    "How often are API keys rotated?",
    "Restore drills happen each quarter on a scratch host.",
    "If the VPN handshake fails, check the WireGuard endpoint and the MTU.",
    "On-call shifts last one week. Swap shifts in the pager schedule.",
    "git push --force-with-lease refuses to overwrite work you have not seen. " * 12,
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A model cache for this module, also seen by processes through KBGIT_MODEL_CACHE."""
    path = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv("KBGIT_MODEL_CACHE", str(path))
    request.addfinalizer(mp.undo)
    return path


@pytest.fixture(scope="module")
def fp32() -> np.ndarray:
    return load_embedder("all-MiniLM-L6-v2").embed(SAMPLE)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino", "openvino-int8"])
def test_backend_exports_offline_and_matches_fp32(backend, cache: Path, fp32) -> None:
    emb = load_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=cache)
    vecs = emb.embed(SAMPLE)
    assert vecs.shape == (len(SAMPLE), 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    cos = (vecs * fp32).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, cos
    if not backend.endswith("int8"):
        assert cos.min() > 0.9999  # the same fp32 graph
    assert emb.count_tokens(SAMPLE[0]) == load_embedder("all-MiniLM-L6-v2").count_tokens(SAMPLE[0])
    (entry,) = [p for p in next(cache.iterdir()).iterdir() if p.name.startswith(f"{backend}-r")]
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["backend"] == backend and MODEL_FILES[backend] in manifest["files"]


def test_corrupted_export_is_rebuilt_not_loaded(cache: Path, fp32) -> None:
    emb = load_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=cache)
    emb.load()
    (entry,) = [p for p in next(cache.iterdir()).iterdir() if p.name.startswith("onnx-int8-r")]
    model = entry / MODEL_FILES["onnx-int8"]
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2] + b"\0" * 64 + good[len(good) // 2 + 64 :])
    again = load_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=cache)
    vecs = again.embed(SAMPLE)  # would fail or differ if the corrupted file were loaded
    assert (vecs * fp32).sum(axis=1).min() >= 0.97
    rebuilt = json.loads((entry / MANIFEST).read_text())["files"][MODEL_FILES["onnx-int8"]]
    import hashlib

    assert hashlib.sha256(model.read_bytes()).hexdigest() == rebuilt
    (entry / MANIFEST).unlink()  # a half-written entry (no manifest) is rebuilt too
    load_embedder(again.model_id, cache_dir=cache).load()
    assert (entry / MANIFEST).exists()


def test_backend_change_reembeds_and_standby_uses_the_ledger_backend(
    tmp_path: Path, cache: Path, hub: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("runbooks/rotate-api-keys.md", "faq/oncall-faq.txt"):
        (docs / Path(name).name).write_bytes((SAMPLE_DOCS / name).read_bytes())
    cfg = StoreConfig(backend="torch")
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=cfg)
    assert store.ingest(docs).ok
    assert store.verify().ledger.model_id == "sentence-transformers/all-MiniLM-L6-v2"

    toml = store.root / "kb.toml"
    assert 'backend = "torch"\n' in toml.read_text()  # chosen: written, not commented
    toml.write_text(toml.read_text().replace('backend = "torch"', 'backend = "onnx-int8"'))
    res = CliRunner().invoke(main, ["status", str(store.root), "--source", str(docs)])
    assert res.exit_code == 0 and "backend" in res.output and "full re-embed" in res.output
    changed = KnowledgeStore(store.root)  # kb.toml now names onnx-int8
    assert changed.config.backend == "onnx-int8"
    result = changed.ingest(docs)
    assert result.reembedded and len(result.updated) == 2
    model_id = changed.verify().ledger.model_id
    assert model_id == "sentence-transformers/all-MiniLM-L6-v2+onnx-int8"
    # kb.toml without a backend line: the store keeps the backend its ledger records, so a
    # new default in a later release never re-embeds an existing store behind its back
    toml.write_text(StoreConfig(hub=str(hub)).to_toml())
    unset = KnowledgeStore(store.root)
    assert unset.config.backend == "" and unset.status(fetch=False).reembed is None
    assert unset.embedder.model_id == model_id

    svc = KnowledgeService("default", tmp_path / "replica")
    follower = Follower(svc, hub=str(hub), interval=0.05, backoff_max=0.4)
    follower.open()
    assert follower.sync_once().status == UPDATED
    served = svc.embedders.get(model_id)  # built from the ledger's model id
    assert served.model_id == model_id and served.backend == "onnx-int8"
    question = "How do I swap an on-call shift?"
    assert svc.query(question, k=1).hits[0].source == "oncall-faq.txt"
    primary = changed.embedder.embed([question])
    assert np.allclose(served.embed([question]), primary, atol=1e-5)
