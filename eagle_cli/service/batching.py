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
    threshold: str  # the id of the threshold that judged it
    tau: float
    s_max: float
    p_value: float | None = None  # conformal, against the calibration scores (eagle_cli/drift.py)


@dataclass(frozen=True)
class Judge:
    """What judges the parts: an expert, the id of its threshold, and the drift watch its parts feed."""

    expert: Expert | ExportedExpert
    threshold_id: str
    watch: DriftWatch | None = None


@dataclass
class _Job:
    image: Image.Image
    done: threading.Event = field(default_factory=threading.Event)
    result: Inspection | None = None
    error: BaseException | None = None


class BatchingScorer:
    """Score images submitted from any thread in batches of up to ``batch_size`` on one worker thread."""

    def __init__(self, expert: Expert | ExportedExpert, *, threshold_id: str = "", watch: DriftWatch | None = None,
                 batch_size: int = 8, max_wait_s: float = 0.01, queue_size: int = 64):
        #: Replaced whole by :meth:`swap`; a batch reads it once, so it is judged by one judge from end to end.
        self.judge = Judge(expert, threshold_id, watch)
        self.batch_size, self.max_wait_s = batch_size, max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.batches = 0
        self._worker = threading.Thread(target=self._work, name="eagle-scorer", daemon=True)
        self._worker.start()

    @property
    def expert(self) -> Expert | ExportedExpert:
        return self.judge.expert

    def swap(self, judge: Judge) -> Judge:
        """Judge the next batches with ``judge`` (the batch being scored finishes on the old one); return the
        old one."""
        old, self.judge = self.judge, judge
        return old

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
        judge = self.judge
        expert, watch = judge.expert, judge.watch
        try:
            scored = expert.score([job.image for job in jobs])
            self.batches += 1
            p = p_values(watch.calibration, scored.scores) if watch is not None else [None] * len(jobs)
            for i, job in enumerate(jobs):
                boxes = [box for box, _ in find_boxes(scored.maps[i], expert.tau)] if scored.anomalous[i] else []
                if watch is not None:  # only this worker thread updates the watch
                    watch.update(float(scored.scores[i]))
                job.result = Inspection(float(scored.scores[i]), bool(scored.anomalous[i]),
                                        bool(scored.uncertain[i]), boxes, len(jobs), judge.threshold_id,
                                        expert.tau, expert.s_max, None if p[i] is None else float(p[i]))
        except Exception as exc:  # the requests of this batch get the error; the service goes on
            for job in jobs:
                job.error = exc
        finally:
            for job in jobs:
                job.done.set()
