"""Approximate greedy coreset (k-center) selection on a seeded random projection.

Reference parity (eagle-method.md A.4): features are projected to ``proj_dim`` by a bias-free
linear map drawn uniformly in ±1/√D; ``n_starts`` starting points chosen by ``init``; the
distance-to-coreset vector starts as each point's *mean* Euclidean distance to those points; each
step takes the farthest point and lowers every distance to it.

Where we differ: the projection comes from the caller's generator (seeded per category), and each
step skips points that the triangle inequality proves cannot move — a point whose current nearest
coreset member c satisfies d(c, new) ≥ 2·d(point, c) cannot get closer to the new member. The
selection is the same as the brute-force loop's; the work per step shrinks as the coreset grows.
All buffers are allocated once.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from eagle_cli.errors import ParameterError

INIT_STRATEGIES = ("center_farthest", "pca_extremes", "random")
_CHUNK = 1 << 15
# Relative slack on the pruning test, so rounding in the squared-distance expansion never prunes
# a point the exact loop would update.
_PRUNE_SLACK = 1e-4


def coreset_size(n_points: int, ratio: float) -> int:
    """Number of coreset members, ``floor(n_points * ratio)``; refuses an empty coreset."""
    if not 0 < ratio <= 1:
        raise ParameterError(f"coreset ratio must be in (0, 1], got {ratio}.")
    size = int(math.floor(n_points * ratio))
    if size < 1:
        raise ParameterError(
            f"coreset ratio {ratio} of {n_points} patch features selects no point; raise --coreset-ratio or add images."
        )
    return size


def projection(dim: int, proj_dim: int, *, generator: torch.Generator) -> torch.Tensor:
    """The seeded bias-free map from ``dim`` to ``proj_dim``, ``(dim, proj_dim) float32`` uniform in ±1/√dim."""
    if proj_dim < 1:
        raise ParameterError(f"projection dimension must be positive, got {proj_dim}.")
    bound = 1.0 / math.sqrt(dim)
    return (torch.rand(dim, proj_dim, generator=generator) * 2 - 1) * bound


def project(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Project ``(N, D)`` features (any float dtype) by ``weight`` to ``(N, proj_dim) float32``, in chunks."""
    out = torch.empty(features.shape[0], weight.shape[1])
    for start in range(0, features.shape[0], _CHUNK):
        stop = start + _CHUNK
        torch.mm(features[start:stop].float(), weight, out=out[start:stop])
    return out


def _sq_dist_to(points: torch.Tensor, sq_norms: torch.Tensor, centre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance of every row to ``centre``, written into ``out`` (clamped at 0)."""
    torch.mv(points, centre, out=out)
    return out.mul_(-2).add_(sq_norms).add_(centre.dot(centre)).clamp_(min=0)


def starting_points(proj: torch.Tensor, n_starts: int, init: str, *, generator: torch.Generator) -> torch.Tensor:
    """Indices of the ``n_starts`` starting points (clipped to [1, N]) by strategy ``init``."""
    n = proj.shape[0]
    k = max(1, min(n_starts, n))
    if init == "center_farthest":
        mean = proj.mean(0)
        first = int(((proj - mean) ** 2).sum(1).argmin())
        dist = ((proj - proj[first]) ** 2).sum(1)
        dist[first] = -1
        others = torch.topk(dist, k - 1).indices if k > 1 else torch.empty(0, dtype=torch.long)
        return torch.cat([torch.tensor([first]), others])
    if init == "pca_extremes":
        centred = proj - proj.mean(0)
        direction = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]
        order = torch.argsort(centred @ direction)
        ranks = torch.linspace(0, n - 1, max(k, 2)).round().long()
        picks = [int(order[-1]), int(order[0])] + [int(order[r]) for r in ranks[1:-1]]
        return torch.tensor(list(dict.fromkeys(picks))[:k])
    if init == "random":
        return torch.randperm(n, generator=generator)[:k]
    raise ParameterError(f"Unknown coreset init {init!r}; choose one of {', '.join(INIT_STRATEGIES)}.")


def select_coreset(
    features: torch.Tensor,
    ratio: float,
    *,
    proj_dim: int = 128,
    n_starts: int = 10,
    init: str = "center_farthest",
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Select ``floor(N * ratio)`` rows of ``(N, D)`` features; return their indices in selection order."""
    n = features.shape[0]
    size = coreset_size(n, ratio)
    proj = project(features, projection(features.shape[1], proj_dim, generator=generator))
    sq_norms = (proj * proj).sum(1)
    buf = torch.empty(n)
    # Distance to the coreset starts as the mean (not squared) distance to the starting points;
    # the loop works on squared distances, which keeps argmax and min unchanged.
    nearest = torch.zeros(n)
    seeds = starting_points(proj, n_starts, init, generator=generator)
    for seed in seeds:
        nearest.add_(_sq_dist_to(proj, sq_norms, proj[seed], buf).sqrt_())
    nearest.div_(len(seeds)).square_()

    # owner[i] = coreset slot nearest to point i; slot `size` is a sentinel for "none yet",
    # whose centre distance is -1 so such points are always examined.
    owner = torch.full((n,), size, dtype=torch.long)
    members = torch.empty(size + 1, proj_dim)
    member_sq = torch.empty(size + 1)
    centre_dist = torch.full((size + 1,), -1.0)
    owner_dist = torch.empty(n)
    limit = torch.empty(n)
    selected = torch.empty(size, dtype=torch.long)
    half = n // 2
    gathered = torch.empty(half, proj_dim)
    gathered_sq = torch.empty(half)
    for step in range(size):
        j = int(nearest.argmax())
        selected[step] = j
        centre = proj[j]
        members[step] = centre
        member_sq[step] = sq_norms[j]
        _sq_dist_to(members[: step + 1], member_sq[: step + 1], centre, centre_dist[: step + 1])
        torch.index_select(centre_dist, 0, owner, out=owner_dist)
        torch.mul(nearest, 4.0 * (1.0 + _PRUNE_SLACK), out=limit)
        candidates = torch.nonzero(owner_dist < limit).squeeze(1)
        if len(candidates) > half:
            # Early steps examine most points: a plain pass beats gathering them.
            _sq_dist_to(proj, sq_norms, centre, buf)
            owner.masked_fill_(buf < nearest, step)
            torch.minimum(nearest, buf, out=nearest)
        else:
            k = len(candidates)
            rows = torch.index_select(proj, 0, candidates, out=gathered[:k])
            dist = _sq_dist_to(rows, torch.index_select(sq_norms, 0, candidates, out=gathered_sq[:k]), centre, buf[:k])
            closer = dist < nearest[candidates]
            moved = candidates[closer]
            nearest[moved] = dist[closer]
            owner[moved] = step
        if progress is not None:
            progress(step + 1)
    return selected
