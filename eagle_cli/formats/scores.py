"""``scores`` artifacts: one row per scored image, its anomaly maps, the metrics and the images left out.

``scores.jsonl`` holds one :class:`ScoreRow` per image. Maps are float32 in safetensors shards of
32 images (``maps-00000.safetensors``), under ``crop/<key>``, in the frame the expert saw (the crop,
or the whole resized image); the map over the original image is derived from it on reading.
``metrics.json`` holds AUROC, PRO, verdict and window figures when the
images were labelled; pixel AUROC and PRO twice: in the frame the expert saw (``pixel_auroc``,
``pro``: what papers report) and over the whole original image (``pixel_auroc_original``,
``pro_original``), where pixels the expert never saw score 0, so a defect a crop cut away counts
as missed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.data.source import DataSource
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.features import features_info
from eagle_cli.formats.jsonl import line, read_rows
from eagle_cli.lineage import Lineage
from eagle_cli.params import ScoreParams
from eagle_cli.settings import identity

if TYPE_CHECKING:
    from eagle_cli.expert.geometry import Geometry

SCORES_FILE = "scores.jsonl"
METRICS_FILE = "metrics.json"
MAPS_PER_SHARD = 32


def _shard_name(row_index: int) -> str:
    return f"maps-{row_index // MAPS_PER_SHARD:05d}.safetensors"


@dataclass(frozen=True)
class ScoreRow:
    """What the expert said about one test image, and where its map is stored."""

    index: int
    path: str
    label: int | None
    defect: str | None
    score: float
    anomalous: bool
    uncertain: bool
    width: int
    height: int
    observed_box: list[float]  # the part of the original image the expert saw: x0, y0, x1, y1
    maps_file: str
    map_key: str
    p_value: float | None = None  # conformal, against the threshold's calibration scores (eagle_cli/drift.py)


def scores_params(settings: ScoreParams, source: DataSource | None = None, digest: str | None = None) -> dict:
    """What a scores artifact's id hashes: the smoothing, and the test images when they are read directly (test
    features are an input artifact instead)."""
    return {**identity(settings), "source": source.describe() if source else None, "images": digest}


class ScoresWriter:
    """Appends rows to ``scores.jsonl`` as they come (flushed) and their maps to shards of 32 images."""

    def __init__(self, draft: Draft):
        self._draft = draft
        self._out = open(draft.file(SCORES_FILE), "w")
        self._shard: dict[str, np.ndarray] = {}
        self.count = 0

    def add(self, crop_map: np.ndarray, **judged) -> ScoreRow:
        """Write one image's row (``judged``: its fields but the index and map location) and keep its map."""
        key = str(self.count)
        row = ScoreRow(index=self.count, **judged, maps_file=_shard_name(self.count), map_key=key)
        self._shard[f"crop/{key}"] = np.ascontiguousarray(crop_map, dtype=np.float32)
        self._out.write(line(row))
        self._out.flush()
        self.count += 1
        if self.count % MAPS_PER_SHARD == 0:
            self._flush_shard()
        return row

    def _flush_shard(self) -> None:
        if self._shard:
            save_file(self._shard, str(self._draft.file(_shard_name(self.count - 1))))
            self._shard = {}

    def close(self) -> None:
        self._flush_shard()
        self._out.close()

    def __enter__(self) -> ScoresWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_metrics(draft: Draft, result: dict) -> None:
    draft.file(METRICS_FILE).write_text(json.dumps(result, indent=2))


def read_metrics(ref: ArtifactRef) -> dict:
    return json.loads((ref.path / METRICS_FILE).read_text())


def scored_by(ref: ArtifactRef) -> str:
    """Which runtime computed the scores: torch, or an export's (onnx, openvino)."""
    return ref.summary.get("runtime", "torch")


def read_scores(ref: ArtifactRef) -> list[ScoreRow]:
    return read_rows(ref.path / SCORES_FILE, ScoreRow)


def read_maps(ref: ArtifactRef, row: ScoreRow) -> tuple[np.ndarray, np.ndarray]:
    """The crop-frame and original-frame maps of one scores row."""
    return next(stored_maps(ref.path, [row], geometry_of(ref)))[1:]


def stored_maps(folder: Path, rows: list[ScoreRow], geometry: Geometry
                ) -> Iterator[tuple[ScoreRow, np.ndarray, np.ndarray]]:
    """The crop-frame and original-frame maps of each row, in order, opening each shard under ``folder`` once."""
    from eagle_cli.expert.anomaly_map import to_original_frame

    for name, group in itertools.groupby(rows, key=lambda row: row.maps_file):
        with safe_open(str(folder / name), framework="np") as fh:
            for row in group:
                frame = fh.get_tensor(f"crop/{row.map_key}")
                yield row, frame, to_original_frame(frame, geometry, row.width, row.height)


def geometry_of(ref: ArtifactRef) -> Geometry:
    """The resize, crop and tiling the features behind an artifact were computed with."""
    from eagle_cli.expert.geometry import Geometry

    return Geometry.of(Lineage.from_dict(ref.lineage))


def source_of(ref: ArtifactRef) -> DataSource | None:
    """Where a scores artifact's images came from (None for a features artifact of unknown origin)."""
    if ref.params["source"] is not None:
        return DataSource.from_description(ref.params["source"])
    features = [item for item in ref.manifest["inputs"] if item["kind"] == "features"]
    return features_info(ref.input("features")).sources[0] if features else None


def scores_of_same_bank(root: Path, run: str, category: str, threshold: ArtifactRef, params: dict,
                        other_inputs: list[ArtifactRef]) -> ArtifactRef | None:
    """The newest published scores with the same parameters and test inputs as ``params`` and ``other_inputs``
    under another threshold of ``threshold``'s bank: its scores and maps hold, only the verdicts change. Scores
    under ``threshold`` itself are never reused: being asked for them again means --force, to compute them anew."""
    bank_id, wanted = threshold.input_ids("bank"), [ref.id for ref in other_inputs]
    for ref in reversed(artifacts.list_artifacts(root, run=run, category=category, kind="scores")):
        thresholds = ref.input_ids("threshold")
        if (ref.manifest.get("schema") != artifacts.SCHEMAS["scores"] or ref.params != params or len(thresholds) != 1
                or thresholds == [threshold.id] or sorted(ref.input_ids("features")) != sorted(wanted)):
            continue
        try:
            if ref.input("threshold").input_ids("bank") == bank_id:
                return artifacts.open_artifact(ref.path, "scores")
        except ArtifactError:
            continue  # a broken candidate is simply not reused
    return None
