"""Approximate greedy coreset (k-center) selection on a seeded random projection.

Reference parity (eagle-method.md A.4): features are projected to ``proj_dim`` by a bias-free
linear map drawn uniformly in ±1/√D; ``n_starts`` starting points chosen by ``init``; the
distance-to-coreset vector starts as each point's *mean* Euclidean distance to those points; each
step takes the farthest point and lowers every distance to it.

Where we differ: the projection comes from the caller's generator (seeded per category), and the
loop runs in rounds (:class:`_Cover`): the greedy continues among the farthest points as long as
no other point can be its next choice, then all distances are updated against the round's new
members at once, skipping points the triangle inequality proves cannot move. The selection is the
step-by-step greedy's (tested against the plain loop); the work is matrix products instead of one
pass over every point per member. All large buffers are allocated once. The greedy already knows
each point's nearest member; it is returned (:class:`Coreset`) for the calibration to reuse.

Not the published selection, the default for tiled features only (BENCHMARKS.md measures what it costs):
``updates="lists"`` keeps the greedy's global choice of the farthest point but lowers distances only where a
new member can be near: the projected points are split into k-means lists of about ``ROWS_PER_LIST`` points,
and each new member updates the points of its ``PROBES`` nearest lists (the probing of an IVF index, applied
to the greedy's update). A point whose nearer member sits in an unprobed list keeps a larger distance than
it has, so it may be chosen although covered. The arithmetic per member is a fixed number of lists instead
of every point; a round still reads each list its members probe once, which at millions of points is most of
them. Its working copy of the projected points is float16, half the memory of float32 (the distances are
computed in float32): it picks other patches than a float32 copy would, as any other rounding or seed does, with
as tight a cover and image AUROC within the seeds' noise (BENCHMARKS.md, "The coreset's lists, searched for whom
they serve, and kept in float16").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from eagle_cli.errors import ParameterError

INIT_STRATEGIES = ("center_farthest", "pca_extremes", "random")
UPDATES = ("exact", "lists")
#: Points per k-means list, and lists each new member updates, with ``updates="lists"``. On the realistic
#: set these keep the covering radius and the image AUROC of exact updates (BENCHMARKS.md, "Fit at scale").
ROWS_PER_LIST = 3000
PROBES = 8
#: Points the lists' k-means trains on, per list (faiss samples as many itself from a larger set).
_POINTS_PER_CENTROID = 64
_CHUNK = 1 << 15
# Relative slack on the pruning test, so rounding in the squared-distance expansion never prunes
# a point the exact loop would update.
_PRUNE_SLACK = 1e-4


def coreset_size(n_points: int, ratio: float, most: int = 0) -> int:
    """Number of coreset members, ``floor(n_points * ratio)``, at most ``most`` (0: no limit); refuses an empty
    coreset."""
    if not 0 < ratio <= 1:
        raise ParameterError(f"coreset ratio must be in (0, 1], got {ratio}.")
    size = int(math.floor(n_points * ratio))
    if most:
        size = min(size, most)
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


def project(features: torch.Tensor, weight: torch.Tensor, *, order: torch.Tensor | None = None,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Project ``(N, D)`` features (any float dtype) by ``weight`` to ``(N, proj_dim)``, in float32 chunks kept as
    ``dtype``; with ``order``, row i of the result is the projection of ``features[order[i]]`` (computed in the
    same chunks, so with the same values, as without)."""
    out = torch.empty(features.shape[0], weight.shape[1], dtype=dtype)
    if order is not None:
        place = torch.empty_like(order)
        place[order] = torch.arange(len(order))
    for start in range(0, features.shape[0], _CHUNK):
        stop = start + _CHUNK
        rows = slice(start, stop) if order is None else place[start:stop]
        if order is None and dtype == torch.float32:
            torch.mm(features[start:stop].float(), weight, out=out[rows])
        else:
            out[rows] = torch.mm(features[start:stop].float(), weight).to(dtype)
    return out


