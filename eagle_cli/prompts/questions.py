"""Questions and answers in MMAD's format: options re-lettered A, B, … in order; the answer parsed back."""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import dataclass

from eagle_cli.errors import DataError

ANOMALY_DETECTION = "Anomaly Detection"
_LETTER = re.compile(r"\b([A-E])\b")


@dataclass(frozen=True)
class Question:
    text: str
    options: dict[str, str]  # letter -> option text, in display order
    answer: str | None  # the correct letter, when known
    type: str = ANOMALY_DETECTION


def default_question(label: int | None) -> Question:
    """The yes/no defect question used when a dataset has no question file."""
    answer = None if label is None else ("A" if label == 1 else "B")
    return Question("Is there any defect in the object?", {"A": "Yes", "B": "No"}, answer)


def from_mmad(item: dict, where: str) -> Question:
    """One MMAD conversation item: options keep their order and are re-lettered from A."""
    if not isinstance(item, dict) or not isinstance(item.get("Question"), str):
        raise DataError(f"{where}: a conversation item must be an object with a \"Question\" text, as in MMAD's "
                        f"mmad.json; got {str(item)[:80]!r}. Fix or remove the entry.")
    options = item.get("Options") or {}
    if not isinstance(options, dict):
        raise DataError(f"{where}: \"Options\" must map letters to option texts (e.g. {{\"A\": \"Yes\"}}); got "
                        f"{type(options).__name__}. Fix or remove the entry.")
    letters = string.ascii_uppercase[: len(options)]
    relettered = dict(zip(letters, options.values(), strict=True))
    original = dict(zip(options.keys(), letters, strict=True))
    if item.get("Answer") not in original:
        raise DataError(f"{where}: answer {item.get('Answer')!r} is not one of the options {list(options)}.")
    return Question(item["Question"], relettered, original[item["Answer"]], item.get("type", ""))


def parse_answer(text: str, options: dict[str, str]) -> str | None:
    """The chosen letter: the last standalone capital A–E among the options, else the closest option text.

    Reference parity (MMAD): the regex and the closest-text fallback; unlike MMAD, a letter that is
    not an option, or a reply with no letters and no similar option, parses to ``None`` (invalid).
    """
    letters = [m for m in _LETTER.findall(text) if m in options]
    if letters:
        return letters[-1]
    if not text.strip():
        return None
    lowered = {option.lower(): letter for letter, option in options.items()}
    match = difflib.get_close_matches(text.strip().lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None
