"""The model's word on each inspected part, asked as `eagle prompt` words it (optional in the service).

The prompt is the default template's: instruction, answer format, the query image with the
expert's verdict, the box image when the verdict is anomalous, and the yes/no defect question.
An in-process model answers one request at a time (a lock); a server backend takes them as they
come.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

from PIL import Image

from eagle_cli.mllm.prompt import Prompt
from eagle_cli.params import ReasonParams
from eagle_cli.prompts.questions import default_question, parse_answer
from eagle_cli.prompts.render import draw_boxes
from eagle_cli.prompts.templates import Templates
from eagle_cli.service.batching import Inspection
from eagle_cli.stages.reason import load_backend


class ServiceReasoner:
    """Ask ``params``' model about one inspected image; the backend is loaded once, at start."""

    def __init__(self, params: ReasonParams, *, category: str, tau: float, s_max: float):
        self.params, self.category, self.tau, self.s_max = params, category, tau, s_max
        self.templates = Templates.load()
        self.backend = load_backend(params)
        self._one_at_a_time = threading.Lock() if params.backend == "hf" else nullcontext()

    def ask(self, image: Image.Image, inspection: Inspection) -> dict:
        fields = {"category": self.category, "verdict": "anomalous" if inspection.anomalous else "normal",
                  "score": inspection.score, "tau": self.tau, "s_max": self.s_max, "knowledge": "", "shots": 0,
                  "n_boxes": len(inspection.boxes)}
        text = lambda part, **more: {"type": "text", "text": self.templates.render(part, **fields, **more)}  # noqa: E731
        items = [text("instruction"), text("answer_format"), text("query"), text("verdict"),
                 {"type": "image", "image": image, "role": "query"}]
        if inspection.anomalous and inspection.boxes:
            items += [text("boxes"), {"type": "image", "image": draw_boxes(image, inspection.boxes), "role": "boxes"}]
        question = default_question(None)
        options = [{"letter": k, "text": v} for k, v in question.options.items()]
        items.append(text("question", question=question.text, options=options))
        with self._one_at_a_time:
            reply = self.backend.generate([Prompt(items, uncertain=inspection.uncertain)], self.params.caas)[0]
        parsed = parse_answer(reply.text, question.options)
        return {"question": question.text, "raw": reply.text, "parsed": parsed, "valid": parsed is not None,
                "says_defective": parsed == "A" if parsed is not None else None, "caas": reply.caas,
                "model": self.backend.name}
