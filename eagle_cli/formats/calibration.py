"""``calibration`` artifacts: one score per training image, as if the bank had not seen it.

``calibration.jsonl`` rows: path, score (None when the image was left out), excluded, fold
(cross-fit's, else -1), unselected_patches.
"""

from __future__ import annotations

import numpy as np

from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.formats.jsonl import read_jsonl, write_jsonl

CALIBRATION_FILE = "calibration.jsonl"


def write_calibration(draft: Draft, rows: list[dict]) -> None:
    write_jsonl(draft.file(CALIBRATION_FILE), rows)


def read_calibration(ref: ArtifactRef) -> list[dict]:
    return read_jsonl(ref.path / CALIBRATION_FILE)


def calibration_scores(ref: ArtifactRef) -> np.ndarray:
    """The scores of the images not left out, ``(n_used,) float64``."""
    return np.array([row["score"] for row in read_calibration(ref) if row["score"] is not None], dtype=np.float64)
