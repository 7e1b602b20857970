"""Where a stage publishes and how it treats reuse, bad images and progress (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from eagle_cli.errors import SettingsError
from eagle_cli.params import OnError
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
        if self.on_error not in get_args(OnError):
            raise SettingsError.of("on_error", f"must be one of {', '.join(get_args(OnError))}, got {self.on_error!r}")
