"""``prompts`` artifacts: one record per question about a scored image, and the images they show.

``prompts.jsonl`` records: id (``<image index>:<question number>``), path, label, defect, score,
anomalous, uncertain, boxes (``[x1, y1, x2, y2]`` in the original frame, as drawn), question, options,
answer, type and the ordered ``message`` (text items, and image items with a path and a role:
template, query, boxes or heatmap). Drawn images live under ``images/``; their paths are relative
to the artifact.
"""

from __future__ import annotations

from pathlib import Path

from eagle_cli.artifacts import ArtifactRef, Draft
from eagle_cli.formats.jsonl import read_jsonl, write_jsonl

PROMPTS_FILE = "prompts.jsonl"
IMAGES_DIR = "images"


def image_dir(draft: Draft) -> Path:
    """Where a prompts draft keeps its drawn images (created)."""
    path = draft.file(IMAGES_DIR)
    path.mkdir(exist_ok=True)
    return path


def write_prompts(draft: Draft, records: list[dict]) -> None:
    write_jsonl(draft.file(PROMPTS_FILE), records)


def read_prompts(ref: ArtifactRef) -> list[dict]:
    return read_jsonl(ref.path / PROMPTS_FILE)


def resolve_image(ref: ArtifactRef | Path, item: dict) -> Path:
    """The file of a message's image item: absolute paths as they are, drawn images inside the artifact."""
    path = Path(item["path"])
    return path if path.is_absolute() else (ref.path if isinstance(ref, ArtifactRef) else ref) / path
