"""MMAD as a dataset and question source."""

import json
import shutil

import pytest

from eagle_cli.data import DataSource
from eagle_cli.errors import DataError, ParameterError


def test_mmad_is_detected_and_trains_on_mvtec_ad_while_scoring_the_queried_images(mmad_root):
    source = DataSource(root=mmad_root).resolved()
    assert (source.layout, source.mmad_dataset, source.categories()) == ("mmad", "DS-MVTec", ["brick"])
    train = source.scan("brick", "train")
    assert all("/MVTec-AD/brick/train/good/" in str(s.path) for s in train) and len(train) == 8
    test = source.scan("brick", "test")
    assert len(test) == 11 and all("/DS-MVTec/brick/image/" in str(s.path) for s in test)
    assert {(s.defect == "good", s.label) for s in test} == {(True, 0), (False, 1)}


def test_mask_paths_are_relative_to_the_category_folder_and_a_missing_one_is_listed_not_dropped(
        mmad_root, tmp_path, context):
    from eagle_cli.params import BankParams, ScoreParams
    from eagle_cli.stages.extract import run_extract
    from eagle_cli.stages.fit_bank import run_fit_bank
    from eagle_cli.stages.score import ScoreInputs, run_score
    from tests.conftest import TINY, threshold_of

    root = tmp_path / "MMAD"
    shutil.copytree(mmad_root, root)
    test = DataSource(root=root).resolved().scan("brick", "test")
    masks = [s.mask for s in test if s.label == 1]
    assert len(masks) == 8 and all(m.is_file() and "/DS-MVTec/brick/rbg_mask/" in str(m) for m in masks)
    masks[0].unlink()
    source = DataSource(root=root)
    threshold = threshold_of(run_fit_bank(run_extract(source, "brick", "train", TINY, context=context),
                                          BankParams(), context=context), context=context)
    scores = run_score(threshold, ScoreInputs(source=source, category="brick"), ScoreParams(), context=context)
    assert scores.summary["images"] == 11 and scores.summary["pixel_auroc"] is not None
    errors = (scores.path / "errors.jsonl").read_text()
    assert masks[0].name in errors and "file not found" in errors


def test_questions_reletter_and_filter_by_task(mmad_root):
    index = DataSource(root=mmad_root).resolved().mmad_index()
    entry = index.entries["DS-MVTec/brick/image/hole/000.png"]
    assert [q.type for q in index.questions(entry, "all")] == ["Anomaly Detection", "Defect Classification"]
    only = index.questions(entry, "Anomaly Detection")
    assert len(only) == 1 and only[0].answer == "A"
    index.check_task("all")
    index.check_task("Defect Classification")
    # A misspelt type would leave every image without a question: refused, with the types there are.
    with pytest.raises(ParameterError, match="'Anomaly detection' is not a question type .* Anomaly Detection, "
                                             "Defect Classification"):
        index.check_task("Anomaly detection")


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


@pytest.mark.parametrize("edit,message", [
    (lambda data, key: data.update({key: ["not", "an", "object"]}), "must be an object"),
    (lambda data, key: data[key]["conversation"].__setitem__(0, {"Answer": "A"}), 'with a "Question" text'),
    (lambda data, key: data[key]["conversation"][0].update(Options=["Yes", "No"]), '"Options" must map letters'),
    (lambda data, key: data.update({"DS-MVTec/../image/x.png": data[key]}), "no empty, '.' or '..'"),
])
def test_malformed_entries_are_named_not_a_traceback(mmad_root, tmp_path, edit, message):
    root = tmp_path / "MMAD"
    shutil.copytree(mmad_root, root)
    data = json.loads((root / "mmad.json").read_text())
    key = next(iter(data))
    edit(data, key)
    (root / "mmad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        source = DataSource(root=root).resolved()
        index = source.mmad_index()
        for entry in index.entries.values():
            index.questions(entry, "all")
