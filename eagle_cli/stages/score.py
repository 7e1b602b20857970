"""eagle score: image scores, anomaly maps, verdicts and metrics for test images, as a ``scores`` artifact.

The expert (``expert/model.py``) does the scoring; this stage chooses the images, streams rows and
maps to disk as they come, and computes the metrics where the images are labelled.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from eagle_cli import artifacts, metrics
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data.images import load_mask
from eagle_cli.data.sample import Sample, samples_digest
from eagle_cli.data.source import DataSource
from eagle_cli.errors import ArtifactError, DataError, ImageError
from eagle_cli.expert.anomaly_map import observed_box
from eagle_cli.expert.inputs import image_batches, record_error
from eagle_cli.expert.model import Expert, Scored
from eagle_cli.expert.scoring import verdicts
from eagle_cli.formats.features import read_errors, read_features, training_source
from eagle_cli.formats.jsonl import ERRORS_FILE, write_jsonl
from eagle_cli.formats.scores import SCORES_FILE, ScoresWriter, read_metrics, read_scores, stored_maps, write_metrics
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.metrics import PixelMetrics
from eagle_cli.params import ScoreParams


@dataclass(frozen=True)
class ScoreInputs:
    """Test images to score: a test-split features artifact, or images extracted on the fly."""

    features: ArtifactRef | None = None
    source: DataSource | None = None
    category: str | None = None

    @classmethod
    def of_bank(cls, threshold_ref: ArtifactRef, category: str) -> ScoreInputs:
        """The test split of the dataset the bank was fitted on."""
        source = DataSource.from_description(training_source(threshold_ref.input("bank").input("features")))
        if source.layout == "folder" and source.test is None:
            raise DataError("The bank was fitted on a --good folder; pass --test DIR with the images to score.")
        return cls(source=source, category=category)


def run_score(threshold_ref: ArtifactRef, test: ScoreInputs, params: ScoreParams, *, context: Context) -> ArtifactRef:
    """Score every test image; write one JSON line per image, maps in safetensors shards, and metrics.

    When only the threshold differs from a published scores artifact (same bank, images and
    smoothing), its image scores, maps and pixel metrics are reused and only the verdicts change.
    """
    identity, extra_inputs, category, samples = _test_identity(test)
    n_images = len(samples) if samples is not None else test.features.summary["images"]
    score_params = {**identity, "sigma_px": params.sigma_px}

    def build(draft):
        sibling = _same_scores(threshold_ref, score_params, extra_inputs, category, context)
        if sibling is not None:
            rows, errors, result = _rejudged(sibling, threshold_ref, draft)
        else:
            rows, errors, result = _scored_anew(threshold_ref, test, samples, n_images, params, category, context,
                                                draft)
        write_jsonl(draft.file(ERRORS_FILE), errors)
        write_metrics(draft, result)
        tau, s_max = _tau_and_s_max(threshold_ref)
        draft.lineage = threshold_ref.lineage
        draft.summary = {"images": len(rows), "errors": len(errors), "tau": tau, "s_max": s_max,
                         "anomalous": sum(r["anomalous"] for r in rows),
                         "uncertain": sum(r["uncertain"] for r in rows), **result}
        if result.get("unmasked_defects"):
            draft.summary["warnings"] = [f"{result['unmasked_defects']} defective image(s) have no mask, so pixel "
                                         "AUROC and PRO leave them out"]

    return artifacts.produce("scores", context=context, category=category, params=score_params,
                             inputs=[threshold_ref, *extra_inputs], build=build)


def _scored_anew(threshold_ref: ArtifactRef, test: ScoreInputs, samples: list[Sample] | None, n_images: int,
                 params: ScoreParams, category: str, context: Context, draft) -> tuple[list[dict], list[dict], dict]:
    """Run the expert over the test images: (rows, errors, metrics)."""
    expert = Expert.load(threshold_ref, device=params.device, knn_backend=params.knn_backend,
                         sigma_px=params.sigma_px, batch_size=params.batch_size)
    errors: list[dict] = []
    rows, masks = [], {}
    span = [np.inf, -np.inf]
    unmasked = 0
    with ScoresWriter(draft) as writer, context.reporter.task(f"score {category}", n_images) as advance:
        for records, scored in _scored_batches(test, samples, expert, threshold_ref, context, errors, advance):
            for i, record in enumerate(records):
                try:
                    masked = _original_mask(record) is not None
                except ImageError as exc:
                    # The image is still judged; only its pixel metrics need the mask.
                    record_error(exc, Sample.from_record(record), on_error=context.on_error, errors=errors)
                    masked = False
                rows.append(writer.add({
                    "path": record["path"], "label": record["label"], "defect": record["defect"],
                    "score": float(scored.scores[i]), "anomalous": bool(scored.anomalous[i]),
                    "uncertain": bool(scored.uncertain[i]), "width": record["width"], "height": record["height"],
                    "observed_box": observed_box(expert.geometry, record["width"], record["height"]),
                }, scored.crop_maps[i]))
                unmasked += record["label"] == 1 and not masked
                if record["label"] is not None and (record["label"] == 0 or masked):
                    # Pixel metrics are read back from the shards; only the range is kept meanwhile.
                    masks[rows[-1]["index"]] = record["mask"]
                    span[:] = min(span[0], float(scored.crop_maps[i].min())), max(span[1],
                                                                                  float(scored.crop_maps[i].max()))
    result = _metrics(rows, tau=expert.tau)
    if masks:
        # The original frame's map is the expert's resampled, with 0 where it never looked.
        seen, whole = PixelMetrics(*span), PixelMetrics(min(span[0], 0.0), span[1])
        for row, amap, original in stored_maps(draft.tmp, [r for r in rows if r["index"] in masks], expert.geometry):
            full = _original_mask({**row, "mask": masks[row["index"]]})
            full = full if full is not None else np.zeros(original.shape, dtype=bool)
            seen.add(amap, expert.geometry.crop_mask(torch.from_numpy(full)).numpy())
            whole.add(original, full)
        result.update(pixel_auroc=seen.pixel_auroc(), pro=seen.pro(), pixel_auroc_original=whole.pixel_auroc(),
                      pro_original=whole.pro())
    if result:
        result["unmasked_defects"] = unmasked
    return rows, errors, result


def _same_scores(threshold_ref: ArtifactRef, score_params: dict, extra_inputs: list[ArtifactRef], category: str,
                 context: Context) -> ArtifactRef | None:
    """The newest published scores of the same bank, test images and smoothing under another threshold."""
    bank_id = _bank_id(threshold_ref.manifest)
    extra_ids = sorted(ref.id for ref in extra_inputs)
    for ref in reversed(artifacts.list_artifacts(context.artifacts, run=context.run, category=category,
                                                 kind="scores")):
        inputs = ref.manifest.get("inputs", [])
        thresholds = [i for i in inputs if i["kind"] == "threshold"]
        if (ref.manifest.get("schema") != artifacts.SCHEMAS["scores"] or ref.params != score_params
                or sorted(i["id"] for i in inputs if i["kind"] != "threshold") != extra_ids or len(thresholds) != 1):
            continue
        try:
            other = artifacts.open_artifact(ref.locate(thresholds[0]), "threshold", verify=False)
            if _bank_id(other.manifest) == bank_id:
                return artifacts.open_artifact(ref.path, "scores")
        except ArtifactError:
            continue  # a broken candidate is simply not reused
    return None


def _tau_and_s_max(threshold_ref: ArtifactRef) -> tuple[float, float]:
    values = read_threshold(threshold_ref)
    return values["tau"], values["s_max"]


def _bank_id(threshold_manifest: dict) -> str | None:
    return next((i["id"] for i in threshold_manifest["inputs"] if i["kind"] == "bank"), None)


def _rejudged(sibling: ArtifactRef, threshold_ref: ArtifactRef, draft) -> tuple[list[dict], list[dict], dict]:
    """The sibling's rows and maps with verdicts under this threshold: (rows, errors, metrics)."""
    tau, s_max = _tau_and_s_max(threshold_ref)
    rows = read_scores(sibling)
    anomalous, uncertain = verdicts(np.array([r["score"] for r in rows]), tau, s_max)
    rows = [{**row, "anomalous": bool(a), "uncertain": bool(u)} for row, a, u in zip(rows, anomalous, uncertain,
                                                                                      strict=True)]
    write_jsonl(draft.file(SCORES_FILE), rows)
    for shard in sorted({row["maps_file"] for row in rows}):
        _link_or_copy(sibling.path / shard, draft.file(shard))
    pixel = {key: value for key, value in read_metrics(sibling).items()
             if key.startswith(("pixel_", "pro", "unmasked"))}
    return rows, read_errors(sibling), {**_metrics(rows, tau=tau), **pixel}


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (the maps are then stored once on disk), or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _test_identity(test: ScoreInputs) -> tuple[dict, list[ArtifactRef], str, list[Sample] | None]:
    """Artifact-id parameters, extra inputs, category and (for images) the samples of a test set."""
    if test.features is not None:
        if test.features.params.get("split") != "test":
            raise ArtifactError(f"{test.features.path} holds {test.features.params.get('split')} features, not test.")
        return {}, [test.features], test.features.params["category"], None
    source = test.source.resolved()
    samples = source.scan(test.category, "test")
    return {"source": source.describe(), "images": samples_digest(samples)}, [], test.category, samples


