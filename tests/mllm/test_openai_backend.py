"""The OpenAI-compatible backend against real servers on loopback: transformers serve, and scripted ones."""

from dataclasses import replace

import pytest

from eagle_cli import artifacts
from eagle_cli.context import Context
from eagle_cli.errors import EagleError, ParameterError
from eagle_cli.params import CaasSettings, PromptParams, ReasonParams, ServerSettings
from eagle_cli.stages.prompt import run_prompt
from eagle_cli.stages.reason import run_reason
from tests.mllm.servers import completion, free_port, scripted_server, transformers_serve
from tests.mllm.test_prompt_reason import _records

FAST = dict(retries=2, timeout_s=60)


@pytest.fixture
def prompts(washer_scores, tmp_path):
    return run_prompt(washer_scores, PromptParams(), context=Context(artifacts=tmp_path))


def _params(model, url, concurrency=2):
    return ReasonParams(model=model, backend="openai", max_new_tokens=4, prompt_batch=concurrency,
                        server=ServerSettings(base_url=url, concurrency=concurrency, **FAST))


def test_answers_from_transformers_serve_on_loopback(prompts, tiny_qwen, tmp_path):
    with transformers_serve(tiny_qwen) as (url, _):
        ref = run_reason(prompts, _params(str(tiny_qwen), url), context=Context(artifacts=tmp_path))
    answers = _records(ref, "answers.jsonl")
    assert [a["id"] for a in answers] == [p["id"] for p in _records(prompts)]
    assert all(a["backend"] == "openai" and a["latency_s"] > 0 for a in answers)


class _KillAfter:
    """A reporter that kills the server once ``after`` answers are in."""

    def __init__(self, process, after):
        self.process, self.after = process, after

    def task(self, description, total):
        from contextlib import contextmanager

        @contextmanager
        def run():
            count = []

            def advance(n=1):
                count.append(n)
                if sum(count) >= self.after:
                    self.process.kill()

            yield advance

        return run()


def test_a_server_that_dies_mid_run_loses_nothing_and_the_rerun_completes(prompts, tiny_qwen, tmp_path):
    port = free_port()
    context = Context(artifacts=tmp_path)
    params = _params(str(tiny_qwen), f"http://127.0.0.1:{port}/v1")
    with transformers_serve(tiny_qwen, port) as (_, process):
        with pytest.raises(EagleError, match="did not answer.*rerun to resume"):
            run_reason(prompts, params, context=replace(context, reporter=_KillAfter(process, 4)))
    partial = next(tmp_path.rglob(".tmp-partial-*"))
    kept = _records(partial, "answers.jsonl")
    assert 4 <= len(kept) < 11
    with transformers_serve(tiny_qwen, port):
        ref = run_reason(prompts, params, context=context)
    answers = _records(ref, "answers.jsonl")
    assert [a["id"] for a in answers] == [p["id"] for p in _records(prompts)] and answers[: len(kept)] == kept


def test_garbage_answers_are_kept_and_counted_invalid(prompts, tmp_path):
    with scripted_server([(200, completion("qqq zzz")), (200, "<html>not json</html>")]) as (url, _):
        ref = run_reason(prompts, _params("any", url), context=Context(artifacts=tmp_path))
    answers = _records(ref, "answers.jsonl")
    assert len(answers) == 11 and ref.summary["invalid"] == 11
    assert {a["raw"] for a in answers} >= {"<html>not json</html>"}


def test_busy_and_failing_servers_are_retried_with_backoff(prompts, tmp_path):
    script = [(429, "slow down"), (503, "busy"), (200, completion("B"))]
    with scripted_server(script) as (url, served):
        ref = run_reason(prompts, _params("any", url, concurrency=1), context=Context(artifacts=tmp_path))
    assert [status for status, _ in served[:3]] == [429, 503, 200] and len(served) == 13
    assert all(a["parsed"] == "B" for a in _records(ref, "answers.jsonl"))


def test_a_client_error_is_not_retried_and_is_named(prompts, tmp_path):
    with scripted_server([(401, '{"error": "bad key"}')]) as (url, served):
        with pytest.raises(EagleError, match="HTTP 401"):
            run_reason(prompts, _params("any", url, concurrency=1), context=Context(artifacts=tmp_path))
    assert [status for status, _ in served] == [401]
    assert not [r for r in artifacts.list_artifacts(tmp_path) if r.kind == "answers"]


