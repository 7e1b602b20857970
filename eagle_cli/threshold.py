"""DBT: a decision threshold τ fitted on normal calibration scores only.

``conformal`` (the default) takes the ⌈(n + 1)(1 − α)⌉-th smallest of n calibration scores. If the
calibration scores and the score of a new good part are exchangeable (drawn alike, in any order),
the expected share of good parts flagged is at most α and at least α − 1/(n + 1); one fitted τ's
own rate varies around that, Beta-distributed (:func:`far_interval`). n images cannot promise
less than 1/(n + 1). Nothing is promised when production drifts away from the training images
(another lighting, supplier or camera), and nothing about misses.

Reference parity (eagle-method.md B): ``k-sigma`` is τ = mean + κ·std with the population std
(ddof 0), κ = 3; ``quantile`` uses NumPy's linear interpolation, q = 99; ``mad`` is
median + factor·MAD with factor 3 and, by default, the raw MAD.
Where we differ: every method is explicit (no silent fallback to a percentile); ``mad`` can apply
the 1.4826 normal-consistency factor; ``evt`` takes the p-quantile of a GEV fitted by maximum
likelihood, with SciPy's shape convention stated (c = −ξ), instead of the reference's heuristic
that fed SciPy's c into a formula written for ξ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from eagle_cli.errors import ParameterError
from eagle_cli.params import ThresholdParams

#: Scales the MAD of normal data to its standard deviation.
MAD_CONSISTENCY = 1.4826


@dataclass(frozen=True)
class Threshold:
    """τ and S_max fitted on ``n`` calibration scores, and what they promise."""

    tau: float
    s_max: float  # the top of the CAAS window: the highest calibration score
    params: ThresholdParams
    n: int  # calibration scores fitted on
    mean: float
    std: float
    #: A new good score is exchangeable with the n calibration scores, so it lands at or above τ with
    #: probability (#scores ≥ τ)/(n + 1): for conformal that is its guarantee.
    predicted_far: float
    smallest_target: float
    far_interval_90: tuple[float, float] | None  # conformal only


def fit_threshold(scores: np.ndarray, params: ThresholdParams) -> Threshold:
    """Fit τ on finite normal ``scores`` ``(n,)`` by ``params.method``; S_max is their maximum."""
    scores = np.asarray(scores, dtype=np.float64)
    tau = fitted_tau(scores, params)
    interval = far_interval(scores.size, params.target_far) if params.method == "conformal" else None
    return Threshold(tau, float(scores.max()), params, int(scores.size), float(scores.mean()), float(scores.std()),
                     float(np.sum(scores >= tau) / (scores.size + 1)), smallest_target(scores.size), interval)


def fitted_tau(scores: np.ndarray, params: ThresholdParams) -> float:
    """Return τ for finite normal ``scores`` ``(n,)`` by ``params.method``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size < 2 or not np.isfinite(scores).all():
        raise ParameterError(f"DBT needs at least 2 finite normal scores, got {scores.size} "
                             f"(finite: {np.isfinite(scores).sum()}).")
    if params.method == "conformal":
        tau = np.sort(scores)[conformal_rank(scores.size, params.target_far) - 1]
    elif params.method == "k-sigma":
        tau = scores.mean() + params.kappa * scores.std(ddof=0)
    elif params.method == "quantile":
        tau = np.percentile(scores, params.q)
    elif params.method == "mad":
        median = np.median(scores)
        mad = np.median(np.abs(scores - median)) * (MAD_CONSISTENCY if params.mad_consistency else 1.0)
        tau = median + params.mad_factor * mad
    else:
        tau = evt_quantile(scores, params.evt_p)
    if not np.isfinite(tau):
        raise ParameterError(f"The {params.method} threshold came out as {tau}; the normal scores may be degenerate.")
    return float(tau)


def smallest_target(n_scores: int) -> float:
    """The smallest false-alarm rate a conformal τ on ``n_scores`` calibration scores can promise: 1/(n + 1)."""
    return 1.0 / (n_scores + 1)


def conformal_rank(n_scores: int, target_far: float) -> int:
    """The 1-based rank ⌈(n + 1)(1 − α)⌉ of τ among ``n_scores`` sorted scores; refuses α below 1/(n + 1)."""
    # The small slack keeps (n + 1)(1 − α) that is an integer in exact arithmetic from rounding up.
    rank = math.ceil((n_scores + 1) * (1 - target_far) - 1e-9)
    if rank > n_scores:
        needed = math.ceil(1 / target_far - 1 - 1e-9)
        raise ParameterError(
            f"A false-alarm target of {target_far:g} needs at least {needed} calibration images; {n_scores} can "
            f"promise targets down to {smallest_target(n_scores):.3g}. Raise --target-far or add good training images.")
    return max(rank, 1)


def far_interval(n_scores: int, target_far: float, coverage: float = 0.9) -> tuple[float, float]:
    """Where the false-alarm rate of one conformal τ lies with probability ``coverage`` (exchangeable scores).

    A new good score exceeds the k-th smallest of n with probability 1 − U₍ₖ₎, a Beta(n + 1 − k, k)
    variable over calibration draws.
    """
    k = conformal_rank(n_scores, target_far)
    tail = (1 - coverage) / 2
    return tuple(float(stats.beta.ppf(p, n_scores + 1 - k, k)) for p in (tail, 1 - tail))


def evt_quantile(scores: np.ndarray, p: float) -> float:
    """The p-quantile of a generalised extreme value distribution fitted to ``scores`` by MLE.

    Shape convention: SciPy's ``genextreme`` with shape c; the usual ξ is −c, so c < 0 is a heavy
    (Fréchet) tail and c > 0 a bounded (Weibull) one.
    """
    c, loc, scale = stats.genextreme.fit(scores)
    return float(stats.genextreme.ppf(p, c, loc=loc, scale=scale))
