"""The Typer application: its groups, the root options, one error path, and how commands print.

Commands live in ``cli/expert.py`` (extract … score), ``cli/reasoning.py`` (prompt, reason),
``cli/chain.py`` (run, report) and ``cli/tools.py`` (data, backbones, artifacts). Stage modules
(torch, transformers, matplotlib) are imported inside the commands that use them, so ``--help``
and usage errors answer at once.
"""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from eagle_cli import __version__
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import EagleError

app = typer.Typer(help="eagle: industrial visual inspection — expert anomaly scoring, normal-only thresholds, "
                       "multimodal reasoning, staged artifacts.", no_args_is_help=True, rich_markup_mode="markdown")
data_app = typer.Typer(help="Datasets: generate the synthetic data.", no_args_is_help=True)
backbones_app = typer.Typer(help="Backbones: list them, bring weights onto an offline machine.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Artifacts: list and inspect what the stages wrote.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(backbones_app, name="backbones")
app.add_typer(artifacts_app, name="artifacts")

err = Console(stderr=True, soft_wrap=True)  # paths must survive copy and paste
out = Console(soft_wrap=True)
_debug = {"on": False}


def _print_version(value: bool) -> None:
    if value:
        out.print(f"eagle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="EAGLE_DEBUG", help="Show tracebacks on errors (before the command: eagle --debug score …).")
    ] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True, callback=_print_version)] = False,
):
    _debug["on"] = debug


def command(typer_app: typer.Typer, name: str | None = None):
    """Register a command whose :class:`EagleError` becomes one red paragraph and exit code 1."""

    def register(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except EagleError as exc:
                if _debug["on"]:
                    raise
                err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
                raise typer.Exit(1) from None

        return typer_app.command(name)(wrapper)

    return register


@dataclass
class Session:
    """Output settings of one command."""

    quiet: bool
    as_json: bool

    @contextmanager
    def task(self, description: str, total: int) -> Iterator:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err, disable=self.quiet, transient=False) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)

    def context(self, artifacts_root: Path, run: str, force: bool, on_error: str = "skip") -> Context:
        return Context(artifacts=artifacts_root, run=run, force=force, on_error=on_error, reporter=self)

    def report(self, refs: list[ArtifactRef]) -> None:
        if self.as_json:
            print(json.dumps([{"kind": r.kind, "id": r.id, "path": str(r.path), "reused": r.reused,
                               "category": r.path.parent.parent.name, "summary": r.summary} for r in refs], indent=2))
            return
        for ref in refs:
            verb = "reused" if ref.reused else "wrote"
            err.print(f"[green]{verb}[/] {ref.kind} [bold]{escape(str(ref.path))}[/]")
            if not self.quiet:
                _print_summary(ref)
            _print_warnings(ref)  # even with --quiet: they say the numbers may not mean what they seem


def _print_summary(ref: ArtifactRef) -> None:
    flat = {}
    for key, value in ref.summary.items():
        if key == "warnings":
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            flat[key] = value
    err.print("  " + "  ".join(f"{k}={escape(_fmt(v))}" for k, v in flat.items()))


def _print_warnings(ref: ArtifactRef) -> None:
    warnings = list(ref.summary.get("warnings", []))
    if ref.summary.get("errors") and not ref.reused:
        warnings.append(f"{ref.summary['errors']} file(s) could not be used and were left out; each is named with "
                        f"the reason in {ref.path / 'errors.jsonl'}")
    if ref.lineage.get("weights") == "none":
        warnings.append("random backbone weights (--weights none): scores are not meaningful.")
    for warning in warnings:
        err.print(f"  [yellow]warning:[/] {escape(warning)}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def main() -> None:
    """Run the CLI: exit 0 ok, 1 user error (one paragraph, no traceback unless --debug), 2 usage error."""
    app()
