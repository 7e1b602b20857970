"""Requests from many threads scored together: one backbone forward per batch, a bounded queue.

A request waits at most ``max_wait_s`` for others to share its forward; when ``queue_size``
requests already wait, a new one is refused at once (:class:`Busy`) rather than queued behind work
the line cannot wait for.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

from eagle_cli.drift import DriftWatch, p_values
from eagle_cli.prompts.boxes import find_boxes

if TYPE_CHECKING:
    from eagle_cli.expert.model import Expert
    from eagle_cli.export.runtime import ExportedExpert


class Busy(Exception):
    """The queue is full."""


@dataclass(frozen=True)
class Inspection:
    """The expert's answer about one image; boxes are in the image's own pixels."""

    score: float
    anomalous: bool
    uncertain: bool
    boxes: list[list[int]]
    batch: int  # how many images shared this forward
    p_value: float | None = None  # conformal, against the calibration scores (eagle_cli/drift.py)


@dataclass
class _Job:
    image: Image.Image
    done: threading.Event = field(default_factory=threading.Event)
    result: Inspection | None = None
    error: BaseException | None = None


class BatchingScorer:
    """Score images submitted from any thread in batches of up to ``batch_size`` on one worker thread."""

    def __init__(self, expert: Expert | ExportedExpert, *, batch_size: int = 8, max_wait_s: float = 0.01,
                 queue_size: int = 64, watch: DriftWatch | None = None):
        self.expert, self.batch_size, self.max_wait_s = expert, batch_size, max_wait_s
        #: Fed every scored part in the order it was scored (only this worker thread updates it).
        self.watch = watch
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.batches = 0
        self._worker = threading.Thread(target=self._work, name="eagle-scorer", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def inspect(self, image: Image.Image) -> Inspection:
        """Score one image (blocking until its batch is done); :class:`Busy` if the queue is full."""
        job = _Job(image)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy from None
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join()

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(jobs) < self.batch_size:
                try:
                    job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                jobs.append(job)
            self._score(jobs)

    def _score(self, jobs: list[_Job]) -> None:
        try:
            scored = self.expert.score([job.image for job in jobs])
            self.batches += 1
            for i, job in enumerate(jobs):
                boxes = [box for box, _ in find_boxes(scored.maps[i], self.expert.tau)] if scored.anomalous[i] else []
                p_value = None
                if self.watch is not None:
                    self.watch.update(float(scored.scores[i]))
                    p_value = float(p_values(self.watch.calibration, scored.scores[i:i + 1])[0])
                job.result = Inspection(float(scored.scores[i]), bool(scored.anomalous[i]),
                                        bool(scored.uncertain[i]), boxes, len(jobs), p_value)
        except Exception as exc:  # the requests of this batch get the error; the service goes on
            for job in jobs:
                job.error = exc
        finally:
            for job in jobs:
                job.done.set()
