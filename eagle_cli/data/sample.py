"""The one record every dataset layout produces."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eagle_cli.digests import content_digests

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Folder names that mean "defect-free" in plain folder layouts.
GOOD_NAMES = ("good", "ok", "normal")


@dataclass(frozen=True)
class Sample:
    """One image of a split.

    ``label`` is 0 for good, 1 for anomalous, ``None`` when unknown; ``mask`` is the pixel
    ground truth when the layout has one (``None`` for good images and unlabelled data).
    """

    path: Path
    split: str
    label: int | None = None
    defect: str | None = None
    mask: Path | None = None


def list_images(folder: Path) -> list[Path]:
    """Every file (and link) directly inside ``folder``, sorted by name: what is not an image eagle reads is
    named in errors.jsonl when it is decoded, never left out in silence."""
    return sorted(p for p in folder.iterdir() if not p.is_dir())


def samples_digest(samples: list[Sample], cache_dir: Path | None = None) -> str:
    """Hash of the listed images, their labels and the content of every image and mask.

    Adding, removing, relabelling or rewriting an image or mask changes it, so stale features are never reused;
    touching a file without changing it does not (see :func:`content_digests` for what is read again).
    """
    masks = [sample.mask for sample in samples if sample.mask is not None]
    contents = content_digests([sample.path for sample in samples] + masks, cache_dir)
    of_mask = dict(zip(masks, contents[len(samples):], strict=True))
    entries = [[asdict(sample), content, of_mask.get(sample.mask)]
               for sample, content in zip(samples, contents[:len(samples)], strict=True)]
    return hashlib.sha256(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()[:16]
