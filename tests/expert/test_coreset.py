import pytest
import torch

from eagle_cli.errors import ParameterError
from eagle_cli.expert import coreset as coresets
from eagle_cli.expert.coreset import (
    continue_coreset,
    coreset_size,
    project,
    projection,
    select_coreset,
    starting_points,
)
from eagle_cli.params import BankParams


def _patches(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(60, 64, generator=g) * 3
    return centres[torch.randint(0, 60, (n,), generator=g)] + torch.randn(n, 64, generator=g)


def brute_force(features, ratio, *, seed, sqrt_domain):
    """The plain loop: every point's distance to every new member, no pruning."""
    g = torch.Generator().manual_seed(seed)
    proj = project(features, projection(features.shape[1], 128, generator=g))
    sq = (proj * proj).sum(1)
    seeds = starting_points(proj, 10, "center_farthest", generator=g)

    def dist(j):
        d = torch.clamp(torch.mv(proj, proj[j]).mul(-2).add(sq).add(proj[j].dot(proj[j])), min=0)
        return d.sqrt() if sqrt_domain else d

    nearest = torch.stack([torch.sqrt(torch.clamp(torch.mv(proj, proj[s]).mul(-2).add(sq).add(proj[s].dot(proj[s])),
                                                  min=0))
                           for s in seeds]).sum(0).div(len(seeds))
    nearest = nearest if sqrt_domain else nearest.square()
    chosen = []
    for _ in range(int(len(features) * ratio)):
        j = int(nearest.argmax())
        chosen.append(j)
        nearest = torch.minimum(nearest, dist(j))
    return torch.tensor(chosen)


def test_pruned_selection_equals_the_brute_force_loop():
    features = _patches()
    ours = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(5)).selected
    assert torch.equal(ours, brute_force(features, 0.1, seed=5, sqrt_domain=False))


def test_selection_agrees_with_reference_sqrt_distances():
    # The reference compares square-rooted distances; rounding can break a rare tie differently.
    features = _patches()
    ours = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(5)).selected
    reference = brute_force(features, 0.1, seed=5, sqrt_domain=True)
    assert len(set(ours.tolist()) & set(reference.tolist())) >= 0.98 * len(reference)


def test_equal_seeds_equal_banks_and_other_seeds_differ():
    features = _patches()
    a = select_coreset(features, 0.05, generator=torch.Generator().manual_seed(1)).selected
    b = select_coreset(features, 0.05, generator=torch.Generator().manual_seed(1)).selected
    c = select_coreset(features, 0.05, generator=torch.Generator().manual_seed(2)).selected
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == len(a) == 150


@pytest.mark.parametrize("init", ["center_farthest", "pca_extremes", "random"])
def test_starting_points_are_distinct_and_clipped(init):
    proj = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    points = starting_points(proj, 10, init, generator=torch.Generator().manual_seed(0))
    assert len(points) == len(set(points.tolist())) == 10
    assert len(starting_points(proj[:3], 10, init, generator=torch.Generator().manual_seed(0))) == 3


def test_empty_coreset_is_refused_naming_ratio_and_count():
    with pytest.raises(ParameterError, match="coreset ratio 0.001 of 100"):
        select_coreset(torch.randn(100, 8), 0.001, generator=torch.Generator())


@pytest.mark.parametrize("updates", ["exact", "lists"])
def test_a_limited_coreset_is_the_greedy_stopped_at_the_limit(small_lists, updates):
    features = _patches(3000)
    full = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(6), updates=updates)
    limited = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(6), updates=updates, most=120)
    assert len(full.selected) == 300 and torch.equal(limited.selected, full.selected[:120])
    # Every point's cover is one of the members the limited greedy kept.
    assert int(limited.cover.max()) < 120
    assert coreset_size(3000, 0.01, 120) == 30  # the ratio's share where it is below the limit


