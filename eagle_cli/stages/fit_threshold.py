"""eagle fit-threshold: calibration scores of a bank's training images, then τ and S_max from them.

Two artifacts. ``calibration``: one score per training image, estimating what good images the
bank has never seen score (estimators: ``expert/calibration.py``); computed once per bank and
estimator and reused by every method. ``threshold``: τ by the DBT method, and S_max, the top of
the CAAS window, as the max calibration score.

Reference parity (eagle-method.md A.7, B): ``--calibration reference --method k-sigma`` is the
reference's DBT; images left out of the reference calibration are counted instead of turning τ and
S_max into NaN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.expert import calibration as estimators
from eagle_cli.expert.scoring import ScoreRule
from eagle_cli.formats.bank import read_bank, read_bank_cover, read_bank_tensors
from eagle_cli.formats.calibration import calibration_scores, write_calibration
from eagle_cli.formats.features import read_features
from eagle_cli.formats.threshold import write_threshold
from eagle_cli.params import BankParams, CalibrationParams, ThresholdParams
from eagle_cli.seeds import category_seed
from eagle_cli.threshold import conformal_rank, far_interval, fit_threshold, smallest_target


@dataclass(frozen=True)
class FitThresholdParams:
    dbt: ThresholdParams = field(default_factory=ThresholdParams)
    calibration: CalibrationParams = field(default_factory=CalibrationParams)


def run_calibrate(bank_ref: ArtifactRef, params: CalibrationParams, *, context: Context) -> ArtifactRef:
    """Score every training image of the bank with ``params.calibration``; refuse if fewer than 2 can be scored."""
    features_ref = bank_ref.input("features")
    category = features_ref.params["category"]

    n_images = features_ref.summary["images"]
    seed = category_seed(bank_ref.params["seed"], category)

    def build(draft):
        # fit-bank read these features through the finiteness check already.
        features, records, _ = read_features(features_ref, check_finite=False)
        patches = features.shape[1]
        source_rows = read_bank_tensors(bank_ref, keys=("source_rows",))["source_rows"]
        selected = torch.zeros(n_images * patches, dtype=torch.bool)
        selected[source_rows] = True
        unselected = ~selected.reshape(n_images, patches)
        images = estimators.sample_images(n_images, params.sampled(n_images), seed=seed)
        with context.reporter.task(f"calibrate {category} ({params.calibration})", len(images)) as advance:
            result = _estimate(params, bank_ref, features, unselected, images, seed, advance)
        scored = np.isfinite(result.scores)
        if scored.sum() < 2:
            raise ParameterError(
                f"Only {int(scored.sum())} of {n_images} training images could be scored for calibration "
                f"(--min-unselected {params.min_unselected} with --calibration reference); lower it, use another "
                "--calibration, or add training images.")
        sampled = np.zeros(n_images, dtype=bool)
        sampled[images] = True
        counts = unselected.sum(1)
        write_calibration(draft, [
            {"path": rec["path"], "score": float(result.scores[i]) if scored[i] else None,
             "excluded": bool(sampled[i] and not scored[i]), "sampled": bool(sampled[i]),
             "fold": int(result.fold[i]), "unselected_patches": int(counts[i])}
            for i, rec in enumerate(records)])
        used = result.scores[scored]
        draft.lineage = bank_ref.lineage
        draft.summary = {"estimator": params.calibration, "images": n_images, "sampled": len(images),
                         "used": int(scored.sum()), "mean": float(used.mean()), "std": float(used.std()),
                         "max": float(used.max()), "fallback_rows": result.fallback_rows}

    return artifacts.produce("calibration", context=context, category=category, params=params.identity(n_images),
                             inputs=[bank_ref], build=build)


def _estimate(params: CalibrationParams, bank_ref: ArtifactRef, features: torch.Tensor, unselected: torch.Tensor,
              images: np.ndarray, seed: int, advance) -> estimators.Calibration:
    bank = bank_ref.params
    rule = ScoreRule.of_bank(bank)
    if params.calibration == "cross-fit":
        return estimators.cross_fit_scores(features, images, folds=params.folds, coreset=BankParams.of_bank(bank),
                                           rule=rule, seed=seed, progress=advance)
    cover = read_bank_cover(bank_ref) if params.calibration == "refill" else None
    index = read_bank(bank_ref, backend=params.knn_backend, device=params.device)
    if params.calibration == "reference":
        return estimators.reference_scores(features, index, unselected, images, rule=rule,
                                           min_unselected=params.min_unselected, extra=params.extra_neighbours,
                                           progress=advance)
    if params.calibration == "leave-own-out":
        return estimators.leave_own_out_scores(features, index, images, rule=rule, extra=params.extra_neighbours,
                                               progress=advance)
    # The bank's own projection: the same generator, seeded as fit-bank seeded it.
    return estimators.refill_scores(features, index, cover, images, rule=rule, proj_dim=bank["proj_dim"],
                                    generator=torch.Generator().manual_seed(seed), extra=params.extra_neighbours,
                                    progress=advance)


def run_fit_threshold(bank_ref: ArtifactRef, params: FitThresholdParams, *, context: Context,
                      calibration: ArtifactRef | None = None) -> ArtifactRef:
    """Fit τ by ``params.dbt`` on the bank's calibration scores (``calibration``, or computed now)."""
    artifacts.check_lineage(bank_ref, bank_ref.input("features"), what="The bank and its training features")
    check_target(bank_ref, params)
    if calibration is None:
        calibration = run_calibrate(bank_ref, params.calibration, context=context)
    else:
        check_calibration_of(calibration, bank_ref)

    def build(draft):
        scores = calibration_scores(calibration)
        tau = fit_threshold(scores, params.dbt)
        result = {"tau": tau, "s_max": float(scores.max()), **params.dbt.effective(),
                  **asdict(ScoreRule.of_bank(bank_ref.params)), "calibration": calibration.params["estimator"],
                  "calibration_images": int(scores.size), "images": calibration.summary["images"],
                  "excluded": calibration.summary.get("sampled", calibration.summary["images"]) - int(scores.size),
                  "calibration_mean": float(scores.mean()), "calibration_std": float(scores.std()),
                  # A new good score is exchangeable with the n calibration scores, so it lands at or above τ
                  # with probability (#scores ≥ τ)/(n + 1): for conformal that is its guarantee.
                  "predicted_far": float(np.sum(scores >= tau) / (scores.size + 1)),
                  "smallest_target": smallest_target(scores.size)}
        if params.dbt.method == "conformal":
            result["far_interval_90"] = list(far_interval(scores.size, params.dbt.target_far))
        write_threshold(draft, result)
        draft.lineage = bank_ref.lineage
        shown = ("tau", "s_max", "method", "target_far", "far_interval_90", "calibration", "calibration_images",
                 "excluded", "predicted_far", "smallest_target")
        draft.summary = {key: result[key] for key in shown if key in result}

    return artifacts.produce("threshold", context=context, category=bank_ref.input("features").params["category"],
                             params=params.dbt.effective(), inputs=[bank_ref, calibration], build=build)


