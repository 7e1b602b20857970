"""Boxes around the regions where an original-frame anomaly map exceeds a threshold-derived level.

Reference (eagle-method.md C.1): binarise at 2/3 of the image's own maximum, drop regions of at
most 0.1 % of the image, merge boxes whose IoU > 0.3 or whose centres are < 20 px apart, keep the
top 3 by peak. Where we differ: the level is a fraction of τ, a fixed number for the category, so a
normal-looking map gets no box at all; the map is in the original frame (the crop is undone).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from eagle_cli.params import BoxParams

_DEFAULT = BoxParams()


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _centre_distance(a, b) -> float:
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))


def find_boxes(amap: np.ndarray, tau: float, params: BoxParams = _DEFAULT) -> list[tuple[list[int], float]]:
    """Return up to ``top_k`` boxes ``[x1, y1, x2, y2]`` (x2, y2 exclusive) with their peak map value."""
    labelled, count = ndimage.label(amap >= params.level * tau)
    min_pixels = params.min_area * amap.size
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labelled), start=1):
        inside = labelled[region] == index
        if inside.sum() <= min_pixels:
            continue
        ys, xs = region
        boxes.append(([xs.start, ys.start, xs.stop, ys.stop], float(amap[region][inside].max())))
    boxes.sort(key=lambda item: -item[1])
    merged, used = [], [False] * len(boxes)
    for i, (base, peak) in enumerate(boxes):
        if used[i]:
            continue
        group = [base]
        for j in range(i + 1, len(boxes)):
            other = boxes[j][0]
            if not used[j] and (_iou(base, other) > params.merge_iou
                                or _centre_distance(base, other) < params.merge_centre_px):
                used[j] = True
                group.append(other)
        union = [min(b[0] for b in group), min(b[1] for b in group), max(b[2] for b in group), max(b[3] for b in group)]
        merged.append((union, peak))
    return merged[: params.top_k]
