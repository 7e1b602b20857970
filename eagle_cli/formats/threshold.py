"""``threshold`` artifacts: ``threshold.json``, the fitted :class:`Threshold` (τ, S_max, the method and its
parameters, the calibration size and what it promises). The manifest's parameters are the method's."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.errors import ArtifactError
from eagle_cli.params import ThresholdParams
from eagle_cli.settings import build, identity
from eagle_cli.threshold import Threshold

THRESHOLD_FILE = "threshold.json"


def write_threshold(draft: Draft, threshold: Threshold) -> None:
    values = {**asdict(threshold), "params": identity(threshold.params)}
    draft.file(THRESHOLD_FILE).write_text(json.dumps(values, indent=2))


def read_threshold(ref: ArtifactRef) -> Threshold:
    values = json.loads((ref.path / THRESHOLD_FILE).read_text())
    try:
        threshold = Threshold(**{**values, "params": build(ThresholdParams, values["params"])})
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{ref.path / THRESHOLD_FILE} is not a threshold this eagle wrote ({exc}); re-run "
                            "eagle fit-threshold with --force.") from None
    interval = threshold.far_interval_90
    return replace(threshold, far_interval_90=tuple(interval) if interval is not None else None)


def threshold_summary(threshold: Threshold, *, estimator: str, excluded: int) -> dict:
    """What `eagle fit-threshold` shows: τ, S_max, the method, its promise and the calibration behind it."""
    return {"tau": threshold.tau, "s_max": threshold.s_max, **identity(threshold.params),
            "far_interval_90": list(threshold.far_interval_90) if threshold.far_interval_90 else None,
            "calibration": estimator, "calibration_images": threshold.n, "excluded": excluded,
            "predicted_far": threshold.predicted_far, "smallest_target": threshold.smallest_target}
