"""eagle score: image scores, anomaly maps, verdicts and metrics for test images, as a ``scores`` artifact.

Reference parity (eagle-method.md A.6, B): image score = max patch score (mean squared L2 to the
k nearest bank entries); verdict anomalous when score ≥ τ; "uncertain" (the CAAS window) when
τ < score < S_max.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from eagle_cli import artifacts, metrics
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.data.images import load_mask
from eagle_cli.data.sample import Sample
from eagle_cli.data.source import DataSource
from eagle_cli.errors import ArtifactError, ImageError
from eagle_cli.expert.anomaly_map import crop_map, observed_box, to_original_frame
from eagle_cli.expert.features import Geometry
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.context import Context
from eagle_cli.stages.common import (
    ERRORS_FILE, image_batches, load_features, read_jsonl, record_error, samples_digest, write_jsonl,
)
from eagle_cli.stages.extract import ExtractParams
from eagle_cli.stages.fit_bank import load_bank
from eagle_cli.stages.fit_threshold import load_threshold

SCORES_FILE = "scores.jsonl"
METRICS_FILE = "metrics.json"
_MAPS_PER_SHARD = 32


@dataclass(frozen=True)
class ScoreParams:
    sigma_px: float = 4.0
    batch_size: int = 8
    knn_backend: str = "auto"
    device: str = "auto"


@dataclass(frozen=True)
class ScoreInputs:
    """Test images to score: a test-split features artifact, or images extracted on the fly."""

    features: ArtifactRef | None = None
    source: DataSource | None = None
    category: str | None = None


def _extract_params(threshold_ref: ArtifactRef, params: ScoreParams) -> ExtractParams:
    """The extraction the bank was built with, so on-the-fly features match it exactly."""
    train = threshold_ref.input("bank").input("features").params
    return ExtractParams(backbone=train["backbone"], weights=train["weights"], resize=train["resize"],
                         crop=train["crop"], pretrain_dim=train["pretrain_dim"], target_dim=train["target_dim"],
                         batch_size=params.batch_size, device=params.device)


def _feature_batches(test: ScoreInputs, samples: list[Sample] | None, threshold_ref: ArtifactRef, params: ScoreParams,
                     context: Context, errors: list[dict], advance
                     ) -> Iterator[tuple[list[dict], torch.Tensor, tuple[int, int]]]:
    """Yield (image records, features ``(B, P, D)``, grid) from a features artifact or from ``samples``."""
    if test.features is not None:
        artifacts.check_lineage(threshold_ref, test.features, what="The bank and the test features")
        features, records, grid = load_features(test.features)
        errors += read_jsonl(test.features.path / ERRORS_FILE)
        for start in range(0, len(records), params.batch_size):
            batch = records[start:start + params.batch_size]
            yield batch, features[start:start + len(batch)].float(), grid
            advance(len(batch))
        return
    extract = _extract_params(threshold_ref, params)
    extractor = extract.extractor()
    artifacts.check_lineage(threshold_ref.lineage, extractor.lineage, what="The bank and the test images' features")
    grid = extractor.grid()
    for batch in image_batches(samples, extract.geometry, params.batch_size, on_error=context.on_error,
                               errors=errors, advance=advance):
        records = [{**s.to_record(), "width": w, "height": h} for s, (w, h) in zip(batch.samples, batch.sizes)]
        yield records, extractor(batch.tensors).cpu(), grid


def _test_identity(test: ScoreInputs) -> tuple[dict, list[ArtifactRef], str, list[Sample] | None]:
    """Artifact-id parameters, extra inputs, category and (for images) the samples of a test set."""
    if test.features is not None:
        if test.features.params.get("split") != "test":
            raise ArtifactError(f"{test.features.path} holds {test.features.params.get('split')} features, not test.")
        return {}, [test.features], test.features.params["category"], None
    source = test.source.resolved()
    samples = source.scan(test.category, "test")
    return {"source": source.describe(), "images": samples_digest(samples)}, [], test.category, samples


def run_score(threshold_ref: ArtifactRef, test: ScoreInputs, params: ScoreParams, *, context: Context) -> ArtifactRef:
    """Score every test image; write one JSON line per image, maps in safetensors shards, and metrics."""
    identity, extra_inputs, category, samples = _test_identity(test)
    n_images = len(samples) if samples is not None else test.features.summary["images"]
    bank_ref = threshold_ref.input("bank")
    draft = artifacts.start("scores", root=context.artifacts, run=context.run, category=category,
                            params={**identity, "sigma_px": params.sigma_px}, inputs=[threshold_ref, *extra_inputs],
                            force=context.force)
    if isinstance(draft, ArtifactRef):
        return draft
    with draft:
        threshold = load_threshold(threshold_ref)
        tau, s_max, knn_k = threshold["tau"], threshold["s_max"], threshold["knn_k"]
        index = load_bank(bank_ref, backend=params.knn_backend, device=params.device)
        lineage = threshold_ref.lineage
        geometry = Geometry(lineage["resize"], lineage["crop"])
        errors: list[dict] = []
        rows, maps_for_metrics, masks_for_metrics = [], [], []
        shard: dict[str, torch.Tensor] = {}
        with open(draft.file(SCORES_FILE), "w") as out, \
                context.reporter.task(f"score {category}", n_images) as advance:
            for records, feats, grid in _feature_batches(test, samples, threshold_ref, params, context, errors, advance):
                dist, _ = index.search(feats.reshape(-1, feats.shape[-1]), knn_k)
                for record, scores in zip(records, patch_scores(dist).reshape(len(records), -1)):
                    try:
                        mask = _crop_mask(record, geometry)
                    except ImageError as exc:
                        record_error(exc, Sample.from_record(record), on_error=context.on_error, errors=errors)
                        continue
                    key = str(len(rows))
                    amap = crop_map(scores, grid, geometry.crop, sigma_px=params.sigma_px)
                    shard[f"crop/{key}"] = torch.from_numpy(amap)
                    shard[f"orig/{key}"] = torch.from_numpy(
                        to_original_frame(amap, geometry, record["width"], record["height"]))
                    score = float(scores.max())
                    row = {"index": len(rows), "path": record["path"], "label": record["label"],
                           "defect": record["defect"], "score": score, "anomalous": score >= tau,
                           "uncertain": tau < score < s_max, "width": record["width"], "height": record["height"],
                           "observed_box": observed_box(geometry, record["width"], record["height"]),
                           "maps_file": _shard_name(len(rows)), "map_key": key}
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    rows.append(row)
                    if record["label"] is not None and (record["label"] == 0 or mask is not None):
                        maps_for_metrics.append(amap)
                        masks_for_metrics.append(mask if mask is not None else np.zeros_like(amap, dtype=bool))
                    if len(rows) % _MAPS_PER_SHARD == 0:
                        save_file(shard, str(draft.file(_shard_name(len(rows) - 1))))
                        shard = {}
        if shard:
            save_file(shard, str(draft.file(_shard_name(len(rows) - 1))))
        write_jsonl(draft.file(ERRORS_FILE), errors)
        result = _metrics(rows, maps_for_metrics, masks_for_metrics, tau=tau)
        draft.file(METRICS_FILE).write_text(json.dumps(result, indent=2))
        draft.lineage = lineage
        draft.summary = {"images": len(rows), "errors": len(errors), "tau": tau, "s_max": s_max,
                         "anomalous": sum(r["anomalous"] for r in rows),
                         "uncertain": sum(r["uncertain"] for r in rows), **result}
        return draft.publish()


def _shard_name(row_index: int) -> str:
    return f"maps-{row_index // _MAPS_PER_SHARD:05d}.safetensors"


def _crop_mask(record: dict, geometry: Geometry) -> np.ndarray | None:
    if not record.get("mask"):
        return None
    mask = load_mask(Path(record["mask"]), (record["width"], record["height"]))
    return geometry.crop_mask(torch.from_numpy(mask)).numpy()


def _metrics(rows: list[dict], maps: list[np.ndarray], masks: list[np.ndarray], *, tau: float) -> dict:
    labelled = [r for r in rows if r["label"] is not None]
    if not labelled:
        return {}
    labels = np.array([r["label"] for r in labelled])
    scores = np.array([r["score"] for r in labelled])
    correct = (scores >= tau) == (labels == 1)
    inside = np.array([r["uncertain"] for r in labelled], dtype=bool)
    result = {"labelled_images": len(labelled), "image_auroc": metrics.image_auroc(labels, scores),
              "verdict": metrics.verdict_metrics(labels, scores >= tau),
              "false_alarm_rate": float(np.mean(scores[labels == 0] >= tau)) if (labels == 0).any() else None,
              # The CAAS window is where the expert is unsure: how often is its verdict right there, and elsewhere?
              "window": {"images": int(inside.sum()),
                         "accuracy_inside": float(correct[inside].mean()) if inside.any() else None,
                         "accuracy_outside": float(correct[~inside].mean()) if (~inside).any() else None}}
    if maps:
        stacked_maps, stacked_masks = np.stack(maps), np.stack(masks)
        result["pixel_auroc"] = metrics.pixel_auroc(stacked_masks, stacked_maps)
        result["pro"] = metrics.pro_score(stacked_masks, stacked_maps)
    return result


def test_source(scores_ref: ArtifactRef) -> DataSource | None:
    """Where a scores artifact's images came from (None for a plain features artifact of unknown origin)."""
    described = scores_ref.params.get("source")
    if described is None:
        features = next((i for i in scores_ref.manifest["inputs"] if i["kind"] == "features"), None)
        described = artifacts.open_artifact(features["path"], "features", verify=False).params.get("source") \
            if features else None
    return DataSource.from_description(described) if described else None


def load_maps(ref: ArtifactRef, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """The crop-frame and original-frame maps of one scores row."""
    with safe_open(str(ref.path / row["maps_file"]), framework="np") as fh:
        return fh.get_tensor(f"crop/{row['map_key']}"), fh.get_tensor(f"orig/{row['map_key']}")
