"""How patch features were computed: what must agree before a bank searches features (no torch here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from eagle_cli.errors import ArtifactError


@dataclass(frozen=True)
class Lineage:
    """The backbone, its weights, the layers and their weighting, and the geometry of the images fed to it."""

    backbone: str
    layers: tuple[str, ...]
    weights: str  # "imagenet:IMAGENET1K_V1", "none" or "file:<sha256 prefix>"
    resize: int
    crop: int
    tile: int
    overlap: float
    feature_dim: int
    pooling: tuple[int, int]  # (pretrain_dim, target_dim); 0 keeps widths
    layer_weights: tuple[float, ...]

    def as_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> Lineage:
        try:
            return cls(**{f.name: tuple(values[f.name]) if isinstance(values[f.name], list) else values[f.name]
                          for f in fields(cls)})
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"A recorded lineage lacks {exc}; the artifact was written by another eagle or "
                                "edited. Re-run the stage with --force.") from None

    def check_matches(self, other: Lineage, *, what: str) -> None:
        """Refuse to combine features computed differently (backbone, layers, weights, geometry, layout)."""
        diffs = [f"{f.name}: {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}" for f in fields(self)
                 if getattr(self, f.name) != getattr(other, f.name)]
        if diffs:
            raise ArtifactError(f"{what} were computed differently ({'; '.join(diffs)}). Extract both with the same "
                                "backbone, layers, image size and weights.")
