"""The in-process backend and CAAS are not Qwen-specific: the same calls on a tiny LLaVA."""

import torch

from eagle_cli.context import Context
from eagle_cli.mllm.hf import HFBackend
from eagle_cli.params import CaasSettings, PromptParams, ReasonParams
from eagle_cli.stages.prompt import run_prompt
from eagle_cli.stages.reason import run_reason
from tests.mllm.test_caas import _prompt
from tests.mllm.test_prompt_reason import _records


def test_llava_loads_answers_and_takes_caas(tiny_llava):
    backend = HFBackend.load(str(tiny_llava), device="cpu", max_new_tokens=3)
    assert backend.image_token_id is not None and backend.n_layers == 3
    prompt = _prompt(True)
    stock = backend.logits([prompt])
    assert torch.equal(backend.logits([prompt], CaasSettings(alpha=0.0, layers=(1,))), stock)
    assert (backend.logits([prompt], CaasSettings(alpha=0.6, layers=(1, 2))) - stock).abs().max() > 1e-4
    replies = backend.generate([prompt, _prompt(False)], CaasSettings(alpha=0.6, layers=(1,)))
    assert [r.caas for r in replies] == [True, False] and all(isinstance(r.text, str) for r in replies)


def test_reason_stage_runs_on_llava(washer_scores, tiny_llava, tmp_path):
    context = Context(artifacts=tmp_path)
    prompts = run_prompt(washer_scores, PromptParams(visual="both"), context=context)
    ref = run_reason(prompts, ReasonParams(model=str(tiny_llava), device="cpu", max_new_tokens=3, prompt_batch=4),
                     context=context)
    assert len(_records(ref, "answers.jsonl")) == 11
