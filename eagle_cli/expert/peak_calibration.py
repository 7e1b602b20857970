"""The peak rule's calibration scores, with an exact search only of the patches they need.

Under the ``peak`` image rule a calibration image's score is the peak of its map, drawn from its patch scores
standardised per tile cell by the cell norm of the other calibration images. Two things need exact patch scores:

* the cell norm, measured on every ``step``-th tile of each calibration image (:func:`image_rule.norm_tiles`):
  the patches of those tiles are searched exactly;
* the peak. The map is a weighted sum of standardised patch scores with weights that are never negative, and
  standardising is increasing, so bounds on every patch bound every pixel. A leave-own-out search in the bank's
  top principal components gives each patch a lower bound (a projection onto orthonormal components never
  lengthens a distance) and, through the entry it finds, an upper bound (that entry's exact distance). Patches are
  then searched exactly — first the highest upper bounds, then every patch that weighs on a pixel whose upper
  bound exceeds the peak's lower bound — and the peak is the same as with every patch searched, to float
  rounding.

On the 2048 px brick set the component search cost 0.26× the exact one, and about 0.4 % of an image's patches
could still reach its peak once 0.5 % had been measured (``benchmarks/peak_bounds.py``, BENCHMARKS.md).

The refill (``calibration.Refill``) takes part as in the exact calibration: its entries lower both bounds alike,
for the patches whose nearest refilled entry in the components lies below their upper bound (no other patch can
be lowered by them), and the entry found for each patch — by the bounding search, or by the exact one on the norm's
tiles, which skip the bounding search — is a candidate to settle it as an orphan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import numpy as np
import torch

from eagle_cli.expert.anomaly_map import frame_map, patches_under
from eagle_cli.expert.image_rule import CellNorm, ImageRule, norm_tiles
from eagle_cli.expert.knn import BankIndex, nearest_rows
from eagle_cli.progress import Advance

#: Principal components of the bounding search: 96 % of the variance of a MobileNetV2 bank, for a quarter of the
#: exact search's time at 2048 px (BENCHMARKS.md, "Where a cheaper calibration could come from").
COMPONENTS = 32
#: Share of an image's patches, the highest upper bounds, searched exactly before the peak's bounds are read: it
#: raises the lower bound of the peak so that few pixels stay open (0.40 % of the patches instead of most).
REFINE_SHARE = 0.005
#: Patches whose orphan bounds are worked out at once (the refill's candidates take ~40 MB for 8,192 patches).
_ROWS_PER_BOUND = 8192
#: Patches whose differences to their found entries are taken at once (2 MB of float32 at 128 dims).
_ROWS_IN_CACHE = 4096
#: Relative widening of both bounds against float rounding of the distances (~1e-6 of the squared norms).
_BOUND_MARGIN = 1e-4


class RefillLike(Protocol):
    """What the refill gives (``calibration.Refill``, which calls this module: the project has no import circles):
    orphans bounded by found entries, settled, refilled."""

    def bound(self, chunk: np.ndarray, found: np.ndarray) -> None: ...
    def settle(self) -> None: ...
    def entries(self, position: int) -> torch.Tensor | None: ...


def principal_components(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The mean, the top ``count`` orthonormal components ``(D, count)`` of ``rows`` and the share of variance
    they hold."""
    mean = rows.mean(0)
    values, vectors = np.linalg.eigh(np.cov((rows - mean).T))
    top = vectors[:, ::-1][:, :count]
    share = values[::-1][:count].sum() / max(values.sum(), 1e-30)  # a bank of one repeated row has no variance
    return mean, np.ascontiguousarray(top, dtype=np.float32), float(share)


