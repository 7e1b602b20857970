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
calibration of thousands of images linear in their number. Every function returns the patch scores
of the images scored; the image rule (``expert/image_rule.py``) turns them into image scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eagle_cli.expert.coreset import Coreset, project, projection
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.params import BankParams, CalibrationParams
from eagle_cli.progress import Advance

#: Images whose patches go to faiss in one search: large enough to keep BLAS busy, small enough
#: that the float32 copy of the queries (8 × 784 × 1024 × 4 B = 26 MB) stays small next to the bank.
_IMAGES_PER_SEARCH = 8


@dataclass(frozen=True)
class Calibration:
    """The patch scores ``(len(images), P) float32`` of the training images scored, ``images`` (sorted);
    NaN for a patch an estimator does not score, a whole row for an image it leaves out."""

    images: np.ndarray
    per_patch: np.ndarray
    fallback_rows: int = 0

    def per_image(self, scores: np.ndarray, n_images: int) -> np.ndarray:
        """Image ``scores`` of the images scored, in their order, placed among all ``n_images`` (NaN elsewhere)."""
        placed = np.full(n_images, np.nan)
        placed[self.images] = scores
        return placed


def _groups(images: list[int] | np.ndarray) -> list[list[int]]:
    images = list(images)
    return [images[start:start + _IMAGES_PER_SEARCH] for start in range(0, len(images), _IMAGES_PER_SEARCH)]


def sample_images(n_images: int, count: int, *, seed: int) -> np.ndarray:
    """The training images a calibration scores, sorted: all when ``count >= n_images``, else a seeded sample.

    A random sample of exchangeable images is itself exchangeable with new good parts, so the conformal
    guarantee holds for the ``count`` images scored.
    """
    if count >= n_images:
        return np.arange(n_images)
    return np.sort(np.random.default_rng(seed).choice(n_images, count, replace=False))


def reference_scores(features: torch.Tensor, index: BankIndex, unselected: torch.Tensor, images: np.ndarray, *,
                     knn_k: int, min_unselected: int, extra: int, progress: Advance) -> Calibration:
    """Score the unselected patches ``unselected (n, P) bool`` of ``images``; leave out images with fewer than
    ``min_unselected``."""
    counts = unselected.sum(1)
    usable = [int(i) for i in images if counts[i] >= min_unselected]
    row_of = {int(i): row for row, i in enumerate(images)}
    per_patch = np.full((len(images), features.shape[1]), np.nan, dtype=np.float32)
    fallback_rows = 0
    progress(len(images) - len(usable))
    for group in _groups(usable):
        queries = torch.cat([features[i][unselected[i]] for i in group])
        owners = np.repeat(group, [int(counts[i]) for i in group])
        dist, _, fallback = index.search_leave_own_out(queries, knn_k, owners, extra=extra)
        fallback_rows += fallback
        bounds = np.cumsum([0] + [int(counts[i]) for i in group])
        for i, lo, hi in zip(group, bounds[:-1], bounds[1:], strict=True):
            per_patch[row_of[i], unselected[i].numpy()] = patch_scores(dist[lo:hi])
        progress(len(group))
    return Calibration(np.asarray(images), per_patch, fallback_rows)


def own_out_search(features: torch.Tensor, index: BankIndex, images: np.ndarray, *, knn_k: int, extra: int,
                    progress: Advance) -> tuple[np.ndarray, int]:
    """Every patch of ``images`` against the other images' entries: distances ``(len(images), P, k)`` and the
    number of fallback rows."""
    _, patches, dim = features.shape
    dists = np.empty((len(images), patches, knn_k), dtype=np.float32)
    fallback_rows = 0
    for lo in range(0, len(images), _IMAGES_PER_SEARCH):
        group = images[lo:lo + _IMAGES_PER_SEARCH]
        queries = features[torch.as_tensor(group)].reshape(-1, dim)
        dist, _, fallback = index.search_leave_own_out(queries, knn_k, np.repeat(group, patches), extra=extra)
        dists[lo:lo + len(group)] = dist.reshape(len(group), patches, knn_k)
        fallback_rows += fallback
        progress(len(group))
    return dists, fallback_rows


