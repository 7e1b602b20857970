"""The multimodal LLM's commands: prompt, reason."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from eagle_cli.cli.app import Session, app, command
from eagle_cli.cli.options import (
    CAAS,
    IN,
    MODEL,
    PROMPT,
    PROMPTING,
    REASON,
    RUNTIME,
    SERVER,
    ArtifactsOpt,
    CategoryOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    OnErrorOpt,
    QuietOpt,
    RunOpt,
    inputs,
)
from eagle_cli.params import (
    PRESETS,
    BoxParams,
    CaasImages,
    CaasMode,
    CaasSettings,
    ModelBackend,
    ModelDtype,
    PromptParams,
    ReasonParams,
    ServerSettings,
    TemplateSource,
    Visual,
    layers_text,
    parse_layers,
)

BOX, CAAS_DEFAULT, SERVER_DEFAULT = BoxParams(), CaasSettings(), ServerSettings()


@command(app)
def prompt(
    scores: Annotated[Optional[str], typer.Option(help="Scores artifact (path or id); default: the latest.",
                                                  rich_help_panel=IN)] = None,
    category: CategoryOpt = None,
    visual: Annotated[Visual, typer.Option(help="Visual prompt shown with an anomalous verdict.",
                                           rich_help_panel=PROMPT)] = PROMPTING.visual,
    instruction: Annotated[bool, typer.Option(help="Open with the inspector instruction and the answer format.",
                                              rich_help_panel=PROMPT)] = PROMPTING.instruction,
    verdict: Annotated[bool, typer.Option(help="State the expert's verdict in the text (the textual prior).",
                                          rich_help_panel=PROMPT)] = PROMPTING.verdict,
    shots: Annotated[int, typer.Option(min=0, help="Normal training images shown as references (MMAD uses 1).",
                                       rich_help_panel=PROMPT)] = PROMPTING.shots,
    template_source: Annotated[TemplateSource, typer.Option(
        help="Reference images: seeded (from the training set), or MMAD's similar or random template lists.",
        rich_help_panel=PROMPT)] = PROMPTING.template_source,
    seed: Annotated[int, typer.Option(help="Seed for choosing the reference images.",
                                      rich_help_panel=PROMPT)] = PROMPTING.seed,
    task: Annotated[str, typer.Option(help='MMAD question type to ask: "Anomaly Detection" (the headline\'s only '
                                           'question), another type, or all (about 5x the model calls).',
                                      rich_help_panel=PROMPT)] = PROMPTING.task,
    domain_knowledge: Annotated[Optional[Path], typer.Option(help="MMAD-format domain_knowledge.json to include.",
                                                             rich_help_panel=PROMPT)] = None,
    template: Annotated[Optional[Path], typer.Option(
        help="YAML file with your own wording (copy eagle_cli/prompts/templates/default.yaml).",
        rich_help_panel=PROMPT)] = None,
    box_level: Annotated[float, typer.Option(min=0, help="Boxes enclose map regions above this fraction of τ.",
                                             rich_help_panel=PROMPT)] = BOX.level,
    box_min_area: Annotated[float, typer.Option(min=0, max=1, help="Smallest region boxed, as a share of the image.",
                                                rich_help_panel=PROMPT)] = BOX.min_area,
    box_merge_iou: Annotated[float, typer.Option(min=0, max=1, help="Merge boxes overlapping more than this IoU.",
                                                 rich_help_panel=PROMPT)] = BOX.merge_iou,
    box_merge_centre_px: Annotated[float, typer.Option(min=0, help="Merge boxes whose centres are closer, px.",
                                                       rich_help_panel=PROMPT)] = BOX.merge_centre_px,
    box_top_k: Annotated[int, typer.Option("--box-top-k", "--top-k", min=1, help="Most boxes per image.",
                                           rich_help_panel=PROMPT)] = BOX.top_k,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False, on_error: OnErrorOpt = "skip",
):
    """Turn scores into multimodal prompts (box images + text) in a **prompts** artifact.

    Example: eagle prompt --visual both --shots 1 --box-level 0.8
    """
    from eagle_cli.stages.prompt import run_prompt

    session = Session(quiet, as_json)
    box = BoxParams(level=box_level, min_area=box_min_area, merge_iou=box_merge_iou,
                    merge_centre_px=box_merge_centre_px, top_k=box_top_k)
    params = PromptParams(visual=visual, instruction=instruction, verdict=verdict, shots=shots, seed=seed,
                          domain_knowledge=domain_knowledge, template=template, box=box, task=task,
                          template_source=template_source)
    ctx = session.context(artifacts_root, run, force, on_error)
    refs = inputs(scores, "scores", category, artifacts_root, run)
    session.report([run_prompt(ref, params, context=ctx) for ref in refs])


@command(app)
def reason(
    prompts: Annotated[Optional[str], typer.Option(help="Prompts artifact (path or id); default: the latest.",
                                                   rich_help_panel=IN)] = None,
    category: CategoryOpt = None,
    backend: Annotated[ModelBackend, typer.Option(
        help="hf (transformers in this process) or openai (an OpenAI-compatible server such as vLLM).",
        rich_help_panel=MODEL)] = REASON.backend,
    model: Annotated[str, typer.Option(
        help=f"Hugging Face id, local folder, or preset ({', '.join(PRESETS)}); with openai, the served model name.",
        rich_help_panel=MODEL)] = REASON.model,
    base_url: Annotated[str, typer.Option(envvar="EAGLE_BASE_URL", help="openai: the server's /v1 URL; several, "
                                          "comma-separated, share the questions (a server that goes away is "
                                          "taken out and its questions go to the others).",
                                          rich_help_panel=SERVER)] = SERVER_DEFAULT.base_url,
    api_key_env: Annotated[str, typer.Option(help="openai: environment variable holding the API key.",
                                             rich_help_panel=SERVER)] = SERVER_DEFAULT.api_key_env,
    concurrency: Annotated[int, typer.Option(min=1, help="openai: requests in flight at once.",
                                             rich_help_panel=SERVER)] = SERVER_DEFAULT.concurrency,
    timeout_s: Annotated[float, typer.Option("--timeout-s", "--timeout", min=0, rich_help_panel=SERVER,
                                             help="openai: seconds to wait for one answer.")
                         ] = SERVER_DEFAULT.timeout_s,
    retries: Annotated[int, typer.Option(min=0, help="openai: retries on 429/5xx or a lost connection.",
                                         rich_help_panel=SERVER)] = SERVER_DEFAULT.retries,
    backoff_s: Annotated[float, typer.Option(min=0, help="openai: first wait before a retry, doubled each time, s.",
                                             rich_help_panel=SERVER)] = SERVER_DEFAULT.backoff_s,
    dtype: Annotated[ModelDtype, typer.Option(help="Model precision; auto: bf16 on GPU, fp32 on CPU.",
                                              rich_help_panel=MODEL)] = REASON.dtype,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.",
                                                rich_help_panel=MODEL)] = REASON.max_new_tokens,
    min_pixels: Annotated[int, typer.Option(
        min=28 * 28, help="Qwen2-VL/2.5-VL image budget, least pixels per image (the reference: 512·28²).",
        rich_help_panel=MODEL)] = REASON.min_pixels,
    max_pixels: Annotated[int, typer.Option(
        min=28 * 28, help="Qwen2-VL/2.5-VL image budget, most pixels per image (the reference: 512·28²).",
        rich_help_panel=MODEL)] = REASON.max_pixels,
    trust_remote_code: Annotated[bool, typer.Option(
        help="Run model code from its repository (only for models you trust).", rich_help_panel=MODEL)
    ] = REASON.trust_remote_code,
    caas: Annotated[bool, typer.Option("--caas", help="Strengthen attention to the query image when τ < score < S_max.",
                                       rich_help_panel=CAAS)] = False,
    caas_alpha: Annotated[float, typer.Option(min=0, help="CAAS: weights on visual tokens × (1 + α).",
                                              rich_help_panel=CAAS)] = CAAS_DEFAULT.alpha,
    caas_layers: Annotated[str, typer.Option(
        help="CAAS: 0-based decoder layers (9-14 or 9,11), or a band of the model's depth (0.32-0.54: the "
             "reference's 9-14 on Qwen2.5-VL-7B, the same middle stretch on any size).", rich_help_panel=CAAS)
    ] = layers_text(CAAS_DEFAULT.layers),
    caas_mode: Annotated[CaasMode, typer.Option(
        help="CAAS: renorm (SDPA-compatible) or scale (eager, no renormalising).", rich_help_panel=CAAS)
    ] = CAAS_DEFAULT.mode,
    caas_images: Annotated[CaasImages, typer.Option(help="CAAS: strengthen the query image only, or all images.",
                                                    rich_help_panel=CAAS)] = CAAS_DEFAULT.images,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = REASON.device,
    prompt_batch: Annotated[int, typer.Option("--prompt-batch", "--batch-size", min=1, rich_help_panel=RUNTIME,
                                              help="Prompts per generate call.")] = REASON.prompt_batch,
    on_error: OnErrorOpt = "skip",
):
    """Ask a multimodal LLM every prompt; answers are saved as they come and a rerun resumes (**answers**).

    Example: eagle reason --model /models/Qwen2.5-VL-7B-Instruct --caas --caas-layers 9-14

    Example: eagle reason --backend openai --base-url http://gpu-host:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
    """
    from eagle_cli.stages.reason import SharedBackend, run_reason

    session = Session(quiet, as_json)
    server = ServerSettings(base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, timeout_s=timeout_s,
                            retries=retries, backoff_s=backoff_s)
    settings = CaasSettings(alpha=caas_alpha, layers=parse_layers(caas_layers), mode=caas_mode,
                            images=caas_images) if caas else None
    params = ReasonParams(model=model, backend=backend, dtype=dtype, device=device, max_new_tokens=max_new_tokens,
                          min_pixels=min_pixels, max_pixels=max_pixels,
                          prompt_batch=prompt_batch, trust_remote_code=trust_remote_code, caas=settings, server=server)
    ctx = session.context(artifacts_root, run, force, on_error)
    shared = SharedBackend(params)  # loaded once, and only if some prompt is still unanswered
    session.report([run_reason(ref, params, context=ctx, backend=shared)
                    for ref in inputs(prompts, "prompts", category, artifacts_root, run)])
