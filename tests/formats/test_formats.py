"""Every artifact writer, read back through its reader: what was written is what comes back, typed."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from eagle_cli import artifacts
from eagle_cli.errors import ArtifactError
from eagle_cli.expert.bank import MemoryBank
from eagle_cli.expert.coreset import Coreset
from eagle_cli.formats import answers, bank, calibration, features, prompts, report, scores, threshold
from eagle_cli.formats.features import ImageRecord
from eagle_cli.formats.jsonl import ERRORS_FILE, ErrorRow
from eagle_cli.params import BankParams, ThresholdParams
from eagle_cli.settings import identity
from eagle_cli.threshold import fit_threshold


def _publish(tmp_path, kind, write, lineage=None, params=None, category="c"):
    draft = artifacts.start(kind, root=tmp_path, run="r", category=category, params=params or {"n": 1}, inputs=[])
    with draft:
        draft.lineage = lineage or {}
        write(draft)
        return draft.publish()


def _records(paths):
    return [ImageRecord(path, "train", i % 2, None, None, i, 8, 8) for i, path in enumerate(paths)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_features_round_trip_in_both_precisions(tmp_path, dtype):
    values = torch.randn(3, 4, 8).to(dtype)
    records = _records(f"{i}.png" for i in range(3))
    errors = [ErrorRow("bad.png", "truncated")]
    ref = _publish(tmp_path, "features", lambda d: features.write_features(d, values, records, (2, 2), errors),
                   lineage={"backbone": "b"})
    read, read_records, grid = features.read_features(ref)
    assert read.dtype == dtype and torch.equal(read, values) and grid == (2, 2)
    assert read_records == records == features.read_images(ref) and features.read_errors(ref) == errors


def test_features_written_row_by_row_are_a_valid_safetensors_file_of_the_rows_kept(tmp_path):
    rows = torch.randn(5, 6, 4)

    def write(draft):
        # Room for 120 rows, 3 written: the file holds exactly those, readable by safetensors itself.
        with features.FeaturesWriter(draft, capacity=120, patches=6, dim=4, dtype=torch.float32, grid=(2, 3)) as out:
            for row in (rows[0], rows[1], rows[3]):
                out.add_patches(row)
                out.end_row()
            out.finish(_records("abd"), [ErrorRow("c", "truncated")])

    ref = _publish(tmp_path, "features", write, lineage={"backbone": "b", "tile": 64})
    with safe_open(str(ref.path / features.FEATURES_FILE), framework="pt") as fh:
        assert torch.equal(fh.get_tensor("features"), torch.cat([rows[:2], rows[3:4]]))
        assert fh.metadata()["grid"] == "2x3" and json.loads(fh.metadata()["tile"]) == 64
    read, records, grid = features.read_features(ref)
    assert read.shape == (3, 6, 4) and grid == (2, 3) and [r.path for r in records] == ["a", "b", "d"]


def test_an_image_streamed_in_pieces_can_be_dropped_without_a_trace(tmp_path):
    rows = torch.randn(3, 6, 4)

    def write(draft):
        with features.FeaturesWriter(draft, capacity=3, patches=6, dim=4, dtype=torch.float32, grid=(2, 3)) as out:
            for i, row in enumerate(rows):  # each image in two pieces, as tiles arrive
                out.add_patches(row[:4])
                out.add_patches(row[4:])
                out.drop_row() if i == 1 else out.end_row()  # the middle one was unusable
            with pytest.raises(ValueError, match="a row of 4 patches"):
                out.add_patches(rows[0][:4])
                out.end_row()
            out.drop_row()
            out.finish(_records("ac"), [])

    read, _, _ = features.read_features(_publish(tmp_path, "features", write))
    assert torch.equal(read, rows[[0, 2]])


def test_bank_round_trip_on_both_backends(tmp_path):
    rows = torch.randn(20, 8)
    source_rows = torch.arange(0, 40, 2)  # 2 images of 20 patches: rows 0..18 of the first, 20..38 of the second
    coreset = Coreset(source_rows, torch.arange(40) // 2, torch.rand(40))
    params = BankParams(knn_k=3, seed=4)
    memory = MemoryBank(rows, coreset, 20, 2, params, seed=7)
    ref = _publish(tmp_path, "bank", lambda d: bank.write_bank(d, memory), params=identity(params),
                   category="brick")
    stored = bank.open_bank(ref)
    assert stored.params == params and stored.size == 20
    tensors = stored.tensors()
    assert torch.equal(tensors["bank"], rows) and torch.equal(tensors["source_rows"], source_rows)
    cover = stored.coreset()
    assert torch.equal(cover.cover, coreset.cover) and torch.equal(cover.cover_sq_dist, coreset.cover_sq_dist)
    assert tensors["image_ids"].tolist() == [0] * 10 + [1] * 10 and tensors["selected_per_image"].tolist() == [10, 10]
    assert stored.tensors(("image_ids",)).keys() == {"image_ids"}
    queries = torch.randn(5, 8)
    via_faiss = stored.index(backend="faiss", device="cpu").search(queries, 2)
    via_torch = stored.index(backend="torch", device="cpu").search(queries, 2)
    assert np.array_equal(via_faiss[1], via_torch[1])


def test_calibration_threshold_and_prompts_round_trip(tmp_path):
    rows = [calibration.CalibrationRow("a", 1.5, False, True, 90), calibration.CalibrationRow("b", None, True, True, 3)]
    ref = _publish(tmp_path, "calibration", lambda d: calibration.write_calibration(d, rows))
    assert calibration.read_calibration(ref) == rows and calibration.calibration_scores(ref).tolist() == [1.5]
    fitted = fit_threshold(np.arange(40.0), ThresholdParams(target_far=0.1))
    ref = _publish(tmp_path, "threshold", lambda d: threshold.write_threshold(d, fitted))
    assert threshold.read_threshold(ref) == fitted
    message = [{"type": "image", "path": "images/000000_boxes.png", "role": "boxes"},
               {"type": "image", "path": "/data/q.png", "role": "query"}]
    records = [prompts.PromptRecord("0:0", "/data/q.png", 1, True, False, [[0, 0, 4, 4]], "Defect?",
                                    {"A": "Yes", "B": "No"}, "A", "Anomaly Detection", message)]

    def write_prompts(draft):
        (prompts.image_dir(draft) / "000000_boxes.png").write_bytes(b"png")
        prompts.write_prompts(draft, records)

    ref = _publish(tmp_path, "prompts", write_prompts)
    assert prompts.read_prompts(ref) == records
    boxes, query = message
    assert prompts.resolve_image(ref, boxes).read_bytes() == b"png"
    assert str(prompts.resolve_image(ref, query)) == "/data/q.png"


def test_scores_round_trip_across_map_shards(tmp_path):
    # 70 images cross two shard boundaries (32 and 64): every row finds its own map.
    made = []

    def write(draft):
        with scores.ScoresWriter(draft) as writer:
            for i in range(70):
                made.append(writer.add(np.full((4, 4), i, np.float32), path=f"{i}.png", label=None, defect=None,
                                       score=float(i), anomalous=False, uncertain=False, width=5, height=6,
                                       observed_box=[0.0, 0.0, 5.0, 6.0]))
        scores.write_metrics(draft, {"image_auroc": 0.5})

    # The whole image resized to 4x4 is the expert's frame: the original map is the frame map resampled.
    lineage = {"backbone": "b", "layers": [], "weights": "none", "resize": 4, "crop": 0, "tile": 0, "overlap": 0.0,
               "feature_dim": 1, "pooling": [0, 0], "layer_weights": []}
    ref = _publish(tmp_path, "scores", write, lineage=lineage)
    rows = scores.read_scores(ref)
    assert rows == made and [r.index for r in rows] == list(range(70))
    assert len({r.maps_file for r in rows}) == 3
    for i in (0, 31, 32, 63, 64, 69):
        crop, orig = scores.read_maps(ref, rows[i])
        assert (crop == i).all() and orig.shape == (6, 5) and np.allclose(orig, i)
    with safe_open(str(ref.path / rows[0].maps_file), framework="np") as fh:
        assert set(fh.keys()) == {f"crop/{i}" for i in range(32)}  # each map stored once
    assert scores.read_metrics(ref) == {"image_auroc": 0.5}


def _answer(id_: str) -> answers.AnswerRow:
    return answers.AnswerRow(id_, "p", "x.png", 1, "Anomaly Detection", "Defect?", {"A": "Yes", "B": "No"}, "A",
                             "A", "A", True, True, False, False, 0.1, "hf", "m", None)


def test_partial_answers_drop_a_line_cut_off_by_a_kill(tmp_path):
    complete = "".join(json.dumps(vars(_answer(i))) + "\n" for i in ("0:0", "1:0"))
    (tmp_path / answers.ANSWERS_FILE).write_text(complete + '{"id": "2:')
    (tmp_path / ERRORS_FILE).write_text('{"path": "3.png", "error": "gone", "id": "3:0"}\n')
    done, errors = answers.read_partial_answers(tmp_path)
    assert done == [_answer("0:0"), _answer("1:0")] and errors == [ErrorRow("3.png", "gone", id="3:0")]
    assert answers.read_partial_answers(tmp_path / "missing") == ([], [])


def test_a_row_whose_keys_were_renamed_is_refused_where_it_is_read(tmp_path):
    row = vars(_answer("0:0"))
    row["answer"] = row.pop("parsed")
    (tmp_path / answers.ANSWERS_FILE).write_text(json.dumps(row) + "\n")
    with pytest.raises(ArtifactError, match=r"answers.jsonl line 1 does not hold a AnswerRow.*'answer'"):
        answers.read_partial_answers(tmp_path)


def test_report_round_trip(tmp_path):
    metrics = {"headline": "h", "rows": [{"run": "r", "category": "c", "system": "Expert", "accuracy": 0.5}]}
    ref = _publish(tmp_path, "report", lambda d: report.write_report(
        d, "<html></html>", metrics, ["run", "category", "system", "accuracy"], {"r_expert": [{"image": "x"}]}))
    assert report.read_metrics(ref) == metrics
    assert (ref.path / report.METRICS_CSV).read_text().splitlines() == ["run,category,system,accuracy",
                                                                        "r,c,Expert,0.5"]
    assert json.loads((ref.path / "mmad_r_expert.json").read_text()) == [{"image": "x"}]