def refill_scores(features: torch.Tensor, index: BankIndex, cover: Coreset, images: np.ndarray, *, knn_k: int,
                  proj_dim: int, generator: torch.Generator, extra: int, progress: Advance) -> Calibration:
    """Leave-own-out with the removed entries' orphans refilled (see the module docstring).

    ``cover`` is the bank's coreset as fit-bank recorded it. The refill continues its greedy in its own
    space: ``generator`` must be seeded as the bank's was, so the random projection is the same. Image
    i's orphans are the other images' patches covered by one of i's entries; they are refilled
    farthest-first until every one lies within the bank's covering radius r (the largest projected
    distance of any training patch to its covering entry): the cover a coreset of the other n − 1
    images reaches everywhere. Only the orphans of ``images`` are projected, a chunk at a time, so
    time and memory follow the images scored.
    """
    _, patches, dim = features.shape
    # Two passes over the images, each half of the work: progress advances by halves.
    dists, fallback_rows = own_out_search(features, index, images, knn_k=knn_k, extra=extra,
                                           progress=lambda n: progress(n / 2))
    flat = features.reshape(-1, dim)
    weight = projection(dim, proj_dim, generator=generator)
    bank = torch.cat([project(flat[rows], weight)
                      for rows in torch.split(cover.selected, _IMAGES_PER_SEARCH * patches)])
    projected = BankIndex(bank, torch.as_tensor(index.image_ids), backend="faiss", device=torch.device("cpu"))
    radius = float(cover.cover_sq_dist.max())
    covered_by = index.image_ids[cover.cover.numpy()]
    # An orphan is a patch covered by another image's entry: removing that image uncovers it.
    orphans = np.flatnonzero(np.isin(covered_by, images) & (covered_by != np.arange(len(covered_by)) // patches))
    orphan_of = covered_by[orphans]
    orphan_dist = np.empty(len(orphans), dtype=np.float32)
    for lo in range(0, len(orphans), _IMAGES_PER_SEARCH * patches):
        rows = slice(lo, lo + _IMAGES_PER_SEARCH * patches)
        dist, _, fallback = projected.search_leave_own_out(project(flat[torch.as_tensor(orphans[rows])], weight), 1,
                                                           orphan_of[rows], extra=extra)
        orphan_dist[rows] = dist[:, 0]
        fallback_rows += fallback
    order = np.argsort(orphan_of, kind="stable")
    starts, ends = (np.searchsorted(orphan_of[order], images, side=side) for side in ("left", "right"))
    per_patch = np.empty((len(images), patches), dtype=np.float32)
    for position, i in enumerate(images):
        members = order[starts[position]:ends[position]]
        patch_dists = dists[position]
        if len(members):
            chosen = _farthest_first(project(flat[torch.as_tensor(orphans[members])], weight),
                                     torch.from_numpy(orphan_dist[members]), radius)
            if chosen:
                refill = flat[torch.as_tensor(orphans[members[chosen]])].float()
                extra_dists = torch.cdist(features[i].float(), refill).square_().numpy()
                patch_dists = np.sort(np.concatenate([patch_dists, extra_dists], axis=1), axis=1)[:, :knn_k]
        per_patch[position] = patch_scores(patch_dists)
        progress(0.5)
    return Calibration(np.asarray(images), per_patch, fallback_rows)


def _farthest_first(points: torch.Tensor, sq_dist: torch.Tensor, radius: float) -> list[int]:
    """Greedy k-center: rows of ``points`` (squared distance ``sq_dist`` to their cover), each the one
    farthest from what covers it so far, until every row is within squared distance ``radius``."""
    sq_dist = sq_dist.clone()
    chosen = []
    while True:
        j = int(sq_dist.argmax())
        if sq_dist[j] <= radius:
            return chosen
        chosen.append(j)
        torch.minimum(sq_dist, ((points - points[j]) ** 2).sum(1), out=sq_dist)


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
                                min_unselected=params.min_unselected, extra=params.extra_neighbours,
                                progress=progress)
    # The bank's own projection: the same generator, seeded as the bank's selection was.
    return refill_scores(features, index, coreset, images, knn_k=bank.knn_k, proj_dim=bank.proj_dim,
                         generator=torch.Generator().manual_seed(seed), extra=params.extra_neighbours,
                         progress=progress)
