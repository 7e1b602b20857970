"""eagle fit-threshold's calibration artifact: reuse across methods, refusals before any work, S_max."""

import numpy as np
import pytest

from eagle_cli import artifacts
from eagle_cli.data import DataSource
from eagle_cli.errors import ParameterError
from eagle_cli.formats.calibration import calibration_scores, calibration_settings, read_calibration
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import BankParams, CalibrationParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import check_target_of_bank, run_calibrate, run_fit_threshold
from tests.conftest import TINY, TINY_THRESHOLD


def _bank(root, category, context):
    features = run_extract(DataSource(root=root), category, "train", TINY, context=context)
    return run_fit_bank(features, BankParams(coreset_ratio=0.1), context=context)


def _kinds(context):
    return sorted(ref.kind for ref in artifacts.list_artifacts(context.artifacts))


def test_every_method_fits_on_one_calibration_and_s_max_is_its_max(tiny_root, context):
    bank = _bank(tiny_root, "brick", context)
    calibration = run_calibrate(bank, CalibrationParams(), context=context)
    conformal = run_fit_threshold(calibration, TINY_THRESHOLD, context=context)
    k_sigma = run_fit_threshold(calibration, ThresholdParams("k-sigma"), context=context)
    assert conformal.input("calibration").path == k_sigma.input("calibration").path
    assert conformal.input("bank").path == bank.path
    assert _kinds(context).count("calibration") == 1
    scores = calibration_scores(calibration)
    rows = read_calibration(calibration)
    assert len(rows) == 8 and all(row.score is not None for row in rows)
    for ref in (conformal, k_sigma):
        result = read_threshold(ref)
        assert result.s_max == pytest.approx(scores.max()) and ref.summary["calibration"] == "refill"
        assert result.predicted_far == pytest.approx(np.sum(scores >= result.tau) / 9)
    result = read_threshold(conformal)
    assert result.tau == np.sort(scores)[7]  # the ⌈9 · 0.8⌉ = 8th smallest
    assert result.far_interval_90[0] < 0.2 < result.far_interval_90[1]
    assert read_threshold(k_sigma).far_interval_90 is None  # k-sigma promises no rate


def test_each_estimator_is_its_own_artifact_and_says_which_it_is(tiny_root, context):
    bank = _bank(tiny_root, "brick", context)
    refs = {name: run_calibrate(bank, CalibrationParams(name), context=context) for name in ("reference", "refill")}
    assert len({ref.id for ref in refs.values()}) == 2
    assert {name: calibration_settings(ref).calibration for name, ref in refs.items()} == {
        "reference": "reference", "refill": "refill"}
    assert not np.allclose(calibration_scores(refs["reference"]), calibration_scores(refs["refill"]))


def test_a_setting_that_does_not_apply_leaves_the_artifact_alone(tiny_root, context):
    bank = _bank(tiny_root, "brick", context)
    refill = run_calibrate(bank, CalibrationParams(), context=context)
    # --min-unselected is the reference estimator's; --extra-neighbours only changes how fast the search is.
    assert run_calibrate(bank, CalibrationParams(min_unselected=5, extra_neighbours=4), context=context).reused
    first = run_fit_threshold(refill, ThresholdParams("k-sigma"), context=context)
    assert run_fit_threshold(refill, ThresholdParams("k-sigma", target_far=0.3, q=50), context=context).reused
    assert not run_fit_threshold(refill, ThresholdParams("k-sigma", kappa=2), context=context).reused
    assert first.params == {"method": "k-sigma", "kappa": 3.0}


def test_a_target_its_images_cannot_support_is_refused_before_any_work(tiny_root, context):
    bank = _bank(tiny_root, "brick", context)
    before = _kinds(context)
    with pytest.raises(ParameterError, match="needs at least 19 calibration images; 8 can promise"):
        check_target_of_bank(bank, CalibrationParams(), ThresholdParams(target_far=0.05))
    assert _kinds(context) == before and not list(context.artifacts.rglob(".tmp-*"))
