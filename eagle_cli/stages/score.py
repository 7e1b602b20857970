"""eagle score: image scores, anomaly maps, verdicts and metrics for test images, as a ``scores`` artifact.

The expert (``expert/model.py``) does the scoring; this stage chooses the images, streams rows and
maps to disk as they come, and computes the metrics where the images are labelled.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from eagle_cli import artifacts, metrics
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data.images import load_mask
from eagle_cli.data.sample import Sample, samples_digest
from eagle_cli.data.source import DataSource
from eagle_cli.drift import batch_drift, p_values
from eagle_cli.errors import ArtifactError, DataError, ImageError, ParameterError
from eagle_cli.expert.anomaly_map import observed_box
from eagle_cli.expert.decision import Scored
from eagle_cli.expert.scoring import verdicts
from eagle_cli.formats.calibration import calibration_scores
from eagle_cli.formats.expert import scoring_expert
from eagle_cli.formats.features import ImageRecord, features_info, read_errors, read_features
from eagle_cli.formats.jsonl import ERRORS_FILE, ErrorRow, write_rows
from eagle_cli.formats.scores import (
    SCORES_FILE,
    ScoreRow,
    ScoresWriter,
    read_metrics,
    read_scores,
    scored_by,
    scores_of_same_bank,
    scores_params,
    stored_maps,
    write_metrics,
)
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.lineage import Lineage
from eagle_cli.metrics import PixelMetrics
from eagle_cli.params import ScoreParams
from eagle_cli.stages.images import image_batches, nothing_usable, record_error

if TYPE_CHECKING:
    from eagle_cli.expert.model import Expert
    from eagle_cli.export.runtime import ExportedExpert

#: How many defective images without a mask the warning names (all are counted).
UNMASKED_NAMED = 10


@dataclass(frozen=True)
class ScoreInputs:
    """Test images to score: a test-split features artifact, or images read on the fly."""

    features: ArtifactRef | None = None
    source: DataSource | None = None
    category: str | None = None

    @classmethod
    def of_bank(cls, threshold_ref: ArtifactRef) -> ScoreInputs:
        """The test split of the dataset the bank was fitted on."""
        train = features_info(threshold_ref.input("bank").input("features"))
        source = train.sources[0]
        if source.layout == "folder" and source.test is None:
            raise DataError("The bank was fitted on a --good folder; pass --test DIR with the images to score.")
        return cls(source=source, category=train.category)


def run_score(threshold_ref: ArtifactRef, test: ScoreInputs, params: ScoreParams, *, context: Context) -> ArtifactRef:
    """Score every test image; write one JSON line per image, maps in safetensors shards, and metrics.

    When only the threshold differs from a published scores artifact (same bank, images and
    smoothing), its image scores, maps and pixel metrics are reused and only the verdicts change.
    """
    if test.features is not None:
        info = features_info(test.features)
        if info.split != "test":
            raise ArtifactError(f"{test.features.path} holds {info.split} features, not test.")
        category, samples, extra_inputs = info.category, None, [test.features]
        identity, n_images = scores_params(params), info.n_images
    else:
        source = test.source.resolved()
        category, samples, extra_inputs = test.category, source.scan(test.category, "test"), []
        identity, n_images = scores_params(params, source, samples_digest(samples, context.artifacts)), len(samples)

    def build(draft):
        calibration = calibration_scores(threshold_ref.input("calibration"))
        # An exported runtime is asked for to be run: its scores are not taken from a sibling's.
        sibling = scores_of_same_bank(context.artifacts, context.run, category, threshold_ref, identity,
                                      extra_inputs) if params.runtime == "torch" else None
        if sibling is not None:
            rows, errors, result = _rejudged(sibling, threshold_ref, calibration, draft)
        else:
            rows, errors, result = _scored_anew(threshold_ref, test, samples, n_images, params, category, context,
                                                calibration, draft)
        if rows:
            result["drift"] = batch_drift(calibration, rows)
        write_rows(draft.file(ERRORS_FILE), errors)
        write_metrics(draft, result)
        threshold = read_threshold(threshold_ref)
        draft.lineage = threshold_ref.lineage
        draft.summary = {"images": len(rows), "errors": len(errors), "tau": threshold.tau, "s_max": threshold.s_max,
                         "runtime": params.runtime if sibling is None else scored_by(sibling),
                         "anomalous": sum(r.anomalous for r in rows), "uncertain": sum(r.uncertain for r in rows),
                         **{key: value for key, value in result.items() if key != "unmasked_images"}}
        if result.get("unmasked_defects"):
            named = result["unmasked_images"]
            more = result["unmasked_defects"] - len(named)
            draft.summary["warnings"] = [f"{result['unmasked_defects']} defective image(s) have no mask, so pixel "
                                         f"AUROC and PRO leave them out: {', '.join(named)}"
                                         + (f" and {more} more" if more else "")]

    return artifacts.produce("scores", context=context, category=category, params=identity,
                             inputs=[threshold_ref, *extra_inputs], build=build)


def _scored_anew(threshold_ref: ArtifactRef, test: ScoreInputs, samples: list[Sample] | None, n_images: int,
                 params: ScoreParams, category: str, context: Context, calibration: np.ndarray, draft
                 ) -> tuple[list[ScoreRow], list[ErrorRow], dict]:
    """Run the expert over the test images: (rows, errors, metrics)."""
    expert = _expert(threshold_ref, params, test)
    errors: list[ErrorRow] = []
    rows, masks = [], {}
    span = [np.inf, -np.inf]
    unmasked: list[str] = []
    with ScoresWriter(draft) as writer, context.reporter.task(f"score {category}", n_images) as advance:
        for records, scored in _scored_batches(test, samples, expert, params.batch_size, context, errors, advance):
            p = p_values(calibration, scored.scores)
            for i, record in enumerate(records):
                try:
                    masked = _original_mask(record) is not None
                except ImageError as exc:
                    # The image is still judged; only its pixel metrics need the mask.
                    record_error(exc, record.sample, on_error=context.on_error, errors=errors)
                    masked = False
                rows.append(writer.add(
                    scored.crop_maps[i], path=record.path, label=record.label, defect=record.defect,
                    score=float(scored.scores[i]), anomalous=bool(scored.anomalous[i]),
                    uncertain=bool(scored.uncertain[i]), width=record.width, height=record.height,
                    observed_box=list(observed_box(expert.geometry, record.width, record.height)),
                    p_value=float(p[i])))
                if record.label == 1 and not masked:
                    unmasked.append(record.path)
                if record.label is not None and (record.label == 0 or masked):
                    # Pixel metrics are read back from the shards; only the range is kept meanwhile.
                    masks[rows[-1].index] = record
                    crop_map = scored.crop_maps[i]
                    span[:] = min(span[0], float(crop_map.min())), max(span[1], float(crop_map.max()))
    if not rows and errors:
        raise nothing_usable(n_images, category, errors)
    result = _metrics(rows, tau=expert.tau)
    if masks:
        # The original frame's map is the expert's resampled, with 0 where it never looked.
        seen, whole = PixelMetrics(*span), PixelMetrics(min(span[0], 0.0), span[1])
        for row, amap, original in stored_maps(draft.tmp, [r for r in rows if r.index in masks], expert.geometry):
            full = _original_mask(masks[row.index])
            full = full if full is not None else np.zeros(original.shape, dtype=bool)
            seen.add(amap, expert.geometry.crop_mask(full))
            whole.add(original, full)
        result.update(pixel_auroc=seen.pixel_auroc(), pro=seen.pro(), pixel_auroc_original=whole.pixel_auroc(),
                      pro_original=whole.pro())
    if result:
        result["unmasked_defects"] = len(unmasked)
        result["unmasked_images"] = unmasked[:UNMASKED_NAMED]
    return rows, errors, result


def _rejudged(sibling: ArtifactRef, threshold_ref: ArtifactRef, calibration: np.ndarray, draft
              ) -> tuple[list[ScoreRow], list[ErrorRow], dict]:
    """The sibling's rows and maps with verdicts (and p-values) under this threshold: (rows, errors, metrics)."""
    threshold = read_threshold(threshold_ref)
    rows = read_scores(sibling)
    scores = np.array([r.score for r in rows])
    anomalous, uncertain = verdicts(scores, threshold.tau, threshold.s_max)
    rows = [replace(row, anomalous=bool(a), uncertain=bool(u), p_value=float(p))
            for row, a, u, p in zip(rows, anomalous, uncertain, p_values(calibration, scores), strict=True)]
    write_rows(draft.file(SCORES_FILE), rows)
    for shard in sorted({row.maps_file for row in rows}):
        _link_or_copy(sibling.path / shard, draft.file(shard))
    pixel = {key: value for key, value in read_metrics(sibling).items()
             if key.startswith(("pixel_", "pro", "unmasked"))}
    return rows, read_errors(sibling), {**_metrics(rows, tau=threshold.tau), **pixel}


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (the maps are then stored once on disk), or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _expert(threshold_ref: ArtifactRef, params: ScoreParams, test: ScoreInputs) -> Expert | ExportedExpert:
    if params.runtime != "torch" and test.features is not None:
        raise ParameterError(f"--runtime {params.runtime} scores images, and --features gives features; score the "
                             "images (--test) or use --runtime torch.")
    return scoring_expert(threshold_ref, params)


