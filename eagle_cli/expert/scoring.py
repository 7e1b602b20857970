"""The expert's scoring and decision rule, in one place.

Reference parity (eagle-method.md A.5–A.6): a patch scores the mean of the squared L2 distances to
its k nearest bank entries; an image scores the max over its patches; the verdict is anomalous at
score ≥ τ, and the expert is unsure (CAAS acts) strictly between τ and S_max.
"""

from __future__ import annotations

import numpy as np


def patch_scores(sq_dists: np.ndarray) -> np.ndarray:
    """Mean over the last axis (the k neighbours) of squared distances ``(..., k)``."""
    return sq_dists.mean(-1)


def image_score(sq_dists: np.ndarray) -> float:
    """The score of one image from its patches' squared distances ``(P, k)``."""
    return float(patch_scores(sq_dists).max())


def verdicts(scores: np.ndarray, tau: float, s_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Anomalous where score ≥ τ; uncertain (the CAAS window) where τ < score < S_max (reference B, strict)."""
    scores = np.asarray(scores)
    return scores >= tau, (scores > tau) & (scores < s_max)
