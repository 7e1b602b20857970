#!/usr/bin/env bash
# Set up, generate the synthetic dataset, and run the expert stages on it (CPU, offline, ~1 minute).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
eagle data synth data/synth
eagle fit-bank --data data/synth --backbone mobilenet_v2
eagle fit-threshold
eagle score
eagle artifacts ls
