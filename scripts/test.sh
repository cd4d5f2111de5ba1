#!/usr/bin/env bash
# Set up .venv (with test extras) and run the whole test suite: unit, real-model and
# integration tests (nginx tests need the nginx binary: apt-get install nginx).
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE
ruff check kbgit server tests bench
python -m pytest -q "$@"
