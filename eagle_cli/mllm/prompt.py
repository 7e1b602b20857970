"""What every backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass

from eagle_cli.errors import EagleError


@dataclass(frozen=True)
class Prompt:
    """One request: ordered text and PIL image items, and whether it falls in the CAAS window."""

    items: list[dict]  # {"type": "text", "text": ...} or {"type": "image", "image": PIL.Image, "role": ...}
    uncertain: bool = False


@dataclass(frozen=True)
class Reply:
    """A model's answer; ``error`` instead when the model refused this one prompt (the others go on)."""

    text: str
    seconds: float
    caas: bool
    error: str | None = None


class Interrupted(EagleError):
    """The backend stopped part-way through a batch: ``replies`` holds the answers that did arrive
    (None where none came), so they are kept before the stop is reported."""

    def __init__(self, cause: EagleError, replies: list[Reply | None]):
        super().__init__(str(cause))
        self.replies = replies
