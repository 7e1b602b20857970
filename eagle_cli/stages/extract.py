"""eagle extract: patch features of one split of one category, as a ``features`` artifact."""

from __future__ import annotations

from pathlib import Path

import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data.images import shorter_side
from eagle_cli.data.sample import samples_digest
from eagle_cli.data.source import DataSource
from eagle_cli.digests import sha256_file
from eagle_cli.errors import DataError, ImageError
from eagle_cli.expert.features import PatchFeatureExtractor, resolve_tiling
from eagle_cli.formats.features import FeaturesWriter, ImageRecord, features_params
from eagle_cli.formats.jsonl import ErrorRow
from eagle_cli.params import ExtractParams, Split
from eagle_cli.stages.images import image_batches, nothing_usable, record_error

DTYPES = {"float32": torch.float32, "float16": torch.float16}


def run_extract(source: DataSource, category: str, split: Split, params: ExtractParams, *,
                context: Context) -> ArtifactRef:
    """Extract ``(n, P, D)`` patch features for every readable image of ``split``; list the others in errors.jsonl."""
    source = source.resolved()
    samples = source.scan(category, split)
    if params.tile == "auto":
        # Decided by the good training images, so a category's test split is seen as its bank was.
        sized = samples if split == "train" else _train_or(source, category, samples)
        side = shorter_side([sample.path for sample in sized])
        params = resolve_tiling(params, side if side is not None else 0)
    weights = Path(params.weights)
    digest = sha256_file(weights) if params.weights not in ("imagenet", "none") and weights.is_file() else None
    identity = features_params(category, split, source, samples_digest(samples, context.artifacts), params, digest)

    def build(draft):
        extractor = PatchFeatureExtractor.from_params(params)
        draft.lineage = extractor.lineage.as_dict()
        grid = extractor.grid()
        geometry = extractor.geometry
        dtype = DTYPES[params.feature_dtype]
        patches = len(geometry.tile_offsets()) * grid[0] * grid[1]
        records: list[ImageRecord] = []
        errors: list[ErrorRow] = []
        with FeaturesWriter(draft, capacity=len(samples), patches=patches, dim=extractor.feature_dim, dtype=dtype,
                            grid=grid) as writer, \
                context.reporter.task(f"extract {category}/{split}", len(samples)) as advance:
            for batch in image_batches(samples, geometry, geometry.images_per_batch(params.batch_size),
                                       on_error=context.on_error, errors=errors, advance=advance):
                # Written as they come, an image's tiles a batch at a time: memory does not grow with the image.
                current, finite = None, True
                for index, patches in extractor.stream(torch.from_numpy(batch.frames)):
                    if index != current:
                        if current is not None:
                            _close_row(writer, records, errors, batch, current, finite, context.on_error)
                        current, finite = index, True
                    # Checked as stored: a float32 value beyond float16's range would become infinite.
                    patches = patches.cpu().to(dtype)
                    finite = finite and bool(torch.isfinite(patches).all())
                    writer.add_patches(patches)
                _close_row(writer, records, errors, batch, current, finite, context.on_error)
            if not records:
                raise nothing_usable(len(samples), f"{category}/{split}", errors)
            writer.finish(records, errors)
        draft.summary = {"images": len(records), "errors": len(errors), "grid": list(grid)}

    return artifacts.produce("features", context=context, category=category, params=identity, inputs=[],
                             build=build)


def _close_row(writer: FeaturesWriter, records: list[ImageRecord], errors: list[ErrorRow], batch, index: int,
               finite: bool, on_error: str) -> None:
    """Keep the image just written (one more record) or drop its patches and list it as an error."""
    sample = batch.samples[index]
    if finite:
        writer.end_row()
        records.append(ImageRecord.of(sample, len(records), batch.sizes[index]))
    else:
        writer.drop_row()
        record_error(ImageError(sample.path, "the backbone produced NaN or infinite features; check --weights"),
                     sample, on_error=on_error, errors=errors)


def _train_or(source: DataSource, category: str, samples: list) -> list:
    """The category's training samples, or ``samples`` when the source has none."""
    try:
        return source.scan(category, "train")
    except DataError:
        return samples
