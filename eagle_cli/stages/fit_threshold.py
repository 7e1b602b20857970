"""eagle fit-threshold: τ and S_max from a bank's calibration scores, as a ``threshold`` artifact.

The calibration scores (one per training image, ``stages/calibrate.py``) are computed once per
bank and estimator and reused by every method. S_max, the top of the CAAS window, is their max.

Reference parity (eagle-method.md A.7, B): ``--calibration reference --method k-sigma`` is the
reference's DBT; images left out of the reference calibration are counted instead of turning τ and
S_max into NaN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.stages.calibrate import CalibrationParams, calibration_scores, check_calibration_of, run_calibrate
from eagle_cli.threshold import ThresholdParams, conformal_rank, far_interval, fit_threshold, smallest_target

THRESHOLD_FILE = "threshold.json"


@dataclass(frozen=True)
class FitThresholdParams:
    dbt: ThresholdParams = ThresholdParams()
    calibration: CalibrationParams = field(default_factory=CalibrationParams)


def run_fit_threshold(bank_ref: ArtifactRef, params: FitThresholdParams, *, context: Context,
                      calibration: ArtifactRef | None = None) -> ArtifactRef:
    """Fit τ by ``params.dbt`` on the bank's calibration scores (``calibration``, or computed now)."""
    check_target(bank_ref, params.dbt)
    if calibration is None:
        calibration = run_calibrate(bank_ref, params.calibration, context=context)
    else:
        check_calibration_of(calibration, bank_ref)
    category = bank_ref.input("features").params["category"]
    draft = artifacts.start("threshold", root=context.artifacts, run=context.run, category=category,
                            params=params.dbt.effective(), inputs=[bank_ref, calibration], force=context.force)
    if isinstance(draft, ArtifactRef):
        return draft
    with draft:
        scores = calibration_scores(calibration)
        tau = fit_threshold(scores, params.dbt)
        s_max = float(scores.max())
        result = {"tau": tau, "s_max": s_max, **params.dbt.effective(), "knn_k": int(bank_ref.params["knn_k"]),
                  "calibration": calibration.params["estimator"], "calibration_images": int(scores.size),
                  "images": calibration.summary["images"],
                  "excluded": calibration.summary["images"] - int(scores.size),
                  "calibration_mean": float(scores.mean()), "calibration_std": float(scores.std()),
                  # A new good score is exchangeable with the n calibration scores, so it lands at or above τ
                  # with probability (#scores ≥ τ)/(n + 1): for conformal that is its guarantee.
                  "predicted_far": float(np.sum(scores >= tau) / (scores.size + 1)),
                  "smallest_target": smallest_target(scores.size)}
        if params.dbt.method == "conformal":
            result["far_interval_90"] = list(far_interval(scores.size, params.dbt.target_far))
        draft.file(THRESHOLD_FILE).write_text(json.dumps(result, indent=2))
        draft.lineage = bank_ref.lineage
        shown = ("tau", "s_max", "method", "target_far", "far_interval_90", "calibration", "calibration_images",
                 "excluded", "predicted_far", "smallest_target")
        draft.summary = {key: result[key] for key in shown if key in result}
        return draft.publish()


def check_target(bank_ref: ArtifactRef, dbt: ThresholdParams) -> None:
    """Refuse, before any work, a false-alarm target that the bank's training images cannot support."""
    if dbt.method == "conformal":
        conformal_rank(bank_ref.input("features").summary["images"], dbt.target_far)


def load_threshold(ref: ArtifactRef) -> dict:
    return json.loads((ref.path / THRESHOLD_FILE).read_text())