def test_a_limited_coreset_grows_by_at_least_the_new_points_share_of_the_limit():
    features = _patches(3000)
    previous = select_coreset(features[:2000], 0.1, generator=torch.Generator().manual_seed(5))
    unlimited = continue_coreset(features, previous, 0.1, generator=torch.Generator().manual_seed(5))
    assert len(unlimited.selected) == 300
    # At its limit already (200): the 1,000 new points still get their third of it, taken farthest first.
    full = continue_coreset(features, previous, 0.1, generator=torch.Generator().manual_seed(5), most=200)
    assert len(full.selected) == 200 + 200 * 1000 // 3000 and torch.equal(full.selected[:200], previous.selected)
    assert (full.selected[200:] >= 2000).float().mean() > 0.5
    # Below it, a limit the ratio does not reach changes nothing.
    roomy = continue_coreset(features, previous, 0.1, generator=torch.Generator().manual_seed(5), most=1000)
    assert torch.equal(roomy.selected, unlimited.selected)


def test_float16_features_select_like_float32():
    features = _patches(1000)
    a = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(3)).selected
    b = select_coreset(features.half(), 0.1, generator=torch.Generator().manual_seed(3)).selected
    assert len(set(a.tolist()) & set(b.tolist())) > 0.9 * len(a)


def _nearest_member(proj, members):
    dist = torch.cdist(proj.double(), proj[members].double()).square()
    return dist.min(1)


def test_every_point_knows_its_nearest_member_in_the_projected_space():
    features = _patches(2000)
    coreset = select_coreset(features, 0.05, generator=torch.Generator().manual_seed(4))
    proj = project(features, projection(64, 128, generator=torch.Generator().manual_seed(4)))
    nearest = _nearest_member(proj, coreset.selected)
    assert torch.equal(coreset.cover, nearest.indices)
    assert torch.allclose(coreset.cover_sq_dist.double(), nearest.values, rtol=1e-3, atol=1e-3)
    assert (coreset.cover[coreset.selected] == torch.arange(len(coreset.selected))).all()


def test_a_grown_coreset_is_the_greedy_seeded_with_the_previous_selection():
    features = _patches(3000)
    previous = select_coreset(features[:2000], 0.1, generator=torch.Generator().manual_seed(5))
    grown = continue_coreset(features, previous, 0.1, generator=torch.Generator().manual_seed(5))
    proj = project(features, projection(64, 128, generator=torch.Generator().manual_seed(5)))
    sq = (proj * proj).sum(1)

    def sq_dist(j):
        return torch.clamp(torch.mv(proj, proj[j]).mul(-2).add(sq).add(proj[j].dot(proj[j])), min=0)

    nearest = torch.stack([sq_dist(int(j)) for j in previous.selected]).min(0).values
    chosen = previous.selected.tolist()
    while len(chosen) < 300:
        j = int(nearest.argmax())
        chosen.append(j)
        nearest = torch.minimum(nearest, sq_dist(j))
    assert grown.selected.tolist() == chosen
    exact = _nearest_member(proj, grown.selected)
    assert torch.equal(grown.cover, exact.indices)
    assert torch.allclose(grown.cover_sq_dist.double(), exact.values, rtol=1e-3, atol=1e-3)


@pytest.fixture
def small_lists(monkeypatch):
    """Lists of about 100 points, so 3,000 test points make 30 lists, more than a member probes."""
    monkeypatch.setattr(coresets, "ROWS_PER_LIST", 100)


def test_list_updates_pick_as_the_plain_loop_with_the_same_restricted_updates(small_lists):
    features = _patches()
    ours = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(5), updates="lists")
    # The plain loop on the same lists: each chosen point lowers the distances in its probed lists only.
    g = torch.Generator().manual_seed(5)
    state, order = coresets._by_lists(features, projection(64, 128, generator=g), 300, 1024, g)
    proj, own = state.proj.float(), state.own  # the working copy is float16, its distances float32
    lists = torch.from_numpy(state.centroids.search(proj.numpy(), coresets.PROBES)[1])
    sq = (proj * proj).sum(1)

    def sq_dist(j):
        return torch.clamp(torch.mv(proj, proj[j]).mul(-2).add(sq).add(proj[j].dot(proj[j])), min=0)

    starts = starting_points(state.proj, 10, "center_farthest", generator=g)
    nearest = torch.stack([sq_dist(int(s)).sqrt() for s in starts])
    nearest = nearest.mean(0).square()
    chosen = []
    for _ in range(300):
        j = int(nearest.argmax())
        chosen.append(j)
        reached = torch.isin(own, lists[j])
        nearest = torch.where(reached, torch.minimum(nearest, sq_dist(j)), nearest)
    # Every point lies in its nearest list, and a member updates its PROBES nearest ones.
    assert torch.equal(own, lists[:, 0].int()) and len(torch.unique(own)) == 30
    assert ours.selected.tolist() == order[chosen].tolist()


