"""JSON Lines, the format of every table in an artifact: one typed row per line.

A row type is a frozen dataclass; :func:`write_rows` writes its fields, :func:`read_rows` gives it
back and refuses a line whose keys are not exactly the type's, naming the file and line, so a
renamed key fails where the table is read, not far from its writer.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, TypeVar

from eagle_cli.errors import ArtifactError

Row = TypeVar("Row")

#: Images (or prompts) a stage could not use, with the reason; every stage that reads images writes one.
ERRORS_FILE = "errors.jsonl"


@dataclass(frozen=True)
class ErrorRow:
    """One input a stage could not use: the image (or prompt ``id``), the file at fault, and why."""

    path: str
    error: str
    file: str | None = None
    id: str | None = None


def line(row) -> str:
    return json.dumps(asdict(row)) + "\n"


def write_rows(path: Path, rows: Iterable) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(line(row))


def _typed(kind: type[Row], values: dict, where: str) -> Row:
    names = {f.name for f in fields(kind)}
    required = {f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING}
    if not isinstance(values, dict) or not required <= values.keys() <= names:
        found = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise ArtifactError(f"{where} does not hold a {kind.__name__} (keys {found}, expected {sorted(names)}): "
                            "it was written by another eagle or edited; re-run the stage with --force.")
    return kind(**values)


def read_rows(path: Path, kind: type[Row]) -> list[Row]:
    rows = []
    with open(path) as fh:
        for number, text in enumerate(fh, start=1):
            if text.strip():
                rows.append(_typed(kind, json.loads(text), f"{path} line {number}"))
    return rows


def read_complete_rows(path: Path, kind: type[Row]) -> list[Row]:
    """Rows of a file still being appended to; a last line cut off by a kill is dropped."""
    if not path.exists():
        return []
    rows = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            break
        rows.append(_typed(kind, values, f"{path} line {number}"))
    return rows


def append_row(fh, row) -> None:
    """Append one row and flush, so a kill loses at most the row being written."""
    fh.write(line(row))
    fh.flush()
