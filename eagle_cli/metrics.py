"""Detection and segmentation metrics on raw (unnormalised) scores.

Image AUROC and pixel AUROC come from scikit-learn; PRO is the area under the per-region-overlap
curve up to a false-positive rate of 0.3, normalised to [0, 1] (the MVTec-AD convention), with
regions from ``scipy.ndimage.label``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn import metrics

PRO_FPR_LIMIT = 0.3


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUROC of image scores against 0/1 labels; ``None`` when only one class is present."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    return float(metrics.roc_auc_score(labels, scores))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """AUROC over all pixels of ``(n, H, W)`` maps against boolean masks."""
    return image_auroc(masks.ravel().astype(np.uint8), maps.ravel())


def pro_score(masks: np.ndarray, maps: np.ndarray, *, fpr_limit: float = PRO_FPR_LIMIT, steps: int = 300) -> float | None:
    """Normalised area under the PRO curve for FPR in [0, ``fpr_limit``]; ``None`` without defects."""
    masks = masks.astype(bool)
    normal = np.sort(maps[~masks].ravel())
    if normal.size == 0:
        return None
    regions = []
    for mask, amap in zip(masks, maps):
        labelled, count = ndimage.label(mask)
        regions += [np.sort(amap[labelled == r]) for r in range(1, count + 1)]
    if not regions:
        return None
    fprs = np.linspace(0.0, fpr_limit, steps + 1)
    # The threshold reaching a given FPR is the matching upper quantile of the normal pixels.
    thresholds = np.quantile(normal, 1.0 - fprs, method="higher")
    real_fpr = 1.0 - np.searchsorted(normal, thresholds, side="left") / normal.size
    overlaps = np.mean([1.0 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    keep = real_fpr <= fpr_limit
    return float(metrics.auc(real_fpr[keep], overlaps[keep]) / fpr_limit)


def verdict_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of 0/1 verdicts, anomalous = positive."""
    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        labels, predictions, average="binary", pos_label=1, zero_division=0
    )
    return {
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }
