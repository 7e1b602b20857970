"""What every backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """One request: ordered text and PIL image items, and whether it falls in the CAAS window."""

    items: list[dict]  # {"type": "text", "text": ...} or {"type": "image", "image": PIL.Image, "role": ...}
    uncertain: bool = False


@dataclass(frozen=True)
class Reply:
    text: str
    seconds: float
    caas: bool
