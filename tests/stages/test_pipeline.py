"""The four expert stages end to end on tiny synthetic data, through the stage functions."""

import json
import shutil
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from eagle_cli import artifacts
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.errors import ArtifactError, DataError, ImageError, ParameterError
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.calibration import read_calibration
from eagle_cli.formats.features import ImageRecord, write_features
from eagle_cli.formats.scores import read_maps, read_scores
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.lineage import Lineage
from eagle_cli.params import BankParams, CalibrationParams, ScoreParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_calibrate, run_fit_threshold
from eagle_cli.stages.score import ScoreInputs, run_score
from tests.conftest import TINY, TINY_THRESHOLD, bomb_png, threshold_of

BANK = BankParams(coreset_ratio=0.1)
#: A features artifact's parameters as extract writes them, for artifacts built by hand.
TINY_PARAMS = {"split": "train", "sources": [{"layout": "folder", "root": None, "good": None, "test": None,
                                               "split_csv": None, "mmad_json": None, "mmad_dataset": None}],
               "images": ["0"], "extract": {}, "weights_sha256": None}
LINEAGE = Lineage("mobilenet_v2", ("features.6", "features.13"), "none", 96, 80, 0, 0.0, 8, (0, 0), (1.0,))


def _expert(root, category, context, *, bank=BANK, extract=TINY, threshold=TINY_THRESHOLD,
            calibration=CalibrationParams()):
    source = DataSource(root=root)
    features = run_extract(source, category, "train", extract, context=context)
    bank_ref = run_fit_bank(features, bank, context=context)
    return threshold_of(bank_ref, threshold, calibration=calibration, context=context)


def _rows(ref):
    return read_scores(ref)


def test_the_full_frame_runs_through_every_expert_stage_and_leaves_no_blind_strip(tiny_root, context):
    full = replace(TINY, crop=0)
    test_set = ScoreInputs(source=DataSource(root=tiny_root), category="washer")
    framed = run_score(_expert(tiny_root, "washer", context), test_set, ScoreParams(), context=context)
    whole = run_score(_expert(tiny_root, "washer", context, extract=full), test_set, ScoreParams(), context=context)
    for row_framed, row_whole in zip(_rows(framed), _rows(whole), strict=True):
        _, cut = read_maps(framed, row_framed)
        crop, original = read_maps(whole, row_whole)
        assert crop.shape == (96, 96) and original.shape == (96, 96)
        assert (cut[:4, :4] == 0).all() and (original[:4, :4] > 0).all()  # the corner the crop never saw
        assert row_whole.observed_box == [0.0, 0.0, 96.0, 96.0]
    assert {"image_auroc", "pixel_auroc", "pro"} <= set(whole.summary)


def test_a_new_threshold_rejudges_published_scores_and_shares_their_maps(tiny_root, context):
    first_threshold = _expert(tiny_root, "washer", context, threshold=ThresholdParams("quantile", q=50))
    test_set = ScoreInputs(source=DataSource(root=tiny_root), category="washer")
    first = run_score(first_threshold, test_set, ScoreParams(), context=context)
    second_threshold = run_fit_threshold(first_threshold.input("calibration"), TINY_THRESHOLD, context=context)
    second = run_score(second_threshold, test_set, ScoreParams(), context=context)
    tau = read_threshold(second_threshold).tau
    assert second.path != first.path and tau != read_threshold(first_threshold).tau
    assert [r.score for r in _rows(second)] == [r.score for r in _rows(first)]
    assert [r.anomalous for r in _rows(second)] == [r.score >= tau for r in _rows(first)]
    assert second.summary["anomalous"] != first.summary["anomalous"]
    assert all(second.summary[k] == first.summary[k] for k in ("pixel_auroc", "pro", "image_auroc"))
    shard = _rows(first)[0].maps_file
    # Same maps, not recomputed: one file on disk for both artifacts.
    assert (second.path / shard).stat().st_ino == (first.path / shard).stat().st_ino
    smoother = run_score(second_threshold, test_set, ScoreParams(sigma_px=2.0), context=context)
    assert (smoother.path / shard).stat().st_ino != (first.path / shard).stat().st_ino


def test_forced_scores_are_computed_anew_not_rejudged_from_themselves(tiny_root, context):
    threshold_ref = _expert(tiny_root, "washer", context)
    test_set = ScoreInputs(source=DataSource(root=tiny_root), category="washer")
    first = run_score(threshold_ref, test_set, ScoreParams(), context=context)
    shard = _rows(first)[0].maps_file
    first_maps = (first.path / shard).stat().st_ino
    again = run_score(threshold_ref, test_set, ScoreParams(), context=replace(context, force=True))
    assert again.path == first.path
    assert (again.path / shard).stat().st_ino != first_maps  # written anew, not linked to the old file
    assert [r.score for r in _rows(again)] == pytest.approx([r.score for r in _rows(first)], abs=1e-6)