def _scored_batches(test: ScoreInputs, samples: list[Sample] | None, expert: Expert, threshold_ref: ArtifactRef,
                    context: Context, errors: list[dict], advance) -> Iterator[tuple[list[dict], Scored]]:
    """Yield (image records, what the expert says of them) from a features artifact or from ``samples``."""
    size = expert.geometry.images_per_batch(expert.extract.batch_size)
    if test.features is not None:
        artifacts.check_lineage(threshold_ref, test.features, what="The bank and the test features")
        features, records, grid = read_features(test.features)
        errors += read_errors(test.features)
        for start in range(0, len(records), size):
            batch = records[start:start + size]
            sizes = [(r["width"], r["height"]) for r in batch]
            yield batch, expert.score_features(features[start:start + len(batch)].float(), sizes, grid)
            advance(len(batch))
        return
    for batch in image_batches(samples, expert.geometry, size, on_error=context.on_error, errors=errors,
                               advance=advance):
        records = [{**sample.to_record(), "width": width, "height": height}
                   for sample, (width, height) in zip(batch.samples, batch.sizes, strict=True)]
        yield records, expert.score_frames(batch.tensors, batch.sizes)


def _original_mask(record: dict) -> np.ndarray | None:
    if not record.get("mask"):
        return None
    return load_mask(Path(record["mask"]), (record["width"], record["height"]))


def _metrics(rows: list[dict], *, tau: float) -> dict:
    labelled = [r for r in rows if r["label"] is not None]
    if not labelled:
        return {}
    labels = np.array([r["label"] for r in labelled])
    scores = np.array([r["score"] for r in labelled])
    correct = (scores >= tau) == (labels == 1)
    inside = np.array([r["uncertain"] for r in labelled], dtype=bool)
    return {"labelled_images": len(labelled), "image_auroc": metrics.image_auroc(labels, scores),
            "verdict": metrics.verdict_metrics(labels, scores >= tau),
            "false_alarm_rate": float(np.mean(scores[labels == 0] >= tau)) if (labels == 0).any() else None,
            # The CAAS window is where the expert is unsure: how often is its verdict right there, and elsewhere?
            "window": {"images": int(inside.sum()),
                       "accuracy_inside": float(correct[inside].mean()) if inside.any() else None,
                       "accuracy_outside": float(correct[~inside].mean()) if (~inside).any() else None}}
