#!/usr/bin/env bash
# Set up, generate the realistic synthetic dataset and run the whole chain on it to a report (CPU, offline).
# Pass a vision-language model folder to include the reasoning stages: bash examples/demo.sh /path/to/model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
eagle data synth data/realistic --variation realistic --train 60 --test-good 20
eagle run examples/demo.yaml ${1:+--set "model=$1"}
