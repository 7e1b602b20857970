"""``features`` artifacts: ``(n, P, D)`` patch features, the image table and the images left out.

``features.safetensors`` holds one tensor, ``features`` (float32 or float16), with string metadata
(kind, schema, artifact id, patch grid of one tile, lineage); it is written row by row as images are
extracted (``FeaturesWriter``), so extraction holds one batch in memory, not the whole set;
``images.jsonl`` one row per image (path, label, defect, mask, index, width, height); ``errors.jsonl``
the images that could not be used. A *joined* artifact (a bank that grew) holds no tensor file: its
rows are its input artifacts' rows, in order (``params["parts"]``), read without a copy on disk.
torch is imported by the functions that need it, so reading the image table needs none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.jsonl import ERRORS_FILE, read_jsonl, write_jsonl

if TYPE_CHECKING:
    import torch

FEATURES_FILE = "features.safetensors"
IMAGES_FILE = "images.jsonl"
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}
_DTYPE_NAMES = {"float32": "F32", "float16": "F16"}


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

    def add(self, rows: torch.Tensor) -> None:
        """Append rows ``(k, P, D)`` of the writer's dtype."""
        if tuple(rows.shape[1:]) != (self.patches, self.dim):
            raise ValueError(f"feature rows of shape {tuple(rows.shape[1:])}, expected {(self.patches, self.dim)}")
        self._file.write(rows.contiguous().numpy().tobytes())
        self.rows += len(rows)

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

    def finish(self, records: list[dict], errors: list[dict]) -> None:
        """Write the header for the rows added, the image table (one record per row) and the error list."""
        if len(records) != self.rows:
            raise ValueError(f"{len(records)} image records for {self.rows} feature rows")
        header = self._header(self.rows)
        self._file.truncate(self._file.tell())
        self._file.seek(0)
        self._file.write(self._reserved.to_bytes(8, "little") + header.ljust(self._reserved))
        self._file.close()
        write_jsonl(self.draft.file(IMAGES_FILE), records)
        write_jsonl(self.draft.file(ERRORS_FILE), errors)

    def _header(self, rows: int) -> bytes:
        metadata = {
            "kind": "features",
            "schema": "1",
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


def write_features(draft: Draft, features: torch.Tensor, records: list[dict], grid: tuple[int, int],
                   errors: list[dict]) -> None:
    """Write ``(n, P, D)`` features with string metadata, the image table and the error list."""
    with FeaturesWriter(draft, capacity=len(features), patches=features.shape[1], dim=features.shape[2],
                        dtype=features.dtype, grid=grid) as writer:
        writer.add(features)
        writer.finish(records, errors)


def write_joined(draft: Draft, parts: list[ArtifactRef]) -> tuple[int, int]:
    """Join ``parts`` (plain features artifacts of one extraction) into ``draft`` by reference: the image
    table renumbered and the error lists, no tensor copy. Return the (images, errors) counts."""
    shapes = {part.id: _map_tensor(part.path / FEATURES_FILE, "features") for part in parts}
    (first, metadata), *_ = shapes.values()
    for part in parts[1:]:
        tensor, other = shapes[part.id]
        if tensor.shape[1:] != first.shape[1:] or other["grid"] != metadata["grid"]:
            raise ArtifactError(f"{part.path} holds {tensor.shape[1]} patches ({other['grid']} per tile) of "
                                f"{tensor.shape[2]}-d features; {parts[0].path} holds {first.shape[1]} "
                                f"({metadata['grid']}) of {first.shape[2]}-d. They cannot share a bank.")
    records = [{**record, "index": i} for i, record in enumerate(r for part in parts for r in read_images(part))]
    errors = [error for part in parts for error in read_errors(part)]
    write_jsonl(draft.file(IMAGES_FILE), records)
    write_jsonl(draft.file(ERRORS_FILE), errors)
    return len(records), len(errors)


def feature_parts(ref: ArtifactRef) -> list[ArtifactRef]:
    """The artifacts holding ``ref``'s rows: ``ref`` itself, or a joined artifact's parts in order."""
    if "parts" not in ref.params:
        return [ref]
    return [artifacts.open_artifact(ref.locate(item), "features") for item in ref.manifest["inputs"]]


def read_features(ref: ArtifactRef, *, check_finite: bool = True) -> tuple[torch.Tensor, list[dict], tuple[int, int]]:
    """Map ``(n, P, D)`` features, the image records and the patch grid; refuse non-finite values.

    One file is memory-mapped (no copy); a joined artifact's parts are concatenated in memory. The
    check reads every page; a stage whose input stage already read the same features through this
    check (the calibration after fit-bank) passes ``check_finite=False``.
    """
    import torch

    path = ref.path / FEATURES_FILE
    mapped = [_map_tensor(part.path / FEATURES_FILE, "features") for part in feature_parts(ref)]
    features = mapped[0][0] if len(mapped) == 1 else torch.cat([tensor for tensor, _ in mapped])
    grid = tuple(int(v) for v in mapped[0][1]["grid"].split("x"))
    bad = [i for i in range(len(features)) if check_finite and not bool(torch.isfinite(features[i]).all())]
    if bad:
        raise ArtifactError(
            f"{path} holds NaN or infinite features (images {bad[:5]}); the backbone weights may be broken. "
            "Re-run eagle extract --force after checking --weights."
        )
    return features, read_images(ref), grid


def training_source(ref: ArtifactRef) -> dict:
    """The described data source of a features artifact; of a joined one, its first part's (the dataset
    the bank was first fitted on, where its test images are)."""
    source = ref.params["source"]
    return source[0] if isinstance(source, list) else source


def read_images(ref: ArtifactRef) -> list[dict]:
    """The image table: one row per feature row, in order."""
    return read_jsonl(ref.path / IMAGES_FILE)


def read_errors(ref: ArtifactRef) -> list[dict]:
    return read_jsonl(ref.path / ERRORS_FILE)


def _map_tensor(path: Path, key: str) -> tuple[torch.Tensor, dict]:
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