def test_chain_writes_scores_maps_verdicts_and_metrics(tiny_root, context):
    threshold_ref = _expert(tiny_root, "washer", context)
    test_set = ScoreInputs(source=DataSource(root=tiny_root), category="washer")
    scores_ref = run_score(threshold_ref, test_set, ScoreParams(), context=context)
    threshold = read_threshold(threshold_ref)
    rows = _rows(scores_ref)
    assert len(rows) == 3 + 4 * 2
    for row in rows:
        assert row.anomalous == (row.score >= threshold.tau)
        assert row.uncertain == (threshold.tau < row.score < threshold.s_max)
        crop, original = read_maps(scores_ref, row)
        assert crop.shape == (80, 80) and original.shape == (96, 96)
        assert row.score == pytest.approx(float(crop.max()), rel=0.5)  # smoothing lowers the peak
    summary = scores_ref.summary
    assert {"image_auroc", "pixel_auroc", "pro", "verdict"} <= set(summary)
    calibration = [row.score for row in read_calibration(threshold_ref.input("calibration")) if row.score is not None]
    for row in rows:  # each image's conformal p-value: the share of calibration images scoring at least as high
        assert row.p_value == pytest.approx((sum(c >= row.score for c in calibration) + 1) / (len(calibration) + 1))
    assert summary["drift"]["watched"] == "good-labelled images" and summary["drift"]["images"] == 3
    assert summary["drift"]["status"] in ("ok", "drifting")
    # Random weights are allowed when asked for, and every downstream manifest says so.
    for ref in (scores_ref, threshold_ref, threshold_ref.input("bank")):
        assert ref.lineage["weights"] == "none"
    assert [i["kind"] for i in scores_ref.manifest["inputs"]] == ["threshold"]


def test_rerun_reuses_every_stage_and_force_redoes(tiny_root, context):
    first = _expert(tiny_root, "brick", context)
    again = _expert(tiny_root, "brick", context)
    assert again.reused and again.path == first.path
    forced = _expert(tiny_root, "brick", replace(context, force=True))
    assert not forced.reused and forced.path == first.path


def test_scoring_features_and_scoring_images_agree(tiny_root, context):
    threshold_ref = _expert(tiny_root, "brick", context)
    test_features = run_extract(DataSource(root=tiny_root), "brick", "test", TINY, context=context)
    params = ScoreParams(batch_size=TINY.batch_size)  # the same batches as extraction: bit-identical BLAS calls
    via_features = run_score(threshold_ref, ScoreInputs(features=test_features), params, context=context)
    via_images = run_score(threshold_ref, ScoreInputs(source=DataSource(root=tiny_root), category="brick"), params,
                           context=context)
    assert [r.score for r in _rows(via_features)] == [r.score for r in _rows(via_images)]
    assert via_features.path != via_images.path


def test_banks_do_not_depend_on_the_order_of_categories(tiny_root, tmp_path):
    rows = {}
    for order in (("brick", "washer"), ("washer", "brick")):
        context = Context(artifacts=tmp_path / "-".join(order))
        for category in order:
            features = run_extract(DataSource(root=tiny_root), category, "train", TINY, context=context)
            rows[(order, category)] = open_bank(run_fit_bank(features, BANK, context=context)).coreset().selected
    for category in ("brick", "washer"):
        assert torch.equal(rows[(("brick", "washer"), category)], rows[(("washer", "brick"), category)])


def test_knn_k_is_stored_in_the_bank_and_honoured_downstream(tiny_root, context):
    k1, k3 = (_expert(tiny_root, "brick", context, bank=replace(BANK, knn_k=k)) for k in (1, 3))
    assert [open_bank(t.input("bank")).params.knn_k for t in (k1, k3)] == [1, 3]
    # the mean over 3 neighbours is never below the nearest
    assert read_threshold(k3).mean > read_threshold(k1).mean


def test_the_image_score_rule_is_the_banks_and_calibration_and_scoring_both_follow_it(tiny_root, context):
    test_set = ScoreInputs(source=DataSource(root=tiny_root), category="brick")
    highest, top8 = (_expert(tiny_root, "brick", context, bank=replace(BANK, image_top=top)) for top in (1, 8))
    assert [open_bank(t.input("bank")).params.image_top for t in (highest, top8)] == [1, 8]
    assert read_threshold(top8).mean < read_threshold(highest).mean
    by_max, by_top8 = (_rows(run_score(t, test_set, ScoreParams(), context=context)) for t in (highest, top8))
    assert all(b.score < a.score for a, b in zip(by_max, by_top8, strict=True))  # a mean of 8 below the max
    with pytest.raises(ParameterError, match=r"--image-top must be in \[1, 4096\], got 0"):
        BankParams(image_top=0)


