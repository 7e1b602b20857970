"""The ``eagle`` command: one thin function per stage — parse, call the stage, say where it wrote."""
# ruff: noqa: I001  (importing a command module registers its commands; --help lists them in this order)

from eagle_cli.cli import expert  # noqa: F401  (extract, fit-bank, fit-threshold, score)
from eagle_cli.cli import reasoning  # noqa: F401  (prompt, reason)
from eagle_cli.cli import chain  # noqa: F401  (report, run)
from eagle_cli.cli import service  # noqa: F401  (serve)
from eagle_cli.cli import tools  # noqa: F401  (data, backbones, artifacts)
from eagle_cli.cli.app import app, main

__all__ = ["app", "main"]
