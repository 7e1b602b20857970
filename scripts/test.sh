#!/usr/bin/env bash
# Set up (if needed), lint, and run the test suite on the CPU. The report tests need Debian's chromium.
# Arguments go to pytest: bash scripts/test.sh -m "not quality" skips the few-minute quality bars.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "The report tests need chromium: sudo apt-get install chromium" >&2
  fi
fi
bash scripts/setup.sh
. .venv/bin/activate
ruff check eagle_cli tests benchmarks scripts
python -m pytest -q "$@"
