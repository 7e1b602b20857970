"""MMAD as a dataset and question source."""

import json
import shutil

import pytest

from eagle_cli.data import DataSource
from eagle_cli.errors import DataError


def test_mmad_is_detected_and_trains_on_mvtec_ad_while_scoring_the_queried_images(mmad_root):
    source = DataSource(root=mmad_root).resolved()
    assert (source.layout, source.mmad_dataset, source.categories()) == ("mmad", "DS-MVTec", ["brick"])
    train = source.scan("brick", "train")
    assert all("/MVTec-AD/brick/train/good/" in str(s.path) for s in train) and len(train) == 8
    test = source.scan("brick", "test")
    assert len(test) == 11 and all("/DS-MVTec/brick/image/" in str(s.path) for s in test)
    assert {(s.defect == "good", s.label) for s in test} == {(True, 0), (False, 1)}


def test_questions_reletter_and_filter_by_task(mmad_root):
    index = DataSource(root=mmad_root).resolved().mmad_index()
    entry = index.entries["DS-MVTec/brick/image/hole/000.png"]
    assert [q.type for q in index.questions(entry, "all")] == ["Anomaly Detection", "Defect Classification"]
    only = index.questions(entry, "Anomaly Detection")
    assert len(only) == 1 and only[0].answer == "A"


@pytest.mark.parametrize("bad", ["../outside.png", "DS-MVTec/../../etc/passwd"])
def test_paths_that_escape_the_root_are_refused(mmad_root, tmp_path, bad):
    root = tmp_path / "MMAD"
    shutil.copytree(mmad_root, root)
    data = json.loads((root / "mmad.json").read_text())
    first = next(iter(data.values()))
    data[bad] = {**first, "image_path": bad}
    (root / "mmad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="points outside the MMAD root"):
        DataSource(root=root).resolved()


def test_template_paths_are_checked_too(mmad_root, tmp_path):
    root = tmp_path / "MMAD"
    shutil.copytree(mmad_root, root)
    data = json.loads((root / "mmad.json").read_text())
    next(iter(data.values()))["similar_templates"] = ["/etc/hostname"]
    (root / "mmad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="similar_templates"):
        DataSource(root=root).resolved()
