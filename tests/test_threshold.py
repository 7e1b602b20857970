import numpy as np
import pytest
from scipy import stats

from eagle_cli.errors import ParameterError
from eagle_cli.params import ThresholdParams
from eagle_cli.settings import identity
from eagle_cli.threshold import evt_quantile, far_interval, fit_threshold, fitted_tau, smallest_target

SCORES = np.array([1.0, 2.0, 3.0, 4.0, 10.0])


def test_k_sigma_uses_population_std():
    assert fit_threshold(SCORES, ThresholdParams("k-sigma", kappa=2.0)).tau == pytest.approx(4.0 + 2 * np.sqrt(10.0))


def test_quantile_interpolates_linearly():
    assert fit_threshold(SCORES, ThresholdParams("quantile", q=90)).tau == pytest.approx(4.0 + 0.6 * 6.0)


def test_mad_raw_and_with_normal_consistency():
    # median 3, |x - 3| = 2, 1, 0, 1, 7 -> MAD 1
    assert fit_threshold(SCORES, ThresholdParams("mad", mad_factor=3)).tau == pytest.approx(6.0)
    consistent = ThresholdParams("mad", mad_factor=3, mad_consistency=True)
    assert fit_threshold(SCORES, consistent).tau == pytest.approx(3 + 3 * 1.4826)


@pytest.mark.parametrize("xi", [-0.2, 0.0, 0.3])
def test_evt_recovers_known_quantiles_in_the_documented_convention(xi):
    # SciPy's c is -xi: xi > 0 is the heavy Frechet tail.
    c = -xi
    sample = stats.genextreme.rvs(c, loc=5.0, scale=2.0, size=20000, random_state=np.random.default_rng(0))
    truth = stats.genextreme.ppf(0.99, c, loc=5.0, scale=2.0)
    assert evt_quantile(sample, 0.99) == pytest.approx(truth, rel=0.05)


def test_heavier_tail_gives_a_higher_evt_threshold():
    rng = np.random.default_rng(1)
    light = stats.genextreme.rvs(0.2, size=5000, random_state=rng)
    heavy = stats.genextreme.rvs(-0.3, size=5000, random_state=rng)
    assert evt_quantile(heavy, 0.99) > evt_quantile(light, 0.99)


def test_nan_scores_are_refused_not_propagated():
    with pytest.raises(ParameterError, match="finite"):
        fit_threshold(np.array([1.0, np.nan, 2.0]), ThresholdParams())


def test_unknown_method_is_refused_not_replaced():
    with pytest.raises(ParameterError, match="conformal, k-sigma, quantile, mad, evt"):
        ThresholdParams("real_label")


def test_only_the_methods_own_parameters_identify_it():
    assert identity(ThresholdParams("quantile", kappa=5)) == identity(ThresholdParams("quantile"))
    assert identity(ThresholdParams("k-sigma", kappa=5)) != identity(ThresholdParams("k-sigma"))


def test_conformal_takes_the_ceil_n_plus_1_times_1_minus_alpha_order_statistic():
    scores = np.arange(1.0, 20.0)  # n = 19
    assert fit_threshold(scores, ThresholdParams("conformal", target_far=0.1)).tau == 18.0  # ⌈20 · 0.9⌉ = 18
    assert fit_threshold(scores, ThresholdParams("conformal", target_far=0.05)).tau == 19.0  # ⌈20 · 0.95⌉ = 19
    # order does not matter
    assert fit_threshold(scores[::-1], ThresholdParams("conformal", target_far=0.5)).tau == 10.0


def test_a_target_that_n_scores_cannot_support_is_refused_with_the_smallest_that_they_can():
    assert smallest_target(8) == pytest.approx(1 / 9)
    with pytest.raises(ParameterError, match=r"needs at least 19 calibration images; 8 can promise targets down to"):
        fit_threshold(np.arange(8.0), ThresholdParams("conformal", target_far=0.05))
    assert fit_threshold(np.arange(8.0), ThresholdParams("conformal", target_far=1 / 9)).tau == 7.0


@pytest.mark.parametrize("n, alpha", [(30, 0.1), (60, 0.05), (200, 0.01)])
def test_conformal_false_alarm_rate_on_new_exchangeable_scores_is_within_its_promise(n, alpha):
    # Calibration and new good scores from one skewed distribution: the rate at which a new score
    # reaches τ, averaged over many calibration draws, lies in [α − 1/(n + 1), α].
    rng = np.random.default_rng(0)
    trials = 4000
    rates = []
    for _ in range(trials):
        tau = fitted_tau(rng.gamma(2.0, 10.0, n), ThresholdParams("conformal", target_far=alpha))
        rates.append(stats.gamma.sf(tau, 2.0, scale=10.0))
    mean, noise = np.mean(rates), 3 * np.std(rates) / np.sqrt(trials)
    assert alpha - 1 / (n + 1) - noise <= mean <= alpha + noise
    low, high = far_interval(n, alpha)
    assert 0.85 <= np.mean((np.array(rates) >= low) & (np.array(rates) <= high)) <= 0.95  # a 90 % interval
