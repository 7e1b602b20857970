"""The peak rule's calibration scores, with an exact search only of the patches they need.

Under the ``peak`` image rule a calibration image's score is the peak of its map, drawn from its patch scores
standardised per tile cell by the cell norm of the other calibration images. Two things need exact patch scores:

* the cell norm, measured on every ``step``-th tile of each calibration image (:func:`image_rule.norm_tiles`):
  the patches of those tiles are searched exactly;
* the peak. The map is a weighted sum of standardised patch scores with weights that are never negative, and
  standardising is increasing, so bounds on every patch bound every pixel. The coreset recorded which entry covers
  every training patch; the entries nearest that one (:class:`EntryNeighbours`) give each patch an upper bound (the
  exact distance to the nearest of them from another image: the patch's nearest for most patches) and a lower bound
  (no entry beyond them lies closer than their reach less the patch's distance to its covering entry). Patches are
  then searched exactly — first the highest upper bounds, then the patches under the pixel with the highest upper
  bound, again and again: once they are all measured, that pixel is the peak (after a few rounds, every patch that
  weighs on a pixel whose upper bound exceeds the peak's lower bound) — and the peak is the same as with every patch
  searched, to float rounding.

On the 2048 px brick set the bounds cost about a tenth of the exact search, and 0.7 % of an image's patches
still had to be searched beyond the norm's tiles (``benchmarks/bounded_calibration.py``, BENCHMARKS.md).

The refill (``calibration.Refill``) takes part as in the exact calibration: its entries lower both bounds alike,
for the patches whose nearest refilled entry in the bank's principal components lies below their upper bound (no
other patch can be lowered by them), and the entry found for each patch — by its bounds, or by the exact search on
the norm's tiles — is a candidate to settle it as an orphan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import numpy as np
import torch

from eagle_cli.expert.anomaly_map import add_patches, frame_map, patches_under
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.image_rule import CellNorm, ImageRule, norm_tiles
from eagle_cli.expert.knn import BankIndex, nearest_rows
from eagle_cli.progress import Advance

#: Principal components in which the refill's entries are searched to know which patches they may lower: 96 % of the
#: variance of a MobileNetV2 bank, for a quarter of an exact search (BENCHMARKS.md, "Where a cheaper calibration
#: could come from").
COMPONENTS = 32
#: Entries nearest each covering entry whose exact distances bound a patch: at 2048 px 4 left 14.4 % of the patches
#: to be searched exactly, 8 13.2 % and 16 13.1 %, and the bounds' own time grows with them (BENCHMARKS.md).
NEIGHBOURS = 8
#: Share of an image's patches, the highest upper bounds, searched exactly before the peak is looked for: the pixel
#: of the highest upper bound is then near the peak sooner (at 2048 px 0.7 % of the patches searched beyond the
#: norm's tiles with it, 1.1 % without).
REFINE_SHARE = 0.005
#: Patches whose orphan bounds are worked out at once (the refill's candidates take ~40 MB for 8,192 patches).
_ROWS_PER_BOUND = 8192
#: Patches whose differences to their found entries are taken at once (2 MB of float32 at 128 dims).
_ROWS_IN_CACHE = 4096
#: Patches whose differences to their covering entry's neighbours are taken at once (4 MB at 8 × 128 dims).
_ROWS_PER_NEIGHBOURS = 1024
#: Pixels of highest upper bound measured one after another before the rest is bounded by the peak's lower bound.
_PEAK_ROUNDS = 32
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


class EntryNeighbours:
    """Each bank entry's ``count`` nearest entries, ``near (M, count)``, and its ``reach (M,)``: the distance (not
    squared, less a margin for rounding) within which no other entry lies. A patch's covering entry c bounds its
    nearest entry e: either e is one of c's neighbours, or |x − e| ≥ |c − e| − |x − c| ≥ reach(c) − |x − c|."""

    def __init__(self, rows: np.ndarray, count: int):
        listed = min(count, len(rows))
        dist, near = faiss.knn(rows, rows, min(listed + 1, len(rows)))
        self.near = torch.from_numpy(near[:, :listed])
        self.reach = (np.sqrt(np.maximum(dist[:, listed], 0)) * (1 - _BOUND_MARGIN) if listed < len(rows)
                      else np.full(len(rows), np.inf, dtype=np.float32))

    def bounds(self, points: torch.Tensor, covering: np.ndarray, rows: torch.Tensor, image_ids: np.ndarray,
               own: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lower and upper bounds of each of ``points``' squared distance to its nearest entry of another image than
        ``own``, given the bank ``rows`` of the entries ``covering`` them, and ``found (len(points), 2)``: the entry
        that gives the upper bound and the nearest neighbour of another image than the covering entry's, where one is
        (the refill's candidate: an orphan is re-covered by another image than the one whose entry covered it). The
        upper bound is inf where every neighbour is ``own``'s: such a patch must be searched."""
        low, high = np.empty((2, len(points)), dtype=np.float32)
        found = np.empty((len(points), 2), dtype=np.int64)
        for lo in range(0, len(points), _ROWS_PER_NEIGHBOURS):
            part = slice(lo, lo + _ROWS_PER_NEIGHBOURS)
            x, cover = points[part].float(), torch.as_tensor(covering[part])
            listed = self.near[cover]
            # Differences, not norms: the bounds are as accurate as the distances themselves.
            sq = rows[listed].sub_(x[:, None]).square_().sum(2)
            of = image_ids[listed.numpy()]
            covering_image = torch.as_tensor(of == image_ids[covering[part]][:, None])
            found[part, 1] = listed.gather(1, sq.masked_fill(covering_image, float("inf")).argmin(1, keepdim=True)
                                           )[:, 0].numpy()
            sq[torch.as_tensor(of == own)] = float("inf")
            best, at = sq.min(1)
            to_cover = rows[cover].sub_(x).square_().sum(1).sqrt_()
            beyond = (torch.from_numpy(self.reach[covering[part]]) - to_cover).clamp_(min=0).square_()
            high[part] = best.numpy() * (1 + _BOUND_MARGIN)
            low[part] = torch.minimum(best, beyond).numpy() * (1 - _BOUND_MARGIN)
            found[part, 0] = listed.gather(1, at[:, None])[:, 0].numpy()
        return low, high, found


def bounded_peak_scores(features: torch.Tensor, index: BankIndex, cover: torch.Tensor, refill: RefillLike,
                        images: np.ndarray, rule: ImageRule, *, step: int, progress: Advance,
                        components: int = COMPONENTS, neighbours: int = NEIGHBOURS, refine: float = REFINE_SHARE
                        ) -> tuple[np.ndarray, ImageRule]:
    """The peak rule's scores ``(len(images),)`` of calibration ``images`` (k = 1: a patch scores its squared
    distance to the nearest entry of another image, or of its refill) and the rule with its cell norm. ``cover``
    holds each training patch's covering entry (the coreset's record)."""
    _, patches, dim = features.shape
    rows = index.rows()
    bank = torch.from_numpy(rows)
    neighbourhood = EntryNeighbours(rows, neighbours)
    measured = np.repeat(norm_tiles(len(images), patches // rule.cells, step), rule.cells, axis=1)
    low = np.empty((len(images), patches), dtype=np.float32)
    high = np.empty_like(low)
    # Three passes over the images, a third of the work each.
    for position, i in enumerate(images):
        found = np.empty((patches, 2), dtype=np.int64)
        # The norm's patches are searched exactly in any case, and that search finds the refill's candidates too.
        exact_part, bounded = np.flatnonzero(measured[position]), np.flatnonzero(~measured[position])
        points = features[i][torch.as_tensor(bounded)]
        low[position, bounded], high[position, bounded], found[bounded] = neighbourhood.bounds(
            points, cover[i * patches + bounded].numpy(), bank, index.image_ids, i)
        exact_part = np.concatenate([exact_part, bounded[np.isinf(high[position, bounded])]])
        dist, found[exact_part] = index.search_leave_own_out(features[i][torch.as_tensor(exact_part)].float(), 1,
                                                             np.full(len(exact_part), i))
        low[position, exact_part] = high[position, exact_part] = dist[:, 0]
        for lo in range(0, patches, _ROWS_PER_BOUND):
            chunk = np.arange(lo, min(lo + _ROWS_PER_BOUND, patches))
            refill.bound(i * patches + chunk, found[chunk])
        progress(1 / 3)
    refill.settle()
    entries = [refill.entries(position) for position in range(len(images))]
    mean, basis, _ = principal_components(rows, min(components, dim))
    centre, axes = torch.from_numpy(mean), torch.from_numpy(basis)

    def in_components(points: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(points), axes.shape[1])
        # A few thousand rows at a time, in cache: 6x faster than the whole image at once at 2048 px.
        for lo in range(0, len(points), _ROWS_IN_CACHE):
            torch.mm(points[lo:lo + _ROWS_IN_CACHE] - centre, axes, out=out[lo:lo + _ROWS_IN_CACHE])
        return out

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

    def measure(wanted: np.ndarray) -> np.ndarray:
        """Measure ``wanted``; their upper bounds before."""
        before = high[wanted]
        low[wanted] = high[wanted] = search(wanted)
        exact[wanted] = True
        return before

    def peak_map(scores: np.ndarray) -> np.ndarray:
        return frame_map(norm.standardise(scores[None])[0], rule.grid, rule.geometry, sigma_px=rule.sigma_px)

    def under(pixels: np.ndarray | tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return np.flatnonzero(patches_under(pixels, rule.grid, rule.geometry, sigma_px=rule.sigma_px) & ~exact)

    bounded = np.flatnonzero(~exact)
    if len(bounded):  # none when the norm measured every tile (a frame of one tile)
        measure(bounded[np.argsort(high[bounded])[::-1][:max(1, int(refine * len(low)))]])
    # The pixel with the highest upper bound is the peak once every patch under it is measured: its value is then
    # exact, and every other pixel lies at or below its upper bound. Measuring under it a few times finds the peak
    # where the upper bounds are tight around it, however loose the lower bounds elsewhere.
    top = peak_map(high)
    for _ in range(_PEAK_ROUNDS):
        highest = tuple(np.atleast_1d(at) for at in np.unravel_index(top.argmax(), top.shape))
        if not len(wanted := under(highest)):
            return float(peak_map(low).max())
        before = measure(wanted)
        add_patches(top, wanted, norm.change(wanted, before, high[wanted]), rule.grid, rule.geometry,
                    sigma_px=rule.sigma_px)
    floor = float(peak_map(low).max())
    # Only a pixel whose upper bound exceeds the peak's lower bound can raise it. Once every patch under those pixels
    # is measured, their values are exact and every other pixel lies at or below the floor, so the peak of the lower
    # bounds is the peak: one round of measuring is enough.
    if not len(wanted := under(top > floor)):
        return floor
    measure(wanted)
    return float(peak_map(low).max())
