"""The expert as one Python object: fit on good images, calibrate, threshold and score, all in memory.

    from PIL import Image
    from eagle_cli import Expert, load_expert

    expert = Expert.fit([Image.open(p) for p in good_paths], extract=ExtractParams(backbone="mobilenet_v2"))
    result = expert.score([Image.open("part.png")])
    print(result.scores[0], result.anomalous[0], result.uncertain[0])  # result.maps[0]: (H, W)

    expert = load_expert("artifacts/default/bottle/threshold/3f2a9c0d1e2b4f60")  # what the stages fitted

The stages are this object's steps with reading and writing around them: ``fit-bank`` is
:func:`fit_bank`, ``fit-threshold`` is :func:`calibrated_scores` then :func:`fit_threshold`, ``score`` is
:meth:`Expert.score_frames`; with the same settings and category, both give the same scores.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from eagle_cli.devices import resolve_device
from eagle_cli.errors import ParameterError
from eagle_cli.expert.bank import MemoryBank, fit_bank
from eagle_cli.expert.calibration import calibrated_scores
from eagle_cli.expert.decision import Scored, decide
from eagle_cli.expert.features import PatchFeatureExtractor, resolve_tiling
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import CellNorm, ImageRule
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.scoring import patch_scores, searched_scores
from eagle_cli.lineage import Lineage
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ThresholdParams
from eagle_cli.progress import Advance
from eagle_cli.seeds import category_seed
from eagle_cli.threshold import Threshold, fit_threshold


def _silent(n: float = 1) -> None:
    pass


class Expert:
    """A bank, its threshold and the extraction it was built with; ``norm``: what the calibration measured of good
    patch scores, for the ``peak`` image rule.

    The backbone is built on first use, so scoring ready-made features never loads it.
    """

    def __init__(self, index: BankIndex, bank: BankParams, extract: ExtractParams, threshold: Threshold, *,
                 norm: CellNorm | None = None, lineage: Lineage | None = None, sigma_px: float = 4.0):
        if bank.knn_k > index.size:
            raise ParameterError(f"k = {bank.knn_k} neighbours but the bank has only {index.size} entries.")
        self.index, self.bank, self.extract, self.threshold = index, bank, extract, threshold
        self.geometry = Geometry.of(extract)
        self.norm = norm
        self.lineage = lineage
        self.sigma_px = sigma_px
        self._extractor: PatchFeatureExtractor | None = None
        #: Set by :meth:`fit`: the bank as selected (with its coreset) and the calibration scores τ was fitted on.
        self.memory: MemoryBank | None = None
        self.calibration_scores: np.ndarray | None = None

    @property
    def tau(self) -> float:
        return self.threshold.tau

    @property
    def s_max(self) -> float:
        return self.threshold.s_max

    @classmethod
    def fit(cls, images: Sequence[Image.Image], *, extract: ExtractParams = ExtractParams(),
            bank: BankParams = BankParams(), calibration: CalibrationParams = CalibrationParams(),
            threshold: ThresholdParams = ThresholdParams(), category: str = "default", sigma_px: float = 4.0,
            progress: Advance | None = None) -> Expert:
        """Fit on good ``images``: their patch features, the coreset bank, the calibration scores and τ.

        ``category`` seeds the coreset and the calibration sample as the stages seed them for a category of
        that name, so the same images and settings give the stages' expert.
        """
        extract = resolve_tiling(extract, int(np.median([min(image.size) for image in images])))
        bank = bank.resolved(tiled=bool(extract.tile))
        extractor = PatchFeatureExtractor.from_params(extract)
        geometry = extractor.geometry
        frames = torch.from_numpy(geometry.frames(images)[0])
        step = geometry.images_per_batch(extract.batch_size)
        features = torch.cat([extractor(frames[i:i + step]).cpu() for i in range(0, len(frames), step)])
        seed = category_seed(bank.seed, category)
        memory = fit_bank(features, bank, seed=seed, progress=progress)
        index = memory.index(device=resolve_device(calibration.device), backend=calibration.knn_backend)
        result = calibrated_scores(features, index, memory.coreset, bank, calibration,
                                   ImageRule.of(bank, geometry, extractor.grid()), seed=seed, progress=_silent)
        rule, used = result.rule, result.scores[np.isfinite(result.scores)]
        if used.size < 2:
            raise ParameterError(f"Only {used.size} of {len(images)} good images could be scored for calibration; "
                                 "add good images, or lower --min-unselected with --calibration reference.")
        expert = cls(index, bank, extract, fit_threshold(used, threshold), norm=rule.norm, lineage=extractor.lineage,
                     sigma_px=sigma_px)
        expert._extractor = extractor
        expert.memory, expert.calibration_scores = memory, used
        return expert

    @property
    def extractor(self) -> PatchFeatureExtractor:
        if self._extractor is None:
            extractor = PatchFeatureExtractor.from_params(self.extract)
            if self.lineage is not None:
                self.lineage.check_matches(extractor.lineage, what="The bank and the test images' features")
            self._extractor = extractor
        return self._extractor

    def adopt_extractor(self, extractor: PatchFeatureExtractor) -> None:
        """Use ``extractor`` (another expert's, built with the same lineage) instead of building one."""
        if self.lineage is not None:
            self.lineage.check_matches(extractor.lineage, what="The shared backbone and this bank's features")
        self._extractor = extractor

    def score(self, images: Sequence[Image.Image]) -> Scored:
        """Score images of any size and mode (resized, cropped and tiled as the bank's training images were);
        an image smaller than the frame, or of a kind eagle refuses, raises :class:`ImageError`."""
        return self.score_frames(*self.geometry.frames(images))

    def score_frames(self, frames: np.ndarray | torch.Tensor, sizes: list[tuple[int, int]]) -> Scored:
        """Score normalised frames ``(B, 3, frame, frame)`` of images whose original (width, height) are ``sizes``.

        Patch features are searched as the backbone produces them and only their scores are kept, so
        memory follows ``batch_size`` tiles, not the size of an image.
        """
        frames = torch.as_tensor(frames)
        step = self.geometry.images_per_batch(self.extract.batch_size)
        blocks = (patches.float().cpu().numpy() for first in range(0, len(frames), step)
                  for _, patches in self.extractor.stream(frames[first:first + step]))
        per_patch = searched_scores(blocks, lambda queries: self.index.search(torch.from_numpy(queries),
                                                                              self.bank.knn_k)[0])
        return self._scored(per_patch.reshape(len(frames), -1), sizes, self.extractor.grid())

    def score_features(self, features: torch.Tensor, sizes: list[tuple[int, int]], grid: tuple[int, int]) -> Scored:
        """Score patch features ``(B, P, D)`` of images whose original (width, height) are ``sizes``; ``grid`` is
        one tile's patch grid."""
        batch, patches, dim = features.shape
        dist, _ = self.index.search(features.reshape(-1, dim), self.bank.knn_k)
        return self._scored(patch_scores(dist).reshape(batch, patches), sizes, grid)

    def _scored(self, per_patch: np.ndarray, sizes: list[tuple[int, int]], grid: tuple[int, int]) -> Scored:
        """Image scores, verdicts and maps from patch scores ``(B, P)``."""
        return decide(per_patch, sizes, ImageRule.of(self.bank, self.geometry, grid, self.norm), tau=self.tau,
                      s_max=self.s_max, sigma_px=self.sigma_px)
