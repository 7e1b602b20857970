"""eagle fit-threshold: calibration scores of a bank's training images, then τ and S_max from them.

Two artifacts. ``calibration``: one score per training image, estimating what good images the
bank has never seen score (estimators: ``expert/calibration.py``, read into image scores by the
bank's image rule, ``expert/image_rule.py``); computed once per bank and estimator and reused by
every method. ``threshold``: τ by the DBT method, and S_max, the top of
the CAAS window, as the max calibration score.

Reference parity (eagle-method.md A.7, B): ``--calibration reference --method k-sigma`` is the
reference's DBT; images left out of the reference calibration are counted instead of turning τ and
S_max into NaN.
"""

from __future__ import annotations

import numpy as np

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import ParameterError
from eagle_cli.expert.calibration import calibrated_scores
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.calibration import (
    CalibrationRow,
    calibration_params,
    calibration_scores,
    calibration_settings,
    read_calibration,
    write_calibration,
    write_cell_norm,
)
from eagle_cli.formats.features import features_info, read_features
from eagle_cli.formats.threshold import threshold_summary, write_threshold
from eagle_cli.lineage import Lineage
from eagle_cli.params import CalibrationParams, ThresholdParams
from eagle_cli.settings import identity
from eagle_cli.threshold import conformal_rank, fit_threshold


def run_calibrate(bank_ref: ArtifactRef, params: CalibrationParams, *, context: Context) -> ArtifactRef:
    """Score every training image of the bank with ``params.calibration``; refuse if fewer than 2 can be scored."""
    features_ref = bank_ref.input("features")
    info = features_info(features_ref)
    Lineage.from_dict(bank_ref.lineage).check_matches(info.lineage, what="The bank and its training features")
    bank = open_bank(bank_ref)
    sampled = params.sampled(info.n_images)
    geometry = Geometry.of(info.lineage)
    if params.calibration == "reference" and bank.params.image_score == "peak":
        raise ParameterError("The peak image rule needs every patch of the calibration images scored, and "
                             "--calibration reference scores only the unselected ones: use --calibration refill, "
                             "or fit the bank with --image-score top-mean.")

    def build(draft):
        # fit-bank read these features through the finiteness check already.
        features, records, grid = read_features(features_ref, check_finite=False)
        rule = ImageRule.of(bank.params, geometry, grid)
        coreset = bank.coreset()
        index = bank.index(backend=params.knn_backend, device=params.device)
        with context.reporter.task(f"calibrate {info.category} ({params.calibration})", sampled) as advance:
            result = calibrated_scores(features, index, coreset, bank.params, params, rule, seed=bank.seed,
                                       progress=advance)
        rule = result.rule
        scores = result.per_image(info.n_images)
        scored = np.isfinite(scores)
        if scored.sum() < 2:
            raise ParameterError(
                f"Only {int(scored.sum())} of {info.n_images} training images could be scored for calibration "
                f"(--min-unselected {params.min_unselected} with --calibration reference); lower it, use --calibration "
                "refill, or add training images.")
        chosen = np.zeros(info.n_images, dtype=bool)
        chosen[result.images] = True
        patches = features.shape[1]
        unselected = patches - np.bincount(coreset.selected.numpy() // patches, minlength=info.n_images)
        write_calibration(draft, [
            CalibrationRow(record.path, float(scores[i]) if scored[i] else None,
                           bool(chosen[i] and not scored[i]), bool(chosen[i]), int(unselected[i]))
            for i, record in enumerate(records)])
        if rule.norm is not None:
            write_cell_norm(draft, rule.norm)
        used = scores[scored]
        draft.lineage = bank_ref.lineage
        draft.summary = {"estimator": params.calibration, "image_score": rule.kind, "images": info.n_images,
                         "sampled": len(result.images),
                         "used": int(scored.sum()), "mean": float(used.mean()), "std": float(used.std()),
                         "max": float(used.max())}

    return artifacts.produce("calibration", context=context, category=info.category,
                             params=calibration_params(params, sampled=sampled, n_images=info.n_images),
                             inputs=[bank_ref], build=build)


def run_fit_threshold(calibration_ref: ArtifactRef, params: ThresholdParams, *, context: Context) -> ArtifactRef:
    """Fit τ by ``params`` on a calibration's scores; the threshold's inputs are its bank and that calibration."""
    bank_ref = calibration_ref.input("bank")
    rows = read_calibration(calibration_ref)
    check_target(sum(row.sampled for row in rows), params)

    def build(draft):
        scores = calibration_scores(calibration_ref)
        threshold = fit_threshold(scores, params)
        write_threshold(draft, threshold)
        draft.lineage = bank_ref.lineage
        draft.summary = threshold_summary(threshold, estimator=calibration_settings(calibration_ref).calibration,
                                          excluded=sum(row.excluded for row in rows))

    return artifacts.produce("threshold", context=context, category=bank_ref.category,
                             params=identity(params), inputs=[bank_ref, calibration_ref], build=build)


def run_threshold(bank_ref: ArtifactRef, calibration: CalibrationParams, threshold: ThresholdParams, *,
                  context: Context) -> ArtifactRef:
    """eagle fit-threshold on one bank: the target checked first, then its calibration, then the threshold."""
    check_target_of_bank(bank_ref, calibration, threshold)
    return run_fit_threshold(run_calibrate(bank_ref, calibration, context=context), threshold, context=context)


def check_target(sampled: int, params: ThresholdParams, *, n_images: int | None = None) -> None:
    """Refuse, before any work, a false-alarm target that ``sampled`` calibration images cannot support."""
    if params.method != "conformal":
        return
    try:
        conformal_rank(sampled, params.target_far)
    except ParameterError as error:
        if n_images is None or sampled == n_images:
            raise
        raise ParameterError(f"{error} --calibration-images {sampled} scores {sampled} of the {n_images} training "
                             "images: raise it, or 0 to score all.") from None


def check_target_of_bank(bank_ref: ArtifactRef, calibration: CalibrationParams, params: ThresholdParams) -> None:
    """:func:`check_target` for the calibration ``calibration`` would compute for the bank."""
    n_images = features_info(bank_ref.input("features")).n_images
    check_target(calibration.sampled(n_images), params, n_images=n_images)
