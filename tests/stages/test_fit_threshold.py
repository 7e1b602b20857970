"""eagle fit-threshold's calibration artifact: reuse across methods, refusals before any work, S_max."""

import numpy as np
import pytest

from eagle_cli import artifacts
from eagle_cli.data import DataSource
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.formats.calibration import calibration_scores, read_calibration
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import BankParams, CalibrationParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import FitThresholdParams, run_calibrate, run_fit_threshold
from tests.conftest import TINY, TINY_THRESHOLD


def _bank(root, category, context):
    features = run_extract(DataSource(root=root), category, "train", TINY, context=context)
    return run_fit_bank(features, BankParams(coreset_ratio=0.1), context=context)


def _kinds(context):
    return sorted(ref.kind for ref in artifacts.list_artifacts(context.artifacts))


def test_every_method_fits_on_one_calibration_and_s_max_is_its_max(tiny_root, context):
    bank = _bank(tiny_root, "brick", context)
    conformal = run_fit_threshold(bank, TINY_THRESHOLD, context=context)
    k_sigma = run_fit_threshold(bank, FitThresholdParams(dbt=ThresholdParams("k-sigma")), context=context)
    assert conformal.input("calibration").path == k_sigma.input("calibration").path
    assert _kinds(context).count("calibration") == 1
    scores = calibration_scores(conformal.input("calibration"))
    rows = read_calibration(conformal.input("calibration"))
    assert len(rows) == 8 and all(row["score"] is not None for row in rows)
    for ref in (conformal, k_sigma):
        result = read_threshold(ref)
        assert result["s_max"] == pytest.approx(scores.max()) and result["calibration"] == "refill"
        assert result["predicted_far"] == pytest.approx(np.sum(scores >= result["tau"]) / 9)
    result = read_threshold(conformal)
    assert result["tau"] == np.sort(scores)[7]  # the ⌈9 · 0.8⌉ = 8th smallest
    assert result["far_interval_90"][0] < 0.2 < result["far_interval_90"][1]


def test_each_estimator_is_its_own_artifact_and_records_its_folds(tiny_root, context):
    bank = _bank(tiny_root, "brick", context)
    refs = {name: run_calibrate(bank, CalibrationParams(name, folds=4), context=context)
            for name in ("reference", "leave-own-out", "refill", "cross-fit")}
    assert len({ref.id for ref in refs.values()}) == 4
    folds = [row["fold"] for row in read_calibration(refs["cross-fit"])]
    assert sorted(np.bincount(folds)) == [2, 2, 2, 2]
    scores = {name: calibration_scores(ref) for name, ref in refs.items()}
    assert (scores["reference"] <= scores["leave-own-out"] + 1e-9).all()
    assert (scores["refill"] <= scores["leave-own-out"] + 1e-9).all()


def test_a_calibration_of_another_bank_is_refused_and_nothing_is_written(tiny_root, context):
    brick, washer = _bank(tiny_root, "brick", context), _bank(tiny_root, "washer", context)
    other = run_calibrate(brick, CalibrationParams(), context=context)
    before = _kinds(context)
    with pytest.raises(ArtifactError, match=f"calibrates bank {brick.id}, not bank {washer.id}"):
        run_fit_threshold(washer, TINY_THRESHOLD, context=context, calibration=other)
    assert _kinds(context) == before


@pytest.mark.parametrize("params, message", [
    (FitThresholdParams(dbt=ThresholdParams(target_far=0.05)), "needs at least 19 calibration images; 8 can promise"),
    (FitThresholdParams(calibration=CalibrationParams("cross-fit", folds=9), dbt=ThresholdParams("k-sigma")),
     r"--folds 9: cross-fitting needs between 2 and the number of training images \(8\)"),
])
def test_bad_settings_are_refused_with_one_message_and_nothing_written(tiny_root, context, params, message):
    bank = _bank(tiny_root, "brick", context)
    before = _kinds(context)
    with pytest.raises(ParameterError, match=message):
        run_fit_threshold(bank, params, context=context)
    assert _kinds(context) == before and not list(context.artifacts.rglob(".tmp-*"))
