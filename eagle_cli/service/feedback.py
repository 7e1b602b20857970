"""Operator feedback: a part the operator judged is kept, with its label, where `eagle update-bank` takes it.

The service remembers the last ``window`` uploads of a station by request id (their bytes; a bounded memory).
``POST /feedback`` with ``{"request_id": …, "label": "good" | "defect", "note": …}`` writes that part's image to
``DIR/good/`` or ``DIR/defect/`` (``DIR`` is the station's: ``--feedback-dir``/CATEGORY), named by its request
id and written whole or not at all, and appends a line to ``DIR/feedback.jsonl`` (time, request id, label, note,
the score, verdict and threshold that judged it). The loop closes with ``eagle update-bank --good DIR/good`` and
a reload of the service.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from eagle_cli.data.sample import IMAGE_SUFFIXES

LABELS = ("good", "defect")


class UnknownRequest(KeyError):
    """A request id the service does not (or no longer) remember."""


class FeedbackStore:
    def __init__(self, folder: Path, *, window: int = 256):
        self.folder, self.window = Path(folder), window
        self._recent: OrderedDict[str, tuple[bytes, str, dict]] = OrderedDict()
        self._lock = threading.Lock()
        for label in LABELS:
            (self.folder / label).mkdir(parents=True, exist_ok=True)

    def remember(self, request_id: str, image: bytes, kind: str, verdict: dict) -> None:
        """Keep an answered upload for a while: the last ``window`` are remembered."""
        with self._lock:
            self._recent[request_id] = (image, kind, verdict)
            while len(self._recent) > self.window:
                self._recent.popitem(last=False)

    def remembers(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._recent

    def label(self, request_id: str, label: str, note: str = "") -> Path:
        """File the part under ``label``; return the image's path. :class:`UnknownRequest` if it is not remembered."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        with self._lock:
            if request_id not in self._recent:
                raise UnknownRequest(request_id)
            image, kind, verdict = self._recent[request_id]
            if f".{kind}" not in IMAGE_SUFFIXES:  # a kind the image folders do not read: kept as PNG
                buffer = io.BytesIO()
                Image.open(io.BytesIO(image)).save(buffer, format="PNG")
                image, kind = buffer.getvalue(), "png"
            target = self.folder / label / f"{request_id}.{kind}"
            partial = self.folder / f".{request_id}.partial"  # beside, not in, the folder update-bank reads
            partial.write_bytes(image)
            partial.rename(target)
            entry = {"time": datetime.now(timezone.utc).isoformat(), "request_id": request_id, "label": label,
                     "note": note, "image": str(target.relative_to(self.folder)), **verdict}
            with open(self.folder / "feedback.jsonl", "a") as log:
                log.write(json.dumps(entry) + "\n")
                log.flush()
                os.fsync(log.fileno())
        return target
