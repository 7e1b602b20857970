import numpy as np
import pytest
from scipy import stats

from eagle_cli.errors import ParameterError
from eagle_cli.threshold import ThresholdParams, evt_quantile, fit_threshold

SCORES = np.array([1.0, 2.0, 3.0, 4.0, 10.0])


def test_k_sigma_uses_population_std():
    assert fit_threshold(SCORES, ThresholdParams("k-sigma", kappa=2.0)) == pytest.approx(4.0 + 2 * np.sqrt(10.0))


def test_quantile_interpolates_linearly():
    assert fit_threshold(SCORES, ThresholdParams("quantile", q=90)) == pytest.approx(4.0 + 0.6 * 6.0)


def test_mad_raw_and_with_normal_consistency():
    # median 3, |x - 3| = 2, 1, 0, 1, 7 -> MAD 1
    assert fit_threshold(SCORES, ThresholdParams("mad", mad_factor=3)) == pytest.approx(6.0)
    assert fit_threshold(SCORES, ThresholdParams("mad", mad_factor=3, mad_consistency=True)) == pytest.approx(3 + 3 * 1.4826)


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
    with pytest.raises(ParameterError, match="k-sigma, quantile, mad, evt"):
        ThresholdParams("real_label")


def test_only_the_methods_own_parameters_identify_it():
    assert ThresholdParams("quantile", kappa=5).effective() == ThresholdParams("quantile").effective()
    assert ThresholdParams("k-sigma", kappa=5).effective() != ThresholdParams("k-sigma").effective()
