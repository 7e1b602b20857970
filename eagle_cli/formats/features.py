"""``features`` artifacts: ``(n, P, D)`` patch features, the image table and the images left out.

``features.safetensors`` holds one tensor, ``features`` (float32 or float16), with string metadata
(kind, schema, artifact id, patch grid, lineage); ``images.jsonl`` one row per image (path, label,
defect, mask, index, width, height); ``errors.jsonl`` the images that could not be used. torch is
imported by the functions that need it, so reading the image table needs none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.jsonl import ERRORS_FILE, read_jsonl, write_jsonl

if TYPE_CHECKING:
    import torch

FEATURES_FILE = "features.safetensors"
IMAGES_FILE = "images.jsonl"
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}


def write_features(draft: Draft, features: torch.Tensor, records: list[dict], grid: tuple[int, int],
                   errors: list[dict]) -> None:
    """Write ``(n, P, D)`` features with string metadata, the image table and the error list."""
    from safetensors.torch import save_file

    metadata = {
        "kind": "features",
        "schema": "1",
        "artifact_id": draft.id,
        "grid": f"{grid[0]}x{grid[1]}",
        **{key: json.dumps(value) for key, value in draft.lineage.items()},
    }
    save_file({"features": features.contiguous()}, str(draft.file(FEATURES_FILE)), metadata=metadata)
    write_jsonl(draft.file(IMAGES_FILE), records)
    write_jsonl(draft.file(ERRORS_FILE), errors)


def read_features(ref: ArtifactRef, *, check_finite: bool = True) -> tuple[torch.Tensor, list[dict], tuple[int, int]]:
    """Map ``(n, P, D)`` features (no copy), the image records and the patch grid; refuse non-finite values.

    The check reads every page; a stage whose input stage already read the same features through this
    check (the calibration after fit-bank) passes ``check_finite=False``.
    """
    import torch

    path = ref.path / FEATURES_FILE
    features, metadata = _map_tensor(path, "features")
    grid = tuple(int(v) for v in metadata["grid"].split("x"))
    bad = [i for i in range(len(features)) if check_finite and not bool(torch.isfinite(features[i]).all())]
    if bad:
        raise ArtifactError(
            f"{path} holds NaN or infinite features (images {bad[:5]}); the backbone weights may be broken. "
            "Re-run eagle extract --force after checking --weights."
        )
    return features, read_images(ref), grid


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
