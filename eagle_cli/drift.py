"""Does the line still look like the calibration? An online test of the exchangeability τ's promise rests on.

A conformal threshold promises at most α of good parts flagged only while new parts are exchangeable with the
calibration images. This module tests that, part after part, with a conformal test martingale (Vovk et al.,
"Testing exchangeability on-line", ICML 2003; the Simple Jumper of Vovk, Petej, Nouretdinov, Ahlberg, Carlsson
and Gammerman, "Retrain or not retrain: conformal test martingales for change-point detection", 2021):

1. Each scored part gets its conformal p-value: the share of the calibration scores and of the parts before it
   that score at least as high, ties broken at random. Under exchangeability these p-values are independent and
   uniform on (0, 1).
2. A betting martingale turns them into evidence: capital starts at 1 and is multiplied by f(p) for each part,
   where f bets on small p-values (parts scoring higher than calibration — the direction that breaks the false-
   alarm promise; parts scoring lower make τ only more careful). The Simple Jumper lets a small share J of the
   capital move between "no bet" and the bets at every part, so evidence piles up quickly after a change
   however long the line ran before it.
3. The alarm: capital ≥ 1/δ. By Ville's inequality, on an exchangeable line the capital ever reaches 1/δ with
   probability at most δ — over the whole life of the service, not per part. Default δ = 0.01.

Every part's score enters, defective parts included: a steady few defects do not move the capital (the
no-bet share keeps it), a burst of them does, and that is a change on the line worth an alarm too.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

#: The alarm level δ: on an exchangeable line the alarm ever fires with probability at most this.
DEFAULT_DELTA = 0.01
#: The share of capital that moves between bets at each part (the Simple Jumper's J).
JUMP = 0.01


def _bets(p: float) -> tuple[float, ...]:
    """The betting functions' factors at p-value ``p``: no bet, a mild and a strong bet on small p-values. Each
    integrates to 1 over (0, 1), so each is fair under uniform p-values."""
    return 1.0, 1.5 - p, 0.5 / math.sqrt(max(p, 1e-12))


@dataclass
class DriftState:
    """What the watch says now: parts seen, the capital, and the part at which the alarm fired (None: ok)."""

    parts: int
    capital: float
    alarm_at: int | None

    @property
    def status(self) -> str:
        return "ok" if self.alarm_at is None else "drifting"


class DriftWatch:
    """Conformal p-values and the Simple Jumper martingale over a stream of scores, against ``calibration``."""

    def __init__(self, calibration: np.ndarray, *, delta: float = DEFAULT_DELTA, seed: int = 0):
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = delta
        self.calibration = np.sort(np.asarray(calibration, dtype=np.float64).ravel())
        self._seen = self.calibration.tolist()
        self._rng = np.random.default_rng(seed)
        self._capital = [1 / 3] * 3
        self.parts = 0
        self.alarm_at: int | None = None

    def p_value(self, score: float) -> float:
        """The part's conformal p-value among everything seen so far (it is then remembered)."""
        low, high = bisect.bisect_left(self._seen, score), bisect.bisect_right(self._seen, score)
        above, ties = len(self._seen) - high, high - low
        p = (above + self._rng.random() * (ties + 1)) / (len(self._seen) + 1)
        self._seen.insert(high, float(score))
        return p

    def update(self, score: float) -> float:
        """Take one part's score; return its p-value. The alarm, once fired, stays (:attr:`alarm_at`)."""
        p = self.p_value(score)
        total = sum(self._capital)
        factors = _bets(p)
        self._capital = [((1 - JUMP) * c + JUMP * total / 3) * f for c, f in zip(self._capital, factors, strict=True)]
        self.parts += 1
        if self.alarm_at is None and sum(self._capital) >= 1 / self.delta:
            self.alarm_at = self.parts
        return p

    @property
    def state(self) -> DriftState:
        return DriftState(self.parts, sum(self._capital), self.alarm_at)


def watch_batch(calibration: np.ndarray, scores: np.ndarray, *, delta: float = DEFAULT_DELTA,
                seed: int = 0) -> tuple[np.ndarray, DriftState]:
    """The p-values of ``scores`` in order and the watch's verdict on the batch (offline: `eagle score`)."""
    watch = DriftWatch(calibration, delta=delta, seed=seed)
    return np.array([watch.update(float(s)) for s in scores]), watch.state


def p_values(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each score's conformal p-value against the calibration scores alone, ``(#calibration ≥ score + 1) / (n + 1)``:
    how unusual the part is among good ones (small: unusual). What answers and score rows carry; the watch's own
    p-values also count the parts before, and break ties at random."""
    ordered = np.sort(np.asarray(calibration, dtype=np.float64))
    above = len(ordered) - np.searchsorted(ordered, np.asarray(scores, dtype=np.float64), side="left")
    return (above + 1) / (len(ordered) + 1)


def batch_drift(calibration: np.ndarray, rows: list, *, delta: float = DEFAULT_DELTA) -> dict:
    """The offline check of `eagle score`: are the batch's good parts (its good-labelled images when it is
    labelled, else every image, in order) exchangeable with the calibration? A summary for the manifest."""
    labelled = any(row.label is not None for row in rows)
    watched = [row for row in rows if row.label == 0] if labelled else rows
    _, state = watch_batch(calibration, np.array([row.score for row in watched]), delta=delta)
    return {"watched": "good-labelled images" if labelled else "all images", "images": len(watched),
            "status": state.status, "capital": state.capital, "delta": delta,
            "alarm_at": watched[state.alarm_at - 1].path if state.alarm_at else None}