def _sq_norms(proj: torch.Tensor) -> torch.Tensor:
    """Each row's squared norm, a chunk at a time (``proj * proj`` would be a second projection-sized tensor).

    The squares go through one buffer: a fresh one per chunk, freed between the small results, could leave the
    heap fragmented (seen: 0.8 GB more at the peak for 1.9 M rows, in some runs and not others).
    """
    out = torch.empty(proj.shape[0])
    buf = torch.empty(min(_CHUNK, proj.shape[0]), proj.shape[1])
    for lo in range(0, proj.shape[0], _CHUNK):
        chunk = proj[lo:lo + _CHUNK]
        torch.sum(buf[:len(chunk)].copy_(chunk).square_(), 1, out=out[lo:lo + len(chunk)])
    return out


def _in_float32(points: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows) of ``points`` in float32: float32 points at once, float16 ones (the working copy of list
    updates) a chunk at a time."""
    if points.dtype == torch.float32:
        yield 0, points
        return
    for lo in range(0, len(points), _CHUNK):
        yield lo, points[lo:lo + _CHUNK].float()


def _mv(points: torch.Tensor, vector: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``points @ vector`` into ``out``."""
    for lo, rows in _in_float32(points):
        torch.mv(rows, vector, out=out[lo:lo + len(rows)])
    return out


def _mean(points: torch.Tensor) -> torch.Tensor:
    """The mean row, float32 (of float16 points, the chunks' float32 sums added in float64)."""
    if points.dtype == torch.float32:
        return points.mean(0)
    return (sum(rows.sum(0).double() for _, rows in _in_float32(points)) / len(points)).float()


def _gram(points: torch.Tensor) -> torch.Tensor:
    """``pointsᵀ points``, float32."""
    return sum(rows.T @ rows for _, rows in _in_float32(points))


