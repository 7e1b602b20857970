"""Images into normalised backbone batches, with the per-image error policy (shared by extract and score).

A bad image (unreadable, smaller than the frame) is recorded in ``errors`` and skipped, or raised
with ``on_error="fail"``; the other images of the run go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from eagle_cli.data.images import decode
from eagle_cli.data.sample import Sample
from eagle_cli.errors import DataError, ImageError
from eagle_cli.expert.geometry import Geometry
from eagle_cli.formats.jsonl import ErrorRow
from eagle_cli.progress import Advance


@dataclass(frozen=True)
class ImageBatch:
    samples: list[Sample]
    frames: np.ndarray  # (B, 3, frame, frame) float32, normalised
    sizes: list[tuple[int, int]]  # original (width, height)


def image_batches(samples: list[Sample], geometry: Geometry, batch_size: int, *, on_error: str, errors: list[ErrorRow],
                  advance: Advance) -> Iterator[ImageBatch]:
    """Decode images into batches; a bad image is recorded in ``errors`` and skipped (or raised with ``fail``)."""
    pending: list[tuple[Sample, np.ndarray, tuple[int, int]]] = []
    for sample in samples:
        try:
            image = decode(sample.path, min_side=geometry.frame)
            pending.append((sample, geometry.to_array(image), image.size))
        except ImageError as exc:
            record_error(exc, sample, on_error=on_error, errors=errors)
        advance(1)
        if len(pending) == batch_size:
            yield _batch(pending)
            pending = []
    if pending:
        yield _batch(pending)


def _batch(pending) -> ImageBatch:
    return ImageBatch([p[0] for p in pending], np.stack([p[1] for p in pending]), [p[2] for p in pending])


def record_error(exc: ImageError, sample: Sample, *, on_error: str, errors: list[ErrorRow]) -> None:
    if on_error == "fail":
        raise exc
    errors.append(ErrorRow(str(sample.path), exc.reason, file=exc.path))


def nothing_usable(listed: int, where: str, errors: list[ErrorRow]) -> DataError:
    """The error for a stage none of whose ``listed`` images could be used, naming the first and why."""
    return DataError(f"No usable image among the {listed} listed for {where}: {errors[0].path}: {errors[0].error} "
                     f"(and {len(errors) - 1} more).")
