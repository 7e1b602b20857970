"""MVTec-AD layout: ``<root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<name>_mask.png}``."""

from __future__ import annotations

from pathlib import Path

from eagle_cli.data.sample import Sample, list_images
from eagle_cli.errors import DataError


def categories(root: Path) -> list[str]:
    """Category folders under ``root`` that have a ``train`` or ``test`` folder."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))


def scan(root: Path, category: str, split: str) -> list[Sample]:
    """Return the sorted samples of one split; test samples carry labels, defect types and masks."""
    base = root / category
    if split == "train":
        folder = base / "train" / "good"
        if not folder.is_dir():
            raise DataError(f"{folder} does not exist; an MVTec-AD category needs train/good with good images.")
        samples = [Sample(path, "train", 0, "good") for path in list_images(folder)]
        if not samples:
            raise DataError(f"Found 0 images in {folder}; put the defect-free training images there.")
        return samples
    test = base / "test"
    if not test.is_dir():
        raise DataError(f"{test} does not exist; an MVTec-AD category needs test/<defect>/ folders.")
    samples = []
    for defect_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for path in list_images(defect_dir):
            if defect == "good":
                samples.append(Sample(path, "test", 0, "good"))
                continue
            mask = base / "ground_truth" / defect / f"{path.stem}_mask.png"
            samples.append(Sample(path, "test", 1, defect, mask if mask.is_file() else None))
    if not samples:
        raise DataError(f"Found 0 images under {test}/<defect>/.")
    return samples
