#!/usr/bin/env bash
# Install system packages (nginx, chromium) and .venv (with test extras), then run the whole test
# suite: unit, real-model and integration tests (real nginx failover included).
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh test
. .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE
ruff check kbgit server tests bench
python -m pytest -q "$@"
