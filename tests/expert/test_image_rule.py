"""The image rule: how an image's score is read from its patch scores, and what the peak rule measures."""

import numpy as np
import pytest

from eagle_cli.errors import ParameterError
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import ImageRule, scored_top_mean
from eagle_cli.expert.scoring import image_scores
from eagle_cli.params import BankParams, ThresholdParams
from eagle_cli.threshold import fitted_tau

#: A 144 px frame in 3 × 3 tiles of 48 px side by side, each a 6 × 6 patch grid: 324 patches an image.
TILED = Geometry(resize=144, crop=0, tile=48, overlap=0.0)
GRID = (6, 6)
CELLS = 36


def good_patches(n: int, seed: int, edge: float = 3.0) -> np.ndarray:
    """Good patch scores of ``n`` images: noise, with every tile's outer ring of cells ``edge`` higher (a tile's
    border cells see the backbone's padding in every tile alike)."""
    rng = np.random.default_rng(seed)
    ring = np.ones(GRID, bool)
    ring[1:-1, 1:-1] = False
    per_tile = np.where(ring.ravel(), edge, 0.0)
    return (rng.normal(1.0, 0.1, (n, 9, CELLS)) + per_tile).reshape(n, -1).astype(np.float32)


def peak_rule(**settings) -> ImageRule:
    return ImageRule.of(BankParams(image_score="peak", **settings), TILED, GRID)


def test_auto_reads_tiled_features_by_their_peak_and_others_by_the_top_mean():
    assert ImageRule.of(BankParams(), TILED, GRID).kind == "peak"
    assert ImageRule.of(BankParams(), Geometry(256, 224), (28, 28)).kind == "top-mean"
    assert ImageRule.of(BankParams(image_score="top-mean"), TILED, GRID).kind == "top-mean"


def test_a_defect_weaker_than_the_tiles_seams_is_found_by_the_standardised_peak_and_not_by_a_top_mean():
    calibration, good = good_patches(100, seed=0), good_patches(100, seed=1)
    defective = good_patches(20, seed=2)
    centre = 4 * CELLS + 3 * 6 + 3  # the centre tile's cell (3, 3): inside, away from every seam
    defective[:, centre] += 2.0  # twenty times the noise, less than the seams add
    peak = flagged_shares(peak_rule(), calibration, defective, good)
    top_mean = flagged_shares(ImageRule.of(BankParams(image_score="top-mean"), TILED, GRID), calibration, defective,
                              good)
    assert peak[0] == 1.0 and peak[1] <= 0.1  # one τ's own rate: about 5 % ± 2 with 100 images
    assert top_mean[0] <= 0.2  # the seams' high cells outweigh one defective patch


def flagged_shares(rule, calibration, defective, good):
    """The shares of defective and good images a rule flags at a conformal 5 % τ fitted on ``calibration``."""
    scores, fitted = rule.calibrated(calibration)
    tau = fitted_tau(scores, ThresholdParams(target_far=0.05))
    return [float((fitted.scores(fitted.values(patches)) >= tau).mean()) for patches in (defective, good)]


def test_the_peak_keeps_the_conformal_promise_on_new_good_images():
    new = [good_patches(50, seed=200 + trial) for trial in range(40)]
    shares = [flagged_shares(peak_rule(), good_patches(40, seed=100 + trial), new[trial], new[trial])[1]
              for trial in range(40)]
    # Exchangeable calibration: at most 5 % on average, and at least 5 % − 1/(n + 1).
    assert 0.05 - 1 / 41 - 0.015 <= np.mean(shares) <= 0.05 + 0.015


def test_each_calibration_image_is_standardised_without_itself():
    calibration = good_patches(12, seed=3)
    calibration[4, 100] += 5.0  # one unusual good image
    scores, fitted = peak_rule().calibrated(calibration)
    others = peak_rule().calibrated(np.delete(calibration, 4, axis=0))[1]
    assert scores[4] == pytest.approx(fitted.scores(others.values(calibration[4:5]))[0], rel=1e-5)
    # Standardised by all images, itself included, it would look more ordinary than it is.
    assert fitted.scores(fitted.values(calibration[4:5]))[0] < scores[4]


def test_new_images_are_standardised_by_all_calibration_images_at_their_cell():
    calibration = good_patches(10, seed=4)
    _, fitted = peak_rule().calibrated(calibration)
    cells = calibration.reshape(-1, CELLS)
    np.testing.assert_allclose(fitted.norm.mean, cells.mean(0), rtol=1e-5)
    np.testing.assert_allclose(fitted.norm.std, cells.std(0), rtol=1e-4)
    values = fitted.values(calibration[:1])
    np.testing.assert_allclose(values.reshape(9, CELLS), (calibration[0].reshape(9, CELLS) - cells.mean(0))
                               / cells.std(0), rtol=1e-4, atol=1e-5)


def test_the_peak_is_the_maximum_of_the_map_it_smooths():
    from eagle_cli.expert.anomaly_map import frame_map

    _, fitted = peak_rule(peak_sigma_px=2.0).calibrated(good_patches(10, seed=5))
    image = good_patches(1, seed=6)
    values = fitted.values(image)
    assert fitted.scores(values)[0] == pytest.approx(float(frame_map(values[0], GRID, TILED, sigma_px=2.0).max()))


@pytest.mark.parametrize("map_sigma", [2.0, 4.0])
def test_a_verdict_reads_the_peak_at_the_rules_smoothing_whatever_the_maps(map_sigma):
    from eagle_cli.expert.anomaly_map import frame_map
    from eagle_cli.expert.decision import decide

    _, fitted = peak_rule(peak_sigma_px=2.0).calibrated(good_patches(10, seed=5))
    image = good_patches(1, seed=8)
    scored = decide(image, [(144, 144)], fitted, tau=1.0, s_max=2.0, sigma_px=map_sigma)
    values = fitted.values(image)[0]
    assert scored.scores[0] == pytest.approx(float(frame_map(values, GRID, TILED, sigma_px=2.0).max()))
    np.testing.assert_array_equal(scored.crop_maps[0], frame_map(values, GRID, TILED, sigma_px=map_sigma))


def test_the_peak_needs_every_patch_scored_and_a_calibration():
    partial = good_patches(6, seed=7)
    partial[0, 3] = np.nan
    with pytest.raises(ParameterError, match="every patch"):
        peak_rule().calibrated(partial)
    with pytest.raises(ParameterError, match="no calibration"):
        peak_rule().values(partial[1:])


def test_the_top_mean_of_a_calibration_skips_unscored_patches_and_leaves_out_empty_images():
    patches = np.arange(24, dtype=np.float32).reshape(3, 8)
    patches[0, 6:] = np.nan  # its two highest not scored
    patches[2] = np.nan  # left out
    scores = scored_top_mean(patches, 2)
    assert scores[0] == pytest.approx(4.5) and scores[1] == image_scores(patches[1], 2) and np.isnan(scores[2])
