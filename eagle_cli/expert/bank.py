"""The memory bank: a coreset of training patches, fitted or grown in memory (no I/O here).

``fit-bank`` and ``update-bank`` write what these functions return, and :meth:`Expert.fit` uses
them directly; both select with the same seed, so a bank fitted in memory equals the stage's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eagle_cli.errors import ParameterError
from eagle_cli.expert.coreset import Coreset, continue_coreset, coreset_size, grown_size, select_coreset
from eagle_cli.expert.knn import BankIndex
from eagle_cli.params import BankParams
from eagle_cli.progress import Advance


@dataclass(frozen=True)
class MemoryBank:
    """The bank rows ``(M, D) float32``, the coreset they were chosen by, and the settings that score with them.

    ``coreset.selected`` are the rows' places among the ``n_images × patches_per_image`` training patches;
    ``seed`` is the category's seed the selection (and so its projection) was drawn with.
    """

    rows: torch.Tensor
    coreset: Coreset
    patches_per_image: int
    n_images: int
    params: BankParams
    seed: int

    @property
    def image_ids(self) -> torch.Tensor:
        """The training image of each row, ``(M,) int64``."""
        return self.coreset.selected // self.patches_per_image

    @property
    def cover_radius(self) -> float:
        """The largest projected distance from a training patch to the row that covers it."""
        return float(self.coreset.cover_sq_dist.max().sqrt())

    def index(self, *, backend: str = "auto", device: torch.device | None = None) -> BankIndex:
        return BankIndex(self.rows, self.image_ids, backend=backend, device=device or torch.device("cpu"))


def fit_bank(features: torch.Tensor, params: BankParams, *, seed: int, progress: Advance | None = None) -> MemoryBank:
    """Select the coreset of training features ``(n, P, D)`` (float32 or float16, memory-mapped or not) with
    ``params`` decided for them (:meth:`BankParams.resolved`)."""
    if "auto" in (params.coreset_ratio, params.coreset_max, params.coreset_updates, params.image_score):
        raise ParameterError("The bank's automatic settings are decided by the features: pass "
                             "params.resolved(tiled=...) to fit_bank.")
    n_images, patches, dim = features.shape
    flat = features.reshape(-1, dim)
    size = coreset_size(flat.shape[0], params.coreset_ratio, params.coreset_max)
    if size < params.knn_k:
        raise ParameterError(f"The bank would hold {size} entries, fewer than --knn-k {params.knn_k}.")
    coreset = select_coreset(flat, params.coreset_ratio, proj_dim=params.proj_dim, n_starts=params.n_starts,
                             init=params.init, generator=torch.Generator().manual_seed(seed), progress=progress,
                             updates=params.coreset_updates, most=params.coreset_max)
    return MemoryBank(flat[coreset.selected].float(), coreset, patches, n_images, params, seed)


def grow_bank(features: torch.Tensor, previous: Coreset, params: BankParams, *, seed: int,
              progress: Advance | None = None) -> MemoryBank:
    """Grow a bank whose coreset ``previous`` covers the first images of ``features (n, P, D)`` to all of them:
    the greedy continued from the previous selection (the same bank as a greedy run seeded with it)."""
    n_images, patches, dim = features.shape
    flat = features.reshape(-1, dim)
    coreset = continue_coreset(flat, previous, params.coreset_ratio, proj_dim=params.proj_dim,
                               generator=torch.Generator().manual_seed(seed), progress=progress,
                               updates=params.coreset_updates, most=params.coreset_max)
    return MemoryBank(flat[coreset.selected].float(), coreset, patches, n_images, params, seed)


def members_to_add(n_images: int, patches: int, previous: Coreset, params: BankParams) -> int:
    """How many members growing a bank of ``previous`` to ``n_images`` images adds (for progress)."""
    return grown_size(n_images * patches, previous, params.coreset_ratio, params.coreset_max) - len(previous.selected)
