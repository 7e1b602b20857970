"""JSON Lines, the format of every table in an artifact."""

from __future__ import annotations

import json
from pathlib import Path

#: Images (or prompts) a stage could not use, with the reason; every stage that reads images writes one.
ERRORS_FILE = "errors.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_complete_lines(path: Path) -> list[dict]:
    """Rows of a file still being appended to; a last line cut off by a kill is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def append_line(fh, row: dict) -> None:
    """Append one row and flush, so a kill loses at most the row being written."""
    fh.write(json.dumps(row) + "\n")
    fh.flush()