def _scored_batches(test: ScoreInputs, samples: list[Sample] | None, expert: Expert | ExportedExpert,
                    batch_size: int, context: Context, errors: list[ErrorRow], advance
                    ) -> Iterator[tuple[list[ImageRecord], Scored]]:
    """Yield (image records, what the expert says of them) from a features artifact or from ``samples``."""
    size = expert.geometry.images_per_batch(batch_size)
    if test.features is not None:
        expert.lineage.check_matches(Lineage.from_dict(test.features.lineage), what="The bank and the test features")
        features, records, grid = read_features(test.features)
        errors += read_errors(test.features)
        for start in range(0, len(records), size):
            batch = records[start:start + size]
            sizes = [(r.width, r.height) for r in batch]
            yield batch, expert.score_features(features[start:start + len(batch)].float(), sizes, grid)
            advance(len(batch))
        return
    for batch in image_batches(samples, expert.geometry, size, on_error=context.on_error, errors=errors,
                               advance=advance):
        records = [ImageRecord.of(sample, -1, size) for sample, size in zip(batch.samples, batch.sizes, strict=True)]
        yield records, expert.score_frames(batch.frames, batch.sizes)


def _original_mask(record: ImageRecord) -> np.ndarray | None:
    if not record.mask:
        return None
    return load_mask(Path(record.mask), (record.width, record.height))


def _metrics(rows: list[ScoreRow], *, tau: float) -> dict:
    labelled = [r for r in rows if r.label is not None]
    if not labelled:
        return {}
    labels = np.array([r.label for r in labelled])
    scores = np.array([r.score for r in labelled])
    correct = (scores >= tau) == (labels == 1)
    inside = np.array([r.uncertain for r in labelled], dtype=bool)
    return {"labelled_images": len(labelled), "image_auroc": metrics.image_auroc(labels, scores),
            "verdict": metrics.verdict_metrics(labels, scores >= tau),
            "false_alarm_rate": float(np.mean(scores[labels == 0] >= tau)) if (labels == 0).any() else None,
            # The CAAS window is where the expert is unsure: how often is its verdict right there, and elsewhere?
            "window": {"images": int(inside.sum()),
                       "accuracy_inside": float(correct[inside].mean()) if inside.any() else None,
                       "accuracy_outside": float(correct[~inside].mean()) if (~inside).any() else None}}
