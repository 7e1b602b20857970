"""``features`` artifacts: ``(n, P, D)`` patch features, the image table and the images left out.

``features.safetensors`` holds one tensor, ``features`` (float32 or float16), with string metadata
(kind, schema, artifact id, patch grid of one tile, lineage); it is written row by row as images are
extracted (``FeaturesWriter``), so extraction holds one batch in memory, not the whole set;
``images.jsonl`` one :class:`ImageRecord` per row; ``errors.jsonl`` the images that could not be used.
A *joined* artifact (a bank that grew) holds no tensor file: its rows are its input artifacts' rows,
in order, read without a copy on disk. The manifest's parameters (:func:`features_params`) name the
category, split, data source(s), image digest(s) and extraction settings; :func:`features_info`
reads them back typed. torch is imported by the functions that need it, so reading the tables
needs none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.data.sample import Sample
from eagle_cli.data.source import DataSource
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.jsonl import ERRORS_FILE, ErrorRow, read_rows, write_rows
from eagle_cli.lineage import Lineage
from eagle_cli.params import ExtractParams
from eagle_cli.settings import build, identity

if TYPE_CHECKING:
    import torch

FEATURES_FILE = "features.safetensors"
IMAGES_FILE = "images.jsonl"
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}
_DTYPE_NAMES = {"float32": "F32", "float16": "F16"}


@dataclass(frozen=True)
class ImageRecord:
    """One feature row's image: the sample, its row and its original size."""

    path: str
    split: str
    label: int | None
    defect: str | None
    mask: str | None
    index: int
    width: int
    height: int

    @classmethod
    def of(cls, sample: Sample, index: int, size: tuple[int, int]) -> ImageRecord:
        return cls(str(sample.path), sample.split, sample.label, sample.defect,
                   str(sample.mask) if sample.mask else None, index, *size)

    @property
    def sample(self) -> Sample:
        return Sample(Path(self.path), self.split, self.label, self.defect, Path(self.mask) if self.mask else None)


@dataclass(frozen=True)
class FeaturesInfo:
    """What a features artifact holds, from its manifest."""

    category: str
    split: str
    sources: tuple[DataSource, ...]  # one per part; the first is the dataset a bank was first fitted on
    extract: ExtractParams  # the settings that change features (runtime settings at their defaults)
    n_images: int
    grid: tuple[int, int]
    lineage: Lineage
    joined: bool


def features_params(category: str, split: str, source: DataSource, digest: str, extract: ExtractParams,
                    weights_sha256: str | None) -> dict:
    """A features artifact's parameters: what its id hashes."""
    return {"category": category, "split": split, "sources": [source.describe()], "images": [digest],
            "extract": identity(extract), "weights_sha256": weights_sha256}


def features_info(ref: ArtifactRef) -> FeaturesInfo:
    params, summary = ref.params, ref.summary
    return FeaturesInfo(params["category"], params["split"],
                        tuple(DataSource.from_description(item) for item in params["sources"]),
                        build(ExtractParams, params["extract"]), summary["images"], tuple(summary["grid"]),
                        Lineage.from_dict(ref.lineage), "parts" in params)


class FeaturesWriter:
    """Append ``(k, P, D)`` feature rows straight to ``features.safetensors``; ``finish`` writes the header.

    The header's room is reserved for ``capacity`` rows up front and padded with spaces (the
    safetensors format allows that), so rows land at their final offsets and are never copied.
    """

    def __init__(self, draft: Draft, *, capacity: int, patches: int, dim: int, dtype: torch.dtype,
                 grid: tuple[int, int]):
        self.draft, self.patches, self.dim, self.grid = draft, patches, dim, grid
        self.dtype_name = _DTYPE_NAMES[str(dtype).removeprefix("torch.")]
        self.rows = 0
        self._pending = 0  # patches of the row being written
        self._patch_bytes = dim * np.dtype(_SAFETENSORS_DTYPES[self.dtype_name]).itemsize
        self._reserved = len(self._header(capacity)) + 64
        self._file = open(draft.file(FEATURES_FILE), "wb")
        self._file.seek(8 + self._reserved)

    def add_patches(self, patches: torch.Tensor) -> None:
        """Append ``(n, D)`` patches of the next row as they come; :meth:`end_row` or :meth:`drop_row` closes it."""
        self._file.write(patches.contiguous().numpy().tobytes())
        self._pending += len(patches)

    def end_row(self) -> None:
        if self._pending != self.patches:
            raise ValueError(f"a row of {self._pending} patches, expected {self.patches}")
        self._pending = 0
        self.rows += 1

    def drop_row(self) -> None:
        """Forget the patches written since the last complete row (an image that turned out unusable)."""
        self._file.seek(self._file.tell() - self._pending * self._patch_bytes)
        self._pending = 0

    def finish(self, records: list[ImageRecord], errors: list[ErrorRow]) -> None:
        """Write the header for the rows added, the image table (one record per row) and the error list."""
        if len(records) != self.rows:
            raise ValueError(f"{len(records)} image records for {self.rows} feature rows")
        header = self._header(self.rows)
        self._file.truncate(self._file.tell())
        self._file.seek(0)
        self._file.write(self._reserved.to_bytes(8, "little") + header.ljust(self._reserved))
        self._file.close()
        write_rows(self.draft.file(IMAGES_FILE), records)
        write_rows(self.draft.file(ERRORS_FILE), errors)

    def _header(self, rows: int) -> bytes:
        metadata = {
            "kind": "features",
            "schema": str(artifacts.SCHEMAS["features"]),
            "artifact_id": self.draft.id,
            "grid": f"{self.grid[0]}x{self.grid[1]}",
            **{key: json.dumps(value) for key, value in self.draft.lineage.items()},
        }
        size = rows * self.patches * self.dim * np.dtype(_SAFETENSORS_DTYPES[self.dtype_name]).itemsize
        entry = {"dtype": self.dtype_name, "shape": [rows, self.patches, self.dim], "data_offsets": [0, size]}
        return json.dumps({"__metadata__": metadata, "features": entry}).encode()

    def __enter__(self) -> FeaturesWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def write_features(draft: Draft, features: torch.Tensor, records: list[ImageRecord], grid: tuple[int, int],
                   errors: list[ErrorRow]) -> None:
    """Write ``(n, P, D)`` features with string metadata, the image table and the error list."""
    with FeaturesWriter(draft, capacity=len(features), patches=features.shape[1], dim=features.shape[2],
                        dtype=features.dtype, grid=grid) as writer:
        for row in features:
            writer.add_patches(row)
            writer.end_row()
        writer.finish(records, errors)


