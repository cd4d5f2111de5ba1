"""An embedder that runs an exported model (ONNX Runtime or OpenVINO) instead of PyTorch.

The export (see :mod:`kbgit.model_export`) holds the whole sentence-transformers pipeline:
encoder, mean pooling and normalization. Texts are tokenized by the source model's own
tokenizer exactly as sentence-transformers does (truncation at ``max_seq_length``, padding
to the longest text of a batch) and batched by length. Serving pins ``threads`` to 1.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .backends import check_backend, with_backend
from .errors import ConfigError
from .model_export import exported_model

logger = logging.getLogger(__name__)

#: sentence-transformers' own default when a model names no max_seq_length
_DEFAULT_MAX_SEQ = 256

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


class ExportedEmbedder:
    """Embed with an ONNX Runtime or OpenVINO export of a local sentence-transformers model.

    >>> emb = ExportedEmbedder(path, "sentence-transformers/all-MiniLM-L6-v2", 384,
    ...                        backend="onnx-int8", cache_dir="~/.cache/kbgit/models")  # doctest: +SKIP
    >>> emb.model_id                                                     # doctest: +SKIP
    'sentence-transformers/all-MiniLM-L6-v2+onnx-int8'
    """

    def __init__(
        self,
        path: str,
        base_model_id: str,
        dim: int,
        *,
        backend: str,
        cache_dir: str | os.PathLike[str],
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        self.path = path
        self.backend = check_backend(backend)
        self.model_id = with_backend(base_model_id, backend)
        self.dim = dim
        self.batch_size = batch_size
        self.threads = threads
        self.cache_dir = Path(cache_dir).expanduser()
        self._run: Runner | None = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Tell whether the exported model is in memory."""
        return self._run is not None

    def load(self) -> None:
        """Export (first use only) and load the model now, e.g. before a standby reports ready."""
        with self._lock:
            if self._run is not None:
                return
            model_file = exported_model(self.path, self.backend, self.cache_dir)
            if self.backend.startswith("onnx"):
                run = _onnx_runner(model_file, self.threads)
            else:
                run = _openvino_runner(model_file, self.threads)
            got = run(dict(self._tokenize(["probe"]))).shape[1]
            if got != self.dim:
                raise ConfigError(f"model {self.model_id} has dimension {got}, expected {self.dim}")
            self._run = run
            logger.info("loaded model %s from %s", self.model_id, model_file)

    def _get_tokenizer(self):  # noqa: ANN202 - a transformers tokenizer
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            tok.model_max_length = 1 << 30  # counting must not truncate or warn
            self._tokenizer = tok
        return self._tokenizer

    def _tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self._get_tokenizer()(
            texts,
            padding=True,
            truncation="longest_first",
            max_length=_max_seq_length(self.path),
            return_tensors="np",
        )
        return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}

    def count_tokens(self, text: str) -> int:
        """Count word-piece tokens, excluding [CLS]/[SEP]."""
        return len(self._get_tokenizer().encode(text, add_special_tokens=False))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts in length-sorted batches into normalized float32 vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        self.load()
        assert self._run is not None
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run(self._tokenize([texts[i] for i in idx]))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


def _max_seq_length(path: str) -> int:
    try:
        with open(os.path.join(path, "sentence_bert_config.json"), encoding="utf-8") as fh:
            return int(json.load(fh).get("max_seq_length") or _DEFAULT_MAX_SEQ)
    except (OSError, ValueError, TypeError):
        return _DEFAULT_MAX_SEQ


def _onnx_runner(model_file: Path, threads: int | None) -> Runner:
    """Return a function running one batch through an ONNX Runtime session (thread-safe)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
        # pinned (serving): idle workers sleep instead of spinning on a shared 2-core box
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return sess.run(None, {k: v for k, v in feed.items() if k in wanted})[0]

    return run


def _openvino_runner(model_file: Path, threads: int | None) -> Runner:
    """Return a function running one batch through OpenVINO (one infer request per caller)."""
    import openvino as ov

    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(model_file), "CPU", config)
    wanted = {i.get_any_name() for i in compiled.inputs}
    idle: queue.SimpleQueue = queue.SimpleQueue()  # infer requests are not thread-safe

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        try:
            req = idle.get_nowait()
        except queue.Empty:
            req = compiled.create_infer_request()
        try:
            res = req.infer({k: v for k, v in feed.items() if k in wanted})
            return np.array(res[compiled.outputs[0]], dtype=np.float32)
        finally:
            idle.put(req)

    return run
