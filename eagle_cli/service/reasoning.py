"""The model's word on each inspected part, asked exactly as `eagle prompt` words it (optional in the service).

The message is the prompt stage's (``prompts/assemble.py``) with the default prompt settings: the
instruction, the query image with the expert's verdict, the box image when the verdict is anomalous,
and the defect question. An in-process model answers one request at a time (a lock); a server
backend takes them as they come.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

from PIL import Image

from eagle_cli.mllm.backends import load_backend
from eagle_cli.mllm.prompt import Prompt
from eagle_cli.params import PromptParams, ReasonParams
from eagle_cli.prompts.assemble import Verdict, Visuals, assemble
from eagle_cli.prompts.questions import default_question, parse_answer
from eagle_cli.prompts.render import draw_boxes
from eagle_cli.prompts.templates import Templates
from eagle_cli.service.batching import Inspection

#: The service asks as `eagle prompt` does by default.
PROMPTING = PromptParams()


class ServiceReasoner:
    """Ask ``params``' model about one inspected image; the backend is loaded once, at start."""

    def __init__(self, params: ReasonParams, *, category: str):
        self.params, self.category = params, category
        self.templates = Templates.load(PROMPTING.template)
        self.backend = load_backend(params)
        self._one_at_a_time = threading.Lock() if params.backend == "hf" else nullcontext()

    def message(self, image: Image.Image, inspection: Inspection) -> list[dict]:
        """The items asked about one inspected image (image items hold the images themselves)."""
        verdict = Verdict(self.category, inspection.anomalous, inspection.score, inspection.tau, inspection.s_max)
        shown = Visuals.of(PROMPTING, inspection.anomalous)
        boxes = (draw_boxes(image, inspection.boxes), len(inspection.boxes)) \
            if shown.boxes and inspection.boxes else None
        message = assemble(self.templates, PROMPTING, verdict, query=image, key="image", boxes=boxes)
        return message.asking(self.templates, default_question(None))

    def ask(self, image: Image.Image, inspection: Inspection) -> dict:
        question = default_question(None)
        prompt = Prompt(self.message(image, inspection), uncertain=inspection.uncertain)
        with self._one_at_a_time:
            reply = self.backend.generate([prompt], self.params.caas)[0]
        parsed = parse_answer(reply.text, question.options)
        return {"question": question.text, "raw": reply.text, "parsed": parsed, "valid": parsed is not None,
                "says_defective": parsed == "A" if parsed is not None else None, "caas": reply.caas,
                "model": self.backend.name}
