"""Every file under an image folder is used or named in errors.jsonl with the reason; a defective image
without a matching mask is named."""

from __future__ import annotations

import re
import shutil

import pytest
from PIL import Image

from eagle_cli.data import DataSource
from eagle_cli.errors import DataError
from eagle_cli.formats.features import IMAGES_FILE, ImageRecord
from eagle_cli.formats.jsonl import ERRORS_FILE, ErrorRow, read_rows
from eagle_cli.params import BankParams, ScoreParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.score import ScoreInputs, run_score
from tests.conftest import TINY, threshold_of


def _gif(path):
    frames = [Image.new("RGB", (96, 96), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)


#: (file name, how it is made, what errors.jsonl says): each was in neither images.jsonl nor errors.jsonl.
STRAYS = [
    ("animated.gif", _gif, r"not an image kind eagle reads \(\.gif"),
    ("gone.png", lambda path: path.symlink_to(path.parent / "nowhere.png"), "is a broken link"),
    ("notes.txt", lambda path: path.write_text("shot on line 3"), r"not an image kind eagle reads \(\.txt"),
    ("IMG_0001", lambda path: shutil.copy(next(path.parent.glob("*.png")), path), r"\(no extension"),
]


@pytest.fixture
def washer(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "washer", root / "washer")
    return root


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_file_in_an_image_folder_is_used_or_named_with_its_reason(washer, context, split):
    folder = washer / "washer" / ("train/good" if split == "train" else "test/good")
    for name, make, _ in STRAYS:
        make(folder / name)
    listed = sorted(str(p) for p in (washer / "washer" / split).rglob("*") if not p.is_dir())
    features = run_extract(DataSource(root=washer), "washer", split, TINY, context=context)
    used = [row.path for row in read_rows(features.path / IMAGES_FILE, ImageRecord)]
    errors = {row.path: row.error for row in read_rows(features.path / ERRORS_FILE, ErrorRow)}
    assert sorted(used + list(errors)) == listed
    for name, _, reason in STRAYS:
        assert re.search(reason, errors[str(folder / name)])


def test_a_defective_image_whose_mask_name_does_not_match_is_named(washer, context):
    truth = washer / "washer" / "ground_truth"
    renamed = sorted(truth.rglob("*_mask.png"))[:2]
    for mask in renamed:
        mask.rename(mask.with_name("x" + mask.name))
    features = run_extract(DataSource(root=washer), "washer", "train", TINY, context=context)
    threshold = threshold_of(run_fit_bank(features, BankParams(), context=context), context=context)
    scores = run_score(threshold, ScoreInputs(source=DataSource(root=washer), category="washer"), ScoreParams(),
                       context=context)
    [warning] = scores.summary["warnings"]
    assert warning.startswith("2 defective image(s) have no mask")
    for mask in renamed:
        image = washer / "washer" / "test" / mask.parent.name / mask.name.replace("_mask", "")
        assert str(image) in warning


def test_a_test_folder_of_nothing_usable_stops_scoring_and_names_the_first_file(washer, context):
    features = run_extract(DataSource(root=washer), "washer", "train", TINY, context=context)
    threshold = threshold_of(run_fit_bank(features, BankParams(), context=context), context=context)
    junk = washer / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("not an image")
    (junk / "b.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match=r"No usable image among the 2 listed.*a\.txt: is not an image kind"):
        run_score(threshold, ScoreInputs(source=DataSource(layout="folder", test=junk), category="washer"),
                  ScoreParams(), context=context)
    assert not list((context.artifacts).rglob("scores/*/manifest.json"))
