"""eagle prompt and eagle reason on tiny synthetic data with real weights and a tiny Qwen2.5-VL."""

import json
from dataclasses import replace

import pytest

from eagle_cli import artifacts
from eagle_cli.context import Context
from eagle_cli.params import (
    CaasSettings,
    PromptParams,
    ReasonParams,
)
from eagle_cli.stages.prompt import run_prompt
from eagle_cli.stages.reason import run_reason
from tests.stages.test_pipeline import Interrupting


def _records(ref, name="prompts.jsonl"):
    folder = getattr(ref, "path", ref)
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


def test_prompts_follow_dbt_box_images_only_for_anomalous_verdicts(washer_scores, tmp_path):
    ref = run_prompt(washer_scores, PromptParams(visual="both"), context=Context(artifacts=tmp_path))
    records = _records(ref)
    assert len(records) == 11 and any(r["anomalous"] for r in records) and not all(r["anomalous"] for r in records)
    for record in records:
        roles = [item["role"] for item in record["message"] if item["type"] == "image"]
        texts = " ".join(item["text"] for item in record["message"] if item["type"] == "text")
        assert roles[0] == "query"
        assert ("anomalous" if record["anomalous"] else "normal") in texts
        if not record["anomalous"]:
            assert roles == ["query"] and record["boxes"] == []
        else:
            assert "heatmap" in roles and ("boxes" in roles) == bool(record["boxes"])
        for item in record["message"]:
            if item["type"] == "image" and item["role"] != "query":
                assert (ref.path / item["path"]).is_file()  # written inside the artifact
        assert record["options"] == {"A": "Yes", "B": "No"}
        assert record["answer"] == ("A" if record["label"] else "B")
    assert any(r["boxes"] for r in records)


def test_shots_and_domain_knowledge_reach_the_message(washer_scores, tmp_path):
    knowledge = tmp_path / "domain_knowledge.json"
    knowledge.write_text(json.dumps({"Synthetic": {"washer": {"good": "A grey ring.", "hole": "Dark round holes."}}}))
    ref = run_prompt(washer_scores, PromptParams(shots=2, domain_knowledge=knowledge, verdict=False),
                     context=Context(artifacts=tmp_path / "a"))
    record = _records(ref)[0]
    roles = [item["role"] for item in record["message"] if item["type"] == "image"]
    texts = " ".join(item["text"] for item in record["message"] if item["type"] == "text")
    first_image = next(item for item in record["message"] if item["type"] == "image")
    assert roles[:2] == ["template", "template"] and "/train/good/" in first_image["path"]
    assert "A grey ring." in texts and "Dark round holes." in texts
    assert "judges this query image" not in texts  # the textual prior is off
    again = run_prompt(washer_scores, PromptParams(shots=2, domain_knowledge=knowledge, verdict=False),
                       context=Context(artifacts=tmp_path / "b"))
    assert _records(again)[0]["message"] == record["message"]  # seeded template choice


def test_reason_answers_every_prompt_and_keeps_raw_text(washer_scores, tiny_qwen, qwen_backend, tmp_path):
    context = Context(artifacts=tmp_path)
    prompts = run_prompt(washer_scores, PromptParams(), context=context)
    ref = run_reason(prompts, ReasonParams(model=str(tiny_qwen), max_new_tokens=6, prompt_batch=4), context=context,
                     backend=lambda: qwen_backend)
    answers = _records(ref, "answers.jsonl")
    assert [a["id"] for a in answers] == [p["id"] for p in _records(prompts)]
    for answer in answers:
        assert isinstance(answer["raw"], str) and answer["valid"] == (answer["parsed"] is not None)
        assert answer["model"] == str(tiny_qwen) and answer["backend"] == "hf" and not answer["caas"]
    assert ref.summary["answers"] == 11 and ref.summary["invalid"] == sum(not a["valid"] for a in answers)


def test_caas_runs_only_for_prompts_in_the_window(washer_scores, tiny_qwen, qwen_backend, tmp_path):
    context = Context(artifacts=tmp_path)
    prompts = run_prompt(washer_scores, PromptParams(), context=context)
    params = ReasonParams(model=str(tiny_qwen), max_new_tokens=4, caas=CaasSettings(layers=(1, 2)))
    answers = _records(run_reason(prompts, params, context=context, backend=lambda: qwen_backend), "answers.jsonl")
    assert any(a["caas"] for a in answers)
    assert all(a["caas"] == a["uncertain"] for a in answers)


def test_an_interrupted_reason_resumes_without_losing_or_repeating_answers(washer_scores, tiny_qwen, qwen_backend,
                                                                           tmp_path):
    context = Context(artifacts=tmp_path)
    prompts = run_prompt(washer_scores, PromptParams(), context=context)
    params = ReasonParams(model=str(tiny_qwen), max_new_tokens=4)
    with pytest.raises(KeyboardInterrupt):
        run_reason(prompts, params, context=replace(context, reporter=Interrupting(after=5)),
                   backend=lambda: qwen_backend)
    assert not [r for r in artifacts.list_artifacts(tmp_path) if r.kind == "answers"]
    partial = next(tmp_path.rglob(".tmp-partial-*"))
    kept = _records(partial, "answers.jsonl")
    assert 0 < len(kept) < 11
    with open(partial / "answers.jsonl", "a") as fh:
        fh.write('{"id": "cut off by a ki')  # a kill mid-line
    ref = run_reason(prompts, params, context=context, backend=lambda: qwen_backend)
    answers = _records(ref, "answers.jsonl")
    assert [a["id"] for a in answers] == [p["id"] for p in _records(prompts)]
    assert answers[: len(kept)] == kept


def test_an_image_that_vanished_since_prompting_is_named(washer_scores, tiny_qwen, qwen_backend, tmp_path):
    context = Context(artifacts=tmp_path)
    prompts = run_prompt(washer_scores, PromptParams(), context=context)
    victim = next(r for r in _records(prompts) if r["boxes"])
    box_path = next(i["path"] for i in victim["message"] if i["type"] == "image" and i["role"] == "boxes")
    (prompts.path / box_path).unlink()
    ref = run_reason(prompts, ReasonParams(model=str(tiny_qwen), max_new_tokens=2), context=context,
                     backend=lambda: qwen_backend)
    errors = _records(ref, "errors.jsonl")
    assert [e["id"] for e in errors] == [victim["id"]] and "vanished" in errors[0]["error"]
    assert ref.summary["answers"] == 10


def test_a_finished_reason_loads_no_model_when_rerun(washer_scores, tiny_qwen, qwen_backend, tmp_path):
    context = Context(artifacts=tmp_path)
    prompts = run_prompt(washer_scores, PromptParams(), context=context)
    params = ReasonParams(model=str(tiny_qwen), max_new_tokens=2)
    first = run_reason(prompts, params, context=context, backend=lambda: qwen_backend)
    again = run_reason(prompts, params, context=context, backend=lambda: pytest.fail("the model was loaded"))
    assert again.reused and again.path == first.path
