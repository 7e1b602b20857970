"""Quality bars with real ImageNet MobileNetV2 weights at the reference geometry.

Issue 2: on the clean synthetic set the expert separates defects and the reference DBT is usable.
Issue 7: on the realistic set (pose, lighting and sensor variation between good parts, weak
defects) the default calibrated threshold keeps its false-alarm promise on held-out good parts,
where the reference calibration does not, and its balanced accuracy is close to the label oracle's.
Issue 10: on large images with small defects (some near the border), tiles at the image's own
resolution find what the 224 px centre crop misses.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import CATEGORIES, REALISTIC_CATEGORIES, generate
from eagle_cli.metrics import image_auroc, verdict_metrics
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_threshold
from eagle_cli.stages.score import ScoreInputs, run_score

pytestmark = pytest.mark.quality  # minutes: `pytest -m "not quality"` skips them; CI runs them

MOBILENET = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu")
#: The reference code's expert: every layer pooled to 1024 values, the layers pooled together to 1024.
MOBILENET_REFERENCE = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu", pretrain_dim=1024,
                                    target_dim=1024)
REFERENCE_DBT = (CalibrationParams("reference"), ThresholdParams("k-sigma"))
DEFAULT_DBT = (CalibrationParams(), ThresholdParams())
TARGET_FAR = ThresholdParams().target_far
#: How far the pooled false-alarm rate on held-out good parts may stray from the target: about two
#: standard deviations of its sampling noise with 240 good test images and 60 calibration images per category.
FAR_TOLERANCE = 0.04


def _expert(root, category, context, dbt: tuple, extract: ExtractParams = MOBILENET):
    """The bank of a category and its scored test set: (bank, scores.jsonl rows)."""
    features = run_extract(DataSource(root=root), category, "train", extract, context=context)
    bank = run_fit_bank(features, BankParams(), context=context)
    scores = run_score(run_threshold(bank, *dbt, context=context),
                       ScoreInputs(source=DataSource(root=root), category=category), ScoreParams(), context=context)
    return bank, [json.loads(line) for line in (scores.path / "scores.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0)
    context = Context(artifacts=tmp_path_factory.mktemp("artifacts"))
    return {category: _expert(root, category, context, REFERENCE_DBT)[1] for category in CATEGORIES}


@pytest.fixture(scope="module")
def realistic(tmp_path_factory):
    """Per category: the default expert's scores.jsonl rows under the default threshold, and the reference
    expert's under the reference DBT."""
    root = tmp_path_factory.mktemp("realistic")
    generate(root, variation="realistic", n_train=60, n_test_good=40, n_test_per_defect=6, seed=0)
    context = Context(artifacts=tmp_path_factory.mktemp("artifacts"))
    return {category: (_expert(root, category, context, DEFAULT_DBT)[1],
                       _expert(root, category, context, REFERENCE_DBT, MOBILENET_REFERENCE)[1])
            for category in REALISTIC_CATEGORIES}


def _auroc(rows):
    return image_auroc(np.array([r["label"] for r in rows]), np.array([r["score"] for r in rows]))


def _false_alarms(rows) -> tuple[int, int]:
    good = [r for r in rows if r["label"] == 0]
    return sum(r["anomalous"] for r in good), len(good)


def _balanced_accuracy(rows, tau=None) -> float:
    labels = np.array([r["label"] for r in rows])
    flagged = np.array([r["anomalous"] if tau is None else r["score"] >= tau for r in rows])
    return verdict_metrics(labels, flagged)["balanced_accuracy"]


@pytest.mark.parametrize("category", CATEGORIES)
def test_image_auroc_at_least_095_in_every_clean_category(clean, category):
    assert _auroc(clean[category]) >= 0.95


def test_reference_dbt_false_alarms_at_most_5_percent_of_clean_good_test_images(clean):
    flagged, good = map(sum, zip(*(_false_alarms(clean[c]) for c in CATEGORIES), strict=True))
    assert flagged / good <= 0.05


def test_realistic_set_is_hard_but_not_hopeless(realistic):
    aurocs = [_auroc(realistic[c][0]) for c in REALISTIC_CATEGORIES]
    assert 0.7 <= min(aurocs) and max(aurocs) < 1.0


def test_calibrated_threshold_keeps_its_false_alarm_promise_on_held_out_good_parts(realistic):
    flagged, good = map(sum, zip(*(_false_alarms(realistic[c][0]) for c in REALISTIC_CATEGORIES), strict=True))
    assert abs(flagged / good - TARGET_FAR) <= FAR_TOLERANCE
    # The reference code's calibration is biased low: k-sigma on it flags many times more good parts.
    flagged_ref = sum(_false_alarms(realistic[c][1])[0] for c in REALISTIC_CATEGORIES)
    assert flagged_ref / good > TARGET_FAR + 0.1


def test_calibrated_balanced_accuracy_is_within_5_points_of_the_label_oracle(realistic):
    gaps = []
    for category in REALISTIC_CATEGORIES:
        rows = realistic[category][0]
        oracle = max(_balanced_accuracy(rows, tau) for tau in [r["score"] for r in rows] + [np.inf])
        gaps.append(oracle - _balanced_accuracy(rows))
    assert np.mean(gaps) <= 0.05, dict(zip(REALISTIC_CATEGORIES, np.round(gaps, 3), strict=True))


@pytest.fixture(scope="module")
def highres(tmp_path_factory):
    """512 px brick images with defects under 0.1 % of the area: scores.jsonl rows and summary per mode."""
    root = tmp_path_factory.mktemp("highres")
    generate(root, categories=("brick",), variation="highres", size=512, n_train=20, n_test_good=6,
             n_test_per_defect=3, seed=0)
    context = Context(artifacts=tmp_path_factory.mktemp("artifacts"))
    tiles = replace(MOBILENET, resize=512, crop=0, tile=256, overlap=0.25)
    out = {}
    for mode, extract in (("crop", replace(MOBILENET, tile=0)), ("tiles", tiles)):
        bank = run_fit_bank(run_extract(DataSource(root=root), "brick", "train", extract, context=context),
                            BankParams(), context=context)
        scores = run_score(run_threshold(bank, *DEFAULT_DBT, context=context),
                           ScoreInputs(source=DataSource(root=root), category="brick"), ScoreParams(), context=context)
        out[mode] = [json.loads(line) for line in (scores.path / "scores.jsonl").read_text().splitlines()], \
            scores.summary
    return out


def test_tiles_find_small_defects_the_centre_crop_misses(highres):
    (crop_rows, crop), (tile_rows, tiles) = highres["crop"], highres["tiles"]
    # Measured (seed 0): image AUROC 0.56 → 0.93, pixel AUROC over the whole image 0.41 → 0.98, PRO 0.44 → 0.98,
    # defective images flagged 17 % → 75 %.
    assert _auroc(tile_rows) >= _auroc(crop_rows) + 0.1 and _auroc(tile_rows) >= 0.85
    assert tiles["pixel_auroc_original"] > crop["pixel_auroc_original"] and tiles["pro_original"] > crop["pro_original"]
    found = {mode: np.mean([r["anomalous"] for r in rows if r["label"] == 1])
             for mode, rows in (("crop", crop_rows), ("tiles", tile_rows))}
    assert found["tiles"] >= found["crop"] + 0.2, found
