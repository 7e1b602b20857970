"""Where a stage publishes and how it treats reuse, bad images and progress (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eagle_cli.errors import ParameterError
from eagle_cli.progress import Reporter, Silent

ON_ERROR = ("skip", "fail")


@dataclass
class Context:
    """Where a stage publishes, and how it treats reuse, per-image errors and progress."""

    artifacts: Path = Path("artifacts")
    run: str = "default"
    force: bool = False
    on_error: str = "skip"
    reporter: Reporter = field(default_factory=Silent)

    def __post_init__(self):
        if self.on_error not in ON_ERROR:
            raise ParameterError(f"--on-error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}.")
