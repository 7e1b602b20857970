"""The expert's scoring and decision rule, in one place.

Reference parity (eagle-method.md A.5–A.6): a patch scores the mean of the squared L2 distances to
its k nearest bank entries; the verdict is anomalous at score ≥ τ, and the expert is unsure (CAAS
acts) strictly between τ and S_max. The reference scores an image by its highest patch (``top`` =
1); eagle's default averages its ``top`` highest patches (the bank's ``image_top``): one stray
patch moves the score less, while a defect that covers that many patches keeps its full score.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

#: Patch values searched together, 32 MB of float32: 65,536 patches of MobileNetV2 (128 values), 8,192 of WideResNet
#: (1,024). Memory stays bounded, and a 1024 px image of MobileNetV2 patches is one search, not two: 8,192 patches at
#: a time took 3-6 % longer per image (BENCHMARKS.md, "A map's products on one thread").
SEARCH_VALUES = 1 << 23


def patch_scores(sq_dists: np.ndarray) -> np.ndarray:
    """Mean over the last axis (the k neighbours) of squared distances ``(..., k)``."""
    return sq_dists.mean(-1)


def searched_scores(blocks: Iterable[np.ndarray], search: Callable[[np.ndarray], np.ndarray], *,
                    values: int = SEARCH_VALUES) -> np.ndarray:
    """Patch scores of every row of ``blocks`` (patch features ``(n, D)`` as a backbone gives them), in order.

    Blocks are gathered until they hold ``values`` patch values, then searched at once (``search`` answers squared
    distances ``(n, k)``) and only their scores kept: a search per block of a few tiles is slow, and one of a
    whole large image unbounded in memory.
    """
    scores: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    waiting = 0
    for block in blocks:
        pending.append(block)
        waiting += block.size
        if waiting >= values:
            scores.append(patch_scores(search(np.concatenate(pending))))
            pending, waiting = [], 0
    if pending:
        scores.append(patch_scores(search(np.concatenate(pending))))
    return np.concatenate(scores)


def image_scores(per_patch: np.ndarray, top: int) -> np.ndarray:
    """Image scores from patch scores ``(..., P)``: the mean of the ``top`` highest (all, if fewer)."""
    top = min(top, per_patch.shape[-1])
    if top == 1:
        return per_patch.max(-1)
    return np.partition(per_patch, -top, axis=-1)[..., -top:].mean(-1)


def images_from_distances(sq_dists: np.ndarray, top: int) -> np.ndarray:
    """Image scores from squared distances ``(..., P, k)`` of each image's patches."""
    return image_scores(patch_scores(sq_dists), top)


def verdicts(scores: np.ndarray, tau: float, s_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Anomalous where score ≥ τ; uncertain (the CAAS window) where τ < score < S_max (reference B, strict)."""
    scores = np.asarray(scores)
    return scores >= tau, (scores > tau) & (scores < s_max)
