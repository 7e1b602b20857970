"""Visual prompts: the query image with red boxes, or with the anomaly map as a colour overlay."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw


def line_width(size: tuple[int, int]) -> int:
    """Box outline width that survives a VLM's resize to ~600 px: about 1/150 of the short side, at least 2."""
    return max(2, round(min(size) / 150))


def draw_boxes(image: Image.Image, boxes: list[list[int]]) -> Image.Image:
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = line_width(out.size)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 0, 0), width=width)
    return out


def heatmap_overlay(image: Image.Image, amap: np.ndarray, *, vmax: float, alpha: float = 0.45,
                    seen: tuple[float, float, float, float] | None = None) -> Image.Image:
    """Blend the map (0 → blue, ``vmax`` and above → red) over the image; ``vmax`` is fixed per category (τ).

    Outside ``seen`` (the expert's field of view, x0, y0, x1, y1 in image pixels) nothing was scored:
    those pixels are drawn grey and hatched, not blue, so no one reads them as "normal".
    """
    colours = colormaps["jet"](np.clip(amap / vmax, 0, 1))[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    blended = (1 - alpha) * base + alpha * colours
    if seen is not None:
        height, width = amap.shape
        ys, xs = np.mgrid[0:height, 0:width]
        x0, y0, x1, y1 = seen
        unseen = (xs + 0.5 < x0) | (xs + 0.5 > x1) | (ys + 0.5 < y0) | (ys + 0.5 > y1)
        grey = 0.35 + 0.3 * base.mean(axis=2, keepdims=True)
        hatch = ((xs + ys) % 8 < 2)[..., None]
        blended = np.where(unseen[..., None], np.where(hatch, 0.2, grey), blended)
    return Image.fromarray((blended * 255 + 0.5).astype(np.uint8))
