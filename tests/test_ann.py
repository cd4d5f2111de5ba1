"""Approximate search: IVF indexes built locally, cached with a checksum, masks, exact option."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

from kbgit import KnowledgeStore
from kbgit.cli import main
from kbgit.config import ServeConfig, StoreConfig, StoreSpec
from kbgit.errors import ConfigError
from kbgit.format.ann import AnnSettings, build_index
from kbgit.format.anncache import CACHE_SUBDIR, AnnCache
from kbgit.format.vector_index import LiveIndex, Row, Segment
from kbgit.fsio import cache_digest
from kbgit.gitrepo import GitRepo
from kbgit.retrieval.fusion import HybridOptions

from .conftest import FAKE_CONFIG, write_docs
from .serve_helpers import get, post, start_server, wait_until

#: a threshold small enough for the test stores below (~150 chunks in one segment)
TINY = {"ann_min_vectors": 40, "ann_nprobe": 4}
DENSE = HybridOptions(mode="dense")
EXACT = HybridOptions(mode="dense", exact=True)


def _clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _segment(x: np.ndarray, name: str = "g000001") -> Segment:
    return Segment(name, x, tuple(Row(f"r{i}", f"text {i}", {}) for i in range(len(x))))


def _ids(live: LiveIndex, q: np.ndarray, k: int, **kw) -> list[str]:
    return [m.row.id for m in live.search(q, k, **kw)]


def test_ann_recall_is_high_and_exact_matches_brute_force(tmp_path: Path) -> None:
    x = _clustered(4000)
    seg = _segment(x)
    ann = AnnCache(AnnSettings(min_vectors=100, nprobe=8), tmp_path).get("a" * 64, x)
    live = LiveIndex([seg], {}, 32, {seg.name: ann})
    assert live.approximate == 1
    rng = np.random.default_rng(5)
    found = 0
    for qi in rng.integers(0, len(x), 100):
        q = x[qi] + 0.1 * rng.standard_normal(32).astype(np.float32)
        brute = [f"r{i}" for i in np.argsort(-(x @ q), kind="stable")[:10]]
        assert _ids(live, q, 10, exact=True) == brute
        found += len(set(_ids(live, q, 10)) & set(brute))
    assert found / 1000 >= 0.95  # recall@10 of the IVF (sq8 + exact re-scoring)


def test_tombstoned_and_filtered_rows_never_come_back_from_ann(tmp_path: Path) -> None:
    x = _clustered(3000, seed=1)
    seg = _segment(x)
    dead = {f"r{i}" for i in range(0, 3000, 2)}
    ann = AnnCache(AnnSettings(min_vectors=100, nprobe=8), tmp_path).get("b" * 64, x)
    live = LiveIndex([seg], {seg.name: dead}, 32, {seg.name: ann})
    allowed_rows = list(range(0, len(live), 7))  # positions in live-row order
    allowed = {live.rows()[i][1].id for i in allowed_rows}
    same = 0
    for i in range(0, 3000, 37):  # dead vectors themselves as queries: best match is dead
        got = _ids(live, x[i], 10)
        assert len(got) == 10 and not dead & set(got)
        narrow = _ids(live, x[i], 10, allowed=allowed_rows)
        assert len(narrow) == 10 and set(narrow) <= allowed
        same += len(set(narrow) & set(_ids(live, x[i], 10, allowed=allowed_rows, exact=True)))
    assert same >= 0.9 * 10 * len(range(0, 3000, 37))


def test_two_builds_of_one_segment_are_identical(tmp_path: Path) -> None:
    x = _clustered(2500, seed=2)
    for codec in ("sq8", "flat"):
        one = faiss.serialize_index(build_index(x, codec)).tobytes()
        two = faiss.serialize_index(build_index(x.copy(), codec)).tobytes()
        assert hashlib.sha256(one).digest() == hashlib.sha256(two).digest()
    a = AnnCache(AnnSettings(min_vectors=10), tmp_path / "a")
    b = AnnCache(AnnSettings(min_vectors=10), tmp_path / "b")
    a.directory.mkdir()
    b.directory.mkdir()
    a.get("c" * 64, x)
    b.get("c" * 64, x)
    files_a = {p.name: p.read_bytes() for p in a.directory.iterdir()}
    files_b = {p.name: p.read_bytes() for p in b.directory.iterdir()}
    assert files_a == files_b and len(files_a) == 2


def _big_docs(root: Path, n: int = 60, seed: int = 3, prefix: str = "d") -> Path:
    """Documents of words drawn from a small vocabulary (about 150 chunks in all)."""
    rnd = random.Random(seed)
    vocab = [f"w{i}" for i in range(120)]
    files = {
        f"{prefix}{i:03d}.md": ". ".join(" ".join(rnd.choices(vocab, k=12)) for _ in range(8))
        + ".\n"
        for i in range(n)
    }
    return write_docs(root, files)


@pytest.fixture
def big(tmp_path: Path, hub: Path) -> KnowledgeStore:
    """A store whose one segment is over the tiny ANN threshold."""
    cfg = dataclasses.replace(FAKE_CONFIG, **TINY)
    store = KnowledgeStore.init(tmp_path / "kb", hub=str(hub), config=cfg)
    store.ingest(_big_docs(tmp_path / "docs"))
    return store


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / CACHE_SUBDIR).glob("*.faiss"))


def test_forced_exact_equals_exact_search_and_ann_is_used(big: KnowledgeStore) -> None:
    plain = KnowledgeStore(big.root, dataclasses.replace(FAKE_CONFIG, ann_min_vectors=0))
    snap = big.snapshot()
    assert snap.vectors >= 100 and snap.index.approximate == 1 and big.ann.built == 1
    assert plain.snapshot().index.approximate == 0
    agree = 0
    for text in ("w1 w2 w3", "w40 w41 w7 w9", "w100 w3", "w77 w5 w6 w11 w12", "w0"):
        exact = [h.chunk_id for h in plain.query(text, 10, options=DENSE).hits]
        assert [h.chunk_id for h in big.query(text, 10, options=EXACT).hits] == exact
        agree += len(set(exact) & {h.chunk_id for h in big.query(text, 10, options=DENSE).hits})
    assert agree >= 40  # of 50: the approximate answer is close on this small store


def test_a_corrupted_cache_file_is_rebuilt_not_served(big: KnowledgeStore) -> None:
    text = "w1 w2 w3 w50"
    want = [h.chunk_id for h in big.query(text, 10, options=DENSE).hits]
    (path,) = _cache_files(big.root)
    good = path.read_bytes()
    path.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])  # one byte flipped
    again = KnowledgeStore(big.root, big.config)  # a restart: memory cache empty
    hits = [h.chunk_id for h in again.query(text, 10, options=DENSE).hits]
    assert again.ann.refused == 1 and again.ann.built == 1 and again.ann.loaded == 0
    assert path.read_bytes() == good and hits == want
    # bytes FAISS reads fine, checksum matching, but not this segment's index: refused too
    wrong = faiss.serialize_index(faiss.IndexFlatIP(64)).tobytes()
    path.write_bytes(wrong)
    path.with_suffix(".sha256").write_text(cache_digest(path.stem, wrong))
    third = KnowledgeStore(big.root, big.config)
    third.query(text, 10, options=DENSE)
    assert (third.ann.refused, third.ann.built) == (1, 1) and path.read_bytes() == good
    fourth = KnowledgeStore(big.root, big.config)  # a good entry is read, not rebuilt
    fourth.query(text, 10, options=DENSE)
    assert (fourth.ann.loaded, fourth.ann.built, fourth.ann.refused) == (1, 0, 0)
    path.unlink()
    exact = KnowledgeStore(big.root, big.config)  # an exact query needs no ANN: none built
    assert [h.chunk_id for h in exact.query(text, 10, options=EXACT).hits]
    assert (exact.ann.loaded, exact.ann.built) == (0, 0) and not path.exists()


def test_cli_exact_flag(big: KnowledgeStore) -> None:
    res = CliRunner().invoke(
        main, ["query", str(big.root), "w1 w2", "--mode", "dense", "--exact", "--json"]
    )
    assert res.exit_code == 0, res.output
    want = [h.chunk_id for h in big.query("w1 w2", 5, options=EXACT).hits]
    assert '"chunk_id"' in res.output and all(c in res.output for c in want)


def test_standby_builds_its_own_ann_and_http_exact(big: KnowledgeStore, tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    srv = start_server(StoreSpec("default", str(replica), hub=big.config.hub), **TINY)
    try:
        wait_until(lambda: srv.services.ready)
        health = get(srv.url + "/health").json()
        assert health["index"]["ann_segments"] == 1
        metrics = get(srv.url + "/metrics").text
        assert 'kbgit_ann_segments{store="default"} 1.0' in metrics
        assert 'kbgit_ann_cache_total{event="built",store="default"} 1.0' in metrics
        assert len(_cache_files(replica)) == 1  # built on the standby, under its .git
        names = GitRepo(Path(big.config.hub)).run("ls-tree", "-r", "--name-only", "HEAD")
        assert "kbgit-ann" not in names and ".sha256" not in names
        body = {"query": "w1 w2 w3", "k": 5, "mode": "dense"}
        exact = post(srv.url + "/query", json={**body, "exact": True})
        assert exact.status_code == 200 and exact.json()["mode"]["exact"] is True
        want = [h.chunk_id for h in big.query("w1 w2 w3", 5, options=EXACT).hits]
        assert [h["chunk_id"] for h in exact.json()["hits"]] == want
        assert get(srv.url + "/query", params={"q": "w1", "exact": "true"}).status_code == 200
        for bad in ("yes", 1, None, [True]):
            r = post(srv.url + "/query", json={**body, "exact": bad})
            assert r.status_code == 400 and "exact" in r.json()["error"], r.text
        r = get(srv.url + "/query", params={"q": "w1", "exact": "maybe"})
        assert r.status_code == 400 and "exact" in r.json()["error"]
    finally:
        srv.stop()


def test_ann_settings_are_typed_checked_and_round_trip(tmp_path: Path) -> None:
    for bad in ({"ann_min_vectors": "many"}, {"ann_codec": "pq"}, {"ann_nprobe": 0}):
        with pytest.raises(ConfigError):
            StoreConfig.from_mapping(bad)
    with pytest.raises(ConfigError):
        ServeConfig(ann_min_vectors=-1)
    cfg = StoreConfig(model="fake:8", ann_min_vectors=7, ann_codec="flat")
    (tmp_path / "kb.toml").write_text(cfg.to_toml())
    assert StoreConfig.load(tmp_path, env={}) == cfg
    assert "# ann_nprobe = 32" in cfg.to_toml()  # defaults stay commented out
    off = StoreConfig.load(tmp_path, env={"KBGIT_ANN_MIN_VECTORS": "0"})
    assert not AnnSettings.of(off).wants(10**9) and AnnSettings.of(cfg).wants(7)


def test_a_server_builds_the_index_before_the_swap(big: KnowledgeStore, tmp_path: Path) -> None:
    from kbgit.serving.service import KnowledgeService

    first = big.repo.head()
    svc = KnowledgeService("default", big.root, ann=AnnSettings.of(big.config))
    svc.reload(first)
    assert svc.current.snapshot.index.approximate == 1 and svc.ann.built + svc.ann.loaded == 1
    big.ingest(_big_docs(tmp_path / "docs", seed=4, prefix="e"))  # a second big segment
    loaded = svc.prepare(big.repo.head())
    assert loaded.snapshot.index.approximate == 2  # built while preparing
    assert svc.commit == first  # and the old commit was served all along
    svc.install(loaded)
    assert svc.commit == big.repo.head() and svc.health()["index"]["ann_segments"] == 2


def test_the_disk_cache_keeps_the_served_indexes_and_a_few_recent_others(tmp_path: Path) -> None:
    import os

    cache = AnnCache(AnnSettings(min_vectors=10), tmp_path / "ann")
    cache.directory.mkdir()
    x = _clustered(600, seed=4)
    shas = [c * 64 for c in "abc"]
    for n, sha in enumerate(shas):
        cache.get(sha, x)
        path = cache.paths(cache.key(sha, len(x)))[0]
        os.utime(path, (1_000_000 + n, 1_000_000 + n))  # c is the most recently used
    cache.spare = 1
    served = cache.key(shas[0], len(x))
    cache.retain({served})
    kept = sorted(p.name for p in cache.directory.glob("*.faiss"))
    assert kept == sorted([f"{served}.faiss", f"{cache.key(shas[2], len(x))}.faiss"])
    assert sorted(p.stem for p in cache.directory.glob("*.sha256")) == sorted(
        k[: -len(".faiss")] for k in kept
    )
    again = AnnCache(AnnSettings(min_vectors=10), cache.directory)  # a restart reads it
    again.get(shas[0], x)
    assert (again.loaded, again.built) == (1, 0)


def _run_with_deadline(fn, seconds: float = 20.0) -> None:
    """Run ``fn`` in a daemon thread; fail if it has not returned in ``seconds``."""
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the cache blocked (reading a FIFO?)"
    if errors:
        raise errors[0]


def test_an_entry_of_another_segment_renamed_to_this_key_is_refused(tmp_path: Path) -> None:
    import shutil

    settings = AnnSettings(min_vectors=10, nprobe=8)
    one, other = _clustered(600, seed=6), _clustered(600, seed=7)  # same shape
    cache = AnnCache(settings, tmp_path / "ann")
    cache.get("a" * 64, one)
    src, dst = cache.paths(cache.key("a" * 64, 600)), cache.paths(cache.key("b" * 64, 600))
    for s, d in zip(src, dst, strict=True):  # an operator's copy or a swap: both files
        shutil.copy(s, d)
    again = AnnCache(settings, cache.directory)
    ann = again.get("b" * 64, other)
    assert (again.loaded, again.refused, again.built) == (0, 1, 1)
    found = sum(i in ann.candidates(other[i], 10, None) for i in range(50))
    assert found >= 45  # its own index: every row finds itself


def test_a_fifo_or_symlink_in_the_cache_is_neither_read_nor_followed(tmp_path: Path) -> None:
    import os

    settings = AnnSettings(min_vectors=10)
    x = _clustered(600, seed=8)
    cache = AnnCache(settings, tmp_path / "ann")
    cache.get("a" * 64, x)
    path, digest = cache.paths(cache.key("a" * 64, 600))
    good = path.read_bytes()
    outside = tmp_path / "outside.faiss"
    outside.write_bytes(good)
    path.unlink()
    path.symlink_to(outside)  # right bytes, right checksum, but a link: not followed
    again = AnnCache(settings, cache.directory)
    _run_with_deadline(lambda: again.get("a" * 64, x))
    assert (again.loaded, again.refused, again.built) == (0, 1, 1)
    assert not path.is_symlink() and path.read_bytes() == good == outside.read_bytes()
    path.unlink()
    os.mkfifo(path)  # opening a FIFO for reading blocks until a writer comes
    third = AnnCache(settings, cache.directory)
    _run_with_deadline(lambda: third.get("a" * 64, x))
    assert (third.loaded, third.refused, third.built) == (0, 1, 1)
    assert path.is_file() and path.read_bytes() == good and digest.is_file()


def test_an_entry_whose_row_numbers_are_not_the_segments_is_refused(tmp_path: Path) -> None:
    # shape, cells and checksum right, but ids past the segment: every query raised IndexError
    x = _clustered(600, seed=9)
    nlist = AnnCache(AnnSettings(min_vectors=10), None).get("a" * 64, x).index.nlist
    forged = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(32), 32, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    forged.train(x)
    forged.add_with_ids(x, np.arange(600, dtype=np.int64) + 10**12)
    cache = AnnCache(AnnSettings(min_vectors=10), tmp_path / "ann")
    cache.directory.mkdir()
    key = cache.key("a" * 64, 600)
    path, digest = cache.paths(key)
    data = faiss.serialize_index(forged).tobytes()
    path.write_bytes(data)
    digest.write_text(cache_digest(key, data))
    seg = _segment(x)
    live = LiveIndex([seg], {}, 32, {seg.name: cache.get("a" * 64, x)})
    assert (cache.loaded, cache.refused, cache.built) == (0, 1, 1)
    assert _ids(live, x[3], 5)[0] == "r3"