def _sq_dist_to(points: torch.Tensor, sq_norms: torch.Tensor, centre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance of every row to ``centre``, written into ``out`` (clamped at 0)."""
    _mv(points, centre, out)
    return out.mul_(-2).add_(sq_norms).add_(centre.dot(centre)).clamp_(min=0)


def starting_points(proj: torch.Tensor, n_starts: int, init: str, *, generator: torch.Generator) -> torch.Tensor:
    """Indices of the ``n_starts`` starting points (clipped to [1, N]) by strategy ``init``.

    Distances and the covariance are expanded (‖x‖² − 2x·c + ‖c‖², XᵀX − n·μμᵀ) so no (N, proj_dim)
    temporary is made: at a million patches each would be as large as the projection itself.
    """
    n = proj.shape[0]
    k = max(1, min(n_starts, n))
    if init == "center_farthest":
        sq_norms, buf = _sq_norms(proj), torch.empty(n)
        first = int(_sq_dist_to(proj, sq_norms, _mean(proj), buf).argmin())
        dist = _sq_dist_to(proj, sq_norms, proj[first].float(), buf)
        dist[first] = -1
        others = torch.topk(dist, k - 1).indices if k > 1 else torch.empty(0, dtype=torch.long)
        return torch.cat([torch.tensor([first]), others])
    if init == "pca_extremes":
        mean = _mean(proj)
        covariance = _gram(proj) - n * torch.outer(mean, mean)
        direction = torch.linalg.eigh(covariance).eigenvectors[:, -1]
        order = torch.argsort(_mv(proj, direction, torch.empty(n)) - mean @ direction)
        ranks = torch.linspace(0, n - 1, max(k, 2)).round().long()
        picks = [int(order[-1]), int(order[0])] + [int(order[r]) for r in ranks[1:-1]]
        return torch.tensor(list(dict.fromkeys(picks))[:k])
    if init == "random":
        return torch.randperm(n, generator=generator)[:k]
    raise ParameterError(f"Unknown coreset init {init!r}; choose one of {', '.join(INIT_STRATEGIES)}.")


@dataclass(frozen=True)
class Coreset:
    """The selected rows in selection order, and each point's cover in the projected space the greedy worked in.

    ``cover[i]`` is the position in ``selected`` of the member nearest to point i (among those in the lists
    it probed when updated by lists: then the distance is an upper bound), ``cover_sq_dist[i]`` the squared
    projected distance to it. The calibration reads them to know which points an image's entries cover,
    without searching every point again.
    """

    selected: torch.Tensor
    cover: torch.Tensor
    cover_sq_dist: torch.Tensor


def select_coreset(
    features: torch.Tensor,
    ratio: float,
    *,
    proj_dim: int = 128,
    n_starts: int = 10,
    init: str = "center_farthest",
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
    pool: int = 1024,
    updates: str = "exact",
    most: int = 0,
) -> Coreset:
    """Select ``floor(N * ratio)`` rows of ``(N, D)`` features, at most ``most`` (0: no limit).

    ``updates="lists"`` lowers each member's distances in its nearest k-means lists only (module docstring).
    ``progress(k)`` is told each time k more members are chosen.
    """
    n = features.shape[0]
    size = coreset_size(n, ratio, most)
    weight = projection(features.shape[1], proj_dim, generator=generator)
    if updates not in UPDATES:
        raise ParameterError(f"Unknown coreset updates {updates!r}; choose one of {', '.join(UPDATES)}.")
    if updates == "lists" and _lists_for(n):
        state, order = _by_lists(features, weight, size, pool, generator)
        state.nearest.copy_(_starting_distances(state.proj, state.sq_norms, n_starts, init, generator))
        return _measured(_unpermuted(_run(state, progress), order), features, weight)
    return _greedy(project(features, weight), size, n_starts, init, generator, progress, pool)


def continue_coreset(
    features: torch.Tensor,
    previous: Coreset,
    ratio: float,
    *,
    proj_dim: int = 128,
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
    pool: int = 1024,
    updates: str = "exact",
    most: int = 0,
) -> Coreset:
    """Grow ``previous``, a coreset of the first ``len(previous.cover)`` rows of ``features``, to
    :func:`grown_size` members of all N rows: the greedy run seeded with the previous selection.

    ``generator`` must be seeded as the previous selection's was, so the projection is the same. The
    old rows start from their recorded distance to the previous members, the new rows from an exact
    search against them; the greedy then continues over all rows, with ``updates`` as the selection had.
    """
    n, n_old = features.shape[0], len(previous.cover)
    size = grown_size(n, previous, ratio, most)
    weight = projection(features.shape[1], proj_dim, generator=generator)
    if updates == "lists" and _lists_for(n):
        state, order = _by_lists(features, weight, size, pool, generator)
        position = torch.empty_like(order)
        position[order] = torch.arange(n)
    else:
        proj = project(features, weight)
        state, order = _Cover(proj, _sq_norms(proj), torch.empty(n), size, min(pool, n)), None
        position = torch.arange(n)
    state.seed(position[previous.selected], previous.cover, previous.cover_sq_dist, rows=position[:n_old])
    state.cover_the_rest(rows=position[n_old:])
    coreset = _run(state, progress)
    return coreset if order is None else _measured(_unpermuted(coreset, order), features, weight)


def grown_size(n_points: int, previous: Coreset, ratio: float, most: int = 0) -> int:
    """Members of a coreset ``previous`` grown to ``n_points``: those of a coreset of them all (:func:`coreset_size`),
    never fewer than it had. With a limit ``most``, at least the new points' share of that size more than it had:
    a coreset at its limit would otherwise take no member from the new points, however new their appearance."""
    fresh = coreset_size(n_points, ratio, most)
    share = fresh * (n_points - len(previous.cover)) // n_points if most else 0
    return max(fresh, len(previous.selected) + share)


def _greedy(proj: torch.Tensor, size: int, n_starts: int, init: str, generator: torch.Generator,
            progress: Callable[[int], None] | None, pool: int) -> Coreset:
    """The greedy on projected points ``proj (N, proj_dim)``: ``size`` members and every point's cover."""
    sq_norms = _sq_norms(proj)
    nearest = _starting_distances(proj, sq_norms, n_starts, init, generator)
    return _run(_Cover(proj, sq_norms, nearest, size, min(pool, proj.shape[0])), progress)


def _starting_distances(proj: torch.Tensor, sq_norms: torch.Tensor, n_starts: int, init: str,
                        generator: torch.Generator) -> torch.Tensor:
    """Each point's squared *mean* distance to the starting points, where the distance to the coreset starts.

    The mean of (not squared) distances, as the reference; the loop works on squared distances, which keeps
    argmax and min unchanged.
    """
    buf, nearest = torch.empty(proj.shape[0]), torch.zeros(proj.shape[0])
    seeds = starting_points(proj, n_starts, init, generator=generator)
    for seed in seeds:
        nearest.add_(_sq_dist_to(proj, sq_norms, proj[seed].float(), buf).sqrt_())
    return nearest.div_(len(seeds)).square_()


def _lists_for(n: int) -> int:
    """How many k-means lists ``n`` points are split into; 0 where a member would probe them all anyway
    (then updating by lists saves nothing, and the exact greedy runs)."""
    lists = round(n / ROWS_PER_LIST)
    return lists if lists > PROBES else 0


def _by_lists(features: torch.Tensor, weight: torch.Tensor, size: int, pool: int, generator: torch.Generator
              ) -> tuple[_CoverByLists, torch.Tensor]:
    """A greedy state updated by lists over the projection of ``features`` by ``weight``, its points reordered list
    by list, and that order (the state's points are ``project(features[order])``, kept in float16); distances are
    left to the caller.

    The working copy is float16, as the features are stored by default: float32 would be twice their size (0.97 GB
    for 20 images of 2048 px), the bulk of fit-bank's memory beyond the features. Every distance is still computed
    in float32, and :func:`_measured` records the final ones on float32 projections.
    """
    from eagle_cli.expert.faiss_after_torch import faiss

    proj = project(features, weight, dtype=torch.float16)
    n, dim = proj.shape
    lists = _lists_for(n)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    kmeans = faiss.Kmeans(dim, lists, niter=10, max_points_per_centroid=_POINTS_PER_CENTROID, seed=seed)
    # The points faiss would train on anyway (it samples this many), drawn here: only they are made float32.
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:lists * _POINTS_PER_CENTROID]
    kmeans.train(proj[sample].float().numpy())
    # Each point's own list, its nearest centroid. The lists a member updates are searched only for the points that
    # can become members, a round's pool (:meth:`_CoverByLists._lists_of`): every point's PROBES nearest lists took
    # 1.9x as long to search as its nearest one (3.5 s of an 11 s fit at 2048 px), for one point in a hundred.
    own = torch.cat([torch.from_numpy(kmeans.index.search(proj[lo:lo + _COVER_ROWS].float().numpy(), 1)[1][:, 0])
                     for lo in range(0, n, _COVER_ROWS)]).int()
    order = torch.argsort(own, stable=True)
    # Each list's points contiguous, so an update reads slices. Projected again straight into that order rather
    # than copied: a permuted copy would hold the projection twice.
    del proj
    proj = project(features, weight, order=order, dtype=torch.float16)
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(own, minlength=lists).cumsum(0)])
    state = _CoverByLists(proj, _sq_norms(proj), torch.empty(n), size, min(pool, n), own[order], bounds, kmeans.index)
    return state, order


