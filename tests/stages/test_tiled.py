"""Tiles through every stage: one bank and one threshold over all tiles, stitched maps, boxes on the image."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from eagle_cli import artifacts, load_expert
from eagle_cli.cli import app
from eagle_cli.data import DataSource
from eagle_cli.errors import ArtifactError, ParameterError
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.calibration import read_calibration, read_cell_norm
from eagle_cli.formats.features import read_features
from eagle_cli.formats.prompts import read_prompts
from eagle_cli.formats.scores import read_maps, read_scores
from eagle_cli.lineage import Lineage
from eagle_cli.params import TILED_BANK_MAX, BankParams, CalibrationParams, ExtractParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_calibrate
from eagle_cli.stages.grow_bank import extraction_of, run_grow_bank
from tests.conftest import TINY, split_good_images

#: 96 px frames cut into 3 x 3 tiles of 48 px (starting at 0, 24 and 48), each a 6 x 6 patch grid.
TILED = replace(TINY, crop=0, tile=48, overlap=0.5)
BANK = BankParams(coreset_ratio=0.1)
runner = CliRunner()


@pytest.fixture(scope="module")
def tiled_run(tiny_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiled")
    config = tmp / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(tiny_root), "artifacts": str(tmp / "artifacts"), "run": "t", "category": ["washer"],
        "backbone": "mobilenet_v2", "weights": "none", "resize": 96, "crop": 0, "tile": 48, "overlap": 0.5,
        "device": "cpu", "target_far": 0.2, "visual": "both"}))
    result = runner.invoke(app, ["run", str(config), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    return {o["stage"]: artifacts.open_artifact(o["path"]) for o in document["artifacts"]}, document


def test_every_stage_runs_on_tiles(tiled_run):
    refs, document = tiled_run
    assert document["ok"] and not document["failed"]
    assert {"extract", "fit-bank", "fit-threshold", "score", "prompt", "report"} <= set(refs)
    features, records, grid = read_features(refs["extract"])
    assert grid == (6, 6) and features.shape == (8, 9 * 36, 32 + 96)
    assert refs["extract"].lineage["tile"] == 48 and refs["score"].lineage["tile"] == 48


def test_one_bank_and_one_threshold_cover_every_tile(tiled_run):
    refs, _ = tiled_run
    rows = open_bank(refs["fit-bank"]).coreset().selected
    tiles_hit = set((rows % (9 * 36) // 36).tolist())
    assert len(tiles_hit) == 9  # entries come from every tile position
    calibration = read_calibration(refs["fit-threshold"].input("calibration"))
    assert len(calibration) == 8


def test_a_tiled_bank_decides_its_automatic_settings_for_tiles(tiled_run):
    refs, _ = tiled_run
    params = open_bank(refs["fit-bank"]).params
    assert (params.coreset_ratio, params.coreset_max, params.coreset_updates, params.image_score) == (
        0.01, TILED_BANK_MAX, "lists", "peak")
    assert open_bank(refs["fit-bank"]).size == int(8 * 9 * 36 * 0.01)
    norm = read_cell_norm(refs["fit-threshold"].input("calibration"))
    assert norm.mean.shape == norm.std.shape == (36,) and (norm.std > 0).all()


def test_a_tiled_bank_keeps_at_most_its_limit_and_an_untiled_one_has_none(tiled_run, context):
    refs, _ = tiled_run
    limited = run_fit_bank(refs["extract"], BankParams(coreset_max=20), context=context)
    assert open_bank(limited).size == 20 < int(8 * 9 * 36 * 0.01)
    assert open_bank(limited).params.coreset_ratio == 0.01
    assert BankParams().resolved(tiled=False).coreset_max == 0


def test_an_image_scores_the_peak_of_its_stitched_map_as_shown(tiled_run):
    refs, _ = tiled_run
    scores = refs["score"]
    rows = read_scores(scores)
    assert len(rows) == 11
    for row in rows:
        frame, original = read_maps(scores, row)
        assert frame.shape == (96, 96) and original.shape == (row.height, row.width)
        assert row.observed_box == [0.0, 0.0, 96.0, 96.0]
        # The verdict reads the map the user sees: its peak is the image score τ is compared with.
        assert float(frame.max()) == pytest.approx(row.score, rel=1e-5)
    assert {"image_auroc", "pixel_auroc", "pro", "pixel_auroc_original", "pro_original"} <= set(scores.summary)


def test_the_cell_norm_of_every_tile_is_its_own_calibration(tiled_run, context):
    refs, _ = tiled_run
    default = refs["fit-threshold"].input("calibration")
    every = run_calibrate(refs["fit-bank"], CalibrationParams(norm_tile_step=1), context=context)
    assert not every.reused and every.id != default.id
    assert every.params["norm_tile_step"] == 1 and default.params["norm_tile_step"] == 8
    assert not np.allclose(read_cell_norm(every).mean, read_cell_norm(default).mean)


def test_the_peak_rule_refuses_a_calibration_that_scores_some_patches_only(tiled_run, context):
    refs, _ = tiled_run
    with pytest.raises(ParameterError, match="--calibration refill"):
        run_calibrate(refs["fit-bank"], CalibrationParams("reference"), context=context)


def test_the_python_expert_scores_a_tiled_image_as_the_stage_did(tiled_run):
    refs, _ = tiled_run
    row = read_scores(refs["score"])[-1]
    expert = load_expert(refs["fit-threshold"])
    result = expert.score([Image.open(row.path)])
    assert result.scores[0] == pytest.approx(row.score, rel=1e-5)
    np.testing.assert_allclose(result.maps[0], read_maps(refs["score"], row)[1], rtol=1e-4, atol=1e-5)


def test_the_refit_benchmark_scores_training_images_without_their_entries_refilled_and_refitted(tiled_run):
    refs, _ = tiled_run
    out = subprocess.run([sys.executable, "-m", "benchmarks.refit_bias", "--scores", str(refs["score"].path),
                          "--images", "0,3,99", "--quantiles", "0.5"], capture_output=True, text=True,
                         cwd=Path(__file__).parents[2], timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.stdout.splitlines()
            if line.startswith(("| 0 |", "| 3 |", "| 99 |"))]
    assert [row[0] for row in rows] == ["0", "3"]  # a training image the bank does not have is skipped
    for row in rows:
        left_out, refill, tighter, refitted, shared = (float(cell) for cell in row[1:])
        # A refill only adds entries, and a tighter one continues the same farthest-first picks: each can only
        # lower the image's patch distances, and so its peak.
        assert left_out >= refill >= tighter and np.isfinite(refitted) and 0 <= shared <= 1
    good = sum(row.label == 0 for row in read_scores(refs["score"]))
    assert f"{good} good test images" in out.stdout
    assert all(name in out.stdout for name in ("refill (eagle's) ", "refill to the 0.5 quantile ", "refitted "))


def test_boxes_are_drawn_on_the_original_image(tiled_run):
    refs, _ = tiled_run
    prompts = read_prompts(refs["prompt"])
    boxed = [p for p in prompts if p.boxes]
    assert boxed, "an anomalous verdict with boxes"
    for prompt in boxed:
        for x0, y0, x1, y1 in prompt.boxes:
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
    assert "washer" in (refs["report"].path / "report.html").read_text()


def test_a_tiled_bank_grows_with_tiled_features_of_the_new_images(tiny_root, tmp_path, context):
    old, new = split_good_images(tiny_root, "brick", tmp_path / "split", (6, 2))
    parent = run_fit_bank(run_extract(DataSource(good=old).resolved(), "brick", "train", TILED, context=context),
                          BANK, context=context)
    category, extract = extraction_of(parent, ExtractParams(device="cpu"))
    grown = run_grow_bank(parent, run_extract(DataSource(good=new).resolved(), category, "train", extract,
                                              context=context), context=context)
    features, _, grid = read_features(grown.input("features"))
    assert features.shape == (8, 9 * 36, 32 + 96) and grid == (6, 6) and grown.lineage["tile"] == 48
    untiled = run_fit_bank(run_extract(DataSource(good=old).resolved(), "brick", "train", TINY, context=context),
                           BANK, context=context)
    with pytest.raises(ArtifactError, match="tile: 0 vs 48"):
        Lineage.from_dict(untiled.lineage).check_matches(Lineage.from_dict(grown.lineage),
                                                         what="An untiled bank and tiled features")


@pytest.mark.parametrize(("args", "message"), [
    (["--resize", "96", "--crop", "80", "--tile", "96"], "larger than the 80 px frame"),
    (["--resize", "96", "--crop", "0", "--tile", "48", "--overlap", "1"], "in [0, 1)"),
])
def test_impossible_tiles_are_one_message_and_nothing_is_written(tiny_root, tmp_path, args, message):
    result = runner.invoke(app, ["extract", "--data", str(tiny_root), "--category", "brick", "--backbone",
                                 "mobilenet_v2", "--weights", "none", "--device", "cpu", *args,
                                 "--artifacts", str(tmp_path / "a")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("manifest.json"))
