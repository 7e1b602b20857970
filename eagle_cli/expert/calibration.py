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

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from eagle_cli.expert.coreset import Coreset, project, projection
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.params import BankParams, CalibrationParams
from eagle_cli.progress import Advance

#: Patches that go to faiss in one search: enough to keep BLAS busy, few enough that the float32 queries
#: (8192 × 1024 × 4 B ≈ 34 MB) stay small next to the bank however many patches an image has: a search group
#: counted in images grew with the image (≈ 0.7 GB at 2048 px).
_ROWS_PER_SEARCH = 8192
#: Orphans whose distance bound is computed at once: 512 × 33 candidate entries × 128 dims × 4 B ≈ 9 MB.
_ROWS_PER_BOUND = 512
#: A bound must lie this far (relatively) inside the radius to settle an orphan: float rounding of a bound is
#: ~1e-5 relatively, so no orphan a search would place beyond the radius is settled.
_BOUND_MARGIN = 1e-4
#: Refill distances computed at once (32 MB of float32).
_REFILL_DISTANCES = 1 << 23


@dataclass(frozen=True)
class Calibration:
    """The patch scores ``(len(images), P) float32`` of the training images scored, ``images`` (sorted);
    NaN for a patch an estimator does not score, a whole row for an image it leaves out."""

    images: np.ndarray
    per_patch: np.ndarray

    def per_image(self, scores: np.ndarray, n_images: int) -> np.ndarray:
        """Image ``scores`` of the images scored, in their order, placed among all ``n_images`` (NaN elsewhere)."""
        placed = np.full(n_images, np.nan)
        placed[self.images] = scores
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
    """Leave-own-out with the removed entries' orphans refilled (see the module docstring).

    ``cover`` is the bank's coreset as fit-bank recorded it. The refill continues its greedy in its own
    space: ``generator`` must be seeded as the bank's was, so the random projection is the same. Image
    i's orphans are the other images' patches covered by one of i's entries; they are refilled
    farthest-first until every one lies within the bank's covering radius r (the largest projected
    distance of any training patch to its covering entry): the cover a coreset of the other n − 1
    images reaches everywhere. Only orphans farther than r from every entry of the other images matter, and
    an entry within r settles an orphan without a search of its own: the candidates are the entries the
    leave-own-out search found for it and the ``neighbours`` entries nearest its covering entry (found once
    for the bank). They settle nearly every orphan (99.1 % at 2048 px with 32 neighbours, where every entry
    settles 99.7 %: BENCHMARKS.md), so the refill costs a small fraction of a second search; the scores do
    not depend on ``neighbours``, only the time.
    """
    _, patches, dim = features.shape
    flat = features.reshape(-1, dim)
    weight = projection(dim, proj_dim, generator=generator)
    bank = torch.cat([project(flat[rows], weight) for rows in torch.split(cover.selected, _ROWS_PER_SEARCH)])
    radius = float(cover.cover_sq_dist.max())
    covered_by = index.image_ids[cover.cover.numpy()]
    # An orphan is a patch covered by another image's entry: removing that image uncovers it.
    is_orphan = np.isin(covered_by, images) & (covered_by != np.arange(len(covered_by)) // patches)
    orphans = np.flatnonzero(is_orphan)
    orphan_of = covered_by[orphans]
    # The entries nearest each entry that covers an orphan (itself among them): an orphan's candidates.
    near_cover = np.zeros((len(bank), min(neighbours, len(bank))), dtype=np.int64)
    covering = np.unique(cover.cover.numpy()[orphans])
    if near_cover.shape[1] and len(covering):
        near_cover[covering] = faiss.knn(bank[torch.as_tensor(covering)].numpy(), bank.numpy(), near_cover.shape[1])[1]
    # Each orphan's squared projected distance to the nearest entry not from the image whose entry covers it,
    # or an upper bound of it where that is enough to know it lies within the radius.
    orphan_dist = np.full(len(orphans), np.inf, dtype=np.float32)

    def bound(chunk: np.ndarray, found: np.ndarray) -> None:
        hit = is_orphan[chunk]
        at = np.searchsorted(orphans, chunk[hit])
        listed = np.concatenate([found[hit], near_cover[cover.cover[chunk[hit]].numpy()]], axis=1)
        points, excluded = project(flat[torch.as_tensor(chunk[hit])], weight), orphan_of[at]
        # The first candidate of another image settles most orphans, for a fraction of the work of all of
        # them; the nearest of all candidates is worked out only where it does not.
        dist = _first_listed(points, bank, listed, index.image_ids, excluded)
        unsettled = np.flatnonzero(dist > radius * (1 - _BOUND_MARGIN))
        dist[unsettled] = _nearest_listed(points[torch.as_tensor(unsettled)], bank, listed[unsettled],
                                          index.image_ids, excluded[unsettled])
        orphan_dist[at] = dist

    # Two passes over the images, each half of the work: progress advances by halves.
    dists = own_out_search(features, index, images, knn_k=knn_k, progress=lambda n: progress(n / 2), seen=bound)
    # A bound within the radius (less a margin for float rounding) settles an orphan; the others are searched.
    searched = np.flatnonzero(orphan_dist > radius * (1 - _BOUND_MARGIN))
    projected = BankIndex(bank, torch.as_tensor(index.image_ids), backend="faiss", device=torch.device("cpu"))
    for lo in range(0, len(searched), _ROWS_PER_SEARCH):
        rows = searched[lo:lo + _ROWS_PER_SEARCH]
        dist, _ = projected.search_leave_own_out(project(flat[torch.as_tensor(orphans[rows])], weight), 1,
                                                 orphan_of[rows])
        orphan_dist[rows] = dist[:, 0]
    order = np.argsort(orphan_of, kind="stable")
    starts, ends = (np.searchsorted(orphan_of[order], images, side=side) for side in ("left", "right"))
    per_patch = np.empty((len(images), patches), dtype=np.float32)
    for position, i in enumerate(images):
        members = order[starts[position]:ends[position]]
        # Farthest-first only ever picks orphans beyond the radius, and only those picked move the others'
        # distances: the orphans within it can be left out of the refill.
        members = members[orphan_dist[members] > radius]
        patch_dists = dists[position]
        if len(members):
            chosen = _farthest_first(project(flat[torch.as_tensor(orphans[members])], weight),
                                     torch.from_numpy(orphan_dist[members]), radius)
            refill = flat[torch.as_tensor(orphans[members[chosen]])].float()
            patch_dists = np.sort(np.concatenate([patch_dists, _nearest_refill(features[i], refill, knn_k)], axis=1),
                                  axis=1)[:, :knn_k]
        per_patch[position] = patch_scores(patch_dists)
        progress(0.5)
    return Calibration(np.asarray(images), per_patch)


def _nearest_refill(points: torch.Tensor, refill: torch.Tensor, k: int) -> np.ndarray:
    """Squared distances ``(P, min(k, R))`` from each of ``points (P, D)`` to its nearest rows of ``refill (R, D)``,
    for a few million distances at a time: the whole P × R matrix grows with the image and the refill (≈ 0.4 GB
    for a 2048 px image and a thousand refilled entries)."""
    rows = max(1, _REFILL_DISTANCES // len(refill))
    return torch.cat([torch.cdist(points[lo:lo + rows].float(), refill).square_()
                      .topk(min(k, len(refill)), dim=1, largest=False).values
                      for lo in range(0, len(points), rows)]).numpy()


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
                                min_unselected=params.min_unselected, progress=progress)
    # The bank's own projection: the same generator, seeded as the bank's selection was.
    return refill_scores(features, index, coreset, images, knn_k=bank.knn_k, proj_dim=bank.proj_dim,
                         generator=torch.Generator().manual_seed(seed), neighbours=params.extra_neighbours,
                         progress=progress)
