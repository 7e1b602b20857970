"""The Expert object: what `eagle score` writes is what it says about the same images in memory."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from eagle_cli import load_expert
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.scores import read_maps, read_scores
from eagle_cli.params import ScoreParams


def test_scoring_images_in_memory_matches_the_score_stage(washer_scores):
    rows = read_scores(washer_scores)[:5]
    expert = load_expert(washer_scores.input("threshold").path, ScoreParams(device="cpu", batch_size=2))
    result = expert.score([Image.open(row.path) for row in rows])
    np.testing.assert_allclose(result.scores, [row.score for row in rows], rtol=1e-5)
    assert result.anomalous.tolist() == [row.anomalous for row in rows]
    assert result.uncertain.tolist() == [row.uncertain for row in rows]
    for row, amap in zip(rows, result.maps, strict=True):
        np.testing.assert_allclose(amap, read_maps(washer_scores, row)[1], rtol=1e-4, atol=1e-4)
        assert amap.shape == (row.height, row.width)


def test_an_expert_with_a_backbone_other_than_its_banks_is_refused(washer_scores):
    expert = load_expert(washer_scores.input("threshold"))
    expert.lineage = replace(expert.lineage, backbone="resnet18")
    with pytest.raises(ArtifactError, match="backbone: 'resnet18' vs 'mobilenet_v2'"):
        expert.score([Image.new("RGB", (96, 96))])


def test_importing_eagle_cli_does_not_load_torch_until_the_expert_is_asked_for():
    code = ("import sys, eagle_cli; before = 'torch' in sys.modules; eagle_cli.Expert; "
            "print(json.dumps([before, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True)
    assert json.loads(out.stdout) == [False, True]


def test_an_expert_fitted_in_memory_is_the_one_the_stages_fit(tiny_root, washer_scores):
    from eagle_cli import Expert
    from eagle_cli.formats.threshold import read_threshold
    from eagle_cli.params import BankParams, ExtractParams, ThresholdParams

    # The settings of the washer_scores fixture's stages, given to the in-memory expert.
    extract = ExtractParams(backbone="mobilenet_v2", weights="imagenet", resize=96, crop=80, device="cpu")
    good = sorted((tiny_root / "washer" / "train" / "good").glob("*.png"))
    expert = Expert.fit([Image.open(path) for path in good], extract=extract, bank=BankParams(image_top=1),
                        threshold=ThresholdParams("quantile", q=5), category="washer")
    staged = read_threshold(washer_scores.input("threshold"))
    assert expert.tau == pytest.approx(staged.tau, rel=1e-6) and expert.s_max == pytest.approx(staged.s_max, rel=1e-6)
    assert len(expert.calibration_scores) == staged.n == len(good)
    rows = read_scores(washer_scores)
    result = expert.score([Image.open(row.path) for row in rows])
    np.testing.assert_allclose(result.scores, [row.score for row in rows], rtol=1e-5)
    assert result.anomalous.tolist() == [row.anomalous for row in rows]


def test_an_image_smaller_than_the_frame_is_refused_by_the_expert_as_by_the_stages(washer_scores):
    from eagle_cli.errors import ImageError

    expert = load_expert(washer_scores.input("threshold"))
    with pytest.raises(ImageError, match="smaller than the 80-pixel frame") as refused:
        expert.score([Image.new("RGB", (40, 40))])
    assert refused.value.kind == "too_small"
