"""VisA layout: images anywhere under the root, listed by a split CSV (object, split, label, image, mask)."""

from __future__ import annotations

import csv
from pathlib import Path

from eagle_cli.data.sample import Sample
from eagle_cli.errors import DataError

DEFAULT_CSV = Path("split_csv") / "1cls.csv"
_COLUMNS = {"object", "split", "label", "image", "mask"}


def _rows(root: Path, csv_path: Path | None) -> list[dict]:
    path = csv_path or root / DEFAULT_CSV
    if not path.is_file():
        raise DataError(f"VisA split file {path} not found; pass --split-csv with the file that lists the images.")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = _COLUMNS - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path} lacks the columns {sorted(missing)}; VisA split files have {sorted(_COLUMNS)}.")
        return list(reader)


def categories(root: Path, csv_path: Path | None = None) -> list[str]:
    return sorted({row["object"] for row in _rows(root, csv_path)})


def scan(root: Path, category: str, split: str, csv_path: Path | None = None) -> list[Sample]:
    """Return the samples of one object and split, sorted by image path."""
    samples = []
    for row in _rows(root, csv_path):
        if row["object"] != category or row["split"] != split:
            continue
        anomalous = row["label"].strip().lower() == "anomaly"
        mask = root / row["mask"] if anomalous and row["mask"] else None
        samples.append(Sample(root / row["image"], split, int(anomalous), "bad" if anomalous else "good", mask))
    if split == "train":
        samples = [s for s in samples if s.label == 0]
    if not samples:
        raise DataError(f"The VisA split file lists 0 {split} images for object {category!r}.")
    return sorted(samples, key=lambda s: str(s.path))
