"""Every artifact writer, read back through its reader: what was written is what comes back."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from eagle_cli import artifacts
from eagle_cli.errors import ArtifactError
from eagle_cli.expert.coreset import Coreset
from eagle_cli.formats import answers, bank, calibration, features, prompts, report, scores, threshold
from eagle_cli.formats.jsonl import ERRORS_FILE


def _publish(tmp_path, kind, write, lineage=None):
    draft = artifacts.start(kind, root=tmp_path, run="r", category="c", params={"n": 1}, inputs=[])
    with draft:
        draft.lineage = lineage or {}
        write(draft)
        return draft.publish()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_features_round_trip_in_both_precisions(tmp_path, dtype):
    values = torch.randn(3, 4, 8).to(dtype)
    records = [{"path": f"{i}.png", "label": i % 2} for i in range(3)]
    errors = [{"path": "bad.png", "error": "truncated"}]
    ref = _publish(tmp_path, "features", lambda d: features.write_features(d, values, records, (2, 2), errors),
                   lineage={"backbone": "b"})
    read, read_records, grid = features.read_features(ref)
    assert read.dtype == dtype and torch.equal(read, values) and grid == (2, 2)
    assert read_records == records == features.read_images(ref) and features.read_errors(ref) == errors


def test_features_written_row_by_row_are_a_valid_safetensors_file_of_the_rows_kept(tmp_path):
    from safetensors import safe_open

    rows = torch.randn(5, 6, 4)

    def write(draft):
        # Room for 120 rows, 3 written in two appends: the file holds exactly those, readable by safetensors itself.
        with features.FeaturesWriter(draft, capacity=120, patches=6, dim=4, dtype=torch.float32, grid=(2, 3)) as out:
            out.add(rows[:2])
            out.add(rows[3:4])
            out.finish([{"path": "a"}, {"path": "b"}, {"path": "d"}], [{"path": "c", "error": "truncated"}])

    ref = _publish(tmp_path, "features", write, lineage={"backbone": "b", "tile": 64})
    with safe_open(str(ref.path / features.FEATURES_FILE), framework="pt") as fh:
        assert torch.equal(fh.get_tensor("features"), torch.cat([rows[:2], rows[3:4]]))
        assert fh.metadata()["grid"] == "2x3" and json.loads(fh.metadata()["tile"]) == 64
    read, records, grid = features.read_features(ref)
    assert read.shape == (3, 6, 4) and grid == (2, 3) and [r["path"] for r in records] == ["a", "b", "d"]


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
            out.finish([{"path": "a"}, {"path": "c"}], [])

    read, _, _ = features.read_features(_publish(tmp_path, "features", write))
    assert torch.equal(read, rows[[0, 2]])


def test_bank_round_trip_on_both_backends(tmp_path):
    rows = torch.randn(20, 8)
    source_rows = torch.arange(0, 40, 2)  # 2 images of 20 patches: rows 0..18 of the first, 20..38 of the second
    coreset = Coreset(source_rows, torch.arange(40) // 2, torch.rand(40))
    ref = _publish(tmp_path, "bank", lambda d: bank.write_bank(d, rows, coreset, 20, 2, knn_k=3))
    tensors = bank.read_bank_tensors(ref)
    assert torch.equal(tensors["bank"], rows) and torch.equal(tensors["source_rows"], source_rows)
    cover = bank.read_bank_cover(ref)
    assert torch.equal(cover.cover, coreset.cover) and torch.equal(cover.cover_sq_dist, coreset.cover_sq_dist)
    assert tensors["image_ids"].tolist() == [0] * 10 + [1] * 10 and tensors["selected_per_image"].tolist() == [10, 10]
    assert bank.read_bank_tensors(ref, keys=("image_ids",)).keys() == {"image_ids"}
    queries = torch.randn(5, 8)
    via_faiss = bank.read_bank(ref, backend="faiss", device="cpu").search(queries, 2)
    via_torch = bank.read_bank(ref, backend="torch", device="cpu").search(queries, 2)
    assert np.array_equal(via_faiss[1], via_torch[1])


def test_a_bank_without_the_coreset_cover_is_refused_for_refill_with_what_to_do(tmp_path):
    rows = torch.randn(4, 8)

    def old_bank(draft):  # what eagle wrote before bank schema 2
        save_file({"bank": rows, "image_ids": torch.zeros(4, dtype=torch.long), "source_rows": torch.arange(4),
                   "selected_per_image": torch.tensor([4])}, str(draft.file(bank.BANK_FILE)))

    ref = _publish(tmp_path, "bank", old_bank)
    with pytest.raises(ArtifactError, match="does not record which entry covers.*eagle fit-bank"):
        bank.read_bank_cover(ref)


def test_calibration_threshold_and_prompts_round_trip(tmp_path):
    rows = [{"path": "a", "score": 1.5, "excluded": False, "fold": -1, "unselected_patches": 90},
            {"path": "b", "score": None, "excluded": True, "fold": -1, "unselected_patches": 3}]
    ref = _publish(tmp_path, "calibration", lambda d: calibration.write_calibration(d, rows))
    assert calibration.read_calibration(ref) == rows and calibration.calibration_scores(ref).tolist() == [1.5]
    values = {"tau": 1.25, "s_max": 2.0, "method": "conformal", "far_interval_90": [0.01, 0.1]}
    ref = _publish(tmp_path, "threshold", lambda d: threshold.write_threshold(d, values))
    assert threshold.read_threshold(ref) == values
    records = [{"id": "0:0", "message": [{"type": "image", "path": "images/000000_boxes.png", "role": "boxes"},
                                         {"type": "image", "path": "/data/q.png", "role": "query"}]}]

    def write_prompts(draft):
        (prompts.image_dir(draft) / "000000_boxes.png").write_bytes(b"png")
        prompts.write_prompts(draft, records)

    ref = _publish(tmp_path, "prompts", write_prompts)
    assert prompts.read_prompts(ref) == records
    boxes, query = records[0]["message"]
    assert prompts.resolve_image(ref, boxes).read_bytes() == b"png"
    assert str(prompts.resolve_image(ref, query)) == "/data/q.png"


def test_scores_round_trip_across_map_shards(tmp_path):
    # 70 images cross two shard boundaries (32 and 64): every row finds its own map.
    made = []

    def write(draft):
        with scores.ScoresWriter(draft) as writer:
            for i in range(70):
                row = {"path": f"{i}.png", "score": float(i), "width": 5, "height": 6}
                made.append(writer.add(row, np.full((4, 4), i, np.float32)))
        scores.write_metrics(draft, {"image_auroc": 0.5})

    # The whole image resized to 4x4 is the expert's frame: the original map is the frame map resampled.
    ref = _publish(tmp_path, "scores", write, lineage={"resize": 4, "crop": 0})
    rows = scores.read_scores(ref)
    assert rows == made and [r["index"] for r in rows] == list(range(70))
    assert len({r["maps_file"] for r in rows}) == 3
    for i in (0, 31, 32, 63, 64, 69):
        crop, orig = scores.read_maps(ref, rows[i])
        assert (crop == i).all() and orig.shape == (6, 5) and np.allclose(orig, i)
    with safe_open(str(ref.path / rows[0]["maps_file"]), framework="np") as fh:
        assert set(fh.keys()) == {f"crop/{i}" for i in range(32)}  # each map stored once
    assert scores.read_metrics(ref) == {"image_auroc": 0.5}


def test_partial_answers_drop_a_line_cut_off_by_a_kill(tmp_path):
    (tmp_path / answers.ANSWERS_FILE).write_text('{"id": "0:0"}\n{"id": "1:0"}\n{"id": "2:')
    (tmp_path / ERRORS_FILE).write_text('{"id": "3:0", "error": "gone"}\n')
    done, errors = answers.read_partial_answers(tmp_path)
    assert [r["id"] for r in done] == ["0:0", "1:0"] and errors == [{"id": "3:0", "error": "gone"}]
    assert answers.read_partial_answers(tmp_path / "missing") == ([], [])


def test_report_round_trip(tmp_path):
    metrics = {"headline": "h", "rows": [{"run": "r", "category": "c", "system": "Expert", "accuracy": 0.5}]}
    ref = _publish(tmp_path, "report", lambda d: report.write_report(
        d, "<html></html>", metrics, ["run", "category", "system", "accuracy"], {"r_expert": [{"image": "x"}]}))
    assert report.read_metrics(ref) == metrics
    assert (ref.path / report.METRICS_CSV).read_text().splitlines() == ["run,category,system,accuracy",
                                                                        "r,c,Expert,0.5"]
    assert json.loads((ref.path / "mmad_r_expert.json").read_text()) == [{"image": "x"}]
