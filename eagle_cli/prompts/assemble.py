"""One prompt assembly for every entry point: `eagle prompt` writes its messages, `eagle serve` asks them.

Reference (eagle-method.md C.2): instruction, answer format, the query image with the expert's
verdict ("textual prior"), and — only when the verdict is anomalous — the query again with red
boxes; then the question. Where we differ: the wording lives in an editable template; domain
knowledge and normal reference images ("shots") really reach the prompt when asked for; boxes are
drawn in the original frame, only where the map exceeds a fraction of τ.

Images enter a message as payloads of the caller's choosing, under ``key``: a stored file's path
(``"path"``, the prompts artifact) or the image itself (``"image"``, the service).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eagle_cli.params import PromptParams
from eagle_cli.prompts.questions import Question
from eagle_cli.prompts.templates import Templates


@dataclass(frozen=True)
class Verdict:
    """What the expert said about the image the prompt asks about."""

    category: str
    anomalous: bool
    score: float
    tau: float
    s_max: float


@dataclass(frozen=True)
class Visuals:
    """The visual prompts to draw for a verdict: DBT shows them with an anomalous verdict only."""

    boxes: bool
    heatmap: bool

    @classmethod
    def of(cls, params: PromptParams, anomalous: bool) -> Visuals:
        shown = anomalous and params.visual != "none"
        return cls(shown and params.visual in ("boxes", "both"), shown and params.visual in ("heatmap", "both"))


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


@dataclass(frozen=True)
class Message:
    """A prompt's items up to its question, and the fields its template parts were filled with."""

    items: list[dict]
    fields: dict

    def asking(self, templates: Templates, question: Question) -> list[dict]:
        """The items followed by ``question`` and its lettered options."""
        options = [{"letter": k, "text": v} for k, v in question.options.items()]
        text = templates.render("question", **self.fields, question=question.text, options=options)
        return [*self.items, _text(text)]


def assemble(templates: Templates, params: PromptParams, verdict: Verdict, *, query: Any, key: str,
             knowledge: str | None = None, shots: list[Any] = (), boxes: tuple[Any, int] | None = None,
             heatmap: Any = None) -> Message:
    """The message up to its question: text and image items in order. ``boxes`` is (the box image, its count)."""
    fields = {"category": verdict.category, "verdict": "anomalous" if verdict.anomalous else "normal",
              "score": verdict.score, "tau": verdict.tau, "s_max": verdict.s_max, "knowledge": knowledge or "",
              "shots": len(shots), "n_boxes": boxes[1] if boxes else 0}
    image = lambda payload, role: {"type": "image", key: payload, "role": role}  # noqa: E731
    message = []
    if params.instruction:
        message += [_text(templates.render(part, **fields)) for part in ("instruction", "answer_format")]
    if knowledge:
        message.append(_text(templates.render("domain_knowledge", **fields)))
    if shots:
        message.append(_text(templates.render("templates", **fields)))
        message += [image(shot, "template") for shot in shots]
    message.append(_text(templates.render("query", **fields)))
    if params.verdict:
        message.append(_text(templates.render("verdict", **fields)))
    message.append(image(query, "query"))
    if boxes:
        message += [_text(templates.render("boxes", **fields)), image(boxes[0], "boxes")]
    if heatmap is not None:
        message += [_text(templates.render("heatmap", **fields)), image(heatmap, "heatmap")]
    return Message(message, fields)
