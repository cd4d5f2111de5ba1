#!/usr/bin/env bash
# Fresh machine -> a demo knowledge base from examples/docs, with the real model, on 127.0.0.1.
# Usage: bash scripts/demo.sh            (state under ./demo-run; rerun to reuse it)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE
RUN="${KBGIT_DEMO_DIR:-$PWD/demo-run}"
mkdir -p "$RUN"
[ -d "$RUN/hub.git" ] || kbgit hub create "$RUN/hub.git"
[ -d "$RUN/primary/.git" ] || kbgit init "$RUN/primary" --hub "$RUN/hub.git"
kbgit ingest "$RUN/primary" examples/docs
kbgit verify "$RUN/primary"
kbgit query "$RUN/primary" "How often are API keys rotated?" -k 3