def test_too_few_unselected_patches_are_counted_not_nan(tiny_root, context):
    # 10x10 = 100 patches per image and 10 % selected: about 90 unselected each.
    threshold = _expert(tiny_root, "brick", context, threshold=ThresholdParams("k-sigma"),
                        calibration=CalibrationParams("reference", min_unselected=90))
    result = read_threshold(threshold)
    assert threshold.summary["excluded"] > 0 and result.n + threshold.summary["excluded"] == 8
    assert np.isfinite(result.tau) and np.isfinite(result.s_max)
    with pytest.raises(ParameterError, match="--min-unselected 101 with --calibration reference"):
        _expert(tiny_root, "brick", context, threshold=ThresholdParams("k-sigma"),
                calibration=CalibrationParams("reference", min_unselected=101))


def test_a_calibration_sample_scores_that_many_images_and_the_target_is_checked_against_it(tiny_root, context):
    full = _expert(tiny_root, "brick", context)
    five = CalibrationParams(calibration_images=5)
    sampled = _expert(tiny_root, "brick", context, threshold=ThresholdParams(target_far=0.2), calibration=five)
    calibration = sampled.input("calibration")
    rows = read_calibration(calibration)
    assert sum(row.sampled for row in rows) == sum(row.score is not None for row in rows) == 5
    assert calibration.summary["sampled"] == 5 and calibration.id != full.input("calibration").id
    assert read_threshold(sampled).n == 5 and sampled.summary["excluded"] == 0
    # A cap that samples nothing changes nothing: the same calibration artifact.
    assert run_calibrate(full.input("bank"), CalibrationParams(calibration_images=50), context=context).reused
    # Each sampled image scores what the full calibration gave it: the sample only chooses whom to score.
    whole = {row.path: row.score for row in read_calibration(full.input("calibration"))}
    chosen = [row for row in rows if row.sampled]
    assert [row.score for row in chosen] == pytest.approx([whole[row.path] for row in chosen], rel=1e-5)
    # 5 images support a target of at least 1/6, whatever the 8 training images could.
    with pytest.raises(ParameterError, match="1/6|0.167"):
        _expert(tiny_root, "brick", context, threshold=ThresholdParams(target_far=0.15), calibration=five)


@pytest.fixture
def messy_root(tiny_root, tmp_path):
    """The brick category plus a truncated image, a text file named .png, a too-small image, a bad mask and
    decompression bombs (headers claiming 900 and 120 megapixels) in train and test."""
    root = tmp_path / "messy"
    shutil.copytree(tiny_root / "brick", root / "brick")
    good = root / "brick" / "train" / "good"
    (good / "900.png").write_bytes((good / "000.png").read_bytes()[:150])
    (good / "901.png").write_text("hello")
    Image.new("RGB", (40, 40)).save(good / "902.png")
    Image.new("L", (50, 50)).save(root / "brick" / "ground_truth" / "hole" / "000_mask.png")
    (good / "903.png").write_bytes(bomb_png(30_000, 30_000))
    (good / "904.png").write_bytes(bomb_png(12_000, 10_000))
    (root / "brick" / "test" / "good" / "900.png").write_bytes(bomb_png(30_000, 30_000))
    return root