def _unpermuted(coreset: Coreset, order: torch.Tensor) -> Coreset:
    """``coreset`` of the points ``proj[order]``, told in the original points' indices."""
    cover, cover_sq_dist = torch.empty_like(coreset.cover), torch.empty_like(coreset.cover_sq_dist)
    cover[order], cover_sq_dist[order] = coreset.cover, coreset.cover_sq_dist
    return Coreset(order[coreset.selected], cover, cover_sq_dist)


def _measured(coreset: Coreset, features: torch.Tensor, weight: torch.Tensor) -> Coreset:
    """``coreset`` with each point's squared distance to its member measured between float32 projections, as the
    calibration projects them (the greedy worked on float16 ones)."""
    members = project(features[coreset.selected], weight)
    sq_dist = torch.empty(len(coreset.cover))
    for lo in range(0, len(sq_dist), _CHUNK):
        chunk = torch.mm(features[lo:lo + _CHUNK].float(), weight)
        torch.sum(chunk.sub_(members[coreset.cover[lo:lo + _CHUNK]]).square_(), 1, out=sq_dist[lo:lo + len(chunk)])
    return Coreset(coreset.selected, coreset.cover, sq_dist)


def _run(state: _Cover, progress: Callable[[int], None] | None) -> Coreset:
    while state.count < state.size:
        start = state.count
        state.pick_from_pool()
        state.update(start)
        if progress is not None:
            progress(state.count - start)
    state.cover_the_rest()
    return Coreset(state.selected, state.owner, state.nearest)


