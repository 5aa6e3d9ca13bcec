#!/usr/bin/env bash
# The test suite: set up the environment, run pytest (offline, CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_env.sh
export PATH="$PWD/.venv/bin:$PATH"
# Two workers, a test file each at a time (its module fixtures stay in one process): the
# suite's DVC runs are mostly process start-up and hashing, so they overlap well on 2 cores.
python -m pytest -n 2 --dist loadfile "$@"