def write_joined(draft: Draft, parts: list[ArtifactRef]) -> None:
    """Join ``parts`` (plain features artifacts of one extraction) into ``draft`` by reference: the image
    table renumbered and the error lists, no tensor copy; the draft's lineage and summary are set."""
    shapes = {part.id: map_tensor(part.path / FEATURES_FILE, "features") for part in parts}
    (first, metadata), *_ = shapes.values()
    for part in parts[1:]:
        tensor, other = shapes[part.id]
        if tensor.shape[1:] != first.shape[1:] or other["grid"] != metadata["grid"]:
            raise ArtifactError(f"{part.path} holds {tensor.shape[1]} patches ({other['grid']} per tile) of "
                                f"{tensor.shape[2]}-d features; {parts[0].path} holds {first.shape[1]} "
                                f"({metadata['grid']}) of {first.shape[2]}-d. They cannot share a bank.")
    records = [replace(record, index=i) for i, record in enumerate(r for part in parts for r in read_images(part))]
    errors = [error for part in parts for error in read_errors(part)]
    write_rows(draft.file(IMAGES_FILE), records)
    write_rows(draft.file(ERRORS_FILE), errors)
    draft.lineage = parts[0].lineage
    draft.summary = {"images": len(records), "errors": len(errors), "grid": parts[0].summary["grid"],
                     "joined": [part.id for part in parts]}


def joined_params(parts: list[ArtifactRef]) -> dict:
    """The parameters of the features artifact joining ``parts`` (of one category, split and extraction)."""
    first = parts[0].params
    return {**first, "sources": [s for part in parts for s in part.params["sources"]],
            "images": [d for part in parts for d in part.params["images"]], "parts": [part.id for part in parts]}


def feature_parts(ref: ArtifactRef) -> list[ArtifactRef]:
    """The artifacts holding ``ref``'s rows: ``ref`` itself, or a joined artifact's parts in order."""
    if "parts" not in ref.params:
        return [ref]
    return [artifacts.open_artifact(ref.locate(item), "features") for item in ref.manifest["inputs"]]


def read_features(ref: ArtifactRef, *, check_finite: bool = True
                  ) -> tuple[torch.Tensor, list[ImageRecord], tuple[int, int]]:
    """Map ``(n, P, D)`` features, the image records and the patch grid; refuse non-finite values.

    One file is memory-mapped (no copy); a joined artifact's parts are concatenated in memory. The
    check reads every page; a stage whose input stage already read the same features through this
    check (the calibration after fit-bank) passes ``check_finite=False``.
    """
    import torch

    path = ref.path / FEATURES_FILE
    mapped = [map_tensor(part.path / FEATURES_FILE, "features") for part in feature_parts(ref)]
    features = mapped[0][0] if len(mapped) == 1 else torch.cat([tensor for tensor, _ in mapped])
    grid = tuple(int(v) for v in mapped[0][1]["grid"].split("x"))
    bad = [i for i in range(len(features)) if check_finite and not bool(torch.isfinite(features[i]).all())]
    if bad:
        raise ArtifactError(
            f"{path} holds NaN or infinite features (images {bad[:5]}); the backbone weights may be broken. "
            "Re-run eagle extract --force after checking --weights."
        )
    return features, read_images(ref), grid


def read_images(ref: ArtifactRef) -> list[ImageRecord]:
    """The image table: one row per feature row, in order."""
    return read_rows(ref.path / IMAGES_FILE, ImageRecord)


def read_errors(ref: ArtifactRef) -> list[ErrorRow]:
    return read_rows(ref.path / ERRORS_FILE, ErrorRow)


def map_tensor(path: Path, key: str) -> tuple[torch.Tensor, dict]:
    """Memory-map one tensor of a safetensors file copy-on-write, so a large file costs no second copy."""
    import torch

    with open(path, "rb") as fh:
        header_size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_size))
    entry = header[key]
    begin, _ = entry["data_offsets"]
    array = np.memmap(path, dtype=_SAFETENSORS_DTYPES[entry["dtype"]], mode="c", offset=8 + header_size + begin,
                      shape=tuple(entry["shape"]))
    return torch.from_numpy(array), header.get("__metadata__", {})
