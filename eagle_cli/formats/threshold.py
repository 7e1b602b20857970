"""``threshold`` artifacts: ``threshold.json`` with τ, S_max, the method and its parameters, k, the
calibration it was fitted on and its size, and the predicted false-alarm rate."""

from __future__ import annotations

import json

from eagle_cli.artifacts import ArtifactRef, Draft

THRESHOLD_FILE = "threshold.json"


def write_threshold(draft: Draft, result: dict) -> None:
    draft.file(THRESHOLD_FILE).write_text(json.dumps(result, indent=2))


def read_threshold(ref: ArtifactRef) -> dict:
    return json.loads((ref.path / THRESHOLD_FILE).read_text())
