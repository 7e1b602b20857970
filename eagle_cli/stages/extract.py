"""eagle extract: patch features of one split of one category, as a ``features`` artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pathlib import Path

import torch

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef, sha256_file
from eagle_cli.data.source import DataSource
from eagle_cli.errors import DataError, ImageError, ParameterError
from eagle_cli.expert.backbones import get_spec
from eagle_cli.expert.features import Geometry, PatchFeatureExtractor
from eagle_cli.context import Context
from eagle_cli.stages.common import image_batches, record_error, resolve_device, samples_digest, save_features

DTYPES = {"float32": torch.float32, "float16": torch.float16}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ExtractParams:
    """Backbone and preprocessing; defaults reproduce the reference (WideResNet-50-2, 256 → 224, 1024-d)."""

    backbone: str = "wide_resnet50_2"
    weights: str = "imagenet"
    resize: int = 256
    crop: int = 224
    pretrain_dim: int = 1024
    target_dim: int = 1024
    dtype: str = "float32"
    batch_size: int = 8
    device: str = "auto"

    def __post_init__(self):
        get_spec(self.backbone)
        if self.dtype not in DTYPES:
            raise ParameterError(f"--dtype must be float32 or float16, got {self.dtype!r}.")
        if not 0 < self.crop <= self.resize:
            raise ParameterError(f"The crop ({self.crop}) must be positive and at most the resize ({self.resize}).")
        if self.batch_size < 1:
            raise ParameterError(f"--batch-size must be at least 1, got {self.batch_size}.")

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.resize, self.crop)

    def identity(self) -> dict:
        """Parameters that change the features (device and batch size do not)."""
        values = asdict(self)
        del values["batch_size"], values["device"]
        if self.weights not in ("imagenet", "none") and Path(self.weights).is_file():
            values["weights_sha256"] = sha256_file(Path(self.weights))
        return values

    def extractor(self) -> PatchFeatureExtractor:
        return PatchFeatureExtractor(
            self.backbone,
            weights=self.weights,
            geometry=self.geometry,
            device=resolve_device(self.device),
            pretrain_dim=self.pretrain_dim,
            target_dim=self.target_dim,
        )


def run_extract(source: DataSource, category: str, split: str, params: ExtractParams, *, context: Context) -> ArtifactRef:
    """Extract ``(n, P, D)`` patch features for every readable image of ``split``; list the others in errors.jsonl."""
    if split not in SPLITS:
        raise ParameterError(f"--split must be train or test, got {split!r}.")
    source = source.resolved()
    samples = source.scan(category, split)
    identity = {"source": source.describe(), "category": category, "split": split,
                "images": samples_digest(samples), **params.identity()}
    draft = artifacts.start("features", root=context.artifacts, run=context.run, category=category,
                            params=identity, inputs=[], force=context.force)
    if isinstance(draft, ArtifactRef):
        return draft
    with draft:
        extractor = params.extractor()
        draft.lineage = extractor.lineage
        grid = extractor.grid()
        dtype = DTYPES[params.dtype]
        features = torch.empty(len(samples), grid[0] * grid[1], params.target_dim, dtype=dtype)
        records, errors = [], []
        with context.reporter.task(f"extract {category}/{split}", len(samples)) as advance:
            for batch in image_batches(samples, params.geometry, params.batch_size,
                                       on_error=context.on_error, errors=errors, advance=advance):
                out = extractor(batch.tensors).cpu()
                finite = torch.isfinite(out).flatten(1).all(1)
                for sample, size, feats, ok in zip(batch.samples, batch.sizes, out, finite):
                    if not ok:
                        record_error(ImageError(sample.path, "the backbone produced NaN or infinite features; "
                                                "check --weights"), sample, on_error=context.on_error, errors=errors)
                        continue
                    features[len(records)] = feats.to(dtype)
                    records.append({**sample.to_record(), "index": len(records), "width": size[0], "height": size[1]})
        if not records:
            raise DataError(f"No usable image among the {len(samples)} listed for {category}/{split}: "
                            f"{errors[0]['path']}: {errors[0]['error']} (and {len(errors) - 1} more).")
        save_features(draft, features[: len(records)], records, grid, errors)
        draft.summary = {"images": len(records), "errors": len(errors), "grid": list(grid),
                         "warning": "random backbone weights" if params.weights == "none" else None}
        return draft.publish()