def test_bad_images_are_skipped_listed_and_the_rest_completes(messy_root, context):
    features = run_extract(DataSource(root=messy_root), "brick", "train", TINY, context=context)
    errors = [json.loads(line) for line in (features.path / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["path"].rsplit("/", 1)[1] for e in errors) == ["900.png", "901.png", "902.png", "903.png",
                                                                    "904.png"]
    bombs = {e["path"].rsplit("/", 1)[1]: e["error"] for e in errors}
    assert "limit checked before decoding" in bombs["904.png"] and "120.0 megapixels" in bombs["904.png"]
    assert "limit checked before decoding" in bombs["903.png"]
    assert features.summary == {**features.summary, "images": 8, "errors": 5}
    threshold_ref = threshold_of(run_fit_bank(features, BANK, context=context), context=context)
    scores = run_score(threshold_ref, ScoreInputs(source=DataSource(root=messy_root), category="brick"), ScoreParams(),
                       context=context)
    score_errors = (scores.path / "errors.jsonl").read_text()
    assert "000_mask.png" in score_errors and "mask is 50x50 but its image is 96x96" in score_errors
    assert "test/good/900.png" in score_errors and "decompression bomb" in score_errors
    # The image with the bad mask is still judged; the bomb in test/good is not.
    assert len(_rows(scores)) == 3 + 4 * 2


def test_on_error_fail_stops_at_the_first_bad_image_and_publishes_nothing(messy_root, tmp_path):
    context = Context(artifacts=tmp_path / "a", on_error="fail")
    with pytest.raises(ImageError, match="900.png"):
        run_extract(DataSource(root=messy_root), "brick", "train", TINY, context=context)
    assert artifacts.list_artifacts(tmp_path / "a") == []


def test_only_bad_images_is_a_clear_error(tmp_path, context):
    good = tmp_path / "only" / "train" / "good"
    good.mkdir(parents=True)
    (good / "a.png").write_text("x")
    with pytest.raises(DataError, match="No usable image.*a.png"):
        run_extract(DataSource(root=tmp_path), "only", "train", TINY, context=context)


def test_nan_features_are_refused_naming_the_file(context):
    draft = artifacts.start("features", root=context.artifacts, run="default", category="x",
                            params={**TINY_PARAMS, "category": "x"}, inputs=[])
    with draft:
        bad = torch.zeros(2, 4, 8)
        bad[1, 2, 3] = float("nan")
        draft.lineage = LINEAGE.as_dict()
        write_features(draft, bad, [ImageRecord(p, "train", 0, "good", None, i, 8, 8) for i, p in enumerate("ab")],
                       (2, 2), [])
        draft.summary = {"images": 2, "errors": 0, "grid": [2, 2]}
        ref = draft.publish()
    with pytest.raises(ArtifactError, match=r"features.safetensors holds NaN.*images \[1\]"):
        run_fit_bank(ref, BANK, context=context)


def test_bank_and_features_of_another_backbone_are_refused(tiny_root, context):
    threshold_ref = _expert(tiny_root, "brick", context)
    resnet = replace(TINY, backbone="resnet18")
    other = run_extract(DataSource(root=tiny_root), "brick", "test", resnet, context=context)
    with pytest.raises(ArtifactError, match="backbone: 'mobilenet_v2' vs 'resnet18'"):
        run_score(threshold_ref, ScoreInputs(features=other), ScoreParams(), context=context)


class Interrupting:
    """A progress reporter that presses Ctrl-C after a few images."""

    def __init__(self, after):
        self.after = after

    @contextmanager
    def task(self, description, total):
        seen = []

        def advance(n=1):
            seen.append(n)
            if len(seen) >= self.after:
                raise KeyboardInterrupt

        yield advance


@pytest.mark.parametrize("stage", ["extract", "fit-bank", "fit-threshold", "score"])
def test_ctrl_c_in_any_stage_leaves_nothing_accepted_and_the_rerun_completes(stage, tiny_root, tmp_path):
    calm = Context(artifacts=tmp_path / "a")
    broken = replace(calm, reporter=Interrupting(after=1))
    source = DataSource(root=tiny_root)
    steps = {
        "extract": lambda ctx, prev: run_extract(source, "brick", "train", TINY, context=ctx),
        "fit-bank": lambda ctx, prev: run_fit_bank(prev, BANK, context=ctx),
        "fit-threshold": lambda ctx, prev: threshold_of(prev, context=ctx),
        "score": lambda ctx, prev: run_score(prev, ScoreInputs(source=source, category="brick"), ScoreParams(),
                                             context=ctx),
    }
    previous = None
    for name, step in steps.items():
        if name == stage:
            with pytest.raises(KeyboardInterrupt):
                step(broken, previous)
            kinds = {"extract": ("features",), "fit-bank": ("bank",), "fit-threshold": ("calibration", "threshold"),
                     "score": ("scores",)}[name]
            assert not [r for r in artifacts.list_artifacts(calm.artifacts) if r.kind in kinds]
            assert not list(calm.artifacts.rglob(".tmp-*"))
            assert not step(calm, previous).reused
            return
        previous = step(calm, previous)


def test_float16_features_are_stored_half_size_and_feed_the_same_stages(tiny_root, context):
    half = run_extract(DataSource(root=tiny_root), "brick", "train", replace(TINY, feature_dtype="float16"),
                       context=context)
    full = run_extract(DataSource(root=tiny_root), "brick", "train", TINY, context=context)
    assert half.path != full.path
    size = lambda ref: (ref.path / "features.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    threshold = threshold_of(run_fit_bank(half, BANK, context=context), context=context)
    assert np.isfinite(read_threshold(threshold).tau)
