"""``prompts`` artifacts: one :class:`PromptRecord` per question about a scored image, and the images they show.

A record's ``message`` is the ordered content (``prompts/assemble.py``): text items, and image items
with a path and a role (template, query, boxes or heatmap). Drawn images live under ``images/``;
their paths are relative to the artifact. The manifest's parameters are the prompt settings, with
the template and domain-knowledge files as the hashes of their contents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.digests import sha256_file
from eagle_cli.formats.jsonl import read_rows, write_rows
from eagle_cli.params import PromptParams
from eagle_cli.settings import build, identity

PROMPTS_FILE = "prompts.jsonl"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class PromptRecord:
    id: str  # <index of the image's scores row>:<question number>
    path: str
    label: int | None
    anomalous: bool
    uncertain: bool
    boxes: list[list[int]]  # [x1, y1, x2, y2] in the original frame, as drawn
    question: str
    options: dict[str, str]
    answer: str | None
    type: str
    message: list[dict]


def prompts_params(params: PromptParams) -> dict:
    """The prompt settings, with the domain-knowledge and template files as the hashes of their contents."""
    files = {f"{key}_sha256": sha256_file(path) if (path := getattr(params, key)) is not None and path.is_file()
             else None for key in ("domain_knowledge", "template")}
    return {**identity(params), **files}


def prompt_settings(ref: ArtifactRef) -> PromptParams:
    return build(PromptParams, ref.params)


def image_dir(draft: Draft) -> Path:
    """Where a prompts draft keeps its drawn images (created)."""
    path = draft.file(IMAGES_DIR)
    path.mkdir(exist_ok=True)
    return path


def write_prompts(draft: Draft, records: list[PromptRecord]) -> None:
    write_rows(draft.file(PROMPTS_FILE), records)


def read_prompts(ref: ArtifactRef) -> list[PromptRecord]:
    return read_rows(ref.path / PROMPTS_FILE, PromptRecord)


def resolve_image(ref: ArtifactRef | Path, item: dict) -> Path:
    """The file of a message's image item: absolute paths as they are, drawn images inside the artifact."""
    path = Path(item["path"])
    return path if path.is_absolute() else (ref.path if isinstance(ref, ArtifactRef) else ref) / path