def check_target(bank_ref: ArtifactRef, params: FitThresholdParams) -> None:
    """Refuse, before any work, a false-alarm target that the images calibration will score cannot support."""
    if params.dbt.method != "conformal":
        return
    n_images = bank_ref.input("features").summary["images"]
    sampled = params.calibration.sampled(n_images)
    try:
        conformal_rank(sampled, params.dbt.target_far)
    except ParameterError as error:
        if sampled == n_images:
            raise
        raise ParameterError(f"{error} --calibration-images {sampled} scores {sampled} of the {n_images} training "
                             "images: raise it, or 0 to score all.") from None


def check_calibration_of(calibration_ref: ArtifactRef, bank_ref: ArtifactRef) -> None:
    """Refuse a calibration computed from another bank (or from features computed differently)."""
    banks = [item["id"] for item in calibration_ref.manifest["inputs"] if item["kind"] == "bank"]
    if banks != [bank_ref.id]:
        raise ArtifactError(f"{calibration_ref.path} calibrates bank {', '.join(banks) or '(none)'}, not bank "
                            f"{bank_ref.id} ({bank_ref.path}); let eagle fit-threshold compute the calibration "
                            "for this bank (omit --calibration-artifact).")
    artifacts.check_lineage(bank_ref, calibration_ref, what="The bank and the calibration scores")
