"""Where a stage publishes and how it treats reuse, bad images and progress (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eagle_cli.params import OnError, check_choice
from eagle_cli.progress import Reporter, Silent


@dataclass
class Context:
    """Where a stage publishes, and how it treats reuse, per-image errors and progress."""

    artifacts: Path = Path("artifacts")
    run: str = "default"
    force: bool = False
    on_error: OnError = "skip"
    reporter: Reporter = field(default_factory=Silent)

    def __post_init__(self):
        check_choice("on_error", self.on_error, OnError)
