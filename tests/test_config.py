"""kb.toml and KBGIT_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbgit import ConfigError, StoreConfig
from kbgit.config import CONFIG_NAME


def test_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = StoreConfig(model="fake:16", chunk_size=99, chunk_overlap=9, hub='/srv/a "b".git')
    (tmp_path / CONFIG_NAME).write_text(cfg.to_toml())
    assert StoreConfig.load(tmp_path, env={}) == cfg


def test_environment_overrides_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text(StoreConfig(chunk_size=99).to_toml())
    cfg = StoreConfig.load(tmp_path, env={"KBGIT_CHUNK_SIZE": "120", "KBGIT_HUB": "/x.git"})
    assert cfg.chunk_size == 120 and cfg.hub == "/x.git"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[store]\nchunk_sise = 10\n", "unknown setting"),
        ("[store]\nchunk_size = 'big'\n", "expected int"),
        ("[store]\nchunk_size = 50\nchunk_overlap = 50\n", "chunk_overlap"),
        ("[store\n", "cannot read"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / CONFIG_NAME).write_text(text)
    with pytest.raises(ConfigError, match=message):
        StoreConfig.load(tmp_path, env={})


def test_defaults_without_a_file(tmp_path: Path) -> None:
    assert StoreConfig.load(tmp_path, env={}) == StoreConfig()
