"""The report's numbers: per category and overall, for the expert, each model's answers, and EAGLE.

Every figure is a fraction in [0, 1] (shown as %); nothing averages figures of different units.
Overall rows: *macro* = the mean of the per-category figures (the headline, as in the reference
and the paper), *micro* = one figure from all categories' images pooled. AUROCs are not pooled:
scores of different categories live on different scales.
"""

from __future__ import annotations

import numpy as np

from eagle_cli import metrics
from eagle_cli.report.gather import AnswerSet, CategoryRun, RunData

EXPERT = "Expert"
HEADLINE = "balanced_accuracy"
VERDICT_KEYS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "overkill", "miss")
EXPERT_KEYS = ("image_auroc", "pixel_auroc", "pro")
ANSWER_KEYS = ("invalid_share", "coverage", "question_accuracy")
ALL_KEYS = (*EXPERT_KEYS, *VERDICT_KEYS, *ANSWER_KEYS)
#: Short column titles for the page.
TITLES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO", "accuracy": "acc.",
          "balanced_accuracy": "bal. acc.", "precision": "prec.", "recall": "recall", "f1": "F1",
          "overkill": "overkill", "miss": "miss", "invalid_share": "invalid", "coverage": "answered",
          "question_accuracy": "all-question acc."}


def _expert(category: CategoryRun) -> tuple[dict, np.ndarray, np.ndarray]:
    labelled = [r for r in category.rows if r.label is not None]
    labels = np.array([r.label for r in labelled], dtype=int)
    predicted = np.array([r.anomalous for r in labelled], dtype=int)
    row = {key: category.metrics.get(key) for key in EXPERT_KEYS}
    row.update(metrics.verdict_metrics(labels, predicted))
    return row, labels, predicted


def says_anomalous(answer: dict) -> bool | None:
    """The verdict an answer to the defect question gives: the chosen option reads "yes"; None if invalid."""
    if not answer.valid:
        return None
    return answer.options[answer.parsed].strip().lower().startswith("yes")


def _answers(answer_set: AnswerSet) -> tuple[dict, np.ndarray, np.ndarray]:
    detection = [a for a in answer_set.rows if a.type == "Anomaly Detection" and a.label is not None]
    valid = [a for a in detection if a.valid]
    labels = np.array([a.label for a in valid], dtype=int)
    predicted = np.array([says_anomalous(a) for a in valid], dtype=int)
    row = {key: None for key in EXPERT_KEYS}
    row.update(metrics.verdict_metrics(labels, predicted))
    graded = [a for a in answer_set.rows if a.correct is not None and a.valid]
    row.update({
        "invalid_share": 1 - len(valid) / len(detection) if detection else None,
        "coverage": len(answer_set.rows) / answer_set.prompts if answer_set.prompts else None,
        "question_accuracy": float(np.mean([a.parsed == a.correct for a in graded])) if graded else None,
        "complete": answer_set.complete,
    })
    return row, labels, predicted


def _macro(rows: list[dict]) -> dict:
    out = {}
    for key in ALL_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def metric_rows(run: RunData) -> list[dict]:
    """One row per (category, system), then macro and micro rows per system."""
    rows, pooled = [], {}
    for name, category in sorted(run.categories.items()):
        results = [(EXPERT, *_expert(category))]
        results += [(a.system, *_answers(a)) for a in category.answers]
        for system, row, labels, predicted in results:
            rows.append({"run": run.name, "category": name, "system": system, **dict.fromkeys(ALL_KEYS),
                         "complete": True, **row})
            bucket = pooled.setdefault(system, ([], []))
            bucket[0].append(labels)
            bucket[1].append(predicted)
    for system, (labels, predicted) in pooled.items():
        per_category = [r for r in rows if r["system"] == system]
        rows.append({"run": run.name, "category": "macro", "system": system, **_macro(per_category),
                     "complete": all(r.get("complete", True) for r in per_category)})
        micro = {key: None for key in ALL_KEYS}
        micro.update(metrics.verdict_metrics(np.concatenate(labels), np.concatenate(predicted)))
        rows.append({"run": run.name, "category": "micro", "system": system, **micro,
                     "complete": all(r.get("complete", True) for r in per_category)})
    return rows


def question_type_rows(run: RunData) -> list[dict]:
    """Accuracy per question type and system over all categories (MMAD's subtasks); invalid answers count wrong."""
    tally: dict[tuple[str, str], list[bool]] = {}
    for category in run.categories.values():
        for answer_set in category.answers:
            for a in answer_set.rows:
                if a.correct is not None:
                    hit = a.valid and a.parsed == a.correct
                    tally.setdefault((answer_set.system, a.type), []).append(hit)
    return [{"run": run.name, "system": system, "type": kind, "accuracy": float(np.mean(hits)), "n": len(hits)}
            for (system, kind), hits in sorted(tally.items())]


def compare(first: list[dict], second: list[dict]) -> list[dict]:
    """Rows present in both runs (same category and system) with each metric's difference (second − first)."""
    index = {(r["category"], r["system"]): r for r in second}
    out = []
    for row in first:
        other = index.get((row["category"], row["system"]))
        if other is None:
            continue
        out.append({"category": row["category"], "system": row["system"],
                    **{key: (row.get(key), other.get(key),
                             None if row.get(key) is None or other.get(key) is None else other[key] - row[key])
                       for key in ALL_KEYS}})
    return out
