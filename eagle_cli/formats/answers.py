"""``answers`` artifacts: one line per answered prompt, appended and flushed as answers arrive.

``answers.jsonl`` rows: id, prompts (the prompts artifact id), path, label, type, question, options,
correct, raw (the model's text), parsed (the option letter or None), valid, expert_anomalous,
uncertain, caas, latency_s, backend, model, revision. ``errors.jsonl``: prompts whose images could
not be read. An interrupted run leaves them in the artifact's hidden partial directory, from which
the next run resumes.
"""

from __future__ import annotations

from pathlib import Path

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.formats.jsonl import ERRORS_FILE, read_complete_lines, read_jsonl

ANSWERS_FILE = "answers.jsonl"


def read_answers(ref: ArtifactRef) -> list[dict]:
    return read_jsonl(ref.path / ANSWERS_FILE)


def read_partial_answers(folder: Path) -> tuple[list[dict], list[dict]]:
    """Answers and errors already written in a (partial) answers folder; a line cut off by a kill is dropped."""
    return read_complete_lines(folder / ANSWERS_FILE), read_complete_lines(folder / ERRORS_FILE)
