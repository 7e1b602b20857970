"""``scores`` artifacts: one row per scored image, its anomaly maps, the metrics and the images left out.

``scores.jsonl`` rows: index, path, label, defect, score, anomalous, uncertain, width, height,
observed_box, maps_file, map_key. Maps are float32 in safetensors shards of 32 images
(``maps-00000.safetensors``), under ``crop/<key>``, in the frame the expert saw (the crop, or the
whole resized image); the map over the original image is derived from it on reading (schema 1
stored it too, under ``orig/<key>``). ``metrics.json`` holds AUROC, PRO, verdict and window figures when the
images were labelled; pixel AUROC and PRO twice: in the frame the expert saw (``pixel_auroc``,
``pro``: what papers report) and over the whole original image (``pixel_auroc_original``,
``pro_original``), where pixels the expert never saw score 0, so a defect a crop cut away counts
as missed.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.data.source import DataSource
from eagle_cli.formats.jsonl import read_jsonl

if TYPE_CHECKING:
    from eagle_cli.expert.features import Geometry

SCORES_FILE = "scores.jsonl"
METRICS_FILE = "metrics.json"
MAPS_PER_SHARD = 32


def _shard_name(row_index: int) -> str:
    return f"maps-{row_index // MAPS_PER_SHARD:05d}.safetensors"


class ScoresWriter:
    """Appends rows to ``scores.jsonl`` as they come (flushed) and their maps to shards of 32 images."""

    def __init__(self, draft: Draft):
        self._draft = draft
        self._out = open(draft.file(SCORES_FILE), "w")
        self._shard: dict[str, np.ndarray] = {}
        self.count = 0

    def add(self, row: dict, crop_map: np.ndarray) -> dict:
        """Write one image's row (``index`` and map location are filled in) and keep its map; return the row."""
        key = str(self.count)
        row = {"index": self.count, **row, "maps_file": _shard_name(self.count), "map_key": key}
        self._shard[f"crop/{key}"] = np.ascontiguousarray(crop_map, dtype=np.float32)
        self._out.write(json.dumps(row) + "\n")
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


def read_scores(ref: ArtifactRef) -> list[dict]:
    return read_jsonl(ref.path / SCORES_FILE)


def read_maps(ref: ArtifactRef, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """The crop-frame and original-frame maps of one scores row."""
    return next(stored_maps(ref.path, [row], geometry_of(ref.lineage)))[1:]


def stored_maps(folder: Path, rows: list[dict], geometry: Geometry) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """The crop-frame and original-frame maps of each row, in order, opening each shard under ``folder`` once."""
    from eagle_cli.expert.anomaly_map import to_original_frame

    for name, group in itertools.groupby(rows, key=lambda row: row["maps_file"]):
        with safe_open(str(folder / name), framework="np") as fh:
            for row in group:
                frame = fh.get_tensor(f"crop/{row['map_key']}")
                yield row, frame, to_original_frame(frame, geometry, row["width"], row["height"])


def geometry_of(lineage: dict) -> Geometry:
    """The resize, crop and tiling that features (and the scores made from them) were computed with."""
    from eagle_cli.expert.features import Geometry

    return Geometry(lineage["resize"], lineage["crop"], lineage.get("tile", 0), lineage.get("overlap", 0.25))


def source_of(ref: ArtifactRef) -> DataSource | None:
    """Where a scores artifact's images came from (None for a plain features artifact of unknown origin)."""
    described = ref.params.get("source")
    if described is None:
        features = next((i for i in ref.manifest["inputs"] if i["kind"] == "features"), None)
        described = artifacts.open_artifact(ref.locate(features), "features", verify=False).params.get("source") \
            if features else None
    return DataSource.from_description(described) if described else None
