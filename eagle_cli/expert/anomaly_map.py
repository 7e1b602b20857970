"""Anomaly maps: patch scores to a smoothed frame map, and that map back onto the original image.

Reference parity (eagle-method.md A.6): bilinear upsampling (align_corners=False) of the patch
grid to the crop size, then a Gaussian with σ = 4 px (scipy defaults: truncate 4, reflect).
Tiles: each tile's grid is upsampled to the tile's size and put in its place; where tiles overlap
the pixel takes their mean (every tile saw it with equal right, and the mean hides the seams of
zero-padded tile borders), then the whole frame is smoothed once.
Where we differ: the reference stretches the crop-frame map over the whole original image; we
undo the resize and centre crop, so a map pixel lands on the original pixel it was computed from.
Pixels outside the crop were never seen by the expert and are 0 (squared distances are ≥ 0).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from eagle_cli.expert.features import Geometry


def frame_map(patch_scores: np.ndarray, grid: tuple[int, int], geometry: Geometry, *,
              sigma_px: float = 4.0) -> np.ndarray:
    """Map ``(T*H*W,)`` patch scores (T tiles of an (H, W) grid) to a smoothed ``(frame, frame) float32`` map."""
    offsets, side = geometry.tile_offsets(), geometry.tile_side
    scores = torch.as_tensor(patch_scores, dtype=torch.float32).reshape(len(offsets), 1, *grid)
    tiles = F.interpolate(scores, size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    if len(offsets) == 1:
        upsampled = tiles[0].numpy()
    else:
        total = torch.zeros(geometry.frame, geometry.frame)
        count = torch.zeros(geometry.frame, geometry.frame)
        for (top, left), tile in zip(offsets, tiles, strict=True):
            total[top:top + side, left:left + side] += tile
            count[top:top + side, left:left + side] += 1
        upsampled = (total / count).numpy()
    return gaussian_filter(upsampled, sigma=sigma_px).astype(np.float32) if sigma_px > 0 else upsampled


def observed_box(geometry: Geometry, width: int, height: int) -> tuple[float, float, float, float]:
    """The crop's rectangle (x0, y0, x1, y1) in original-image pixel coordinates."""
    rw, rh = geometry.resized_size(width, height)
    left, top = geometry.crop_offset(width, height)
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, (left + geometry.frame) * sx, (top + geometry.frame) * sy


def to_original_frame(amap: np.ndarray, geometry: Geometry, width: int, height: int) -> np.ndarray:
    """Resample a crop-frame map ``(crop, crop)`` onto the original image grid ``(height, width)``.

    Each original pixel centre is mapped through the resize and crop into the map and sampled
    bilinearly; pixels outside the crop get 0.
    """
    rw, rh = geometry.resized_size(width, height)
    left, top = geometry.crop_offset(width, height)
    crop = geometry.frame
    # Pixel centre x + 0.5 in the original sits at (x + 0.5) * rw / width in the resized image.
    xs = ((torch.arange(width, dtype=torch.float64) + 0.5) * rw / width - left) / crop * 2 - 1
    ys = ((torch.arange(height, dtype=torch.float64) + 0.5) * rh / height - top) / crop * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].float()
    source = torch.as_tensor(amap, dtype=torch.float32)[None, None]
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
    inside = (xs.abs() <= 1)[None, :] & (ys.abs() <= 1)[:, None]
    return out.masked_fill_(~inside, 0.0).numpy()
