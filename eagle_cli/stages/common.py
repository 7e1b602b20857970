"""What every stage shares: where artifacts go, the per-image error policy, image batches, features I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import save_file

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.data.images import load_rgb
from eagle_cli.data.sample import Sample
from eagle_cli.errors import ArtifactError, ImageError, ParameterError
from eagle_cli.expert.features import Geometry

def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first GPU when there is one; ``cuda[:N]`` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ParameterError(f"Unknown device {name!r}; use auto, cpu or cuda[:N].") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"Device {name!r} was asked for but no CUDA GPU is visible; use --device cpu.")
    return device


def category_seed(seed: int, category: str) -> int:
    """A per-category seed, so results never depend on the order categories are processed in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{category}".encode()).digest()[:8], "little") >> 1


def samples_digest(samples: list[Sample]) -> str:
    """Hash of the listed images, their labels, sizes and modification times.

    Adding, removing, relabelling or rewriting an image changes it, so stale features are never reused.
    """
    entries = []
    for sample in samples:
        stat = sample.path.stat() if sample.path.exists() else None
        entries.append([sample.to_record(), stat and stat.st_size, stat and stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass(frozen=True)
class ImageBatch:
    samples: list[Sample]
    tensors: torch.Tensor  # (B, 3, crop, crop) normalised
    sizes: list[tuple[int, int]]  # original (width, height)


def image_batches(
    samples: list[Sample], geometry: Geometry, batch_size: int, *, on_error: str, errors: list[dict], advance
) -> Iterator[ImageBatch]:
    """Decode images into batches; a bad image is recorded in ``errors`` and skipped (or raised with ``fail``)."""
    pending: list[tuple[Sample, torch.Tensor, tuple[int, int]]] = []
    for sample in samples:
        try:
            image = load_rgb(sample.path, min_side=geometry.crop)
            pending.append((sample, geometry.to_tensor(image), image.size))
        except ImageError as exc:
            record_error(exc, sample, on_error=on_error, errors=errors)
        advance(1)
        if len(pending) == batch_size:
            yield _batch(pending)
            pending = []
    if pending:
        yield _batch(pending)


def _batch(pending) -> ImageBatch:
    return ImageBatch([p[0] for p in pending], torch.stack([p[1] for p in pending]), [p[2] for p in pending])


def record_error(exc: ImageError, sample: Sample, *, on_error: str, errors: list[dict]) -> None:
    if on_error == "fail":
        raise exc
    errors.append({"path": str(sample.path), "file": exc.path, "error": exc.reason})


FEATURES_FILE = "features.safetensors"
IMAGES_FILE = "images.jsonl"
ERRORS_FILE = "errors.jsonl"


def save_features(draft, features: torch.Tensor, records: list[dict], grid: tuple[int, int], errors: list[dict]) -> None:
    """Write ``(n, P, D)`` features with string metadata, the image table and the error list."""
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


def load_features(ref: ArtifactRef) -> tuple[torch.Tensor, list[dict], tuple[int, int]]:
    """Map ``(n, P, D)`` features (no copy), the image records and the patch grid; refuse non-finite values."""
    path = ref.path / FEATURES_FILE
    features, metadata = _map_tensor(path, "features")
    grid = tuple(int(v) for v in metadata["grid"].split("x"))
    bad = [i for i in range(len(features)) if not bool(torch.isfinite(features[i]).all())]
    if bad:
        raise ArtifactError(
            f"{path} holds NaN or infinite features (images {bad[:5]}); the backbone weights may be broken. "
            "Re-run eagle extract --force after checking --weights."
        )
    return features, read_jsonl(ref.path / IMAGES_FILE), grid


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}


def _map_tensor(path: Path, key: str) -> tuple[torch.Tensor, dict]:
    """Memory-map one tensor of a safetensors file copy-on-write, so a large file costs no second copy."""
    with open(path, "rb") as fh:
        header_size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_size))
    entry = header[key]
    begin, _ = entry["data_offsets"]
    array = np.memmap(path, dtype=_SAFETENSORS_DTYPES[entry["dtype"]], mode="c", offset=8 + header_size + begin,
                      shape=tuple(entry["shape"]))
    return torch.from_numpy(array), header.get("__metadata__", {})
