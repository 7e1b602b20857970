"""The drift watch: its alarm keeps its stated rate on exchangeable streams and fires soon after a change."""

import numpy as np
import pytest

from eagle_cli.drift import DriftWatch, batch_drift, p_values
from eagle_cli.formats.scores import ScoreRow


def _first_alarm(calibration, stream, seed) -> int | None:
    watch = DriftWatch(calibration, delta=0.01, seed=seed)
    for score in stream:
        watch.update(float(score))
        if watch.alarm_at is not None:
            return watch.alarm_at
    return None


def test_on_exchangeable_streams_the_alarm_keeps_its_rate():
    rng = np.random.default_rng(0)
    alarms = sum(_first_alarm(rng.gamma(4, size=60), rng.gamma(4, size=2000), seed) is not None
                 for seed in range(200))
    assert alarms <= 4  # δ = 1 % of 200 is 2; Ville's bound, plus room for chance


@pytest.mark.parametrize("shift, within", [(0.5, 300), (1.0, 100)])
def test_parts_that_score_higher_after_a_change_raise_the_alarm_soon_after_it(shift, within):
    rng = np.random.default_rng(1)
    delays = []
    for seed in range(50):
        stream = rng.normal(size=2000)
        stream[500:] += shift  # in standard deviations of a good part's score
        alarm = _first_alarm(rng.normal(size=60), stream, seed)
        delays.append(np.inf if alarm is None else alarm - 500)
    delays = np.array(delays)
    assert (delays > 0).mean() >= 0.96 and (delays <= within).mean() >= 0.9


def test_parts_that_score_lower_keep_the_promise_and_raise_no_alarm():
    rng = np.random.default_rng(2)
    assert all(_first_alarm(rng.normal(size=60), rng.normal(size=2000) - 1, seed) is None for seed in range(20))


def test_a_p_value_is_the_share_of_calibration_scores_at_least_as_high():
    calibration = np.array([1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(p_values(calibration, np.array([0.5, 2.0, 2.5, 9.0])), [5 / 5, 4 / 5, 2 / 5, 1 / 5])


def test_the_batch_check_watches_the_good_labelled_images_when_there_are_labels():
    def row(index, label, score):
        return ScoreRow(index, f"img{index}.png", label, None, score, False, False, 1, 1, [0, 0, 1, 1], "m", "k")

    calibration = np.random.default_rng(3).normal(size=60)
    good = [row(i, 0, s) for i, s in enumerate(np.random.default_rng(4).normal(size=200))]
    defects = [row(200 + i, 1, 10.0) for i in range(50)]  # a block of defects at the end: no drift of good parts
    summary = batch_drift(calibration, good + defects)
    assert summary["watched"] == "good-labelled images" and summary["images"] == 200 and summary["status"] == "ok"
    unlabelled = [row(r.index, None, r.score) for r in good + defects]
    drifting = batch_drift(calibration, unlabelled)
    assert drifting["status"] == "drifting" and drifting["alarm_at"].startswith("img2")
