"""kb.toml and KBGIT_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbgit import ConfigError, StoreConfig
from kbgit.config import CONFIG_NAME, ServeConfig


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("threads = true", "expected int, got True"),
        ("threads = 2.7", "expected int, got 2.7"),
        ('threads = "many"', "expected int"),
        ("token = 5", "expected str, got 5"),
        ('bind = ["127.0.0.1:1"]', "expected str"),
    ],
)
def test_serve_settings_of_the_wrong_type_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    """[serve] is as strict as [store]: no silent true -> 1, 2.7 -> 2 or 5 -> "5"."""
    conf = tmp_path / "kbgit.toml"
    conf.write_text(f"[serve]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        ServeConfig.load(conf, env={})


def test_serve_float_settings_take_integers(tmp_path: Path) -> None:
    conf = tmp_path / "kbgit.toml"
    conf.write_text("[serve]\ninterval = 2\nthreads = 3\n")
    cfg = ServeConfig.load(conf, env={"KBGIT_BACKOFF_MAX": "7.5"})
    assert (cfg.interval, cfg.threads, cfg.backoff_max) == (2.0, 3, 7.5)
