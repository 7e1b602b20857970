"""Collect what a run produced — per category: scores, threshold, calibration scores, answers — from artifacts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.answers import AnswerRow, read_answers, read_partial_answers, reason_settings
from eagle_cli.formats.calibration import calibration_scores, calibration_settings
from eagle_cli.formats.prompts import prompt_settings, read_prompts
from eagle_cli.formats.scores import ScoreRow, read_metrics, read_scores, source_of
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import PromptParams, ReasonParams
from eagle_cli.settings import build
from eagle_cli.threshold import Threshold


@dataclass
class AnswerSet:
    """One model's answers to one prompts artifact, and how complete they are.

    ``identity`` is everything that changes the answers (the prompt settings, the model, backend,
    generation and CAAS settings); ``system`` is its label in the tables, set by :func:`name_systems`
    so that one identity has one label in every category and run of a report, and two never share one.
    """

    kind: str  # "EAGLE + CAAS", "EAGLE, no CAAS", "MLLM alone, no CAAS", ...
    model: str
    identity: dict
    rows: list[AnswerRow]
    prompts: int
    complete: bool
    ref: ArtifactRef | None
    system: str = ""

    @property
    def key(self) -> str:
        blob = json.dumps(self.identity, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:6]


@dataclass
class CategoryRun:
    name: str
    scores: ArtifactRef
    metrics: dict  # the scores' metrics.json
    threshold: Threshold
    calibration: str  # the estimator τ was fitted on
    rows: list[ScoreRow]
    calibration_scores: list[float]
    answers: list[AnswerSet] = field(default_factory=list)
    #: The boxes the model was shown, per image path (from the latest prompts with a box image; {} if none).
    boxes: dict[str, list[list[int]]] = field(default_factory=dict)


@dataclass
class RunData:
    name: str
    dataset: dict
    categories: dict[str, CategoryRun]
    inputs: list[ArtifactRef]
    #: Answer sets an interrupted `eagle reason` left unfinished and the report leaves out, one line each.
    unfinished: list[str] = field(default_factory=list)


def system_name(prompt: PromptParams, reason: ReasonParams | None) -> str:
    """What kind of system answered, always with its CAAS state (unknown only for an unfinished run of an eagle
    that did not record its settings)."""
    helped = prompt.verdict or prompt.visual != "none"
    name = "EAGLE" if helped else "MLLM alone"
    if reason is None:
        return f"{name}, CAAS unknown"
    return name + (" + CAAS" if reason.caas is not None else ", no CAAS")


def _prompts_and_answers(root: Path, run: str, category: str, scores: ArtifactRef, include_incomplete: bool,
                         unfinished: list[str]) -> tuple[list[AnswerSet], dict[str, list[list[int]]]]:
    """Every answer set built on ``scores`` (an unfinished one only with ``include_incomplete``, else named in
    ``unfinished``), and the boxes of the latest prompts that drew boxes."""
    sets, boxes = [], {}
    for listed in artifacts.list_artifacts(root, run=run, category=category, kind="prompts"):
        if scores.id not in listed.input_ids("scores"):
            continue
        prompts = artifacts.open_artifact(listed.path, "prompts")
        prompt = prompt_settings(prompts)
        records = read_prompts(prompts)
        if prompt.visual in ("boxes", "both"):
            boxes = {record.path: record.boxes for record in records}
        published = [a for a in artifacts.list_artifacts(root, run=run, category=category, kind="answers")
                     if prompts.id in a.input_ids("prompts")]
        for answers in published:
            ref = artifacts.open_artifact(answers.path, "answers")
            reason = reason_settings(ref)
            sets.append(AnswerSet(system_name(prompt, reason), reason.model,
                                  {"prompt": prompts.params, "reason": ref.params}, read_answers(ref), len(records),
                                  True, ref))
        # An interrupted `eagle reason` leaves a hidden partial directory.
        for partial in (Path(root) / run / category / "answers").glob(".tmp-partial-*"):
            rows, _ = read_partial_answers(partial)
            if not rows or rows[0].prompts != prompts.id:
                continue
            if include_incomplete:
                started = artifacts.draft_params(partial)
                reason = build(ReasonParams, started) if started is not None else None
                identity = {"prompt": prompts.params, "reason": started or {"model": rows[0].model},
                            "incomplete": True}
                sets.append(AnswerSet(f"{system_name(prompt, reason)} (incomplete)", rows[0].model, identity,
                                      rows, len(records), False, None))
            else:
                unfinished.append(f"{category}: an interrupted eagle reason with {rows[0].model} holds {len(rows)} "
                                  f"of {len(records)} answers and is left out; rerun it with the same settings to "
                                  "finish it, or report with --include-incomplete to show it now.")
    return sets, boxes


def name_systems(runs: list[RunData]) -> dict[str, dict]:
    """Label every answer set of ``runs`` by its identity, and return label → identity (the legend).

    A label is the kind ("EAGLE + CAAS"), then the model's name if two identities share the kind,
    then the identity's hash if they still collide: short where nothing is ambiguous, and decided
    over the whole report so that a category never labels a system differently from another.
    """
    identities: dict[str, AnswerSet] = {}
    for run in runs:
        for category in run.categories.values():
            for answer_set in category.answers:
                identities.setdefault(answer_set.key, answer_set)

    def label(answer_set: AnswerSet, detail: int) -> str:
        parts = [answer_set.kind, Path(answer_set.model).name, answer_set.key][:detail + 1]
        return " · ".join(parts)

    labels = {}
    for key, answer_set in identities.items():
        for detail in range(3):
            labels[key] = label(answer_set, detail)
            if all(label(other, detail) != labels[key] for k, other in identities.items() if k != key):
                break
    for run in runs:
        for category in run.categories.values():
            for answer_set in category.answers:
                answer_set.system = labels[answer_set.key]
    return {labels[key]: {"id": key, **answer_set.identity} for key, answer_set in identities.items()}


def gather(root: Path, run: str, categories: list[str] | None = None, *, include_incomplete: bool = False
           ) -> RunData:
    """The latest scores of every (or each given) category of ``run``, with everything built on them."""
    names = categories or artifacts.categories_with(root, run, "scores")
    if not names:
        raise ArtifactError(f"Run {run!r} under {root} has no scores artifact; run the stages (or eagle run) first.")
    found, inputs, datasets, unfinished = {}, [], set(), []
    for name in names:
        scores = artifacts.latest(root, run, name, "scores")
        threshold_ref = scores.input("threshold")
        calibration = threshold_ref.input("calibration")
        category = CategoryRun(name, scores, read_metrics(scores), read_threshold(threshold_ref),
                               calibration_settings(calibration).calibration, read_scores(scores),
                               calibration_scores(calibration).tolist())
        category.answers, category.boxes = _prompts_and_answers(root, run, name, scores, include_incomplete,
                                                                unfinished)
        found[name] = category
        inputs += [scores] + [a.ref for a in category.answers if a.ref is not None]
        source = source_of(scores)
        datasets.add((source.layout, str(source.root or source.test)) if source else ("unknown", ""))
    if len(datasets) > 1:
        raise ArtifactError(f"Run {run!r} mixes datasets {sorted(datasets)}; report them as separate runs.")
    layout, where = datasets.pop()
    return RunData(run, {"layout": layout, "root": where}, found, inputs, unfinished)
