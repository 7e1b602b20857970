"""Assemble the report page: metric tables, DBT plots, the image gallery; Jinja2 with autoescape."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from PIL import Image

from eagle_cli.data.images import decode
from eagle_cli.errors import ImageError
from eagle_cli.formats.scores import ScoreRow, read_maps
from eagle_cli.prompts.render import draw_boxes, heatmap_overlay
from eagle_cli.report import plots
from eagle_cli.report.gather import RunData
from eagle_cli.report.tables import ALL_KEYS, HEADLINE, TITLES, question_type_rows, says_anomalous

THUMB_PX = 224


def _jpeg(image: Image.Image) -> str:
    image = image.copy()
    image.thumbnail((THUMB_PX, THUMB_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()


def _tags(row: ScoreRow, answers: list[dict]) -> list[str]:
    tags = []
    if row.label == 1 and not row.anomalous:
        tags.append("miss")
    if row.label == 0 and row.anomalous:
        tags.append("false_alarm")
    if any(a["verdict"] is not None and a["verdict"] != row.anomalous for a in answers):
        tags.append("disagree")
    return tags


def gallery(runs: list[RunData], limit: int) -> tuple[list[dict], int]:
    """Gallery entries, interesting ones first, at most ``limit``; also how many there were in all."""
    candidates = []
    for run in runs:
        for category in run.categories.values():
            by_path = {}
            for answer_set in category.answers:
                for answer in answer_set.rows:
                    if answer.type == "Anomaly Detection":
                        by_path.setdefault(answer.path, []).append({
                            "system": answer_set.system, "parsed": answer.parsed or "—", "valid": answer.valid,
                            "raw": answer.raw, "verdict": says_anomalous(answer)})
            for row in category.rows:
                answers = by_path.get(row.path, [])
                candidates.append((run, category, row, answers, _tags(row, answers)))
    candidates.sort(key=lambda c: (not c[4], c[1].name, c[2].index))
    items = []
    for run, category, row, answers, tags in candidates[:limit]:
        item = {
            "run": run.name, "category": category.name, "name": Path(row.path).name, "path": row.path,
            "score": row.score, "verdict": "anomalous" if row.anomalous else "normal",
            "uncertain": row.uncertain, "answers": answers, "tags": tags, "unreadable": None,
            "truth": {0: "good", 1: f"defective ({row.defect})"}.get(row.label, "unknown"),
            "original": None, "overlay": None, "boxes": None,
        }
        try:
            image = decode(Path(row.path))
        except ImageError as exc:
            item["unreadable"] = exc.reason  # changed or moved since scoring; its figures still count
            items.append(item)
            continue
        _, amap = read_maps(category.scores, row)
        boxes = category.boxes.get(row.path, [])  # as the model was shown them
        item.update(original=_jpeg(image), overlay=_jpeg(heatmap_overlay(image, amap, vmax=category.threshold.tau,
                                                                         seen=row.observed_box)),
                    boxes=_jpeg(draw_boxes(image, boxes)) if boxes else None)
        items.append(item)
    return items, len(candidates)


def _calibration_row(name: str, category) -> dict:
    """The threshold's promise next to what the labelled test images show, and the CAAS window."""
    threshold, rows = category.threshold, category.rows
    tau, s_max = threshold.tau, threshold.s_max
    good = [r for r in rows if r.label == 0]
    inside = [r for r in rows if r.uncertain]
    window_metrics = category.metrics.get("window") or {}
    conformal = threshold.params.method == "conformal"
    return {"category": name, "method": threshold.params.method, "calibration": category.calibration,
            "n": threshold.n, "target": threshold.params.target_far if conformal else None,
            "predicted": threshold.predicted_far, "floor": threshold.smallest_target,
            "observed": sum(r.anomalous for r in good) / len(good) if good else None,
            "flagged": sum(r.anomalous for r in good), "good_total": len(good), "tau": tau, "s_max": s_max,
            "good": sum(r.label == 0 for r in inside), "bad": sum(r.label == 1 for r in inside),
            "inside": window_metrics.get("accuracy_inside"), "outside": window_metrics.get("accuracy_outside")}


def render(runs: list[RunData], rows: dict[str, list[dict]], comparison: list[dict], *, gallery_limit: int,
           notes: list[str], systems: dict[str, dict]) -> str:
    # Sandboxed like the prompt templates: the page shows text from answers and paths, never runs it.
    env = ImmutableSandboxedEnvironment(loader=jinja2.PackageLoader("eagle_cli.report", "templates"),
                                        autoescape=True, undefined=jinja2.StrictUndefined)
    headline = [{"run": r["run"], "system": r["system"], "complete": r.get("complete", True),
                 "value": "—" if r[HEADLINE] is None else f"{100 * r[HEADLINE]:.1f} %",
                 "invalid": _all_invalid(run, r["system"])}
                for run in runs for r in rows[run.name] if r["category"] == "macro"]
    run_views = []
    for run in runs:
        window, figures = [], []
        for name, category in sorted(run.categories.items()):
            window.append(_calibration_row(name, category))
            figures.append({"alt": f"{name} score histogram", "png": plots.dbt_histogram(category)})
            roc = plots.roc(category)
            if roc:
                figures.append({"alt": f"{name} ROC", "png": roc})
        run_views.append({"name": run.name, "dataset": run.dataset, "rows": rows[run.name], "window": window,
                          "plots": figures, "types": question_type_rows(run)})
    items, total = gallery(runs, gallery_limit)
    return env.get_template("report.html.j2").render(
        runs=run_views, headline=headline, columns=ALL_KEYS, comparison=comparison, gallery=items,
        gallery_cut=total if total > len(items) else 0, notes=notes, titles=TITLES,
        systems=[{"label": label, "id": identity["id"], "details": _details(identity)}
                 for label, identity in sorted(systems.items())])


def _all_invalid(run: RunData, system: str) -> int:
    """How many detection answers ``system`` gave in ``run`` if not one of them could be read, else 0."""
    answers = [a for category in run.categories.values() for answer_set in category.answers
               if answer_set.system == system for a in answer_set.rows if a.type == "Anomaly Detection"]
    return len(answers) if answers and not any(a.valid for a in answers) else 0


def _details(identity: dict) -> str:
    """One line of what makes a system's answers what they are, for the legend."""
    flat = {}
    for part in ("reason", "prompt"):
        for key, value in (identity.get(part) or {}).items():
            if value not in (None, {}, []):
                flat[key] = value
    return "; ".join(f"{key}={value}" for key, value in flat.items())
