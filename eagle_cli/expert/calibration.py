"""Calibration scores: what good images the expert has never seen would score, estimated from the training images.

DBT fits τ on normal scores, so those scores must be distributed like the scores of new good
parts. Every training image is also in the bank, so each estimator scores an image against a bank
that "has not seen" it:

``reference``  (eagle-method.md A.7, parity) the image's *unselected* patches against the bank
               without the image's own entries. Biased low: the coreset took the image's most
               unusual patches, and what is left has close neighbours in the other images.
``refill``     *all* patches against the bank without the image's own entries, plus the entries a
               coreset of the other images would have put in their place: the other images' patches
               that the removed entries covered ("orphans") are refilled farthest-first, with as many
               entries as a coreset of the other n − 1 images would have to spare. The coreset recorded
               which entry covers each training patch, so this costs about one search of the scored
               images' patches. Unbiased within noise on realistic data (BENCHMARKS.md, where the
               estimators that lost to it — all patches without the refill, and K-fold refits — are
               kept as experiments in ``benchmarks/estimators.py``).

Each scores the training images it is given (``images``: all, or a seeded sample of them — see
:func:`sample_images`): the work grows with the bank times the images scored, so a cap keeps a
calibration of thousands of images linear in their number. :func:`calibrate` returns the patch scores
of the images scored; the image rule (``expert/image_rule.py``) turns them into image scores.
:func:`calibrated_scores` gives the image scores themselves: under the peak rule it searches exactly
only the patches the rule's cell norm and each image's peak need (``expert/peak_calibration.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from eagle_cli.expert.coreset import Coreset, project, projection
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.expert.knn import BankIndex, nearest_rows
from eagle_cli.expert.peak_calibration import bounded_peak_scores
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.params import BankParams, CalibrationParams
from eagle_cli.progress import Advance

#: Patches that go to faiss in one search: enough to keep BLAS busy, few enough that the float32 queries
#: (8192 × 1024 × 4 B ≈ 34 MB) stay small next to the bank however many patches an image has: a search group
#: counted in images grew with the image (≈ 0.7 GB at 2048 px).
_ROWS_PER_SEARCH = 8192
#: Orphans whose distance bound is computed at once: 128 × 33 candidate entries × 128 dims × 4 B ≈ 2 MB, which stays
#: in cache (1.5× faster than 512 at once).
_ROWS_PER_BOUND = 128
#: A bound must lie this far (relatively) inside the radius to settle an orphan: float rounding of a bound is
#: ~1e-5 relatively, so no orphan a search would place beyond the radius is settled.
_BOUND_MARGIN = 1e-4


@dataclass(frozen=True)
class Calibration:
    """The patch scores ``(len(images), P) float32`` of the training images scored, ``images`` (sorted);
    NaN for a patch an estimator does not score, a whole row for an image it leaves out."""

    images: np.ndarray
    per_patch: np.ndarray

    def per_image(self, scores: np.ndarray, n_images: int) -> np.ndarray:
        """Image ``scores`` of the images scored, in their order, placed among all ``n_images`` (NaN elsewhere)."""
        return _placed(self.images, scores, n_images)


@dataclass(frozen=True)
class Calibrated:
    """The image ``scores`` of the training images scored, ``images`` (sorted), and the image ``rule`` with what it
    measured on them."""

    images: np.ndarray
    scores: np.ndarray
    rule: ImageRule

    def per_image(self, n_images: int) -> np.ndarray:
        """The scores placed among all ``n_images`` (NaN where not scored or left out)."""
        return _placed(self.images, self.scores, n_images)


def _placed(images: np.ndarray, scores: np.ndarray, n_images: int) -> np.ndarray:
    placed = np.full(n_images, np.nan)
    placed[images] = scores
    return placed


def sample_images(n_images: int, count: int, *, seed: int) -> np.ndarray:
    """The training images a calibration scores, sorted: all when ``count >= n_images``, else a seeded sample.

    A random sample of exchangeable images is itself exchangeable with new good parts, so the conformal
    guarantee holds for the ``count`` images scored.
    """
    if count >= n_images:
        return np.arange(n_images)
    return np.sort(np.random.default_rng(seed).choice(n_images, count, replace=False))


def reference_scores(features: torch.Tensor, index: BankIndex, unselected: torch.Tensor, images: np.ndarray, *,
                     knn_k: int, min_unselected: int, progress: Advance) -> Calibration:
    """Score the unselected patches ``unselected (n, P) bool`` of ``images``; leave out images with fewer than
    ``min_unselected``."""
    _, patches, dim = features.shape
    counts = unselected.sum(1)
    usable = np.asarray([row for row, i in enumerate(images) if counts[i] >= min_unselected], dtype=np.int64)
    per_patch = np.full((len(images), patches), np.nan, dtype=np.float32)
    progress(len(images) - len(usable))
    # Each patch to score as (its image's row in ``images``) × P + its patch: its place in ``per_patch``.
    positions = np.concatenate([row * patches + np.flatnonzero(unselected[images[row]].numpy()) for row in usable]
                               or [np.empty(0, dtype=np.int64)])
    flat = features.reshape(-1, dim)
    for lo in range(0, len(positions), _ROWS_PER_SEARCH):
        chunk = positions[lo:lo + _ROWS_PER_SEARCH]
        owners = np.asarray(images)[chunk // patches]
        dist, _ = index.search_leave_own_out(flat[torch.as_tensor(owners * patches + chunk % patches)], knn_k, owners)
        per_patch[chunk // patches, chunk % patches] = patch_scores(dist)
        progress(len(usable) * len(chunk) / len(positions))
    return Calibration(np.asarray(images), per_patch)


def own_out_search(features: torch.Tensor, index: BankIndex, images: np.ndarray, *, knn_k: int, progress: Advance,
                   seen: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
    """Every patch of ``images`` against the other images' entries: distances ``(len(images), P, k)``. ``seen``,
    if given, gets each search's patches (rows of the flattened features) and the bank rows found for them."""
    _, patches, dim = features.shape
    rows = (np.asarray(images, dtype=np.int64)[:, None] * patches + np.arange(patches)).ravel()
    dists = np.empty((len(rows), knn_k), dtype=np.float32)
    flat = features.reshape(-1, dim)
    for lo in range(0, len(rows), _ROWS_PER_SEARCH):
        chunk = rows[lo:lo + _ROWS_PER_SEARCH]
        dists[lo:lo + len(chunk)], found = index.search_leave_own_out(flat[torch.as_tensor(chunk)], knn_k,
                                                                      chunk // patches)
        if seen is not None:
            seen(chunk, found)
        progress(len(chunk) / patches)
    return dists.reshape(len(images), patches, knn_k)


def refill_scores(features: torch.Tensor, index: BankIndex, cover: Coreset, images: np.ndarray, *, knn_k: int,
                  proj_dim: int, generator: torch.Generator, neighbours: int, progress: Advance) -> Calibration:
    """Leave-own-out with the removed entries' orphans refilled (see the module docstring and :class:`Refill`)."""
    refill = Refill(features, index, cover, images, proj_dim=proj_dim, generator=generator, neighbours=neighbours)
    # Two passes over the images, each half of the work: progress advances by halves.
    dists = own_out_search(features, index, images, knn_k=knn_k, progress=lambda n: progress(n / 2), seen=refill.bound)
    refill.settle()
    per_patch = np.empty((len(images), features.shape[1]), dtype=np.float32)
    for position, i in enumerate(images):
        patch_dists = dists[position]
        if (entries := refill.entries(position)) is not None:
            patch_dists = np.sort(np.concatenate([patch_dists, nearest_rows(features[i], entries, knn_k)[0]], axis=1),
                                  axis=1)[:, :knn_k]
        per_patch[position] = patch_scores(patch_dists)
        progress(0.5)
    return Calibration(np.asarray(images), per_patch)


class Refill:
    """The entries a coreset of the other images would put in place of each scored image's own.

    ``cover`` is the bank's coreset as fit-bank recorded it. The refill continues its greedy in its own
    space: ``generator`` must be seeded as the bank's was, so the random projection is the same. Image
    i's orphans are the other images' patches covered by one of i's entries; they are refilled
    farthest-first until every one lies within the bank's covering radius r (the largest projected
    distance of any training patch to its covering entry): the cover a coreset of the other n − 1
    images reaches everywhere. Only orphans farther than r from every entry of the other images matter, and
    an entry within r settles an orphan without a search of its own: the candidates are the entries a
    leave-own-out search found for it (:meth:`bound`, given every scored patch) and the ``neighbours`` entries
    nearest its covering entry (found once for the bank). They settle nearly every orphan (99.1 % at 2048 px with
    32 neighbours, where every entry settles 99.7 %: BENCHMARKS.md), so the refill costs a small fraction of a
    second search; the scores do not depend on ``neighbours``, only the time.
    """

    def __init__(self, features: torch.Tensor, index: BankIndex, cover: Coreset, images: np.ndarray, *,
                 proj_dim: int, generator: torch.Generator, neighbours: int):
        _, self.patches, dim = features.shape
        self.flat, self.index, self.images = features.reshape(-1, dim), index, np.asarray(images)
        self.weight = projection(dim, proj_dim, generator=generator)
        self.cover = cover.cover
        self.bank = torch.cat([project(self.flat[rows], self.weight)
                               for rows in torch.split(cover.selected, _ROWS_PER_SEARCH)])
        self.radius = float(cover.cover_sq_dist.max())
        covered_by = index.image_ids[cover.cover.numpy()]
        # An orphan is a patch covered by another image's entry: removing that image uncovers it.
        self.is_orphan = np.isin(covered_by, images) & (covered_by != np.arange(len(covered_by)) // self.patches)
        self.orphans = np.flatnonzero(self.is_orphan)
        self.orphan_of = covered_by[self.orphans]
        # The entries nearest each entry that covers an orphan (itself among them): an orphan's candidates.
        self.near_cover = np.zeros((len(self.bank), min(neighbours, len(self.bank))), dtype=np.int64)
        covering = np.unique(cover.cover.numpy()[self.orphans])
        if self.near_cover.shape[1] and len(covering):
            self.near_cover[covering] = faiss.knn(self.bank[torch.as_tensor(covering)].numpy(), self.bank.numpy(),
                                                  self.near_cover.shape[1])[1]
        # Each orphan's squared projected distance to the nearest entry not from the image whose entry covers it,
        # or an upper bound of it where that is enough to know it lies within the radius.
        self.orphan_dist = np.full(len(self.orphans), np.inf, dtype=np.float32)

    def bound(self, chunk: np.ndarray, found: np.ndarray) -> None:
        """Bound the orphans among ``chunk`` (rows of the flattened features) by the bank rows ``found`` for them
        (any entries of other images than their own) and by their covering entry's neighbours."""
        hit = self.is_orphan[chunk]
        at = np.searchsorted(self.orphans, chunk[hit])
        listed = np.concatenate([found[hit], self.near_cover[self.cover[chunk[hit]].numpy()]], axis=1)
        points, excluded = project(self.flat[torch.as_tensor(chunk[hit])], self.weight), self.orphan_of[at]
        # The first candidate of another image settles most orphans, for a fraction of the work of all of
        # them; the nearest of all candidates is worked out only where it does not.
        dist = _first_listed(points, self.bank, listed, self.index.image_ids, excluded)
        unsettled = np.flatnonzero(dist > self.radius * (1 - _BOUND_MARGIN))
        dist[unsettled] = _nearest_listed(points[torch.as_tensor(unsettled)], self.bank, listed[unsettled],
                                          self.index.image_ids, excluded[unsettled])
        self.orphan_dist[at] = dist

    def settle(self) -> None:
        """Search the orphans no bound settled (within the radius, less a margin for float rounding)."""
        searched = np.flatnonzero(self.orphan_dist > self.radius * (1 - _BOUND_MARGIN))
        projected = BankIndex(self.bank, torch.as_tensor(self.index.image_ids), backend="faiss",
                              device=torch.device("cpu"))
        for lo in range(0, len(searched), _ROWS_PER_SEARCH):
            rows = searched[lo:lo + _ROWS_PER_SEARCH]
            dist, _ = projected.search_leave_own_out(project(self.flat[torch.as_tensor(self.orphans[rows])],
                                                             self.weight), 1, self.orphan_of[rows])
            self.orphan_dist[rows] = dist[:, 0]
        order = np.argsort(self.orphan_of, kind="stable")
        starts, ends = (np.searchsorted(self.orphan_of[order], self.images, side=side) for side in ("left", "right"))
        self._members = [order[lo:hi] for lo, hi in zip(starts, ends, strict=True)]

    def entries(self, position: int) -> torch.Tensor | None:
        """The refilled entries ``(R, D) float32`` of ``images[position]`` (after :meth:`settle`); None if none."""
        members = self._members[position]
        # Farthest-first only ever picks orphans beyond the radius, and only those picked move the others'
        # distances: the orphans within it can be left out of the refill.
        members = members[self.orphan_dist[members] > self.radius]
        if not len(members):
            return None
        chosen = _farthest_first(project(self.flat[torch.as_tensor(self.orphans[members])], self.weight),
                                 torch.from_numpy(self.orphan_dist[members]), self.radius)
        return self.flat[torch.as_tensor(self.orphans[members[chosen]])].float()


def _first_listed(points: torch.Tensor, bank: torch.Tensor, listed: np.ndarray, image_ids: np.ndarray,
                  excluded: np.ndarray) -> np.ndarray:
    """Each of ``points (m, d)``'s squared distance to the first of its ``listed (m, L)`` rows of ``bank`` not from
    image ``excluded[m]`` (an upper bound of :func:`_nearest_listed`); inf where every listed row is."""
    other = image_ids[listed] != excluded[:, None]
    first = torch.as_tensor(listed[np.arange(len(listed)), other.argmax(1)])
    out = (points - bank[first]).square_().sum(1).numpy()
    out[~other.any(1)] = np.inf
    return out


def _nearest_listed(points: torch.Tensor, bank: torch.Tensor, listed: np.ndarray, image_ids: np.ndarray,
                    excluded: np.ndarray) -> np.ndarray:
    """Each of ``points (m, d)``'s squared distance to the nearest of its ``listed (m, L)`` rows of ``bank`` not
    from image ``excluded[m]``; inf where every listed row is. Computed as the sum of squared differences, not
    from norms, so the value is accurate to float rounding of the distance itself."""
    out = np.empty(len(points), dtype=np.float32)
    # A few hundred rows at a time: the differences take rows × L × d floats.
    for lo in range(0, len(points), _ROWS_PER_BOUND):
        rows = slice(lo, lo + _ROWS_PER_BOUND)
        near = torch.as_tensor(listed[rows])
        sq = (points[rows, None, :] - bank[near]).square_().sum(2)
        sq[torch.as_tensor(image_ids[listed[rows]] == excluded[rows, None])] = float("inf")
        out[rows] = sq.min(1).values.numpy()
    return out


def _farthest_first(points: torch.Tensor, sq_dist: torch.Tensor, radius: float) -> list[int]:
    """Greedy k-center: rows of ``points`` (squared distance ``sq_dist`` to their cover), each the one
    farthest from what covers it so far, until every row is within squared distance ``radius``."""
    sq_dist = sq_dist.clone()
    norms = points.square().sum(1)
    chosen = []
    while True:
        j = int(sq_dist.argmax())
        if sq_dist[j] <= radius:
            return chosen
        chosen.append(j)
        # One product per pick instead of a pass each to subtract, square and sum (3× less memory traffic).
        torch.minimum(sq_dist, (norms + norms[j] - 2 * (points @ points[j])).clamp_(min=0), out=sq_dist)


def calibrated_scores(features: torch.Tensor, index: BankIndex, coreset: Coreset, bank: BankParams,
                      params: CalibrationParams, rule: ImageRule, *, seed: int, progress: Advance) -> Calibrated:
    """The image scores of :func:`calibrate`'s images under ``rule`` (its ``auto`` decided), and the rule with what it
    measured. The peak rule on the refill with k = 1 searches exactly only what its cell norm and its peaks need
    (``peak_calibration.py``); the scores are those of the patch scores of every patch, to float rounding."""
    step = params.norm_tile_step if params.calibration == "refill" else 1
    if rule.kind == "peak" and step > 1 and bank.knn_k == 1:
        images = sample_images(features.shape[0], params.sampled(features.shape[0]), seed=seed)
        refill = Refill(features, index, coreset, images, proj_dim=bank.proj_dim,
                        generator=torch.Generator().manual_seed(seed), neighbours=params.extra_neighbours)
        scores, rule = bounded_peak_scores(features, index, coreset.cover, refill, images, rule, step=step,
                                           progress=progress)
        return Calibrated(images, scores, rule)
    result = calibrate(features, index, coreset, bank, params, seed=seed, progress=progress)
    return Calibrated(result.images, *rule.calibrated(result.per_patch, step))


def calibrate(features: torch.Tensor, index: BankIndex, coreset: Coreset, bank: BankParams,
              params: CalibrationParams, *, seed: int, progress: Advance) -> Calibration:
    """Score the training images ``features (n, P, D)`` of a bank (its ``index``, its ``coreset`` and its settings
    ``bank``, selected with ``seed``) by ``params.calibration``: all, or the sample ``params`` asks for."""
    n_images, patches, _ = features.shape
    images = sample_images(n_images, params.sampled(n_images), seed=seed)
    if params.calibration == "reference":
        selected = torch.zeros(n_images * patches, dtype=torch.bool)
        selected[coreset.selected] = True
        return reference_scores(features, index, ~selected.reshape(n_images, patches), images, knn_k=bank.knn_k,
                                min_unselected=params.min_unselected, progress=progress)
    # The bank's own projection: the same generator, seeded as the bank's selection was.
    return refill_scores(features, index, coreset, images, knn_k=bank.knn_k, proj_dim=bank.proj_dim,
                         generator=torch.Generator().manual_seed(seed), neighbours=params.extra_neighbours,
                         progress=progress)
