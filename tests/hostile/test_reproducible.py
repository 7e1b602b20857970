"""The same inputs and settings write the same bytes, and an image is known by its content, not its timestamp."""

from __future__ import annotations

import os
import shutil

import pytest

from eagle_cli import artifacts
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.digests import IMAGE_DIGESTS
from eagle_cli.params import BankParams, ScoreParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.score import ScoreInputs, run_score
from tests.conftest import TINY, threshold_of

KINDS = ("features", "bank", "calibration", "threshold", "scores")


def _chain(data, store) -> dict[str, artifacts.ArtifactRef]:
    context = Context(artifacts=store)
    features = run_extract(DataSource(root=data), "washer", "train", TINY, context=context)
    bank = run_fit_bank(features, BankParams(), context=context)
    threshold = threshold_of(bank, context=context)
    scores = run_score(threshold, ScoreInputs(source=DataSource(root=data), category="washer"), ScoreParams(),
                       context=context)
    return {"features": features, "bank": bank, "calibration": threshold.input("calibration"),
            "threshold": threshold, "scores": scores}


@pytest.fixture(scope="module")
def three_stores(tiny_root, tmp_path_factory):
    # Three, not two: a writer whose byte order is left to chance (as safetensors' metadata was) agrees with
    # itself once in a while; three times in a row rarely.
    return [_chain(tiny_root, tmp_path_factory.mktemp(f"store{i}")) for i in range(3)]


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_work_writes_the_same_bytes(three_stores, kind):
    first, *others = [chain[kind] for chain in three_stores]
    assert first.manifest["files"]
    for other in others:
        assert other.id == first.id and other.manifest["files"] == first.manifest["files"]


def test_touching_an_image_without_changing_it_reuses_its_features_and_changing_it_does_not(tiny_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_root / "washer", data / "washer")
    context = Context(artifacts=tmp_path / "store")
    first = run_extract(DataSource(root=data), "washer", "train", TINY, context=context)
    assert (tmp_path / "store" / IMAGE_DIGESTS).is_file()
    image = sorted((data / "washer" / "train" / "good").iterdir())[0]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns + 10**9, stat.st_mtime_ns + 10**9))
    touched = run_extract(DataSource(root=data), "washer", "train", TINY, context=context)
    assert touched.reused and touched.id == first.id
    other = sorted((data / "washer" / "train" / "good").iterdir())[1]
    shutil.copyfile(other, image)
    changed = run_extract(DataSource(root=data), "washer", "train", TINY, context=context)
    assert not changed.reused and changed.id != first.id
