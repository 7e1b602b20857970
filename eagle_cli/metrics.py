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


def pro_score(masks: np.ndarray, maps: np.ndarray, *, fpr_limit: float = PRO_FPR_LIMIT,
              steps: int = 1000) -> float | None:
    """Normalised area under the PRO curve for FPR in [0, ``fpr_limit``]; ``None`` without defects.

    The curve has one point per threshold (every distinct map value, or ``steps`` quantiles of
    them), is joined linearly, and is cut at ``fpr_limit`` by interpolation.
    """
    masks = masks.astype(bool)
    normal = np.sort(maps[~masks].ravel())
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask)
        regions += [np.sort(amap[labelled == r]) for r in range(1, count + 1)]
    if normal.size == 0 or not regions:
        return None
    thresholds = np.unique(maps)
    if thresholds.size > steps:
        thresholds = np.unique(np.quantile(maps, np.linspace(0, 1, steps)))
    thresholds = thresholds[::-1]  # strictest first, so FPR grows along the curve
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="left") / normal.size
    overlap = np.mean([1.0 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    fpr, overlap = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], overlap])
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:cut], overlap[:cut]
    if cut < fpr.size and x[-1] < fpr_limit:
        y_at_limit = np.interp(fpr_limit, fpr[cut - 1:cut + 1], overlap[cut - 1:cut + 1])
        x, y = np.append(x, fpr_limit), np.append(y, y_at_limit)
    return float(metrics.auc(x, y) / fpr_limit)


def verdict_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float | None]:
    """Verdict quality with anomalous = positive: accuracy, balanced accuracy, precision, recall, F1,
    overkill (share of good parts called anomalous) and miss (share of defects called good).

    Balanced accuracy is MMAD's "Anomaly Detection" figure: the mean of the accuracies on good and
    on defective parts. Figures that need a class the data lacks are ``None``.
    """
    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    if labels.size == 0:
        return {key: None for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "overkill",
                                      "miss", "n")}
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        labels, predictions, average="binary", pos_label=1, zero_division=0
    )
    has_good, has_bad = (labels == 0).any(), (labels == 1).any()
    overkill = float(np.mean(predictions[labels == 0] == 1)) if has_good else None
    miss = float(np.mean(predictions[labels == 1] == 0)) if has_bad else None
    balanced = (1 - overkill + 1 - miss) / 2 if has_good and has_bad else None
    return {
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "balanced_accuracy": balanced,
        "precision": float(precision) if has_bad else None,
        "recall": float(recall) if has_bad else None,
        "f1": float(f1) if has_bad else None,
        "overkill": overkill,
        "miss": miss,
        "n": int(labels.size),
    }
