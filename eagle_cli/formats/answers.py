"""``answers`` artifacts: one :class:`AnswerRow` per answered prompt, appended and flushed as answers arrive.

``errors.jsonl``: prompts whose images could not be read or that the server refused. An interrupted
run leaves them in the artifact's hidden partial directory, from which the next run resumes. The
manifest's parameters are the reasoning settings that change answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.formats.jsonl import ERRORS_FILE, ErrorRow, read_complete_rows, read_rows
from eagle_cli.params import ReasonParams
from eagle_cli.settings import build

ANSWERS_FILE = "answers.jsonl"


@dataclass(frozen=True)
class AnswerRow:
    id: str
    prompts: str  # the prompts artifact's id
    path: str
    label: int | None
    type: str
    question: str
    options: dict[str, str]
    correct: str | None
    raw: str  # the model's text, verbatim
    parsed: str | None  # the option letter, None when none could be read
    valid: bool
    expert_anomalous: bool
    uncertain: bool
    caas: bool
    latency_s: float
    backend: str
    model: str
    revision: str | None


def reason_settings(ref: ArtifactRef) -> ReasonParams:
    return build(ReasonParams, ref.params)


def read_answers(ref: ArtifactRef) -> list[AnswerRow]:
    return read_rows(ref.path / ANSWERS_FILE, AnswerRow)


def read_partial_answers(folder: Path) -> tuple[list[AnswerRow], list[ErrorRow]]:
    """Answers and errors already written in a (partial) answers folder; a line cut off by a kill is dropped."""
    return read_complete_rows(folder / ANSWERS_FILE, AnswerRow), read_complete_rows(folder / ERRORS_FILE, ErrorRow)