def test_a_projection_in_another_order_holds_the_same_values_reordered(monkeypatch):
    monkeypatch.setattr(coresets, "_CHUNK", 700)  # several chunks, the last one short
    features = _patches().half()  # features are often stored in float16
    weight = projection(64, 16, generator=torch.Generator().manual_seed(2))
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(3))
    assert torch.equal(project(features, weight, order=order), project(features, weight)[order])


def test_list_updates_keep_the_covering_radius_and_record_each_points_cover_as_an_upper_bound(small_lists):
    features = _patches()
    exact = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(5))
    lists = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(5), updates="lists")
    assert len(set(lists.selected.tolist())) == len(lists.selected) == 300
    proj = project(features, projection(64, 128, generator=torch.Generator().manual_seed(5)))
    truly = _nearest_member(proj, lists.selected).values
    # A point's recorded member is a real member at the recorded distance, never nearer than the nearest one.
    to_recorded = (proj - proj[lists.selected[lists.cover]]).double().square().sum(1)
    # Measured between float32 projections, as the calibration's, though the greedy worked on float16 ones.
    assert torch.allclose(lists.cover_sq_dist.double(), to_recorded, rtol=1e-5, atol=1e-5)
    assert (lists.cover_sq_dist.double() >= truly - 1e-3).all()
    assert (lists.cover[lists.selected] == torch.arange(300)).all()
    radius_exact = _nearest_member(proj, exact.selected).values.max().sqrt()
    assert truly.max().sqrt() <= 1.1 * radius_exact


@pytest.mark.parametrize("init", ["center_farthest", "pca_extremes", "random"])
def test_float16_points_start_where_their_float32_values_do(monkeypatch, init):
    monkeypatch.setattr(coresets, "_CHUNK", 700)  # float16 points are read in float32 chunks, the last one short
    points = project(_patches(), projection(64, 16, generator=torch.Generator().manual_seed(2))).half()
    starts = [starting_points(p, 10, init, generator=torch.Generator().manual_seed(1))
              for p in (points, points.float())]
    assert torch.equal(*starts)


def test_the_working_copy_of_list_updates_is_float16(small_lists):
    state, _ = coresets._by_lists(_patches(), projection(64, 128, generator=torch.Generator()), 300, 1024,
                                  torch.Generator())
    assert state.proj.dtype == torch.float16 and state.sq_norms.dtype == torch.float32


def test_list_updates_on_too_few_points_for_lists_are_the_exact_greedy():
    features = _patches()  # 3,000 points: one list of the default size
    exact = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(5))
    lists = select_coreset(features, 0.1, generator=torch.Generator().manual_seed(5), updates="lists")
    assert torch.equal(exact.selected, lists.selected)


def test_an_unknown_way_of_updating_is_refused():
    with pytest.raises(ParameterError, match="updates 'fast'"):
        select_coreset(_patches(100), 0.1, generator=torch.Generator(), updates="fast")
    with pytest.raises(ParameterError, match="--coreset-updates must be one of auto, exact, lists, got 'fast'"):
        BankParams(coreset_updates="fast")


def test_a_coreset_updated_by_lists_grows_by_lists_from_its_selection(small_lists):
    features = _patches(3000)
    previous = select_coreset(features[:2000], 0.1, generator=torch.Generator().manual_seed(5), updates="lists")
    grown = continue_coreset(features, previous, 0.1, generator=torch.Generator().manual_seed(5), updates="lists")
    assert grown.selected[:200].tolist() == previous.selected.tolist()
    assert len(set(grown.selected.tolist())) == len(grown.selected) == 300
    proj = project(features, projection(64, 128, generator=torch.Generator().manual_seed(5)))
    to_recorded = (proj - proj[grown.selected[grown.cover]]).double().square().sum(1)
    assert torch.allclose(grown.cover_sq_dist.double(), to_recorded, rtol=1e-3, atol=1e-3)
    assert (grown.cover_sq_dist.double() >= _nearest_member(proj, grown.selected).values - 1e-3).all()
    # The new points are what needed members most: most new members cover them.
    assert (grown.selected[200:] >= 2000).float().mean() > 0.5
