#!/usr/bin/env bash
# The test suite: set up the environment, run pytest (offline, CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_env.sh
export PATH="$PWD/.venv/bin:$PATH"
python -m pytest "$@"
