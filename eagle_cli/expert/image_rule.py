"""How an image's score is read from its patch scores.

``top-mean``  the mean of the image's ``top`` highest patch scores (``top`` 1, the highest patch, is the
              published rule). Suits a frame of the backbone's own size: 8 patches are 1 % of a 28 × 28 grid.
``peak``      the peak of the anomaly map, drawn from patch scores standardised per tile cell. On a large
              frame seen in tiles a defect a few pixels wide lights one or two of 20,000 patches: a mean of
              the highest dilutes it, the map's peak keeps it. The cells of a tile do not behave alike — a
              cell on the tile's edge sees the backbone's padding, and every tile repeats that — so each
              patch score is first measured against the good images' scores at the same cell of their tiles
              (mean and spread from the calibration, each calibration image standardised without itself).
              The map is then what the score is read from: the verdict sees what the map shows.

``auto`` is ``peak`` for tiled features and ``top-mean`` otherwise (BENCHMARKS.md, "Tiny defects on large
parts": the peak is ahead on every category and seed of the high-resolution set; on frames of ordinary size
the ``top-mean`` default keeps its measured results).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from eagle_cli.errors import ParameterError
from eagle_cli.expert.anomaly_map import frame_map
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.scoring import image_scores
from eagle_cli.params import BankParams

#: A cell's spread is never taken below this (squared-distance units): a cell every good image scores alike
#: would otherwise turn rounding noise into a peak.
_MIN_SPREAD = 1e-6


@dataclass(frozen=True)
class CellNorm:
    """Mean and standard deviation of good patch scores at each cell of a tile, ``(cells,)`` each."""

    mean: np.ndarray
    std: np.ndarray

    def standardise(self, per_patch: np.ndarray) -> np.ndarray:
        """Patch scores ``(B, T * cells)`` of T tiles → their standard scores at their cells, same shape."""
        cells = per_patch.reshape(len(per_patch), -1, self.mean.size)
        return ((cells - self.mean) / self.std).reshape(per_patch.shape).astype(np.float32)

    def change(self, patches: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """How the standard scores of ``patches`` (indices into ``T * cells``) change when their scores go from
        ``before`` to ``after``."""
        return ((after - before) / self.std[np.asarray(patches) % self.mean.size]).astype(np.float32)


def _sums(per_patch: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, per cell: count, sum and sum of squares of ``per_patch (m, P)`` over its tiles (NaN skipped)."""
    values = per_patch.reshape(len(per_patch), -1, cells).astype(np.float64)
    finite = np.isfinite(values)
    values = np.where(finite, values, 0.0)
    return finite.sum(1), values.sum(1), (values ** 2).sum(1)


def _norm(count: np.ndarray, total: np.ndarray, squares: np.ndarray) -> CellNorm:
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean ** 2, 0.0))
    return CellNorm(mean.astype(np.float32), np.maximum(std, _MIN_SPREAD).astype(np.float32))


def norm_tiles(images: int, tiles: int, step: int) -> np.ndarray:
    """Which tiles ``(images, tiles) bool`` measure the cell norm: every ``step``-th tile of each calibration image,
    the image at position p from its tile p on, so that every tile place is measured (all when ``step`` is 1)."""
    return (np.arange(tiles) - np.arange(images)[:, None]) % min(step, tiles) == 0


@dataclass(frozen=True)
class ImageRule:
    """An image rule resolved for one extraction: ``geometry`` and one tile's patch ``grid``; ``norm`` is set once
    a calibration has measured it (``peak`` only)."""

    kind: str
    top: int
    sigma_px: float
    geometry: Geometry
    grid: tuple[int, int]
    norm: CellNorm | None = None

    @classmethod
    def of(cls, bank: BankParams, geometry: Geometry, grid: tuple[int, int], norm: CellNorm | None = None
           ) -> ImageRule:
        """The bank's rule for features of this geometry (``auto`` decided here)."""
        kind = bank.resolved(tiled=bool(geometry.tile)).image_score
        return cls(kind, bank.image_top, bank.peak_sigma_px, geometry, tuple(grid), norm)

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    def calibrated(self, per_patch: np.ndarray, step: int = 1) -> tuple[np.ndarray, ImageRule]:
        """Score the calibration images' patch scores ``(m, P)`` (NaN: not scored; a row of NaN: left out) and
        return the scores ``(m,)`` (NaN where left out) and this rule with what it measured on them: under ``peak``
        the cell norm, from every ``step``-th tile of each image (:func:`norm_tiles`)."""
        if self.kind == "top-mean":
            return scored_top_mean(per_patch, self.top), self
        if np.isnan(per_patch).any():
            raise ParameterError("The peak image rule needs a score for every patch of the calibration images; "
                                 "use --calibration refill, or --image-score top-mean with --calibration reference.")
        kept = np.repeat(norm_tiles(len(per_patch), per_patch.shape[1] // self.cells, step), self.cells, axis=1)
        others, norm = self.cell_norms(np.where(kept, per_patch, np.nan))
        scores = np.array([self._peak(others[i].standardise(per_patch[i:i + 1]))[0] for i in range(len(per_patch))])
        return scores, replace(self, norm=norm)

    def cell_norms(self, measured: np.ndarray) -> tuple[list[CellNorm], CellNorm]:
        """From the calibration images' patch scores ``(m, P)`` measured for the norm (NaN elsewhere): each image's
        norm measured on the others only (as a new good part's is on all of them), and the norm of all."""
        count, total, squares = _sums(measured, self.cells)
        all_count, all_total, all_squares = count.sum(0), total.sum(0), squares.sum(0)
        others = [_norm(all_count - count[i], all_total - total[i], all_squares - squares[i])
                  for i in range(len(measured))]
        return others, _norm(all_count, all_total, all_squares)

    def values(self, per_patch: np.ndarray) -> np.ndarray:
        """What the maps are drawn from, ``(B, P)``: the patch scores, standardised under ``peak``."""
        if self.kind == "top-mean":
            return per_patch
        if self.norm is None:
            raise ParameterError("The peak image rule has no calibration yet; run eagle fit-threshold.")
        return self.norm.standardise(per_patch)

    def scores(self, values: np.ndarray, maps: list[np.ndarray] | None = None) -> np.ndarray:
        """Image scores ``(B,)`` of :meth:`values` ``(B, P)``. ``maps``: their frame maps if already drawn with this
        rule's σ (the peak rule then reads them instead of drawing them again)."""
        if self.kind == "top-mean":
            return image_scores(values, self.top).astype(np.float64)
        return self._peak(values, maps)

    def _peak(self, values: np.ndarray, maps: list[np.ndarray] | None = None) -> np.ndarray:
        if maps is None:
            maps = [frame_map(v, self.grid, self.geometry, sigma_px=self.sigma_px) for v in values]
        return np.array([m.max() for m in maps], dtype=np.float64)


def scored_top_mean(per_patch: np.ndarray, top: int) -> np.ndarray:
    """:func:`image_scores` of each row's scored patches; NaN for a row with none."""
    rows = (row[np.isfinite(row)] for row in per_patch)
    return np.array([image_scores(row, top) if row.size else np.nan for row in rows], dtype=np.float64)
