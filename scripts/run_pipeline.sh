#!/usr/bin/env bash
# The main job: set up the environment, run the whole DVC pipeline, print the metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_env.sh
export PATH="$PWD/.venv/bin:$PATH"
wsss check
dvc repro "$@"
dvc metrics show
