#!/usr/bin/env bash
# The main job: set up the environment, run the whole DVC pipeline, print the headline numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_env.sh
export PATH="$PWD/.venv/bin:$PATH"
wsss check
dvc repro "$@"
wsss summary
