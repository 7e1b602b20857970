"""Calibration estimators on small clustered features: their ordering, the jackknife, the folds (eagle's two and
the two kept as experiments in benchmarks/estimators.py)."""

import numpy as np
import pytest
import torch

from benchmarks import estimators
from eagle_cli.errors import ParameterError
from eagle_cli.expert import calibration as cal
from eagle_cli.expert.coreset import select_coreset
from eagle_cli.expert.image_rule import scored_top_mean
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.params import BankParams

CPU = torch.device("cpu")
N_IMAGES, PATCHES, DIM = 12, 25, 16
RATIO = 0.2


def quiet(n):
    pass


@pytest.fixture(scope="module")
def setup():
    """Object-like features: each patch position has its own appearance, varied per image."""
    g = torch.Generator().manual_seed(0)
    positions = torch.randn(PATCHES, DIM, generator=g) * 3
    features = positions + torch.randn(N_IMAGES, PATCHES, DIM, generator=g)
    flat = features.reshape(-1, DIM)
    coreset = select_coreset(flat, RATIO, proj_dim=8, n_starts=3, generator=torch.Generator().manual_seed(11))
    selected = coreset.selected
    index = BankIndex(flat[selected], selected // PATCHES, backend="faiss", device=CPU)
    unselected = torch.ones(N_IMAGES * PATCHES, dtype=torch.bool)
    unselected[selected] = False
    cover = coreset
    return features, index, cover, unselected.reshape(N_IMAGES, PATCHES)


ALL = np.arange(N_IMAGES)


def scores(result, top=1):
    """One score per training image (NaN: not scored), the mean of its ``top`` highest scored patches."""
    return result.per_image(scored_top_mean(result.per_patch, top), N_IMAGES)


def refill(features, index, cover, knn_k=1, progress=quiet):
    return cal.refill_scores(features, index, cover, ALL, knn_k=knn_k, proj_dim=8,
                             generator=torch.Generator().manual_seed(11), neighbours=8, progress=progress)


def test_all_patches_never_score_below_the_unselected_ones(setup):
    features, index, _, unselected = setup
    reference = cal.reference_scores(features, index, unselected, ALL, knn_k=1, min_unselected=1, progress=quiet)
    own_out = estimators.leave_own_out_scores(features, index, ALL, knn_k=1, progress=quiet)
    assert np.isfinite(scores(reference)).all()
    assert (scores(own_out) >= scores(reference) - 1e-4).all()
    assert (scores(own_out) > scores(reference) + 1e-3).any()


def test_reference_leaves_out_images_with_too_few_unselected_patches(setup):
    features, index, _, unselected = setup
    counts = unselected.sum(1).numpy()
    cut = int(np.median(counts)) + 1
    result = cal.reference_scores(features, index, unselected, ALL, knn_k=1, min_unselected=cut, progress=quiet)
    assert np.array_equal(np.isnan(scores(result)), counts < cut)


@pytest.mark.parametrize("knn_k", [1, 3])
def test_refill_only_adds_entries_back_so_it_never_scores_above_leave_own_out(setup, knn_k):
    features, index, cover, _ = setup
    own_out = estimators.leave_own_out_scores(features, index, ALL, knn_k=knn_k, progress=quiet)
    refilled = refill(features, index, cover, knn_k=knn_k)
    assert (scores(refilled) <= scores(own_out) + 1e-4).all()
    assert (scores(refilled) < scores(own_out) - 1e-3).any()  # some removed entry left orphans to refill


def test_refill_reports_progress_for_every_image(setup):
    features, index, cover, _ = setup
    seen = []
    refill(features, index, cover, progress=seen.append)
    assert sum(seen) == N_IMAGES


def test_the_recorded_cover_is_the_nearest_entry_a_search_finds(setup):
    features, index, cover, _ = setup
    flat = features.reshape(-1, DIM)
    weight = cal.projection(DIM, 8, generator=torch.Generator().manual_seed(11))
    proj, bank = cal.project(flat, weight), cal.project(flat[cover.selected], weight)
    dist, nearest = BankIndex(bank, cover.selected // PATCHES, backend="faiss", device=CPU).search(proj, 1)
    assert np.array_equal(cover.cover.numpy(), nearest[:, 0])
    assert np.allclose(cover.cover_sq_dist.numpy(), dist[:, 0], rtol=1e-4, atol=1e-4)


def estimate(estimator, setup, images=ALL, image_top=1):
    """One estimator's scores; the reference's rule (k = 1, the highest patch) unless told otherwise."""
    features, index, cover, unselected = setup
    if estimator == "reference":
        result = cal.reference_scores(features, index, unselected, images, knn_k=1, min_unselected=1,
                                      progress=quiet)
    elif estimator == "leave-own-out":
        result = estimators.leave_own_out_scores(features, index, images, knn_k=1, progress=quiet)
    elif estimator == "refill":
        result = cal.refill_scores(features, index, cover, images, knn_k=1, proj_dim=8,
                                   generator=torch.Generator().manual_seed(11), neighbours=8, progress=quiet)
    else:
        settings = BankParams(coreset_ratio=RATIO, proj_dim=8, n_starts=3, coreset_updates="exact")
        result = estimators.cross_fit_scores(features, images, folds=3, coreset=settings, seed=5, progress=quiet)[0]
    return scores(result, image_top)


ESTIMATORS = ["reference", "leave-own-out", "refill", "cross-fit"]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_sample_scores_its_images_as_the_whole_calibration_does_and_no_other(setup, estimator):
    sample = cal.sample_images(N_IMAGES, 5, seed=3)
    assert len(set(sample.tolist())) == 5 and np.array_equal(sample, cal.sample_images(N_IMAGES, 5, seed=3))
    whole, part = estimate(estimator, setup), estimate(estimator, setup, sample)
    assert np.isfinite(part).sum() == 5 and np.isnan(np.delete(part, sample)).all()
    assert np.allclose(part[sample], whole[sample], rtol=1e-5)


@pytest.mark.parametrize("estimator", ["reference", "leave-own-out", "refill"])
def test_scores_do_not_depend_on_how_many_patches_one_search_or_bound_takes(setup, estimator, monkeypatch):
    sample = cal.sample_images(N_IMAGES, 7, seed=2)
    whole = [estimate(estimator, setup, sample, image_top=top) for top in (1, PATCHES)]
    monkeypatch.setattr(cal, "_ROWS_PER_SEARCH", 7)  # not a divisor of the patches: searches end mid-image
    monkeypatch.setattr(cal, "_ROWS_PER_BOUND", 3)
    split = [estimate(estimator, setup, sample, image_top=top) for top in (1, PATCHES)]
    for before, after in zip(whole, split, strict=True):
        assert np.isfinite(before).sum() == 7
        assert np.allclose(after, before, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_scores_an_image_by_the_banks_rule(setup, estimator):
    highest, top4, every = (estimate(estimator, setup, image_top=top) for top in (1, 4, PATCHES))
    # The mean of the 4 highest lies between the highest and the mean of all; it is not either of them.
    assert (top4 <= highest + 1e-6).all() and (top4 >= every - 1e-6).all()
    assert (top4 < highest - 1e-6).any() and (top4 > every + 1e-6).any()


def test_cross_fit_with_one_fold_per_image_is_the_exact_jackknife(setup):
    features = setup[0]
    settings = BankParams(coreset_ratio=RATIO, proj_dim=8, n_starts=3, coreset_updates="exact")
    result, folds = estimators.cross_fit_scores(features, ALL, folds=N_IMAGES, coreset=settings, seed=5,
                                                progress=quiet)
    for image in (0, 7):
        fold = int(folds[image])
        others = [i for i in range(N_IMAGES) if i != image]
        flat = features[others].reshape(-1, DIM)
        generator = torch.Generator().manual_seed(5 + fold + 1)
        selected = select_coreset(flat, RATIO, proj_dim=8, n_starts=3, generator=generator).selected
        dist = torch.cdist(features[image], flat[selected]).square().min(1).values
        assert scores(result)[image] == pytest.approx(float(dist.max()), rel=1e-4)


def test_cross_fit_scores_every_image_once_from_a_bank_without_it(setup):
    features = setup[0]
    settings = BankParams(coreset_ratio=RATIO, proj_dim=8, n_starts=3, coreset_updates="exact")
    result, folds = estimators.cross_fit_scores(features, ALL, folds=3, coreset=settings, seed=5, progress=quiet)
    assert np.isfinite(scores(result)).all() and sorted(np.bincount(folds)) == [4, 4, 4]
    # A bank that holds the image itself scores it lower: every image was scored without its own patches.
    flat = features.reshape(-1, DIM)
    inside = patch_scores(BankIndex(flat, torch.arange(len(flat)) // PATCHES, backend="faiss", device=CPU)
                          .search(flat, 1)[0].reshape(N_IMAGES, PATCHES, 1)).max(1)
    assert (scores(result) > inside).all()


def test_folds_are_balanced_seeded_and_bounded():
    a, b = estimators.fold_assignment(10, 3, seed=1), estimators.fold_assignment(10, 3, seed=1)
    assert np.array_equal(a, b) and sorted(np.bincount(a)) == [3, 3, 4]
    assert not np.array_equal(a, estimators.fold_assignment(10, 3, seed=2))
    with pytest.raises(ParameterError, match="between 2 and the number of training images \\(10\\)"):
        estimators.fold_assignment(10, 11, seed=0)


def test_a_fold_bank_smaller_than_k_is_refused(setup):
    settings = BankParams(coreset_ratio=0.01, proj_dim=8, n_starts=3, knn_k=3)
    with pytest.raises(ParameterError, match="fewer than k = 3 entries; use fewer folds"):
        estimators.cross_fit_scores(setup[0], ALL, folds=2, coreset=settings, seed=0, progress=quiet)


def test_a_listed_entry_bounds_an_orphan_by_its_exact_distance_skipping_the_excluded_image():
    g = torch.Generator().manual_seed(4)
    points, bank = torch.randn(700, 8, generator=g), torch.randn(40, 8, generator=g)
    image_ids = np.arange(40) % 5
    listed = torch.randint(0, 40, (700, 6), generator=g).numpy()
    excluded = image_ids[listed[:, 0]]  # the first listed entry is always from the excluded image
    listed[:3] = listed[:3, :1]  # three rows list nothing but that image's entry
    bound = cal._nearest_listed(points, bank, listed, image_ids, excluded)
    sq = ((points[:, None, :] - bank[torch.as_tensor(listed)]) ** 2).sum(2).numpy()
    expected = np.where(image_ids[listed] == excluded[:, None], np.inf, sq).min(1)
    assert np.isinf(bound[:3]).all()
    np.testing.assert_allclose(bound, expected, rtol=1e-6)
    # The cheaper bound: the first listed entry of another image, never below the nearest of them.
    first = cal._first_listed(points, bank, listed, image_ids, excluded)
    column = np.argmax(image_ids[listed] != excluded[:, None], axis=1)
    assert np.isinf(first[:3]).all()
    np.testing.assert_allclose(first[3:], sq[np.arange(3, 700), column[3:]], rtol=1e-6)
    assert (first >= bound).all() and (first > bound).any()


def test_the_refill_searches_only_orphans_no_listed_entry_settles_and_scores_as_if_it_searched_all(
        setup, monkeypatch):
    features, index, cover, _ = setup
    searched = []
    search = BankIndex.search_leave_own_out

    def counted(self, queries, k, owners):
        if queries.shape[1] == 8:  # projected orphans, not the training patches (DIM 16)
            searched.append(len(queries))
        return search(self, queries, k, owners)

    monkeypatch.setattr(BankIndex, "search_leave_own_out", counted)
    settled = refill(features, index, cover)
    some = sum(searched)
    monkeypatch.setattr(cal, "_BOUND_MARGIN", 2.0)  # no bound lies within a negative radius: every orphan searched
    searched.clear()
    every = refill(features, index, cover)
    assert 0 < some < sum(searched) / 2
    np.testing.assert_array_equal(settled.per_patch, every.per_patch)
