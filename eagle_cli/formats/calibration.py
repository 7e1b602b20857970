"""``calibration`` artifacts: one score per training image, as if the bank had not seen it.

``calibration.jsonl`` holds one :class:`CalibrationRow` per training image. Under the ``peak`` image
rule, ``cell_norm.safetensors`` holds what the calibration measured of good patch scores (``mean`` and
``std`` per tile cell, float32): new images are standardised by it. The manifest's parameters are the
calibration settings that change scores and, when a sample was scored, its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load_file, save_file

from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.expert.image_rule import CellNorm
from eagle_cli.formats.jsonl import read_rows, write_rows
from eagle_cli.params import CalibrationParams
from eagle_cli.settings import build, identity

CALIBRATION_FILE = "calibration.jsonl"
NORM_FILE = "cell_norm.safetensors"


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


def write_cell_norm(draft: Draft, norm: CellNorm) -> None:
    save_file({"mean": norm.mean, "std": norm.std}, str(draft.file(NORM_FILE)))


def read_cell_norm(ref: ArtifactRef) -> CellNorm | None:
    """The calibration's cell norm; None when its image rule needs none."""
    path = ref.path / NORM_FILE
    if not path.is_file():
        return None
    arrays = load_file(str(path))
    return CellNorm(arrays["mean"], arrays["std"])
