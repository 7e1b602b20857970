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

from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d
from threadpoolctl import ThreadpoolController

from eagle_cli.expert.geometry import Geometry


def _neighbours(positions: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For source positions in pixel-centre coordinates, clamped to [0, size - 1] as torch's bilinear sampling
    clamps them: the index below, the index above and the weight of the one above."""
    positions = np.clip(positions, 0, size - 1)
    lower = np.floor(positions).astype(np.intp)
    return lower, np.minimum(lower + 1, size - 1), (positions - lower).astype(np.float32)


def _bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample the last two axes of ``values`` bilinearly at source ``rows`` × ``cols``, one axis after the other."""
    r0, r1, wr = _neighbours(rows, values.shape[-2])
    along = values[..., r0, :] * (1 - wr)[:, None] + values[..., r1, :] * wr[:, None]
    c0, c1, wc = _neighbours(cols, values.shape[-1])
    return along[..., c0] * (1 - wc) + along[..., c1] * wc


def _interpolation(side: int, size: int) -> np.ndarray:
    """The ``(side, size)`` matrix of bilinear weights, align_corners=False, that takes ``size`` values to ``side``."""
    lower, upper, weight = _neighbours((np.arange(side) + 0.5) * (size / side) - 0.5, size)
    matrix = np.zeros((side, size), dtype=np.float32)
    rows = np.arange(side)
    # Added, not set: at a clamped edge both neighbours are the same value.
    np.add.at(matrix, (rows, lower), 1 - weight)
    np.add.at(matrix, (rows, upper), weight)
    return matrix


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded (numpy's among them: it is imported above)."""
    return ThreadpoolController().select(user_api="blas")


def _products(first: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    """``first @ rest[0] @ …`` on the calling thread. A map's products are small (at 1024 px a few ms on one
    core), but a multi-threaded BLAS leaves its workers spinning after each one: numpy's OpenBLAS workers then took a
    core from the backbone forward and the search that came next, 70-90 ms of an image's 0.36 s at 1024 px on 2
    cores (BENCHMARKS.md, "A map's products on one thread"). The limit is the process's: where the service's
    threads draw maps at once, one may restore it while another's product runs (that product may then use the
    workers), and the last to leave may restore one thread — what every later map wants anyway."""
    with _blas().limit(limits=1):
        for matrix in rest:
            first = first @ matrix
        return first


@lru_cache(maxsize=16)
def _frame_operator(geometry: Geometry, size: int, sigma_px: float) -> np.ndarray:
    """Along one axis, the ``(frame, tiles_per_side * size) float32`` matrix that takes a line of tiles' patch
    values to the frame: each tile's bilinear upsampling put in its place, divided by how many tiles cover the
    frame line, then smoothed (scipy's Gaussian along that axis, the filter's own boundary handling)."""
    starts = sorted({top for top, _ in geometry.tile_offsets()})
    side = geometry.tile_side
    matrix = np.zeros((geometry.frame, len(starts) * size))
    covered = np.zeros(geometry.frame)
    upsampling = _interpolation(side, size)
    for i, start in enumerate(starts):
        matrix[start:start + side, i * size:(i + 1) * size] = upsampling
        covered[start:start + side] += 1
    matrix /= covered[:, None]
    if sigma_px > 0:
        matrix = gaussian_filter1d(matrix, sigma_px, axis=0)
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)  # shared by every later call
    return matrix


def frame_map(patch_scores: np.ndarray, grid: tuple[int, int], geometry: Geometry, *,
              sigma_px: float = 4.0) -> np.ndarray:
    """Map ``(T*H*W,)`` patch scores (T tiles of an (H, W) grid) to a smoothed ``(frame, frame) float32`` map.

    The tiles lie on a grid, so the number covering a pixel is its row's count times its column's, and
    upsampling, averaging the overlaps and the separable Gaussian are one linear map per axis: the map is two
    matrix products of the tiles' values laid out as they lie, ~7× faster at 2048 px than building the frame and
    filtering it (the same values to float32 rounding).
    """
    h, w = grid
    rows, cols = _frame_operator(geometry, h, sigma_px), _frame_operator(geometry, w, sigma_px)
    per_side = rows.shape[1] // h
    tiles = np.asarray(patch_scores, dtype=np.float32).reshape(per_side, per_side, h, w)
    return _products(rows, tiles.transpose(0, 2, 1, 3).reshape(per_side * h, per_side * w), cols.T)


def add_patches(amap: np.ndarray, patches: np.ndarray, values: np.ndarray, grid: tuple[int, int], geometry: Geometry,
                *, sigma_px: float = 4.0) -> None:
    """Add to :func:`frame_map`'s map ``amap`` (in place) the map of ``values`` at ``patches`` (indices into
    ``(T*H*W,)``, every other patch 0). The map is linear in the patch values, and a few patches reach only a few of
    its rows and columns: a change of a few patches costs a small product, not a whole map."""
    h, w = grid
    rows, cols = _frame_operator(geometry, h, sigma_px), _frame_operator(geometry, w, sigma_px)
    per_side = rows.shape[1] // h
    tile, cell = np.divmod(np.asarray(patches), h * w)
    laid_rows, at_row = np.unique(tile // per_side * h + cell // w, return_inverse=True)
    laid_cols, at_col = np.unique(tile % per_side * w + cell % w, return_inverse=True)
    laid = np.zeros((len(laid_rows), len(laid_cols)), dtype=np.float32)
    np.add.at(laid, (at_row, at_col), values)
    ys, xs = (np.flatnonzero(operator[:, reached].any(1)) for operator, reached in ((rows, laid_rows),
                                                                                     (cols, laid_cols)))
    amap[np.ix_(ys, xs)] += _products(rows[np.ix_(ys, laid_rows)], laid, cols[np.ix_(xs, laid_cols)].T)


def patches_under(pixels: np.ndarray | tuple[np.ndarray, np.ndarray], grid: tuple[int, int], geometry: Geometry, *,
                  sigma_px: float = 4.0) -> np.ndarray:
    """Which patches ``(T*H*W,) bool`` weigh on any of ``pixels`` (a ``(frame, frame) bool`` mask, or the rows and
    columns of a few) of :func:`frame_map`'s map: a pixel's value is a weighted sum of the patches its row and column
    operators reach."""
    h, w = grid
    rows, cols = _frame_operator(geometry, h, sigma_px), _frame_operator(geometry, w, sigma_px)
    per_side = rows.shape[1] // h
    ys, xs = pixels if isinstance(pixels, tuple) else np.nonzero(pixels)
    # The laid-out patches with any weight on a marked pixel: reach × pixels × reach. Through the list of marked
    # pixels when there are fewer of them than a frame has rows for each laid-out row (the usual few), else through
    # the whole mask.
    if isinstance(pixels, tuple) or len(ys) * rows.shape[1] < pixels.size:
        laid = _products((rows[ys] != 0).T.astype(np.float32), (cols[xs] != 0).astype(np.float32)) > 0
    else:
        laid = _products((rows != 0).T.astype(np.float32), pixels.astype(np.float32),
                         (cols != 0).astype(np.float32)) > 0
    return laid.reshape(per_side, h, per_side, w).transpose(0, 2, 1, 3).reshape(-1)


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
    if (rw, rh, left, top) == (width, height, 0, 0) and amap.shape == (height, width):
        # Tiles at native resolution: every original pixel is a map pixel, and sampling would return it as it is.
        return np.array(amap, dtype=np.float32)
    # Pixel centre x + 0.5 in the original sits at (x + 0.5) * rw / width in the resized image.
    xs = (np.arange(width) + 0.5) * rw / width - left
    ys = (np.arange(height) + 0.5) * rh / height - top
    out = _bilinear(np.asarray(amap, dtype=np.float32), ys - 0.5, xs - 0.5)
    inside = ((ys >= 0) & (ys <= geometry.frame))[:, None] & ((xs >= 0) & (xs <= geometry.frame))[None, :]
    return np.where(inside, out, np.float32(0)).astype(np.float32)
