"""One prompt assembly: what `eagle prompt` writes and what `eagle serve` asks are the same message."""

from pathlib import Path

from PIL import Image

from eagle_cli.context import Context
from eagle_cli.formats.prompts import read_prompts
from eagle_cli.formats.scores import read_scores
from eagle_cli.formats.threshold import read_threshold
from eagle_cli.params import PromptParams, ReasonParams
from eagle_cli.service.batching import Inspection
from eagle_cli.service.reasoning import ServiceReasoner
from eagle_cli.stages.prompt import run_prompt


def _shape(message: list[dict]) -> list[tuple]:
    """Text items by their words, image items by their role (a path in a file, the image itself in the service)."""
    return [("text", item["text"]) if item["type"] == "text" else ("image", item["role"]) for item in message]


def test_the_service_asks_what_the_prompt_stage_writes(washer_scores, tiny_qwen, tmp_path):
    records = read_prompts(run_prompt(washer_scores, PromptParams(), context=Context(artifacts=tmp_path)))
    threshold = read_threshold(washer_scores.input("threshold"))
    reasoner = ServiceReasoner(ReasonParams(model=str(tiny_qwen), device="cpu", max_new_tokens=2), category="washer")
    boxed = next(r for r in records if r.boxes)
    normal = next(r for r in records if not r.anomalous)
    scores = {Path(row.path): row.score for row in read_scores(washer_scores)}
    for record in (boxed, normal):
        inspection = Inspection(scores[Path(record.path)], record.anomalous, record.uncertain, record.boxes, 1,
                                threshold="t", tau=threshold.tau, s_max=threshold.s_max)
        asked = reasoner.message(Image.open(record.path).convert("RGB"), inspection)
        assert _shape(asked) == _shape(record.message)
    assert ("image", "boxes") in _shape(boxed.message) and ("image", "boxes") not in _shape(normal.message)
