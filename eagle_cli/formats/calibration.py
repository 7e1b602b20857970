"""``calibration`` artifacts: one score per training image, as if the bank had not seen it.

``calibration.jsonl`` holds one :class:`CalibrationRow` per training image. The manifest's
parameters are the calibration settings that change scores and, when a sample was scored, its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.formats.jsonl import read_rows, write_rows
from eagle_cli.params import CalibrationParams
from eagle_cli.settings import build, identity

CALIBRATION_FILE = "calibration.jsonl"


@dataclass(frozen=True)
class CalibrationRow:
    path: str
    score: float | None  # None: left out (too few unselected patches) or not sampled
    excluded: bool  # sampled, but left out
    sampled: bool
    unselected_patches: int


def calibration_params(params: CalibrationParams, *, sampled: int, n_images: int) -> dict:
    """What a calibration's id hashes: the settings that change scores, and how many images a sample scored."""
    return {**identity(params), "sampled": sampled if sampled < n_images else None}


def calibration_settings(ref: ArtifactRef) -> CalibrationParams:
    return build(CalibrationParams, ref.params)


def write_calibration(draft: Draft, rows: list[CalibrationRow]) -> None:
    write_rows(draft.file(CALIBRATION_FILE), rows)


def read_calibration(ref: ArtifactRef) -> list[CalibrationRow]:
    return read_rows(ref.path / CALIBRATION_FILE, CalibrationRow)


def calibration_scores(ref: ArtifactRef) -> np.ndarray:
    """The scores of the images not left out, ``(n_used,) float64``."""
    return np.array([row.score for row in read_calibration(ref) if row.score is not None], dtype=np.float64)
