"""docs/cli.md is generated from the commands' help; it must not fall behind them."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "cli_docs.py"


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("cli_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DOCS.read_text() == module.render(), "docs/cli.md is stale: run python scripts/cli_docs.py"
    for command in ("extract", "fit-bank", "fit-threshold", "score", "prompt", "reason", "report", "run"):
        assert f"## eagle {command}\n" in module.DOCS.read_text()
