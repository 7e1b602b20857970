"""The peak rule's calibration searched only where its cell norm and its peaks need it: the same scores and norm
as with every patch searched, for a fraction of the exact search."""

import numpy as np
import pytest
import torch

from eagle_cli.expert import calibration as cal
from eagle_cli.expert import peak_calibration
from eagle_cli.expert.anomaly_map import add_patches, frame_map, patches_under
from eagle_cli.expert.coreset import select_coreset
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import CellNorm, ImageRule, norm_tiles
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.peak_calibration import EntryNeighbours, bounded_peak_scores
from eagle_cli.params import BankParams, CalibrationParams

#: A 144 px frame in 3 × 3 overlapping tiles of 56 px, each a 7 × 7 patch grid: 441 patches an image.
TILED = Geometry(resize=144, crop=0, tile=56, overlap=0.1)
GRID = (7, 7)
N_IMAGES, DIM = 14, 48
CPU = torch.device("cpu")


def quiet(n):
    pass


@pytest.fixture(scope="module")
def bank():
    """Tiled features whose cells look alike across tiles and images, varying mostly in a few directions (as a
    backbone's do), with a few odd patches per image (what makes a good image's peak), and one odd patch each pair
    of images shares (which the refill must put back when one of the pair is left out); a 10 % coreset of them
    and its index."""
    tiles, cells = len(TILED.tile_offsets()), GRID[0] * GRID[1]
    g = torch.Generator().manual_seed(3)
    directions = torch.linalg.qr(torch.randn(DIM, 6, generator=g)).Q.T
    features = ((torch.randn(cells, DIM, generator=g) * 2).repeat(tiles, 1)
                + torch.randn(N_IMAGES, tiles * cells, 6, generator=g) @ directions
                + 0.2 * torch.randn(N_IMAGES, tiles * cells, DIM, generator=g))
    odd = torch.randint(0, tiles * cells, (N_IMAGES, 5), generator=g)
    features[torch.arange(N_IMAGES)[:, None], odd] += torch.randn(N_IMAGES, 5, DIM, generator=g) * 2
    shared = torch.randint(0, tiles * cells, (N_IMAGES // 2,), generator=g).repeat_interleave(2)
    oddity = torch.randn(N_IMAGES // 2, DIM, generator=g) * 3
    features[torch.arange(N_IMAGES), shared] += oddity.repeat_interleave(2, 0)
    flat = features.reshape(-1, DIM)
    coreset = select_coreset(flat, 0.1, proj_dim=16, n_starts=3, generator=torch.Generator().manual_seed(11))
    index = BankIndex(flat[coreset.selected], coreset.selected // features.shape[1], backend="faiss", device=CPU)
    return features, index, coreset


def refill(features, index, coreset, images):
    return cal.Refill(features, index, coreset, images, proj_dim=16, generator=torch.Generator().manual_seed(11),
                      neighbours=8)


@pytest.mark.parametrize(("components", "neighbours"), [(4, 1), (16, 8)])  # one: many patches searched to bound
@pytest.mark.parametrize("rounds", [0, peak_calibration._PEAK_ROUNDS])  # none: every open pixel at once
def test_bounded_peaks_equal_the_peaks_of_every_patch_searched_for_fewer_exact_searches(bank, components, neighbours,
                                                                                        rounds, monkeypatch):
    monkeypatch.setattr(peak_calibration, "_PEAK_ROUNDS", rounds)
    features, index, coreset = bank
    images = np.arange(N_IMAGES)
    rule = ImageRule.of(BankParams(image_score="peak"), TILED, GRID)
    every = cal.refill_scores(features, index, coreset, images, knn_k=1, proj_dim=16,
                              generator=torch.Generator().manual_seed(11), neighbours=8, progress=quiet)
    expected, fitted = rule.calibrated(every.per_patch, step=4)
    # The refill lowers some images' highest patch (the one shared with another image), which makes their peaks.
    alone = cal.own_out_search(features, index, images, knn_k=1, progress=quiet)[..., 0]
    assert (alone.max(1) > every.per_patch.max(1) * (1 + 1e-3)).sum() >= 2
    searched = []
    search = BankIndex.search_leave_own_out

    def counted(self, queries, k, owners):
        if self is index:  # the exact search (the refill settles its orphans on another index)
            searched.append(len(queries))
        return search(self, queries, k, owners)

    monkeypatch.setattr(BankIndex, "search_leave_own_out", counted)
    filled = refill(features, index, coreset, images)
    scores, bounded = bounded_peak_scores(features, index, coreset.cover, filled, images, rule, step=4, progress=quiet,
                                          components=components, neighbours=neighbours, refine=0.02)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    np.testing.assert_allclose(bounded.norm.mean, fitted.norm.mean, rtol=1e-5)
    np.testing.assert_allclose(bounded.norm.std, fitted.norm.std, rtol=1e-5)
    # A quarter of the tiles for the norm, 2 % for the bound, the patches no neighbour bounds, and the patches around
    # each peak (34–46 % here: a 144 px frame's peak reaches many of its 441 patches; 0.7 % at 2048 px, BENCHMARKS.md).
    assert sum(searched) < 0.5 * features.shape[0] * features.shape[1]


def test_the_stage_calibration_reads_bounded_peaks_by_default_and_every_patch_at_step_one(bank):
    features, index, coreset = bank
    rule = ImageRule.of(BankParams(image_score="peak"), TILED, GRID)
    settings = BankParams(image_score="peak", proj_dim=16)
    params = {step: CalibrationParams(calibration_images=10, norm_tile_step=step, extra_neighbours=8)
              for step in (1, 8)}
    runs = {step: cal.calibrated_scores(features, index, coreset, settings, p, rule, seed=11, progress=quiet)
            for step, p in params.items()}
    sample = runs[1].images
    assert len(sample) == 10 and (runs[8].images == sample).all()
    per_patch = cal.calibrate(features, index, coreset, settings, CalibrationParams(calibration_images=10), seed=11,
                              progress=quiet).per_patch
    for step, run in runs.items():
        expected, fitted = rule.calibrated(per_patch, step)
        np.testing.assert_allclose(run.scores, expected, rtol=1e-5)
        np.testing.assert_allclose(run.rule.norm.mean, fitted.norm.mean, rtol=1e-5)
        assert np.isnan(run.per_image(N_IMAGES)).sum() == N_IMAGES - 10
    # Measuring the norm on an eighth of the tiles is a different norm, not the same one found faster.
    assert not np.allclose(runs[1].rule.norm.mean, runs[8].rule.norm.mean)


def test_a_frame_of_one_tile_measures_every_patch_for_its_norm_and_needs_no_bounds():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(8, 49, 8, generator=g)
    flat = features.reshape(-1, 8)
    coreset = select_coreset(flat, 0.2, proj_dim=8, n_starts=2, generator=torch.Generator().manual_seed(1))
    index = BankIndex(flat[coreset.selected], coreset.selected // 49, backend="faiss", device=CPU)
    rule = ImageRule.of(BankParams(image_score="peak"), Geometry(resize=64, crop=56), (7, 7))
    images = np.arange(8)
    every = cal.refill_scores(features, index, coreset, images, knn_k=1, proj_dim=8,
                              generator=torch.Generator().manual_seed(1), neighbours=4, progress=quiet)
    filled = cal.Refill(features, index, coreset, images, proj_dim=8, generator=torch.Generator().manual_seed(1),
                        neighbours=4)
    scores, _ = bounded_peak_scores(features, index, coreset.cover, filled, images, rule, step=8, progress=quiet)
    np.testing.assert_allclose(scores, rule.calibrated(every.per_patch, 1)[0], rtol=1e-5)


def test_every_tile_place_measures_the_norm_and_each_image_a_step_th_of_its_tiles():
    kept = norm_tiles(20, 25, 8)
    assert kept.any(0).all()
    assert set(kept.sum(1)) <= {3, 4}
    assert norm_tiles(5, 1, 8).all()  # a single tile is always measured
    assert norm_tiles(3, 25, 1).all()


@pytest.mark.parametrize("marked", [6, 5000])  # through the list of pixels, and through the whole mask
def test_patches_under_pixels_are_those_whose_value_reaches_them(marked):
    rng = np.random.default_rng(marked)
    patches = len(TILED.tile_offsets()) * GRID[0] * GRID[1]
    pixels = np.zeros((TILED.frame, TILED.frame), bool)
    pixels.flat[rng.choice(pixels.size, marked, replace=False)] = True
    reaching = np.array([frame_map(np.eye(1, patches, j)[0], GRID, TILED)[pixels].any() for j in range(patches)])
    under = patches_under(pixels, GRID, TILED)
    np.testing.assert_array_equal(under, reaching)
    assert 0 < under.sum() < patches if marked < 100 else under.all()
    if marked < 100:  # the same patches when the pixels are given by their rows and columns
        np.testing.assert_array_equal(patches_under(np.nonzero(pixels), GRID, TILED), reaching)


def test_a_few_patches_added_to_a_map_change_it_as_the_whole_map_drawn_again():
    rng = np.random.default_rng(2)
    patches = len(TILED.tile_offsets()) * GRID[0] * GRID[1]
    values = rng.normal(size=patches).astype(np.float32)
    amap = frame_map(values, GRID, TILED)
    changed = rng.choice(patches, 5, replace=False)
    change = rng.normal(size=5).astype(np.float32)
    add_patches(amap, np.r_[changed, changed[:1]], np.r_[change, 1.0], GRID, TILED)  # one patch twice: both add
    values[changed] += change
    values[changed[0]] += 1.0
    np.testing.assert_allclose(amap, frame_map(values, GRID, TILED), atol=1e-5)


def test_a_covering_entry_and_its_neighbours_bound_a_patch_nearest_entry_of_another_image(bank):
    features, index, coreset = bank
    rows = index.rows()
    near = EntryNeighbours(rows, 4)
    _, patches, _ = features.shape
    bank_rows = torch.from_numpy(rows)
    for image in range(4):
        covering = coreset.cover[image * patches:(image + 1) * patches].numpy()
        low, high, found = near.bounds(features[image], covering, bank_rows, index.image_ids, image)
        exact = index.search_leave_own_out(features[image], 1, np.full(patches, image))[0][:, 0]
        alone = np.isinf(high)  # every neighbour of its covering entry is the image's own
        assert (low <= exact * (1 + 1e-6)).all() and (high[~alone] >= exact[~alone] * (1 - 1e-6)).all()
        # The upper bound is the distance to the entry found, of another image; the second entry found is the nearest
        # neighbour of another image than the covering entry's (the refill's candidate).
        np.testing.assert_allclose(high[~alone], ((features[image][~alone] - bank_rows[found[~alone, 0]]) ** 2)
                                   .sum(1).numpy() * (1 + 1e-4), rtol=1e-5)
        assert (index.image_ids[found[~alone, 0]] != image).all()
        assert (index.image_ids[found[:, 1]] != index.image_ids[covering]).all()
        # Most patches' nearest entry is among the neighbours; a few are bounded below by the neighbours' reach alone.
        assert np.isclose(high[~alone], exact[~alone], rtol=2e-4).mean() > 0.5
        assert (low < exact * 0.99).any()
        # With one neighbour (the covering entry itself), the patches the image's own entries cover have no bound.
        alone = np.isinf(EntryNeighbours(rows, 1).bounds(features[image], covering, bank_rows, index.image_ids,
                                                         image)[1])
        np.testing.assert_array_equal(alone, index.image_ids[covering] == image)


@pytest.mark.parametrize("rounds", [0, peak_calibration._PEAK_ROUNDS])
def test_the_peak_is_found_where_the_highest_upper_bounds_overstate_their_patches(rounds, monkeypatch):
    monkeypatch.setattr(peak_calibration, "_PEAK_ROUNDS", rounds)
    rule = ImageRule.of(BankParams(image_score="peak"), TILED, GRID)
    patches = len(TILED.tile_offsets()) * rule.cells
    norm = CellNorm(np.zeros(rule.cells), np.ones(rule.cells))
    true = np.random.default_rng(4).uniform(1, 2, patches).astype(np.float32)
    true[[20, 21]] = 6.0  # the peak, with upper bounds that hold it exactly
    high = true.copy()
    overstated = np.arange(300, 340)  # far from it, bounds three times too high: the highest pixels at first
    high[overstated] *= 3
    low = true * 0.5
    searched = []

    def search(wanted):
        searched.extend(wanted)
        return true[wanted]

    peak = peak_calibration._exact_peak(rule, norm, low, high, np.zeros(patches, bool), search, refine=0.0)
    assert peak == pytest.approx(frame_map(true, GRID, TILED).max(), rel=1e-5)
    assert len(set(searched)) < patches
