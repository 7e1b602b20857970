"""The expert as one Python object: patch features → kNN against the bank → scores, verdicts and maps.

    from PIL import Image
    from eagle_cli import Expert

    expert = Expert.load("artifacts/default/bottle/threshold/3f2a9c0d1e2b4f60", device="cpu")
    result = expert.score([Image.open("part.png")])
    print(result.scores[0], result.anomalous[0], result.uncertain[0])  # result.maps[0]: (H, W)

``eagle score`` scores through it, and the calibration estimators use the same rule
(``expert/scoring.py``), so the rule lives once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.errors import ParameterError
from eagle_cli.expert.anomaly_map import frame_map, to_original_frame
from eagle_cli.expert.features import Geometry, PatchFeatureExtractor
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.scoring import ScoreRule, image_scores, patch_scores, verdicts
from eagle_cli.formats.bank import read_bank
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import ExtractParams

#: Patches searched together: large enough for an efficient search, small enough to bound memory (32 MB).
_SEARCH_ROWS = 8192


@dataclass(frozen=True)
class Scored:
    """What the expert says about a batch of images, in input order."""

    scores: np.ndarray  # (B,) float64, the image scores (the bank's ScoreRule)
    anomalous: np.ndarray  # (B,) bool, score ≥ τ
    uncertain: np.ndarray  # (B,) bool, τ < score < S_max (the CAAS window)
    crop_maps: list[np.ndarray]  # (frame, frame) float32 each, the frame the expert saw
    maps: list[np.ndarray]  # (height, width) float32 each, the original image's frame


class Expert:
    """A bank, its threshold and the extraction it was built with.

    The backbone is built on first use, so scoring ready-made features never loads it.
    """

    def __init__(self, index: BankIndex, *, tau: float, s_max: float, rule: ScoreRule, extract: ExtractParams,
                 lineage: dict | None = None, sigma_px: float = 4.0):
        if rule.knn_k > index.size:
            raise ParameterError(f"k = {rule.knn_k} neighbours but the bank has only {index.size} entries.")
        self.index = index
        self.tau, self.s_max, self.rule = tau, s_max, rule
        self.extract = extract
        self.geometry = Geometry.of(extract)
        self.lineage = lineage
        self.sigma_px = sigma_px
        self._extractor: PatchFeatureExtractor | None = None

    @classmethod
    def load(cls, threshold: ArtifactRef | str | Path, *, device: str = "auto", knn_backend: str = "auto",
             sigma_px: float = 4.0, batch_size: int = 8) -> Expert:
        """The expert of a ``threshold`` artifact (a reference or its folder), with its bank and backbone settings."""
        ref = threshold if isinstance(threshold, ArtifactRef) else artifacts.open_artifact(threshold, "threshold")
        bank_ref = ref.input("bank")
        train = bank_ref.input("features").params
        extract = ExtractParams.of_features(train, batch_size=batch_size, device=device)
        values = read_threshold(ref)
        return cls(read_bank(bank_ref, backend=knn_backend, device=device), tau=values["tau"], s_max=values["s_max"],
                   rule=ScoreRule.of_bank(bank_ref.params), extract=extract, lineage=ref.lineage, sigma_px=sigma_px)

    @property
    def extractor(self) -> PatchFeatureExtractor:
        if self._extractor is None:
            extractor = PatchFeatureExtractor.from_params(self.extract)
            if self.lineage is not None:
                artifacts.check_lineage(self.lineage, extractor.lineage, what="The bank and the test images' features")
            self._extractor = extractor
        return self._extractor

    def score(self, images: list[Image.Image]) -> Scored:
        """Score RGB images of any size (resized, cropped and tiled as the bank's training images were)."""
        frames = torch.stack([self.geometry.to_tensor(image.convert("RGB")) for image in images])
        return self.score_frames(frames, [image.size for image in images])

    def score_frames(self, frames: torch.Tensor, sizes: list[tuple[int, int]]) -> Scored:
        """Score normalised frames ``(B, 3, frame, frame)`` of images whose original (width, height) are ``sizes``.

        Patch features are searched as the backbone produces them and only their scores are kept, so
        memory follows ``batch_size`` tiles, not the size of an image.
        """
        per_image: list[list[np.ndarray]] = [[] for _ in range(len(frames))]
        pending: list[tuple[int, torch.Tensor]] = []
        waiting = 0  # patches in ``pending``

        def search() -> None:
            dist, _ = self.index.search(torch.cat([patches for _, patches in pending]).float(), self.rule.knn_k)
            scores, offset = patch_scores(dist), 0
            for index, patches in pending:
                per_image[index].append(scores[offset:offset + len(patches)])
                offset += len(patches)
            pending.clear()

        step = self.geometry.images_per_batch(self.extract.batch_size)
        for first in range(0, len(frames), step):
            for index, patches in self.extractor.stream(frames[first:first + step]):
                pending.append((first + index, patches.cpu()))
                waiting += len(patches)
                if waiting >= _SEARCH_ROWS:
                    search()
                    waiting = 0
        if pending:
            search()
        return self._scored(np.stack([np.concatenate(parts) for parts in per_image]), sizes, self.extractor.grid())

    def score_features(self, features: torch.Tensor, sizes: list[tuple[int, int]], grid: tuple[int, int] | None = None
                       ) -> Scored:
        """Score patch features ``(B, P, D)`` of images whose original (width, height) are ``sizes``; ``grid`` is
        one tile's patch grid (square if not given)."""
        batch, patches, dim = features.shape
        grid = grid or _square_grid(patches // len(self.geometry.tile_offsets()))
        dist, _ = self.index.search(features.reshape(-1, dim), self.rule.knn_k)
        return self._scored(patch_scores(dist).reshape(batch, patches), sizes, grid)

    def _scored(self, per_patch: np.ndarray, sizes: list[tuple[int, int]], grid: tuple[int, int]) -> Scored:
        """Image scores, verdicts and maps from patch scores ``(B, P)``."""
        scores = image_scores(per_patch, self.rule.image_top).astype(np.float64)
        anomalous, uncertain = verdicts(scores, self.tau, self.s_max)
        crop_maps = [frame_map(p, grid, self.geometry, sigma_px=self.sigma_px) for p in per_patch]
        maps = [to_original_frame(m, self.geometry, w, h) for m, (w, h) in zip(crop_maps, sizes, strict=True)]
        return Scored(scores, anomalous, uncertain, crop_maps, maps)


def _square_grid(patches: int) -> tuple[int, int]:
    side = int(round(patches ** 0.5))
    if side * side != patches:
        raise ParameterError(f"{patches} patches per image are not a square grid; pass the grid explicitly.")
    return side, side