def bounded_peak_scores(features: torch.Tensor, index: BankIndex, refill: RefillLike, images: np.ndarray,
                        rule: ImageRule, *, step: int, progress: Advance, components: int = COMPONENTS,
                        refine: float = REFINE_SHARE) -> tuple[np.ndarray, ImageRule]:
    """The peak rule's scores ``(len(images),)`` of calibration ``images`` (k = 1: a patch scores its squared
    distance to the nearest entry of another image, or of its refill) and the rule with its cell norm."""
    _, patches, dim = features.shape
    rows = index.rows()
    mean, basis, _ = principal_components(rows, min(components, dim))
    centre, axes = torch.from_numpy(mean), torch.from_numpy(basis)

    def in_components(points: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(points), axes.shape[1])
        # A few thousand rows at a time, in cache: 6x faster than the whole image at once at 2048 px.
        for lo in range(0, len(points), _ROWS_IN_CACHE):
            torch.mm(points[lo:lo + _ROWS_IN_CACHE] - centre, axes, out=out[lo:lo + _ROWS_IN_CACHE])
        return out

    bank = torch.from_numpy(rows)
    reduced = BankIndex(in_components(bank), torch.as_tensor(index.image_ids), backend=index.backend,
                        device=index.device)
    measured = np.repeat(norm_tiles(len(images), patches // rule.cells, step), rule.cells, axis=1)
    low = np.empty((len(images), patches), dtype=np.float32)
    high = np.empty_like(low)
    # Three passes over the images, a third of the work each.
    for position, i in enumerate(images):
        found = np.empty((patches, 1), dtype=np.int64)
        # The norm's patches are searched exactly in any case, and that search finds the refill's candidates too.
        exact_part, bounded = np.flatnonzero(measured[position]), np.flatnonzero(~measured[position])
        dist, found[exact_part] = index.search_leave_own_out(features[i][torch.as_tensor(exact_part)].float(), 1,
                                                             np.full(len(exact_part), i))
        low[position, exact_part] = high[position, exact_part] = dist[:, 0]
        points = features[i][torch.as_tensor(bounded)]
        near, found[bounded] = reduced.search_leave_own_out(in_components(points), 1, np.full(len(bounded), i))
        low[position, bounded] = near[:, 0] * (1 - _BOUND_MARGIN)
        high[position, bounded] = _upper(points, bank, found[bounded, 0])
        for lo in range(0, patches, _ROWS_PER_BOUND):
            chunk = np.arange(lo, min(lo + _ROWS_PER_BOUND, patches))
            refill.bound(i * patches + chunk, found[chunk])
        progress(1 / 3)
    refill.settle()
    entries = [refill.entries(position) for position in range(len(images))]

    def with_refill(position: int, points: torch.Tensor, dist: np.ndarray) -> np.ndarray:
        """``dist``, the squared distances of ``points`` of ``images[position]`` to the bank, lowered to their
        nearest refilled entry's."""
        if entries[position] is None:
            return dist
        return np.minimum(dist, nearest_rows(points, entries[position], 1)[0][:, 0])

    def exact(position: int, wanted: np.ndarray) -> np.ndarray:
        """Squared distances of patches ``wanted`` of ``images[position]``: leave-own-out, then the refill."""
        points = features[images[position]][torch.as_tensor(wanted)].float()
        dist = index.search_leave_own_out(points, 1, np.full(len(wanted), images[position]))[0][:, 0]
        return with_refill(position, points, dist)

    for position, i in enumerate(images):
        if (refilled := entries[position]) is not None:
            # The refill lowers a patch's bounds only where its nearest entry may lie below the patch's upper bound;
            # its nearest in the components (a quarter of the work of the exact nearest) tells where.
            near, found = nearest_rows(in_components(features[i]), in_components(refilled), 1)
            near = near[:, 0] * (1 - _BOUND_MARGIN)
            lowered = np.flatnonzero(near < high[position])
            low[position, lowered] = np.minimum(low[position, lowered], near[lowered])
            bounded, exact_part = lowered[~measured[position, lowered]], lowered[measured[position, lowered]]
            points = features[i]
            high[position, bounded] = np.minimum(high[position, bounded],
                                                 _upper(points[torch.as_tensor(bounded)], refilled, found[bounded, 0]))
            low[position, exact_part] = high[position, exact_part] = with_refill(
                position, points[torch.as_tensor(exact_part)], high[position, exact_part])
        progress(1 / 3)
    others, norm = rule.cell_norms(np.where(measured, low, np.nan))
    scores = np.empty(len(images))
    for position in range(len(images)):
        scores[position] = _exact_peak(rule, others[position], low[position], high[position],
                                       measured[position].copy(), functools.partial(exact, position), refine=refine)
        progress(1 / 3)
    return scores, replace(rule, norm=norm)


def _upper(points: torch.Tensor, rows: torch.Tensor, found: np.ndarray) -> np.ndarray:
    """Each of ``points``' squared distance to its ``found`` row of ``rows``, widened: an upper bound of its nearest."""
    out = np.empty(len(points), dtype=np.float32)
    # A few thousand rows at a time, so the differences stay in cache: 10x faster than at once at 2048 px.
    for lo in range(0, len(points), _ROWS_IN_CACHE):
        near = rows.index_select(0, torch.as_tensor(found[lo:lo + _ROWS_IN_CACHE]))
        out[lo:lo + len(near)] = near.sub_(points[lo:lo + _ROWS_IN_CACHE]).square_().sum(1).numpy()
    return out * (1 + _BOUND_MARGIN)


def _exact_peak(rule: ImageRule, norm: CellNorm, low: np.ndarray, high: np.ndarray, exact: np.ndarray,
                search: Callable[[np.ndarray], np.ndarray], *, refine: float) -> float:
    """The peak of one image's map, searching exactly (``search(patches) → squared distances``) only the patches that
    can decide it; ``low``/``high`` bound each patch's squared distance (equal where ``exact``). Updated in place."""

    def measure(wanted: np.ndarray) -> None:
        low[wanted] = high[wanted] = search(wanted)
        exact[wanted] = True

    bounded = np.flatnonzero(~exact)
    if len(bounded):  # none when the norm measured every tile (a frame of one tile)
        measure(bounded[np.argsort(high[bounded])[::-1][:max(1, int(refine * len(low)))]])

    def peak_map(scores: np.ndarray) -> np.ndarray:
        return frame_map(norm.standardise(scores[None])[0], rule.grid, rule.geometry, sigma_px=rule.sigma_px)

    floor = float(peak_map(low).max())
    # Only a pixel whose upper bound exceeds the peak's lower bound can raise it. Once every patch under those pixels
    # is measured, their values are exact and every other pixel lies at or below the floor, so the peak of the lower
    # bounds is the peak: one round of measuring is enough.
    wanted = np.flatnonzero(patches_under(peak_map(high) > floor, rule.grid, rule.geometry, sigma_px=rule.sigma_px)
                            & ~exact)
    if not len(wanted):
        return floor
    measure(wanted)
    return float(peak_map(low).max())
