"""One contract over every layout: sorted samples, labels, masks, and clear errors."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import DEFECTS, generate
from eagle_cli.errors import DataError


def _img(path, size=(32, 32), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size[::-1], 3), value, np.uint8)).save(path)


@pytest.fixture
def visa_root(tmp_path):
    rows = []
    for split, label, name in [("train", "normal", "a"), ("train", "normal", "b"), ("test", "normal", "c"),
                               ("test", "anomaly", "d")]:
        image = f"candle/Data/Images/{'Anomaly' if label == 'anomaly' else 'Normal'}/{name}.JPG"
        mask = f"candle/Data/Masks/Anomaly/{name}.png" if label == "anomaly" else ""
        _img(tmp_path / image)
        if mask:
            _img(tmp_path / mask, value=255)
        rows.append({"object": "candle", "split": split, "label": label, "image": image, "mask": mask})
    (tmp_path / "split_csv").mkdir()
    with open(tmp_path / "split_csv" / "1cls.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["object", "split", "label", "image", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def _sources(tiny_root, visa_root, tmp_path):
    good, test = tmp_path / "good", tmp_path / "test"
    shutil.copytree(tiny_root / "brick" / "train" / "good", good)
    shutil.copytree(tiny_root / "brick" / "test", test)
    return {
        "mvtec": (DataSource(root=tiny_root), "brick"),
        "visa": (DataSource(root=visa_root), "candle"),
        "folder": (DataSource(good=good, test=test), "default"),
    }


@pytest.mark.parametrize("layout", ["mvtec", "visa", "folder"])
def test_every_layout_gives_sorted_labelled_samples(layout, tiny_root, visa_root, tmp_path):
    source, category = _sources(tiny_root, visa_root, tmp_path)[layout]
    source = source.resolved()
    assert source.layout == layout
    train, test = source.scan(category, "train"), source.scan(category, "test")
    assert train and all(s.label == 0 and s.split == "train" for s in train)
    assert [s.path for s in train] == sorted(s.path for s in train)
    assert {s.label for s in test} == {0, 1}
    for s in test:
        assert s.path.is_file()
        if s.label == 1 and layout != "folder":
            assert s.mask is not None and s.mask.is_file()


def test_mvtec_defects_and_masks_pair_by_name(tiny_root):
    test = DataSource(root=tiny_root).resolved().scan("washer", "test")
    assert {s.defect for s in test} == {"good", *DEFECTS}
    for s in test:
        if s.label:
            assert s.mask.name == f"{s.path.stem}_mask.png" and s.mask.parent.name == s.defect


def test_unknown_category_suggests_the_closest(tiny_root):
    with pytest.raises(DataError, match="Did you mean 'brick'"):
        DataSource(root=tiny_root).resolved().scan("brik", "train")


def test_missing_or_empty_train_good_is_named(tmp_path):
    (tmp_path / "part" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="train/good"):
        DataSource(root=tmp_path).resolved().scan("part", "train")
    (tmp_path / "part" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="Found 0 images"):
        DataSource(root=tmp_path).resolved().scan("part", "train")


def test_missing_dataset_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        DataSource(root=tmp_path / "nope").resolved()


def test_synthetic_data_is_seeded_and_masks_mark_the_defect(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in [(a, 3), (b, 3), (c, 4)]:
        generate(root, categories=("gravel",), n_train=2, n_test_good=1, n_test_per_defect=1, size=96, seed=seed)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    for kind in DEFECTS:
        mask = np.asarray(Image.open(a / "gravel" / "ground_truth" / kind / "000_mask.png")) > 0
        defect = np.asarray(Image.open(a / "gravel" / "test" / kind / "000.png"), dtype=float)
        assert 0 < mask.mean() < 0.2
        # The defect changes the pixels under its mask far more than normal variation does.
        good = np.asarray(Image.open(a / "gravel" / "test" / "good" / "000.png"), dtype=float)
        assert np.abs(defect - good)[mask].mean() > np.abs(defect - good)[~mask].mean()
