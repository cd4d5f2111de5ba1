"""Embedding backend names: the setting, model-id suffixes, the allow-list, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kbgit import StoreConfig
from kbgit.backends import BACKEND_SUFFIXES, BACKENDS, check_backend, split_model_id, with_backend
from kbgit.cli import main
from kbgit.config import model_cache_dir
from kbgit.embeddings import FakeEmbedder, load_embedder
from kbgit.errors import ConfigError
from kbgit.models import ModelAllowList


def test_bad_backend_name_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        StoreConfig(model="fake:64", backend="onnx-in8")
    assert "onnx-in8" in str(err.value)
    assert all(b in err.value.hint for b in BACKENDS)
    (tmp_path / "kb.toml").write_text('[store]\nbackend = "tensorrt"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="tensorrt"):
        StoreConfig.load(tmp_path, env={})
    with pytest.raises(ConfigError, match="cuda"):
        StoreConfig.load(tmp_path, env={"KBGIT_BACKEND": "cuda"})


def test_cli_refuses_a_bad_backend_with_the_choices(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["init", str(tmp_path / "kb"), "--model", "fake:64"])
    assert res.exit_code == 0, res.output
    toml = tmp_path / "kb" / "kb.toml"
    toml.write_text(toml.read_text().replace("# backend =", 'backend = "xtorch"  #'))
    res = CliRunner().invoke(main, ["status", str(tmp_path / "kb")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "unknown embedding backend" in res.output and "onnx-int8" in res.output


def test_model_id_records_the_backend() -> None:
    for backend in BACKENDS:
        mid = with_backend("sentence-transformers/all-MiniLM-L6-v2", backend)
        assert split_model_id(mid) == ("sentence-transformers/all-MiniLM-L6-v2", backend)
    assert with_backend("all-MiniLM-L6-v2", "torch") == "all-MiniLM-L6-v2"  # old stores
    assert set(BACKENDS) - {"torch"} == BACKEND_SUFFIXES
    with pytest.raises(ConfigError, match="written without a suffix"):
        split_model_id("all-MiniLM-L6-v2+torch")
    with pytest.raises(ConfigError, match="unknown embedding backend"):
        check_backend("onnx_int8")


def test_allow_list_accepts_every_backend_suffix() -> None:
    allowed = ModelAllowList()
    for suffix in BACKEND_SUFFIXES:
        mid = f"sentence-transformers/all-MiniLM-L6-v2+{suffix}"
        assert allowed.resolve(mid) == mid


def test_embedder_ids_carry_the_backend_without_loading_anything(tmp_path: Path) -> None:
    emb = load_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=tmp_path)
    assert emb.model_id == "sentence-transformers/all-MiniLM-L6-v2+onnx-int8"
    assert not emb.loaded and not any(tmp_path.iterdir())  # lazy: nothing exported yet
    again = load_embedder(emb.model_id, cache_dir=tmp_path)  # a standby, from the ledger
    assert again.model_id == emb.model_id and again.backend == "onnx-int8"
    assert load_embedder("all-MiniLM-L6-v2").model_id == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ConfigError, match="names backend onnx"):
        load_embedder(emb.model_id, backend="openvino")
    fake = load_embedder("fake:64", backend="onnx-int8")  # the fake has no backends
    assert isinstance(fake, FakeEmbedder) and fake.model_id == "fake:64"


def test_model_cache_dir_setting(tmp_path: Path) -> None:
    assert model_cache_dir({"KBGIT_MODEL_CACHE": str(tmp_path)}) == tmp_path
    assert model_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "kbgit" / "models"
    assert model_cache_dir({}).parts[-3:] == (".cache", "kbgit", "models")


def test_init_writes_the_chosen_backend_and_refuses_unknown_ones(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["init", str(tmp_path / "kb"), "--backend", "onnx-int8"])
    assert res.exit_code == 0, res.output
    assert StoreConfig.load(tmp_path / "kb", env={}).backend == "onnx-int8"
    res = CliRunner().invoke(main, ["init", str(tmp_path / "kb2"), "--backend", "cuda"])
    assert res.exit_code == 2 and "openvino-int8" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "kb2").exists()


def test_an_unset_backend_means_the_default_for_a_new_store(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["init", str(tmp_path / "kb")])
    assert res.exit_code == 0, res.output
    assert StoreConfig.load(tmp_path / "kb", env={}).backend == ""  # not pinned in kb.toml
    from kbgit import KnowledgeStore
    from kbgit.config import DEFAULT_BACKEND

    assert split_model_id(KnowledgeStore(tmp_path / "kb").embedder.model_id)[1] == DEFAULT_BACKEND


def test_langchain_vectors_are_kept_only_by_a_torch_store(tmp_path: Path) -> None:
    from kbgit.langchain.interop import same_model

    torch_emb = load_embedder("all-MiniLM-L6-v2", cache_dir=tmp_path)
    int8 = load_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=tmp_path)
    # HuggingFaceEmbeddings vectors are PyTorch fp32: a store of another backend re-embeds
    assert same_model("all-MiniLM-L6-v2", torch_emb, "all-MiniLM-L6-v2")
    assert not same_model("all-MiniLM-L6-v2", int8, "all-MiniLM-L6-v2")
    assert not same_model("sentence-transformers/all-MiniLM-L6-v2", int8, "all-MiniLM-L6-v2")
    assert same_model(int8.model_id, int8, "all-MiniLM-L6-v2")


def test_the_default_backend_is_for_the_measured_model_only(tmp_path: Path) -> None:
    from kbgit import KnowledgeStore
    from kbgit.config import DEFAULT_BACKEND

    local = tmp_path / "my-multilingual-model"
    local.mkdir()
    for model, want in (("all-MiniLM-L6-v2", DEFAULT_BACKEND), (str(local), "torch")):
        kb = KnowledgeStore.init(
            tmp_path / f"kb-{want}-{len(model)}", config=StoreConfig(model=model)
        )
        assert kb.backend == want, model
