#!/usr/bin/env bash
# Render report/index.html in headless Chromium and keep a screenshot (report/screenshot.png).
# Installs Debian's chromium and chromium-driver if missing (needs root and apt).
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:-report/index.html}
out=${2:-report/screenshot.png}
[ -s "$report" ] || { echo "error: $report is missing or empty; run 'dvc repro report' first" >&2; exit 2; }
if ! command -v chromium >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# The flags keep Chromium off the network (this machine has none) and out of any sandbox it cannot set up as root.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --window-size=1400,2400 --screenshot="$PWD/$out" "file://$PWD/$report" 2>/dev/null
.venv/bin/python - "$out" <<'PY'
import sys
from PIL import Image
image = Image.open(sys.argv[1]).convert("L")
low, high = image.getextrema()
# A blank page renders as one flat colour; the report has text, tables and pictures.
if high - low < 50 or len(image.resize((64, 64)).getcolors(64 * 64)) < 20:
    sys.exit(f"error: {sys.argv[1]} looks blank (grey levels {low}..{high})")
print(f"screenshot {sys.argv[1]}: {image.size[0]}x{image.size[1]}, grey levels {low}..{high}")
PY
