"""The Expert object: what `eagle score` writes is what it says about the same images in memory."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from eagle_cli import Expert
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.scores import read_maps, read_scores


def test_scoring_images_in_memory_matches_the_score_stage(washer_scores):
    rows = read_scores(washer_scores)[:5]
    expert = Expert.load(washer_scores.input("threshold").path, device="cpu", batch_size=2)
    result = expert.score([Image.open(row["path"]) for row in rows])
    np.testing.assert_allclose(result.scores, [row["score"] for row in rows], rtol=1e-5)
    assert result.anomalous.tolist() == [row["anomalous"] for row in rows]
    assert result.uncertain.tolist() == [row["uncertain"] for row in rows]
    for row, amap in zip(rows, result.maps, strict=True):
        np.testing.assert_allclose(amap, read_maps(washer_scores, row)[1], rtol=1e-4, atol=1e-4)
        assert amap.shape == (row["height"], row["width"])


def test_an_expert_with_a_backbone_other_than_its_banks_is_refused(washer_scores):
    expert = Expert.load(washer_scores.input("threshold"), device="cpu")
    expert.lineage = {**expert.lineage, "backbone": "resnet18"}
    with pytest.raises(ArtifactError, match="backbone: 'resnet18' vs 'mobilenet_v2'"):
        expert.score([Image.new("RGB", (96, 96))])


def test_importing_eagle_cli_does_not_load_torch_until_the_expert_is_asked_for():
    code = ("import sys, eagle_cli; before = 'torch' in sys.modules; eagle_cli.Expert; "
            "print(json.dumps([before, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True)
    assert json.loads(out.stdout) == [False, True]
