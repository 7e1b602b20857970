"""A plain pair of folders: good images for training, test images with labels from subfolder names."""

from __future__ import annotations

from pathlib import Path

from eagle_cli.data.sample import GOOD_NAMES, Sample, list_images
from eagle_cli.errors import DataError


def scan(folder: Path, split: str) -> list[Sample]:
    """Train: every image in ``folder``. Test: images in it (unlabelled) and in subfolders (labelled by name)."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images.")
    if split == "train":
        samples = [Sample(path, "train", 0, "good") for path in list_images(folder)]
    else:
        samples = [Sample(path, "test") for path in list_images(folder)]
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            good = sub.name.lower() in GOOD_NAMES
            samples += [Sample(path, "test", 0 if good else 1, sub.name) for path in list_images(sub)]
    if not samples:
        raise DataError(f"Found 0 images in {folder}.")
    return samples