def test_a_prompt_the_server_refuses_is_listed_and_the_others_are_answered(prompts, tmp_path):
    with scripted_server([(400, '{"error": "too many image tokens"}'), (200, completion("A"))]) as (url, served):
        ref = run_reason(prompts, _params("any", url, concurrency=1), context=Context(artifacts=tmp_path))
    errors = _records(ref, "errors.jsonl")
    assert [status for status, _ in served].count(400) == 1 and len(served) == 11  # refused once, not retried
    assert ref.summary["answers"] == 10 and len(errors) == 1 and "too many image tokens" in errors[0]["error"]
    again = run_reason(prompts, _params("any", url, concurrency=1), context=Context(artifacts=tmp_path))
    assert again.reused


def test_a_stop_mid_batch_keeps_every_answer_that_arrived(prompts, tmp_path):
    context = Context(artifacts=tmp_path)
    with scripted_server([(200, completion("A"))] * 7 + [(401, '{"error": "key revoked"}')]) as (url, served):
        with pytest.raises(EagleError, match="HTTP 401"):
            run_reason(prompts, _params("any", url, concurrency=4), context=context)
    partial = next(tmp_path.rglob(".tmp-partial-*"))
    assert len(_records_in(partial / "answers.jsonl")) == 7  # the stopped batch's three answers too
    with scripted_server([(200, completion("B"))]) as (url, served):
        ref = run_reason(prompts, _params("any", url, concurrency=4), context=context)
    assert len(served) == 4 and ref.summary["answers"] == 11


def _records_in(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_caas_with_a_server_is_a_clear_error():
    with pytest.raises(ParameterError, match="needs --backend hf"):
        ReasonParams(model="m", backend="openai", caas=CaasSettings())


def test_api_key_is_sent_from_the_named_environment_variable(prompts, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sekrit")
    with scripted_server([(200, completion("A"))]) as (url, served):
        params = replace(_params("any", url, concurrency=1),
                         server=ServerSettings(base_url=url, api_key_env="MY_KEY", concurrency=1, **FAST))
        run_reason(prompts, params, context=Context(artifacts=tmp_path))
    assert {auth for _, auth in served} == {"Bearer sekrit"}


def test_the_reason_stage_with_a_server_loads_neither_torch_nor_faiss_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys; from eagle_cli.mllm.backends import load_backend; from eagle_cli.params import ReasonParams; "
            "load_backend(ReasonParams(model='m', backend='openai')); "
            "print(sorted(m for m in ('torch', 'faiss', 'matplotlib', 'transformers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_requests_spread_over_several_servers(prompts, tmp_path):
    with scripted_server([(200, completion("A"))]) as (first, served_first), \
            scripted_server([(200, completion("B"))]) as (second, served_second):
        ref = run_reason(prompts, _params("any", f"{first}, {second}", concurrency=4),
                         context=Context(artifacts=tmp_path))
    answers = _records(ref, "answers.jsonl")
    assert len(answers) == 11 and len(served_first) + len(served_second) == 11
    assert served_first and served_second  # least outstanding requests: both were used
    assert {a["parsed"] for a in answers} == {"A", "B"}


def test_a_server_killed_mid_run_hands_its_questions_to_the_others_and_each_is_answered_once(prompts, tiny_qwen,
                                                                                               tmp_path):
    context = Context(artifacts=tmp_path)
    with transformers_serve(tiny_qwen) as (first, process), transformers_serve(tiny_qwen) as (second, _):
        ref = run_reason(prompts, _params(str(tiny_qwen), f"{first},{second}", concurrency=4),
                         context=replace(context, reporter=_KillAfter(process, 3)))
    assert process.poll() is not None  # it was killed during the run
    answers = _records(ref, "answers.jsonl")
    assert sorted(a["id"] for a in answers) == sorted(p["id"] for p in _records(prompts))
    assert len({a["id"] for a in answers}) == len(answers) == 11


def test_every_server_down_is_one_message_naming_them_all(prompts, tmp_path):
    urls = f"http://127.0.0.1:{free_port()}/v1,http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EagleError, match="none of the 2 servers answers.*rerun to resume"):
        run_reason(prompts, _params("any", urls), context=Context(artifacts=tmp_path))
    with pytest.raises(ParameterError, match=r"--base-url must be http\(s\) URLs.*not .ftp://b/v1."):
        ServerSettings(base_url="http://a:1/v1,ftp://b/v1")
