"""MMAD: ``mmad.json`` questions over images under one root (eagle-method.md E.1).

Keys are image paths relative to the MMAD root (``DS-MVTec/bottle/image/broken_large/000.png``,
``VisA/candle/test/bad/000.JPG``); each entry holds a conversation of multiple-choice questions,
lists of normal template images, and ``image_path``/``mask_path`` relative to the category's folder
(``DS-MVTec/bottle/``). The expert trains on the matching original dataset's
``train/good`` (DS-MVTec → MVTec-AD) and scores the queried images themselves. Every path in the
file is resolved under the root and refused if it points outside it.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from eagle_cli.data.sample import Sample
from eagle_cli.errors import DataError, ParameterError
from eagle_cli.prompts.questions import Question, from_mmad

DEFAULT_JSON = "mmad.json"
#: Where each MMAD dataset's training images live (the DS-MVTec queries are MVTec-AD images).
TRAIN_DATASET = {"DS-MVTec": "MVTec-AD"}


class MmadIndex:
    """A parsed ``mmad.json`` whose every path has been checked to stay under ``root``."""

    def __init__(self, root: Path, json_path: Path | None = None):
        self.root = root.resolve()
        self.json_path = json_path or root / DEFAULT_JSON
        if not self.json_path.is_file():
            raise DataError(f"MMAD question file {self.json_path} not found; pass --mmad-json.")
        try:
            data = json.loads(self.json_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.json_path} is not valid JSON ({exc}).") from None
        if not isinstance(data, dict):
            raise DataError(f"{self.json_path} must map image paths to entries, as MMAD's mmad.json does.")
        self.entries = data
        for key, entry in data.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("conversation", []), list):
                raise DataError(f"{self.json_path}: entry {key!r} must be an object with a \"conversation\" list, "
                                "as in MMAD's mmad.json. Fix or remove the entry.")
            self.resolve(key, where=key)
            parts = key.split("/")
            if len(parts) < 3 or any(part in ("", ".", "..") for part in parts[:2]):
                raise DataError(f"{self.json_path}: key {key!r} must be DATASET/CATEGORY/... (no empty, '.' or '..' "
                                "parts there); fix the entry.")
            for name in ("similar_templates", "random_templates"):
                for path in entry.get(name, []):
                    self.resolve(path, where=f"{key} {name}")

    def resolve(self, relative: str, *, where: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise DataError(f"{self.json_path}: path {relative!r} ({where}) points outside the MMAD root {self.root}; "
                            "refusing to read it.")
        return path

    @cached_property
    def _by_path(self) -> dict[Path, str]:
        return {self.resolve(key, where=key): key for key in self.entries}

    def datasets(self) -> list[str]:
        return sorted({key.split("/")[0] for key in self.entries})

    def categories(self, dataset: str) -> list[str]:
        return sorted({key.split("/")[1] for key in self.entries if key.startswith(f"{dataset}/")})

    def test_samples(self, dataset: str, category: str) -> list[Sample]:
        """The queried images of one category, labelled by MMAD's rule (``good`` in the path is normal)."""
        samples = []
        for key in sorted(k for k in self.entries if k.startswith(f"{dataset}/{category}/")):
            good = "good" in key.split("/")
            mask = self.entries[key].get("mask_path")
            # Kept when the file is missing, so scoring lists it in errors.jsonl instead of dropping it unseen.
            mask_path = self.resolve(f"{dataset}/{category}/{mask}", where=f"{key} mask_path") if mask else None
            samples.append(Sample(self.resolve(key, where=key), "test", 0 if good else 1, key.split("/")[-2],
                                  mask_path))
        if not samples:
            raise DataError(f"{self.json_path} has no {dataset}/{category}/ questions.")
        return samples

    def train_folder(self, dataset: str) -> Path:
        """The folder holding ``<category>/train/good`` for a dataset's training images."""
        return self.root / TRAIN_DATASET.get(dataset, dataset)

    def entry_for(self, image: Path) -> dict | None:
        key = self._by_path.get(Path(image).resolve())
        return None if key is None else self.entries[key]

    def check_task(self, task: str) -> None:
        """Refuse a ``task`` no question of this mmad.json has (a typo would leave every image unasked)."""
        types = {item.get("type") for entry in self.entries.values() for item in entry.get("conversation", [])
                 if isinstance(item, dict)}
        if task != "all" and task not in types:
            listed = ", ".join(sorted(t for t in types if isinstance(t, str)))
            raise ParameterError(f"--task {task!r} is not a question type of {self.json_path} (it has: {listed}); "
                                 "or use --task all.")

    def questions(self, entry: dict, task: str) -> list[Question]:
        """The entry's questions, all of them or of one type (e.g. "Anomaly Detection")."""
        items = [item for item in entry.get("conversation", []) if task == "all" or item.get("type") == task]
        return [from_mmad(item, where=f"{self.json_path} {entry.get('image_path', '')}") for item in items]

    def templates(self, entry: dict, kind: str, count: int) -> list[Path]:
        """The first ``count`` of the entry's ``similar_templates`` or ``random_templates``."""
        paths = entry.get(f"{kind}_templates", [])[:count]
        return [self.resolve(path, where=f"{kind}_templates") for path in paths]
