"""The whole chain and its report: run, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.markup import escape

from eagle_cli.cli.app import Session, app, artifact_entry, command, document, err, only
from eagle_cli.cli.options import Categories
from eagle_cli.errors import SettingsError
from eagle_cli.params import IN, OUTPUT, OutputParams, ReportParams, StoreParams
from eagle_cli.yaml_files import YamlProblem, parse_yaml


@command(app)
def report(
    data: Categories, settings: ReportParams, store: Annotated[StoreParams, only("artifacts", "run", "force")],
    output: OutputParams,
    compare: Annotated[Optional[str], typer.Option(help="A second run to show side by side with --run (the same "
                                                       "dataset).", rich_help_panel=IN)] = None,
    fmt: Annotated[Literal["html", "md"], typer.Option(
        "--format", help="html (write the report) or md (also print the tables as Markdown).",
        rich_help_panel=OUTPUT)] = "html",
):
    """Metrics, plots and an image gallery for one run (--run), or two side by side (--compare): a **report**
    artifact in the first run.

    Example: eagle report --run mvtec-qwen7b --compare mvtec-vllm --format md
    """
    from eagle_cli.stages.report import markdown, run_report

    session = Session("report", OutputParams(quiet=output.quiet or fmt == "md", json=output.json))
    names = (store.run, compare) if compare else (store.run,)
    ref = run_report(names, data.category, settings, context=session.context(store))
    if fmt == "md":
        print(markdown(ref))
    session.report([ref])
    if not output.json:
        err.print(f"open [bold]{escape(str(ref.path / 'report.html'))}[/] in a browser")


def _overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as config keys, each value read as YAML (``true``, ``0.2``, ``[a, b]``)."""
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError.of("set", f"takes KEY=VALUE, like --set model=/models/qwen, got {pair!r}")
        try:
            values[key.strip()] = parse_yaml(text)
        except YamlProblem as exc:
            raise SettingsError.of("set", f"{key.strip()}: {text!r} {exc}") from None
    return values


@command(app, "run")
def run_chain(
    config: Annotated[Path, typer.Argument(help="YAML config: any setting by its option name, or the reference "
                                                "qwen.yaml's keys; see examples/ and docs/configs.md.")],
    data: Categories, store: Annotated[StoreParams, only("force")], output: OutputParams,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Set any config key for this run (repeatable), e.g. "
                      "--set model=/models/qwen "
                      "--set executor=ray.", rich_help_panel=IN)] = None,
):
    """Run extract → fit-bank → fit-threshold → score → prompt → reason → report for every category, redoing only what
    changed.

    Example: eagle run examples/demo.yaml --category brick,coins --set caas=true
    """
    from eagle_cli.config import RunConfig
    from eagle_cli.pipeline import run_pipeline

    session = Session("run", output)
    overrides = _overrides(set_ or [])
    if data.category:
        overrides["category"] = list(data.category)
    settings = RunConfig.load(config, overrides)
    run_store = settings.run.store
    context = session.context(StoreParams(run_store.artifacts, run_store.run, store.force, run_store.on_error))
    outcomes, messages = run_pipeline(settings, context=context)
    _print_outcomes(session, outcomes, messages)
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


def _print_outcomes(session: Session, outcomes, messages: list[str]) -> None:
    failed = [{"category": o.category, "stage": o.stage, "error": o.error} for o in outcomes if o.error]
    if session.output.json:
        entries = [{**artifact_entry(o.ref, o.stage), "category": o.category} for o in outcomes if o.ref]
        print(json.dumps(document("run", artifacts=entries, failed=failed, notes=messages), indent=2))
        return
    for message in messages:
        err.print(f"[yellow]note:[/] {escape(message)}")
    for o in outcomes:
        if o.error:
            err.print(f"[red]failed[/] {o.category} {o.stage}: {escape(str(o.error))}", highlight=False)
        elif not session.output.quiet or o.stage == "report":
            err.print(f"{'reused' if o.reused else '[green]wrote[/]'} {o.category} {o.stage} {escape(str(o.ref.path))}")
    report_ref = next((o.ref for o in outcomes if o.stage == "report" and o.ref), None)
    if report_ref is not None:
        err.print(f"open [bold]{escape(str(report_ref.path / 'report.html'))}[/] in a browser")
    if failed:
        names = sorted({f"{f['category']}/{f['stage']}" for f in failed})
        err.print(f"[red]{len(names)} stage(s) failed:[/] {', '.join(names)}; the other categories completed.")
