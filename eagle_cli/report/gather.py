"""Collect what a run produced — per category: scores, threshold, calibration scores, answers — from artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.errors import ArtifactError
from eagle_cli.formats.answers import read_answers, read_partial_answers
from eagle_cli.formats.calibration import calibration_scores
from eagle_cli.formats.prompts import read_prompts
from eagle_cli.formats.scores import read_scores, source_of
from eagle_cli.formats.threshold import read_threshold


@dataclass
class AnswerSet:
    """One model's answers to one prompts artifact, and how complete they are."""

    system: str  # "EAGLE", "EAGLE + CAAS", "MLLM alone", ...
    model: str
    rows: list[dict]
    prompts: int
    complete: bool
    ref: ArtifactRef | None


@dataclass
class CategoryRun:
    name: str
    scores: ArtifactRef
    threshold: dict
    rows: list[dict]
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


def system_name(prompt_params: dict, reason_params: dict) -> str:
    helped = prompt_params.get("verdict", True) or prompt_params.get("visual", "boxes") != "none"
    name = "EAGLE" if helped else "MLLM alone"
    return name + (" + CAAS" if reason_params.get("caas") else "")


def _prompts_and_answers(root: Path, run: str, category: str, scores: ArtifactRef
                         ) -> tuple[list[AnswerSet], dict[str, list[list[int]]]]:
    """Every answer set built on ``scores``, and the boxes of the latest prompts that drew boxes."""
    sets, boxes = [], {}
    for prompts in artifacts.list_artifacts(root, run=run, category=category, kind="prompts"):
        if not any(i["id"] == scores.id for i in prompts.manifest["inputs"]):
            continue
        records = read_prompts(prompts)
        if prompts.params.get("visual") in ("boxes", "both"):
            boxes = {record["path"]: record["boxes"] for record in records}
        published = [a for a in artifacts.list_artifacts(root, run=run, category=category, kind="answers")
                     if any(i["id"] == prompts.id for i in a.manifest["inputs"])]
        for answers in published:
            ref = artifacts.open_artifact(answers.path, "answers")
            sets.append(AnswerSet(system_name(prompts.params, ref.params), ref.params["model"], read_answers(ref),
                                  len(records), True, ref))
        # An interrupted `eagle reason` leaves a hidden partial directory: report it as incomplete.
        for partial in (Path(root) / run / category / "answers").glob(".tmp-partial-*"):
            rows, _ = read_partial_answers(partial)
            if rows and rows[0].get("prompts") == prompts.id:
                sets.append(AnswerSet(f"{system_name(prompts.params, {})} (incomplete)", rows[0]["model"], rows,
                                      len(records), False, None))
    return sets, boxes


def gather(root: Path, run: str, categories: list[str] | None = None) -> RunData:
    """The latest scores of every (or each given) category of ``run``, with everything built on them."""
    names = categories or artifacts.categories_with(root, run, "scores")
    if not names:
        raise ArtifactError(f"Run {run!r} under {root} has no scores artifact; run the stages (or eagle run) first.")
    found, inputs, datasets = {}, [], set()
    for name in names:
        scores = artifacts.latest(root, run, name, "scores")
        threshold_ref = scores.input("threshold")
        category = CategoryRun(name, scores, read_threshold(threshold_ref), read_scores(scores),
                               calibration_scores(threshold_ref.input("calibration")).tolist())
        category.answers, category.boxes = _prompts_and_answers(root, run, name, scores)
        systems = [a.system for a in category.answers]
        for answer_set in category.answers:
            if systems.count(answer_set.system) > 1:  # two models on the same prompts: tell them apart
                answer_set.system += f" · {Path(answer_set.model).name}"
        found[name] = category
        inputs += [scores] + [a.ref for a in category.answers if a.ref is not None]
        source = source_of(scores)
        datasets.add((source.layout, str(source.root or source.test)) if source else ("unknown", ""))
    if len(datasets) > 1:
        raise ArtifactError(f"Run {run!r} mixes datasets {sorted(datasets)}; report them as separate runs.")
    layout, where = datasets.pop()
    return RunData(run, {"layout": layout, "root": where}, found, inputs)
