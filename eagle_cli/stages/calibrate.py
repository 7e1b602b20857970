"""Calibration scores of a bank's training images, as a ``calibration`` artifact (written by eagle fit-threshold).

One score per training image, estimating what good images the bank has never seen score
(estimators: ``eagle_cli/expert/calibration.py``). Thresholds of every method are then fitted on
these scores without recomputing them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.expert import calibration as estimators
from eagle_cli.stages.common import category_seed, load_features, read_jsonl, write_jsonl
from eagle_cli.stages.fit_bank import load_bank, load_bank_tensors

CALIBRATION_FILE = "calibration.jsonl"


@dataclass(frozen=True)
class CalibrationParams:
    """Which estimator; ``folds`` is read by ``cross-fit`` only, ``min_unselected`` by ``reference`` only."""

    estimator: str = "refill"
    folds: int = 5
    min_unselected: int = 32
    extra_neighbours: int = 32
    knn_backend: str = "auto"
    device: str = "auto"

    def __post_init__(self):
        if self.estimator not in estimators.CALIBRATIONS:
            raise ParameterError(f"Unknown calibration {self.estimator!r}; choose one of "
                                 f"{', '.join(estimators.CALIBRATIONS)}.")
        if self.folds < 2:
            raise ParameterError(f"--folds must be at least 2, got {self.folds}.")

    def identity(self) -> dict:
        # Search settings change speed, never the scores.
        own = {"cross-fit": {"folds": self.folds}, "reference": {"min_unselected": self.min_unselected}}
        return {"estimator": self.estimator, **own.get(self.estimator, {})}


def run_calibrate(bank_ref: ArtifactRef, params: CalibrationParams, *, context: Context) -> ArtifactRef:
    """Score every training image of the bank with ``params.estimator``; refuse if fewer than 2 can be scored."""
    features_ref = bank_ref.input("features")
    category = features_ref.params["category"]
    draft = artifacts.start("calibration", root=context.artifacts, run=context.run, category=category,
                            params=params.identity(), inputs=[bank_ref], force=context.force)
    if isinstance(draft, ArtifactRef):
        return draft
    with draft:
        features, records, _ = load_features(features_ref)
        n_images, patches, _ = features.shape
        knn_k = int(bank_ref.params["knn_k"])
        source_rows = load_bank_tensors(bank_ref, keys=("source_rows",))["source_rows"]
        seed = category_seed(bank_ref.params["seed"], category)
        selected = torch.zeros(n_images * patches, dtype=torch.bool)
        selected[source_rows] = True
        unselected = ~selected.reshape(n_images, patches)
        with context.reporter.task(f"calibrate {category} ({params.estimator})", n_images) as advance:
            result = _estimate(params, bank_ref, source_rows, features, unselected, knn_k, seed, advance)
        scored = np.isfinite(result.scores)
        if scored.sum() < 2:
            raise ParameterError(
                f"Only {int(scored.sum())} of {n_images} training images could be scored for calibration "
                f"(--min-unselected {params.min_unselected} with --calibration reference); lower it, use another "
                "--calibration, or add training images.")
        counts = unselected.sum(1)
        write_jsonl(draft.file(CALIBRATION_FILE), [
            {"path": rec["path"], "score": float(result.scores[i]) if scored[i] else None, "excluded": not scored[i],
             "fold": int(result.fold[i]), "unselected_patches": int(counts[i])}
            for i, rec in enumerate(records)])
        used = result.scores[scored]
        draft.lineage = bank_ref.lineage
        draft.summary = {"estimator": params.estimator, "images": n_images, "used": int(scored.sum()),
                         "mean": float(used.mean()), "std": float(used.std()), "max": float(used.max()),
                         "fallback_rows": result.fallback_rows}
        return draft.publish()


def _estimate(params: CalibrationParams, bank_ref: ArtifactRef, source_rows: torch.Tensor, features: torch.Tensor,
              unselected: torch.Tensor, knn_k: int, seed: int, advance) -> estimators.Calibration:
    bank = bank_ref.params
    if params.estimator == "cross-fit":
        settings = estimators.CoresetSettings(bank["coreset_ratio"], bank["proj_dim"], bank["n_starts"], bank["init"])
        return estimators.cross_fit_scores(features, folds=params.folds, coreset=settings, knn_k=knn_k, seed=seed,
                                           progress=advance)
    index = load_bank(bank_ref, backend=params.knn_backend, device=params.device)
    if params.estimator == "reference":
        return estimators.reference_scores(features, index, unselected, knn_k=knn_k,
                                           min_unselected=params.min_unselected, extra=params.extra_neighbours,
                                           progress=advance)
    if params.estimator == "leave-own-out":
        return estimators.leave_own_out_scores(features, index, knn_k=knn_k, extra=params.extra_neighbours,
                                               progress=advance)
    # The bank's own projection: the same generator, seeded as fit-bank seeded it.
    return estimators.refill_scores(features, index, source_rows, knn_k=knn_k, proj_dim=bank["proj_dim"],
                                    generator=torch.Generator().manual_seed(seed), extra=params.extra_neighbours,
                                    progress=advance)


def load_calibration(ref: ArtifactRef) -> list[dict]:
    """One row per training image: path, score (None if left out), excluded, fold, unselected_patches."""
    return read_jsonl(ref.path / CALIBRATION_FILE)


def calibration_scores(ref: ArtifactRef) -> np.ndarray:
    """The finite calibration scores ``(n_used,) float64``."""
    return np.array([row["score"] for row in load_calibration(ref) if row["score"] is not None], dtype=np.float64)


def check_calibration_of(calibration_ref: ArtifactRef, bank_ref: ArtifactRef) -> None:
    """Refuse a calibration computed from another bank (or from features computed differently)."""
    banks = [item["id"] for item in calibration_ref.manifest["inputs"] if item["kind"] == "bank"]
    if banks != [bank_ref.id]:
        raise ArtifactError(f"{calibration_ref.path} calibrates bank {', '.join(banks) or '(none)'}, not bank "
                            f"{bank_ref.id} ({bank_ref.path}); let eagle fit-threshold compute the calibration "
                            "for this bank (omit --calibration-artifact).")
    artifacts.check_lineage(bank_ref, calibration_ref, what="The bank and the calibration scores")
