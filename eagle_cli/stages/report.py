"""eagle report: metrics, a self-contained report.html and MMAD-format answers, as a ``report`` artifact."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.report import read_metrics, write_report
from eagle_cli.params import ReportParams
from eagle_cli.report.gather import RunData, gather, name_systems
from eagle_cli.report.page import render
from eagle_cli.report.tables import ALL_KEYS, HEADLINE, compare, metric_rows, question_type_rows
from eagle_cli.settings import identity

REPORT_CATEGORY = "_all"
HEADLINE_TEXT = ("macro balanced accuracy: the mean over categories of (accuracy on good + accuracy on defective) / 2 "
                 "(MMAD's 'Anomaly Detection' figure)")


def _mmad_rows(run: RunData) -> dict[str, list[dict]]:
    """Answers in MMAD's result format (image, question, question_type, correct_answer, gpt_answer), per system."""
    out: dict[str, list[dict]] = {}
    root = Path(run.dataset["root"]) if run.dataset["root"] else None
    for category in run.categories.values():
        for answer_set in category.answers:
            for a in answer_set.rows:
                image = Path(a.path)
                relative = str(image.relative_to(root)) if root and image.is_relative_to(root) else str(image)
                out.setdefault(answer_set.system, []).append({
                    "image": relative, "question": {"text": a.question, "options": a.options},
                    "question_type": a.type, "correct_answer": a.correct,
                    "gpt_answer": a.parsed if a.valid else a.raw,
                })
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_report(names: tuple[str, ...], categories: tuple[str, ...], params: ReportParams, *,
               context: Context) -> ArtifactRef:
    """Report the runs ``names`` (one, or two side by side) over ``categories`` (default: all); the report is
    published in the first run. Refuse to compare runs of different datasets."""
    runs = [gather(context.artifacts, name, list(categories) or None, include_incomplete=params.include_incomplete)
            for name in names]
    systems = name_systems(runs)  # over every run at once, so a system compared across them has one label
    if len(runs) == 2 and runs[0].dataset != runs[1].dataset:
        raise ArtifactError(f"Runs {runs[0].name!r} ({runs[0].dataset['root']}) and {runs[1].name!r} "
                            f"({runs[1].dataset['root']}) scored different datasets; report them separately.")

    def build(draft):
        with context.reporter.task("report", len(runs) + 1) as advance:
            rows = {}
            for run in runs:
                rows[run.name] = metric_rows(run)
                advance(1)
            comparison = compare(rows[runs[0].name], rows[runs[1].name]) if len(runs) == 2 else []
            notes = [f"{r['run']}: {r['system']} answers for {r['category']} are incomplete "
                     f"({100 * (r['coverage'] or 0):.0f} % answered); its figures cover only those."
                     for run in runs for r in rows[run.name]
                     if r.get("complete") is False and r["category"] not in ("macro", "micro")]
            notes += [f"{run.name}: {line}" for run in runs for line in run.unfinished]
            html = render(runs, rows, comparison, gallery_limit=params.gallery, notes=notes, systems=systems)
            advance(1)
        all_rows = [r for run in runs for r in rows[run.name]]
        metrics = {"headline": HEADLINE_TEXT, "rows": all_rows, "systems": systems,
                   "question_types": [row for run in runs for row in question_type_rows(run)],
                   "comparison": comparison, "notes": notes}
        mmad = {f"{_slug(run.name)}_{_slug(system)}": answers
                for run in runs for system, answers in _mmad_rows(run).items()}
        write_report(draft, html, metrics, ["run", "category", "system", *ALL_KEYS, "complete"], mmad)
        draft.lineage = {}
        draft.summary = {f"{r['run']}/{r['system']}": r[HEADLINE] for r in all_rows if r["category"] == "macro"}

    return artifacts.produce("report", context=replace(context, run=names[0]), category=REPORT_CATEGORY,
                             params={"runs": list(names), "categories": list(categories), **identity(params),
                                     # Unpublished answers are no input artifact: their progress is part of the id,
                                     # so a report made at 19 % is not reused at 38 %.
                                     "partial_answers": sorted([category.name, a.key, len(a.rows)]
                                                               for run in runs for category in run.categories.values()
                                                               for a in category.answers if not a.complete),
                                     "unfinished": [line for run in runs for line in run.unfinished]},
                             inputs=[ref for run in runs for ref in run.inputs], build=build)


def markdown(ref: ArtifactRef) -> str:
    """The metric tables of a report as Markdown, for pasting into a ticket."""
    data = read_metrics(ref)
    keys = [k for k in ALL_KEYS if any(r.get(k) is not None for r in data["rows"])]
    lines = [f"Headline: {data['headline']}.", "",
             "| run | category | system | " + " | ".join(keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for r in data["rows"]:
        cells = ["—" if r.get(k) is None else f"{100 * r[k]:.1f}" for k in keys]
        flag = "" if r.get("complete", True) else " (incomplete)"
        lines.append(f"| {r['run']} | {r['category']} | {r['system']}{flag} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"> {note}" for note in data["notes"]])
