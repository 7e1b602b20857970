"""The multimodal LLM's commands: prompt, reason."""

from __future__ import annotations

from typing import Annotated, Optional

from eagle_cli.cli.app import Session, app, command
from eagle_cli.cli.options import Categories, artifact_option, inputs
from eagle_cli.params import OutputParams, PromptParams, ReasonParams, StoreParams


@command(app)
def prompt(
    data: Categories, settings: PromptParams, store: StoreParams, output: OutputParams,
    scores: Annotated[Optional[str], artifact_option("scores")] = None,
):
    """Turn scores into multimodal prompts (box images + text) in a **prompts** artifact.

    Example: eagle prompt --visual both --shots 1 --box-level 0.8
    """
    from eagle_cli.stages.prompt import run_prompt

    session = Session("prompt", output)
    context = session.context(store)
    session.report([run_prompt(ref, settings, context=context) for ref in inputs(scores, "scores", data.category,
                                                                                   store)])


@command(app)
def reason(
    data: Categories, settings: ReasonParams, store: StoreParams, output: OutputParams,
    prompts: Annotated[Optional[str], artifact_option("prompts")] = None,
):
    """Ask a multimodal LLM every prompt; answers are saved as they come and a rerun resumes (**answers**).

    Example: eagle reason --model /models/Qwen2.5-VL-7B-Instruct --caas --caas-layers 9-14

    Example: eagle reason --backend openai --base-url http://gpu-host:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
    """
    from eagle_cli.mllm.backends import SharedBackend
    from eagle_cli.stages.reason import run_reason

    session = Session("reason", output)
    context = session.context(store)
    shared = SharedBackend(settings)  # loaded once, and only if some prompt is still unanswered
    session.report([run_reason(ref, settings, context=context, backend=shared)
                    for ref in inputs(prompts, "prompts", data.category, store)])
