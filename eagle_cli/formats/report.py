"""``report`` artifacts: ``report.html`` (self-contained), ``metrics.json`` (rows, question types,
comparison, notes, the headline's definition), ``metrics.csv`` (the rows) and MMAD-format answers
``mmad_<run>_<system>.json``."""

from __future__ import annotations

import csv
import json

from eagle_cli.artifacts import ArtifactRef, Draft

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"
METRICS_CSV = "metrics.csv"


def write_report(draft: Draft, html: str, metrics: dict, columns: list[str], mmad: dict[str, list[dict]]) -> None:
    """Write the page, the metrics (also as CSV with ``columns``) and one MMAD answer file per name."""
    draft.file(REPORT_FILE).write_text(html)
    draft.file(METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    with open(draft.file(METRICS_CSV), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(metrics["rows"])
    for name, rows in mmad.items():
        draft.file(f"mmad_{name}.json").write_text(json.dumps(rows, indent=1))


def read_metrics(ref: ArtifactRef) -> dict:
    return json.loads((ref.path / METRICS_FILE).read_text())
