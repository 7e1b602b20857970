"""eagle extract: patch features of one split of one category, as a ``features`` artifact."""

from __future__ import annotations

from pathlib import Path

import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef, sha256_file
from eagle_cli.context import Context
from eagle_cli.data.sample import samples_digest
from eagle_cli.data.source import DataSource
from eagle_cli.errors import DataError, ImageError
from eagle_cli.expert.features import PatchFeatureExtractor
from eagle_cli.expert.inputs import image_batches, record_error
from eagle_cli.formats.features import FeaturesWriter
from eagle_cli.params import ExtractParams, Split, check_choice

DTYPES = {"float32": torch.float32, "float16": torch.float16}


def extract_identity(params: ExtractParams) -> dict:
    """What the features depend on: the settings, and the weights file's hash when it is a path."""
    values = params.identity()
    if params.weights not in ("imagenet", "none") and Path(params.weights).is_file():
        values["weights_sha256"] = sha256_file(Path(params.weights))
    return values


def run_extract(source: DataSource, category: str, split: Split, params: ExtractParams, *,
                context: Context) -> ArtifactRef:
    """Extract ``(n, P, D)`` patch features for every readable image of ``split``; list the others in errors.jsonl."""
    check_choice("split", split, Split)
    source = source.resolved()
    samples = source.scan(category, split)
    identity = {"source": source.describe(), "category": category, "split": split,
                "images": samples_digest(samples), **extract_identity(params)}

    def build(draft):
        extractor = PatchFeatureExtractor.from_params(params)
        draft.lineage = extractor.lineage
        grid = extractor.grid()
        geometry = extractor.geometry
        dtype = DTYPES[params.feature_dtype]
        patches = len(geometry.tile_offsets()) * grid[0] * grid[1]
        records, errors = [], []
        with FeaturesWriter(draft, capacity=len(samples), patches=patches, dim=extractor.feature_dim, dtype=dtype,
                            grid=grid) as writer, \
                context.reporter.task(f"extract {category}/{split}", len(samples)) as advance:
            for batch in image_batches(samples, geometry, geometry.images_per_batch(params.batch_size),
                                       on_error=context.on_error, errors=errors, advance=advance):
                # Written as they come, an image's tiles a batch at a time: memory does not grow with the image.
                current, finite = None, True
                for index, patches in extractor.stream(batch.tensors):
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
                raise DataError(f"No usable image among the {len(samples)} listed for {category}/{split}: "
                                f"{errors[0]['path']}: {errors[0]['error']} (and {len(errors) - 1} more).")
            writer.finish(records, errors)
        draft.summary = {"images": len(records), "errors": len(errors), "grid": list(grid),
                         "warning": "random backbone weights" if params.weights == "none" else None}

    return artifacts.produce("features", context=context, category=category, params=identity, inputs=[],
                             build=build)


def _close_row(writer: FeaturesWriter, records: list[dict], errors: list[dict], batch, index: int, finite: bool,
               on_error: str) -> None:
    """Keep the image just written (one more record) or drop its patches and list it as an error."""
    sample, (width, height) = batch.samples[index], batch.sizes[index]
    if finite:
        writer.end_row()
        records.append({**sample.to_record(), "index": len(records), "width": width, "height": height})
    else:
        writer.drop_row()
        record_error(ImageError(sample.path, "the backbone produced NaN or infinite features; check --weights"),
                     sample, on_error=on_error, errors=errors)
