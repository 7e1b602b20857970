"""eagle run: every stage for every category from one config, reusing what is up to date.

Each stage's artifact id hashes its parameters and inputs, so an unchanged stage is found and
reused, and a changed parameter redoes that stage and those after it. A stage that fails in one
category is recorded and the other categories go on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.config import RunConfig
from eagle_cli.data.source import DataSource
from eagle_cli.errors import EagleError
from eagle_cli.mllm.openai_api import ServerSettings
from eagle_cli.mllm.settings import CaasSettings, parse_layers
from eagle_cli.prompts.boxes import BoxParams
from eagle_cli.context import Context
from eagle_cli.stages.calibrate import CalibrationParams
from eagle_cli.stages.extract import ExtractParams, run_extract
from eagle_cli.stages.fit_bank import BankParams, run_fit_bank
from eagle_cli.stages.fit_threshold import FitThresholdParams, run_fit_threshold
from eagle_cli.stages.prompt import PromptParams, run_prompt
from eagle_cli.stages.reason import ReasonParams, SharedBackend, run_reason
from eagle_cli.stages.report import ReportParams, run_report
from eagle_cli.stages.score import ScoreInputs, ScoreParams, run_score
from eagle_cli.threshold import ThresholdParams

NO_MODEL = ("reasoning skipped: no multimodal model set — add `model:` to the config (a local folder, a cached "
            "hub id, or with `backend: openai` the name served at `base_url:`) to run it.")


@dataclass(frozen=True)
class Outcome:
    """What happened to one stage of one category."""

    category: str
    stage: str
    ref: ArtifactRef | None
    error: str | None = None

    @property
    def reused(self) -> bool:
        return self.ref is not None and self.ref.reused


def stage_params(config: RunConfig) -> dict:
    """The parameters each stage gets from the config."""
    caas = CaasSettings(alpha=config.caas_alpha, layers=parse_layers(config.caas_layers),
                        mode=config.caas_mode) if config.caas else None
    prompt = PromptParams(visual=config.visual, verdict=config.verdict, shots=config.shots, seed=config.seed,
                          domain_knowledge=config.domain_knowledge, template=config.template, box=BoxParams(),
                          task=config.task, template_source=config.template_source)
    return {
        "extract": ExtractParams(backbone=config.backbone, weights=config.weights, resize=config.resize,
                                 crop=config.crop, batch_size=config.batch_size, device=config.device),
        "bank": BankParams(coreset_ratio=config.coreset_ratio, proj_dim=config.proj_dim, n_starts=config.n_starts,
                           init=config.init, seed=config.seed, knn_k=config.knn),
        "threshold": FitThresholdParams(
            dbt=ThresholdParams(method=config.threshold_method, target_far=config.target_far, kappa=config.kappa,
                                q=config.q, mad_factor=config.mad_factor, evt_p=config.evt_p),
            calibration=CalibrationParams(estimator=config.calibration, folds=config.folds,
                                          min_unselected=config.min_unselected, device=config.device)),
        "score": ScoreParams(batch_size=config.batch_size, device=config.device),
        "prompt": prompt,
        # The model alone: the same question and wording, without the expert's verdict or images.
        "prompt_alone": PromptParams(visual="none", verdict=False, shots=config.shots, seed=config.seed,
                                     domain_knowledge=config.domain_knowledge, template=config.template,
                                     task=config.task, template_source=config.template_source),
        "reason": None if config.model is None else ReasonParams(
            model=config.model, backend=config.backend, dtype=config.dtype, device=config.device,
            max_new_tokens=config.max_new_tokens, batch_size=config.reason_batch_size, caas=caas,
            server=ServerSettings(base_url=config.base_url, concurrency=config.concurrency)),
    }


def run_pipeline(config: RunConfig, *, context: Context) -> tuple[list[Outcome], list[str]]:
    """Run the chain for every category; return each stage's outcome and messages for the user."""
    params = stage_params(config)
    source = DataSource(layout=config.layout, root=config.data, mmad_json=config.mmad_json,
                        mmad_dataset=config.mmad_dataset).resolved()
    categories = list(config.categories) or source.categories()
    messages = [f"config keys accepted but not used by eagle: {', '.join(config.ignored)}"] if config.ignored else []
    if params["reason"] is None:
        messages.append(NO_MODEL)
    backend = SharedBackend(params["reason"]) if params["reason"] is not None else None
    outcomes: list[Outcome] = []
    for category in categories:
        stage = "extract"
        try:
            features = run_extract(source, category, "train", params["extract"], context=context)
            outcomes.append(Outcome(category, stage, features))
            stage = "fit-bank"
            bank = run_fit_bank(features, params["bank"], context=context)
            outcomes.append(Outcome(category, stage, bank))
            stage = "fit-threshold"
            threshold = run_fit_threshold(bank, params["threshold"], context=context)
            outcomes.append(Outcome(category, stage, threshold))
            stage = "score"
            scores = run_score(threshold, ScoreInputs(source=source, category=category), params["score"],
                               context=context)
            outcomes.append(Outcome(category, stage, scores))
            prompt_sets = [("prompt", params["prompt"])] + ([("prompt-alone", params["prompt_alone"])]
                                                          if config.mllm_alone else [])
            for stage, prompt_params in prompt_sets:
                prompts = run_prompt(scores, prompt_params, context=context)
                outcomes.append(Outcome(category, stage, prompts))
                if params["reason"] is None:
                    continue
                stage = "reason" if stage == "prompt" else "reason-alone"
                reason_params = params["reason"] if stage == "reason" else _without_caas(params["reason"])
                outcomes.append(Outcome(category, stage, run_reason(prompts, reason_params, context=context,
                                                                    backend=backend)))
        except EagleError as exc:
            outcomes.append(Outcome(category, stage, None, str(exc)))
    if any(o.stage == "score" and o.ref is not None for o in outcomes):
        done = tuple(sorted({o.category for o in outcomes if o.stage == "score" and o.ref is not None}))
        try:
            outcomes.append(Outcome("all", "report", run_report(ReportParams(runs=(config.run,), categories=done),
                                                                context=context)))
        except EagleError as exc:
            outcomes.append(Outcome("all", "report", None, str(exc)))
    return outcomes, messages


def _without_caas(params: ReasonParams) -> ReasonParams:
    return replace(params, caas=None)
