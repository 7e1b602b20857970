"""From patch scores to what the expert says of each image: image scores, verdicts and maps (numpy only).

The torch expert (expert/model.py) and the exported runtime (export/runtime.py) both end here, so an image
is judged by one piece of code whichever network produced its patch features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from eagle_cli.expert.anomaly_map import frame_map, to_original_frame
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.expert.scoring import verdicts


@dataclass(frozen=True)
class Scored:
    """What the expert says about a batch of images, in input order."""

    scores: np.ndarray  # (B,) float64, the image scores (the bank's rule: expert/image_rule.py)
    anomalous: np.ndarray  # (B,) bool, score ≥ τ
    uncertain: np.ndarray  # (B,) bool, τ < score < S_max (the CAAS window)
    crop_maps: list[np.ndarray]  # (frame, frame) float32 each, the frame the expert saw (standardised: peak rule)
    geometry: Geometry
    sizes: list[tuple[int, int]]  # each image's original (width, height)

    @cached_property
    def maps(self) -> list[np.ndarray]:
        """``(height, width) float32`` each, the original image's frame. Drawn when first asked for: the score
        stage stores the frame maps and never needs these (a resampling of 4 M pixels per image at 2048 px)."""
        return [to_original_frame(m, self.geometry, w, h) for m, (w, h) in zip(self.crop_maps, self.sizes, strict=True)]


def decide(per_patch: np.ndarray, sizes: list[tuple[int, int]], rule: ImageRule, *, tau: float, s_max: float,
           sigma_px: float) -> Scored:
    """Image scores, verdicts and maps of patch scores ``(B, P)`` of images whose original (width, height) are
    ``sizes``; the maps are smoothed with σ = ``sigma_px``."""
    values = rule.values(per_patch)
    crop_maps = [frame_map(v, rule.grid, rule.geometry, sigma_px=sigma_px) for v in values]
    # By default the peak rule smooths as the maps are smoothed: its peak is then the map's own maximum.
    scores = rule.scores(values, crop_maps if rule.sigma_px == sigma_px else None)
    anomalous, uncertain = verdicts(scores, tau, s_max)
    return Scored(scores, anomalous, uncertain, crop_maps, rule.geometry, list(sizes))
