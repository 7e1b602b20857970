"""Calibration estimators that lost to refill on every realistic set (BENCHMARKS.md), kept as experiments.

``leave-own-out``  *all* patches against the bank without the image's own entries. Biased high: the
                   removed entries also covered other images' patches, and a coreset fitted without
                   the image would have put entries from those images there instead.
``cross-fit``      K folds: each fold is scored with all patches against a bank refitted, with the real
                   bank's coreset settings, on the other folds. Exact for K = n (the jackknife); for
                   smaller K the banks see fewer images, so it is biased high. Costs K coreset fits.

``benchmarks/calibration.py`` compares them with eagle's estimators (``eagle_cli/expert/calibration.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from eagle_cli.errors import ParameterError
from eagle_cli.expert.calibration import Calibration, own_out_search
from eagle_cli.expert.coreset import coreset_size, select_coreset
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.params import BankParams
from eagle_cli.progress import Advance


def leave_own_out_scores(features: torch.Tensor, index: BankIndex, images: np.ndarray, *, knn_k: int,
                         progress: Advance) -> Calibration:
    """Score all patches of each of ``images`` against the bank without that image's entries."""
    dists = own_out_search(features, index, images, knn_k=knn_k, progress=progress)
    return Calibration(np.asarray(images), patch_scores(dists))


def fold_assignment(n_images: int, folds: int, *, seed: int) -> np.ndarray:
    """Each image's fold, ``(n,)``: a seeded shuffle dealt round-robin, so fold sizes differ by at most one."""
    if not 2 <= folds <= n_images:
        raise ParameterError(f"{folds} folds: cross-fitting needs between 2 and the number of training images "
                             f"({n_images}) folds.")
    fold = np.empty(n_images, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n_images)] = np.arange(n_images) % folds
    return fold


def cross_fit_scores(features: torch.Tensor, images: np.ndarray, *, folds: int, coreset: BankParams, seed: int,
                     progress: Advance) -> tuple[Calibration, np.ndarray]:
    """Score the ``images`` (sorted) of each fold with all patches against a bank refitted on the other folds with
    the real bank's settings ``coreset``; return the patch scores and each image's fold."""
    n_images, patches, dim = features.shape
    fold = fold_assignment(n_images, folds, seed=seed)
    smallest = n_images - int(np.bincount(fold).max())
    if coreset_size(smallest * patches, coreset.coreset_ratio) < coreset.knn_k:
        raise ParameterError(f"With {folds} folds, a fold's bank is fitted on {smallest} images and would hold "
                             f"fewer than k = {coreset.knn_k} entries; use fewer folds.")
    per_patch = np.empty((len(images), patches), dtype=np.float32)
    row_of = np.searchsorted(images, np.arange(n_images))
    scoring = np.zeros(n_images, dtype=bool)
    scoring[images] = True
    for f in range(folds):
        kept, held = np.flatnonzero(fold != f), np.flatnonzero((fold == f) & scoring)
        train = features[torch.as_tensor(kept)].reshape(-1, dim).float()
        selected = select_coreset(train, coreset.coreset_ratio, proj_dim=coreset.proj_dim, n_starts=coreset.n_starts,
                                  init=coreset.init, generator=torch.Generator().manual_seed(seed + f + 1),
                                  updates=coreset.coreset_updates).selected
        bank = BankIndex(train[selected], torch.as_tensor(kept)[selected // patches], backend="faiss",
                         device=torch.device("cpu"))
        del train
        for start in range(0, len(held), 8):
            group = held[start:start + 8]
            dist, _ = bank.search(features[torch.as_tensor(group)].reshape(-1, dim), coreset.knn_k)
            per_patch[row_of[group]] = patch_scores(dist.reshape(len(group), patches, coreset.knn_k))
            progress(len(group))
    return Calibration(np.asarray(images), per_patch), fold
