"""Embedding backends: their names, and how a backend is written into a model id.

The ledger records one model id per store. A backend other than ``torch`` is appended to
it (``sentence-transformers/all-MiniLM-L6-v2+onnx-int8``), so documents and queries of a
store always use one backend, a standby builds the backend its ledger names, and a change
of backend re-embeds exactly as a change of model does. A model id without a suffix is
the PyTorch fp32 model, as every store written before backends existed.

>>> with_backend("all-MiniLM-L6-v2", "onnx-int8")
'all-MiniLM-L6-v2+onnx-int8'
>>> split_model_id("all-MiniLM-L6-v2+onnx-int8")
('all-MiniLM-L6-v2', 'onnx-int8')
"""

from __future__ import annotations

from .errors import ConfigError

#: PyTorch fp32 through sentence-transformers: what every store used before backends
TORCH = "torch"
#: every backend name, in the order `kbgit init --help` and errors list them
BACKENDS: tuple[str, ...] = (TORCH, "onnx", "onnx-int8", "openvino", "openvino-int8")
#: what a model id may name after "+" (kbgit/models.py allows exactly these)
BACKEND_SUFFIXES: frozenset[str] = frozenset(b for b in BACKENDS if b != TORCH)


def check_backend(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise a ConfigError listing them."""
    if name not in BACKENDS:
        raise ConfigError(
            f"unknown embedding backend {name!r}",
            hint=f"choose one of: {', '.join(BACKENDS)}",
        )
    return name


def split_model_id(model_id: str) -> tuple[str, str]:
    """Split a model id into (base model, backend); no suffix means ``torch``."""
    base, plus, suffix = model_id.rpartition("+")
    if not plus or not base:
        return model_id, TORCH
    if suffix == TORCH:
        raise ConfigError(
            f"model id {model_id!r}: torch is written without a suffix",
            hint=f"use {base!r}",
        )
    return base, check_backend(suffix)


def with_backend(model_id: str, backend: str) -> str:
    """Return the model id that records ``backend`` (torch adds no suffix)."""
    check_backend(backend)
    return model_id if backend == TORCH else f"{model_id}+{backend}"
