"""The service's audit trail: one JSON line per verdict, append-only, rotated by size, kill-safe.

Plants must trace every verdict: which part (the image's sha256 and size), when, what eagle said (score,
p-value, verdict, uncertain flag, boxes, the model's answer) and with what (threshold id, eagle's version), under
the request id the client got. Each line reaches the file in one ``write`` on a descriptor opened for appending,
before the client is answered, so a kill -9 loses at most the line being written and never touches the lines
before it. When the file would pass ``max_bytes`` it becomes ``NAME.1`` (``NAME.1`` becomes ``NAME.2``, …, the
oldest beyond ``keep`` is removed) and a new file starts. Optionally the images themselves are kept beside it
(``images/<request id>.<kind>``): those judged anomalous, or all.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

#: Which images are kept beside the log.
KEEP_IMAGES = ("none", "anomalous", "all")


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 100_000_000, keep: int = 5, images: str = "none"):
        if images not in KEEP_IMAGES:
            raise ValueError(f"images must be one of {KEEP_IMAGES}, got {images!r}")
        self.path, self.max_bytes, self.keep, self.images = Path(path), max_bytes, keep, images
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, entry: dict, image: bytes | None = None, suffix: str = "img") -> None:
        """Append ``entry`` (it must hold ``request_id``) and, as the policy says, keep ``image``."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        if image is not None and (self.images == "all" or (self.images == "anomalous" and entry.get("anomalous"))):
            folder = self.path.parent / "images"
            folder.mkdir(exist_ok=True)
            target = folder / f"{entry['request_id']}.{suffix}"
            partial = target.with_suffix(target.suffix + ".partial")
            partial.write_bytes(image)
            partial.rename(target)  # whole or absent
        with self._lock:
            size = os.fstat(self._fd).st_size
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            os.write(self._fd, line)

    def _rotate(self) -> None:
        os.close(self._fd)
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        oldest.unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{number + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
