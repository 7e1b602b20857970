"""The whole chain and its report: run, report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.markup import escape

from eagle_cli.cli.app import Session, app, command, err
from eagle_cli.cli.options import (
    IN,
    MODEL,
    OUTPUT,
    REPORT,
    RUNTIME,
    ArtifactsOpt,
    CategoryOpt,
    ForceOpt,
    JsonOpt,
    QuietOpt,
    categories,
)
from eagle_cli.config import RunConfig
from eagle_cli.params import Executor, ReportParams


@command(app)
def report(
    runs: Annotated[str, typer.Option("--run", help="Run to report, or two comma-separated runs side by side.",
                                      rich_help_panel=IN)] = "default",
    category: CategoryOpt = None,
    gallery: Annotated[int, typer.Option(min=0, help="Most images in the gallery (misses, false alarms, "
                                                     "disagreements first).", rich_help_panel=OUTPUT)] = REPORT.gallery,
    fmt: Annotated[Literal["html", "md"], typer.Option(
        "--format", help="html (write the report) or md (also print the tables as Markdown).",
        rich_help_panel=OUTPUT)] = "html",
    artifacts_root: ArtifactsOpt = Path("artifacts"), force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
):
    """Metrics, plots and an image gallery for one run, or two side by side (**report** artifact).

    Example: eagle report --run mvtec-qwen7b,mvtec-vllm --format md
    """
    from eagle_cli.stages.report import markdown, run_report

    session = Session(quiet or fmt == "md", as_json)
    names = tuple(r.strip() for r in runs.split(",") if r.strip())
    params = ReportParams(runs=names, categories=tuple(categories(category, [])), gallery=gallery)
    ref = run_report(params, context=session.context(artifacts_root, names[0], force))
    if fmt == "md":
        print(markdown(ref))
    session.report([ref])
    if not as_json:
        err.print(f"open [bold]{escape(str(ref.path / 'report.html'))}[/] in a browser")


@command(app, "run")
def run_chain(
    config: Annotated[Path, typer.Argument(help="YAML config: any stage option by its name, or the reference "
                                                "qwen.yaml's keys; see examples/ and README.")],
    only: Annotated[Optional[str], typer.Option("--categories", help="Only these comma-separated categories.",
                                                rich_help_panel=IN)] = None,
    model: Annotated[Optional[str], typer.Option(help="Reason with this model (folder, hub id or preset), whatever "
                                                      "the config says.", rich_help_panel=MODEL)] = None,
    executor: Annotated[Optional[Executor], typer.Option(
        help="local: here, category after category. ray: each category's expert stages as a task on a Ray cluster "
             "(the ray extra; artifacts and data on a path every node sees); reasoning stays here. Default: the "
             "config's `executor:`, else local.", rich_help_panel=RUNTIME)] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        help="The Ray cluster's head (HOST:PORT, or `auto` for a cluster started on this machine); default: the "
             "config's `ray_address:`, else a Ray started for this run.", rich_help_panel=RUNTIME)] = None,
    force: ForceOpt = False, quiet: QuietOpt = False, as_json: JsonOpt = False,
):
    """Run extract → fit-bank → fit-threshold → score → prompt → reason → report for every category, redoing only what
    changed.

    Example: eagle run examples/demo.yaml --categories brick,coins
    """
    from eagle_cli.pipeline import run_pipeline

    session = Session(quiet, as_json)
    settings = RunConfig.load(config)
    if only:
        settings = dataclasses.replace(settings, categories=tuple(categories(only, [])))
    if model:
        settings = settings.with_model(model)
    if executor or ray_address:
        settings = dataclasses.replace(settings, executor=executor or settings.executor,
                                       ray_address=ray_address or settings.ray_address)
    context = session.context(settings.artifacts, settings.run, force, settings.on_error)
    outcomes, messages = run_pipeline(settings, context=context)
    for message in messages:
        err.print(f"[yellow]note:[/] {escape(message)}")
    _print_outcomes(session, outcomes)
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


def _print_outcomes(session: Session, outcomes) -> None:
    if session.as_json:
        print(json.dumps([{"category": o.category, "stage": o.stage, "reused": o.reused, "error": o.error,
                           "path": str(o.ref.path) if o.ref else None} for o in outcomes], indent=2))
        return
    for o in outcomes:
        if o.error:
            err.print(f"[red]failed[/] {o.category} {o.stage}: {escape(str(o.error))}", highlight=False)
        elif not session.quiet or o.stage == "report":
            err.print(f"{'reused' if o.reused else '[green]wrote[/]'} {o.category} {o.stage} {escape(str(o.ref.path))}")
    report_ref = next((o.ref for o in outcomes if o.stage == "report" and o.ref), None)
    if report_ref is not None:
        err.print(f"open [bold]{escape(str(report_ref.path / 'report.html'))}[/] in a browser")
    failed = sorted({f"{o.category}/{o.stage}" for o in outcomes if o.error})
    if failed:
        err.print(f"[red]{len(failed)} stage(s) failed:[/] {', '.join(failed)}; the other categories completed.")