#: Points searched at once when covering the rest (a 32 MB copy of their projections).
_COVER_ROWS = 65536


class _Cover:
    """The greedy's state: each point's squared distance to the coreset, the member nearest to it, the members.

    A round takes the ``pool`` points farthest from the coreset and runs the greedy among them,
    tracking only their distances, as long as the farthest of them is at least as far as the
    farthest point left outside the pool: until then no outside point can be the greedy's next
    choice, so the picks are exactly the step-by-step greedy's. Then every point's distance is
    updated against all the round's new members at once (matrix products instead of one pass per
    member), skipping points that the triangle inequality proves cannot move: a point whose nearest
    member c satisfies d(c, y) ≥ 2·d(point, c) for every new member y.
    """

    _CHUNK = 8192

    def __init__(self, proj: torch.Tensor, sq_norms: torch.Tensor, nearest: torch.Tensor, size: int, pool: int):
        n, dim = proj.shape
        self.proj, self.sq_norms, self.nearest, self.size, self.pool = proj, sq_norms, nearest, size, pool
        self.count = 0
        self.selected = torch.empty(size, dtype=torch.long)
        self.members = torch.empty(size, dim)
        self.member_sq = torch.empty(size)
        # owner[i] = the member nearest to point i; `size` is a sentinel for "none yet", whose gap is -1
        # so such points are always examined.
        self.owner = torch.full((n,), size, dtype=torch.long)
        self.gap = torch.empty(size + 1)
        self.owner_gap = torch.empty(n)
        self.limit = torch.empty(n)
        self.block = torch.empty(self._CHUNK, pool)
        self.gathered = torch.empty(self._CHUNK, dim)

    def pick_from_pool(self) -> None:
        top = torch.topk(self.nearest, min(self.pool + 1, len(self.nearest)))
        members = top.indices[: self.pool]
        values = top.values[: self.pool].clone()
        outside = float(top.values[self.pool]) if len(top.values) > self.pool else -1.0
        points = self.proj[members].float()
        points_sq = self.sq_norms[members]
        lists = self._lists_of(members)
        while self.count < self.size:
            i = int(values.argmax())
            if values[i] < outside:
                return
            j = int(members[i])
            self.selected[self.count] = j
            self.members[self.count] = points[i]
            self.member_sq[self.count] = self.sq_norms[j]
            dist = _sq_dist_to(points, points_sq, points[i], torch.empty_like(values))
            if lists is not None:
                self.member_lists[self.count] = lists[i]
                dist.masked_fill_(~torch.isin(lists[:, 0], lists[i]), math.inf)
            self.count += 1
            torch.minimum(values, dist, out=values)

    def _lists_of(self, pool: torch.Tensor) -> torch.Tensor | None:
        """The lists each of the ``pool`` points would update as a member, its own first; None: every point."""
        return None

    def update(self, start: int) -> None:
        """Lower every point's distance to the members ``start:count`` chosen this round."""
        new, new_sq = self.members[start:self.count], self.member_sq[start:self.count]
        width = self.count - start
        # gap[c] = squared distance from existing member c to its nearest new member.
        for lo in range(0, start, self._CHUNK):
            hi = min(lo + self._CHUNK, start)
            block = torch.addmm(self.member_sq[lo:hi, None], self.members[lo:hi], new.T, alpha=-2,
                                out=self.block[: hi - lo, :width])
            torch.amin(block.add_(new_sq), dim=1, out=self.gap[lo:hi])
        self.gap[self.size] = -1.0
        torch.index_select(self.gap, 0, self.owner, out=self.owner_gap)
        torch.mul(self.nearest, 4.0 * (1.0 + _PRUNE_SLACK), out=self.limit)
        candidates = torch.nonzero(self.owner_gap < self.limit).squeeze(1)
        for lo in range(0, len(candidates), self._CHUNK):
            rows = candidates[lo:lo + self._CHUNK]
            points = torch.index_select(self.proj, 0, rows, out=self.gathered[: len(rows)])
            block = torch.addmm(self.sq_norms[rows, None], points, new.T, alpha=-2,
                                out=self.block[: len(rows), :width]).add_(new_sq).clamp_(min=0)
            dist, which = block.min(dim=1)
            closer = dist < self.nearest[rows]
            moved = rows[closer]
            self.nearest[moved] = dist[closer]
            self.owner[moved] = which[closer] + start

    def seed(self, selected: torch.Tensor, cover: torch.Tensor, cover_sq_dist: torch.Tensor, rows: torch.Tensor
             ) -> None:
        """Start from an earlier selection: its members, and the covers and distances of the points ``rows``."""
        count = len(selected)
        self.selected[:count] = selected
        self.members[:count] = self.proj[selected]
        self.member_sq[:count] = self.sq_norms[selected]
        self.owner[rows], self.nearest[rows] = cover, cover_sq_dist
        self.count = count

    def cover_the_rest(self, rows: torch.Tensor | None = None) -> None:
        """Give ``rows`` (default: the points no member ever came closer to than their starting distance)
        their nearest member among those chosen so far, exactly."""
        from eagle_cli.expert.faiss_after_torch import faiss

        if rows is None:
            rows = torch.nonzero(self.owner == self.size).squeeze(1)
        if not len(rows):
            return
        # faiss's exhaustive search: the same exact nearest member, 2.7× faster than blocked matrix products
        # for 78,400 points against 70,000 members on 2 cores (the bulk of a grown bank's cost).
        index = faiss.IndexFlatL2(self.proj.shape[1])
        index.add(self.members[:self.count].numpy())
        for lo in range(0, len(rows), _COVER_ROWS):
            chunk = rows[lo:lo + _COVER_ROWS]
            dist, which = index.search(self.proj[chunk].float().numpy(), 1)
            self.nearest[chunk] = torch.from_numpy(dist[:, 0]).clamp_(min=0)
            self.owner[chunk] = torch.from_numpy(which[:, 0])


