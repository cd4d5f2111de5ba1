"""Exported models (ONNX, OpenVINO, int8) built offline from local model files, cached.

An export is made on this machine from a local sentence-transformers model directory,
never downloaded and never read from a repository. It is cached under
``<cache>/<sha256 of the source files>/<backend>-r<recipe>/`` with a ``manifest.json``
listing the sha256 of every file it wrote. Every load checks those sums: an entry that
fails them is rebuilt, never loaded. Builds go to a temporary directory renamed into
place, under a file lock, so concurrent processes build an entry once.

The wrappers sentence-transformers uses for its own ``backend="onnx"/"openvino"``
(optimum-onnx, optimum-intel) require transformers < 4.58 / < 5.6 and would pull another
torch; exports therefore use the libraries' own tools: ``torch.onnx.export``,
``onnxruntime.quantization.quantize_dynamic``, ``openvino.convert_model`` and
``nncf.compress_weights``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from .backends import TORCH, check_backend
from .errors import ConfigError

logger = logging.getLogger(__name__)

#: bump when an export recipe changes: old entries are then ignored and rebuilt
RECIPE = 1
#: the file the runtime loads, per backend (OpenVINO's .xml has a .bin beside it)
MODEL_FILES = {
    "onnx": "model.onnx",
    "onnx-int8": "model_qint8.onnx",
    "openvino": "openvino_model.xml",
    "openvino-int8": "openvino_model_int8.xml",
}
MANIFEST = "manifest.json"
_CHUNK = 1 << 20
_digests: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def source_digest(source: str | os.PathLike[str]) -> str:
    """Return the sha256 over the names and contents of a model directory's files."""
    root = Path(source)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    stat = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(root.resolve()), stat)
    if key not in _digests:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(root)).encode("utf-8") + b"\0")
            h.update(_sha256(p).encode("ascii"))
        _digests[key] = h.hexdigest()
    return _digests[key]


def _entry_ok(entry: Path, backend: str) -> bool:
    """Tell whether a cache entry is whole: its manifest names the backend and every sum holds."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("backend") != backend or MODEL_FILES[backend] not in files:
            return False
        if {p.name for p in entry.iterdir()} != set(files) | {MANIFEST}:
            return False
        return all(_sha256(entry / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def exported_model(
    source: str | os.PathLike[str], backend: str, cache_dir: str | os.PathLike[str]
) -> Path:
    """Return the path of the checked export of ``source`` for ``backend``, building it if needed."""
    from filelock import FileLock

    if check_backend(backend) == TORCH:
        raise ConfigError("the torch backend loads the model directory itself; nothing to export")
    base = Path(cache_dir) / source_digest(source)
    base.mkdir(parents=True, exist_ok=True)
    entry = base / f"{backend}-r{RECIPE}"
    with FileLock(str(base / f"{backend}.lock")):
        if _entry_ok(entry, backend):
            return entry / MODEL_FILES[backend]
        if entry.exists():
            logger.warning("export cache %s fails its checksums: rebuilding it", entry)
        # int8 and OpenVINO start from the cached fp32 ONNX export (one torch export in all)
        fp32 = None if backend == "onnx" else exported_model(source, "onnx", cache_dir)
        _build(Path(source), backend, base, entry, fp32)
    return entry / MODEL_FILES[backend]


def _build(source: Path, backend: str, base: Path, entry: Path, fp32: Path | None) -> None:
    """Export into a temporary directory, write its manifest, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{backend}-", dir=base))
    try:
        if fp32 is None:
            _export_onnx(source, tmp)
        else:
            _EXPORTERS[backend](fp32, tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        manifest = {
            "backend": backend,
            "recipe": RECIPE,
            "source_sha256": base.name,
            "versions": _versions(),
            "files": files,
        }
        for p in tmp.iterdir():
            with open(p, "rb+") as fh:
                os.fsync(fh.fileno())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), "utf-8")
        if entry.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=base))
            os.replace(entry, old / "entry")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, entry)
        logger.info("exported %s as %s into %s", source, backend, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime",
                 "openvino", "nncf"):  # fmt: skip
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _export_onnx(source: Path, out: Path) -> None:
    """Trace the whole sentence-transformers pipeline (encoder, pooling, normalize) to ONNX."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    st.eval()

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            feats = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            return self.st(feats)["sentence_embedding"]

    enc = st.tokenize(["an example", "a somewhat longer example sentence"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"sentence_embedding": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            Pipeline(),
            tuple(enc[n] for n in names),
            str(out / MODEL_FILES["onnx"]),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic axes
            opset_version=17,
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
        )


def _export_onnx_int8(fp32: Path, out: Path) -> None:
    """Quantize the ONNX export's weights to int8 (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32),
        str(out / MODEL_FILES["onnx-int8"]),
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def _export_openvino(fp32: Path, out: Path) -> None:
    """Convert the ONNX export to OpenVINO IR, fp32 weights."""
    import openvino as ov

    model = ov.convert_model(str(fp32))
    ov.save_model(model, str(out / MODEL_FILES["openvino"]), compress_to_fp16=False)


def _export_openvino_int8(fp32: Path, out: Path) -> None:
    """Compress the OpenVINO model's weights to int8 (no calibration data needed)."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32))
    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(model, str(out / MODEL_FILES["openvino-int8"]), compress_to_fp16=False)


_EXPORTERS = {
    "onnx-int8": _export_onnx_int8,
    "openvino": _export_openvino,
    "openvino-int8": _export_openvino_int8,
}