class _CoverByLists(_Cover):
    """The greedy's state where a new member lowers the distances of the points in its ``PROBES`` nearest
    k-means lists only (point j's own list, ``own[j]``, first); the points are stored list by list, list l
    at rows ``bounds[l]:bounds[l + 1]``. Inside a round's pool too, so the picks are exactly those of the
    step-by-step greedy with these restricted updates. ``centroids``: the lists' faiss index."""

    def __init__(self, proj: torch.Tensor, sq_norms: torch.Tensor, nearest: torch.Tensor, size: int, pool: int,
                 own: torch.Tensor, bounds: torch.Tensor, centroids):
        super().__init__(proj, sq_norms, nearest, size, pool)
        self.own, self.bounds, self.centroids = own, bounds.tolist(), centroids
        #: The lists each member updates, in selection order.
        self.member_lists = torch.empty(size, PROBES, dtype=torch.int32)

    def _lists_of(self, pool: torch.Tensor) -> torch.Tensor:
        lists = torch.from_numpy(self.centroids.search(self.proj[pool].float().numpy(), PROBES)[1]).int()
        lists[:, 0] = self.own[pool]  # its nearest, as found for every point (the same list but for a tie)
        return lists

    def update(self, start: int) -> None:
        new, new_sq = self.members[start:self.count], self.member_sq[start:self.count]
        probed = self.member_lists[start:self.count].reshape(-1)
        by_list = torch.argsort(probed, stable=True)
        lists, member = probed[by_list], torch.arange(len(new)).repeat_interleave(PROBES)[by_list]
        ends = torch.searchsorted(lists, torch.unique_consecutive(lists), right=True).tolist()
        for lo, hi in zip([0] + ends[:-1], ends, strict=True):
            first, last = self.bounds[int(lists[lo])], self.bounds[int(lists[lo]) + 1]
            mine = member[lo:hi]
            block = torch.addmm(self.sq_norms[first:last, None], self.proj[first:last].float(), new[mine].T, alpha=-2)
            dist, which = block.add_(new_sq[mine]).min(dim=1)
            closer = torch.nonzero(dist < self.nearest[first:last]).squeeze(1)
            self.nearest[closer + first] = dist[closer].clamp_(min=0)
            self.owner[closer + first] = mine[which[closer]] + start
