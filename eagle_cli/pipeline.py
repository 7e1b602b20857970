"""eagle run: every stage for every category from one config, reusing what is up to date.

Each stage's artifact id hashes its parameters and inputs, so an unchanged stage is found and
reused, and a changed parameter redoes that stage and those after it. A stage that fails in one
category is recorded and the other categories go on. With ``executor: ray`` each category's expert
stages run as a Ray task (``ray_executor.py``), which writes the same artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from eagle_cli.artifacts import ArtifactRef
from eagle_cli.config import RunConfig
from eagle_cli.context import Context
from eagle_cli.data.source import DataSource
from eagle_cli.errors import EagleError
from eagle_cli.mllm.backends import SharedBackend
from eagle_cli.params import PromptParams, ReasonParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_threshold
from eagle_cli.stages.prompt import run_prompt
from eagle_cli.stages.reason import run_reason
from eagle_cli.stages.report import run_report
from eagle_cli.stages.score import ScoreInputs, run_score

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


def _prompt_sets(config: RunConfig) -> list[tuple[str, str, PromptParams, ReasonParams | None]]:
    """(prompt stage, reason stage, prompt settings, reason settings) of each system asked."""
    sets = [("prompt", "reason", config.prompt, config.reason)]
    if config.run.mllm_alone:
        # The model alone: the same question and wording, without the expert's verdict or images.
        sets.append(("prompt-alone", "reason-alone", replace(config.prompt, visual="none", verdict=False),
                     config.reason and replace(config.reason, caas=None)))
    return sets


def expert_chain(config: RunConfig, source: DataSource, category: str, *, context: Context) -> list[Outcome]:
    """extract → fit-bank → fit-threshold → score → prompt(s) of one category; stops at the first failure."""
    outcomes: list[Outcome] = []
    stage = "extract"
    try:
        features = run_extract(source, category, "train", config.extract, context=context)
        outcomes.append(Outcome(category, stage, features))
        stage = "fit-bank"
        bank = run_fit_bank(features, config.bank, context=context)
        outcomes.append(Outcome(category, stage, bank))
        stage = "fit-threshold"
        threshold = run_threshold(bank, config.calibration, config.threshold, context=context)
        outcomes.append(Outcome(category, stage, threshold))
        stage = "score"
        scores = run_score(threshold, ScoreInputs(source=source, category=category), config.score, context=context)
        outcomes.append(Outcome(category, stage, scores))
        for stage, _, prompt_params, _ in _prompt_sets(config):
            outcomes.append(Outcome(category, stage, run_prompt(scores, prompt_params, context=context)))
    except EagleError as exc:
        outcomes.append(Outcome(category, stage, None, str(exc)))
    return outcomes


def reason_chain(config: RunConfig, category: str, expert: list[Outcome], backend: SharedBackend | None, *,
                 context: Context) -> list[Outcome]:
    """Ask the model every prompts artifact ``expert`` produced for ``category``."""
    prompts = {o.stage: o.ref for o in expert if o.ref is not None}
    outcomes: list[Outcome] = []
    for prompt_stage, stage, _, reason_params in _prompt_sets(config):
        if reason_params is None or prompt_stage not in prompts:
            continue
        try:
            outcomes.append(Outcome(category, stage, run_reason(prompts[prompt_stage], reason_params, context=context,
                                                                backend=backend)))
        except EagleError as exc:
            outcomes.append(Outcome(category, stage, None, str(exc)))
            break
    return outcomes


def _exported(config: RunConfig, category: str, expert: list[Outcome], messages: list[str]) -> list[Outcome]:
    """Export the category's threshold (an ``export`` section in the config); a failure is its own outcome."""
    from eagle_cli.export.writer import export_threshold

    threshold = next((o.ref for o in expert if o.stage == "fit-threshold" and o.ref is not None), None)
    if threshold is None:
        return []
    try:
        folder = export_threshold(threshold, config.export, config.score)
    except EagleError as exc:
        return [Outcome(category, "export", None, str(exc))]
    messages.append(f"wrote {config.export.format} export {folder} (threshold {threshold.id})")
    return []


def run_pipeline(config: RunConfig, *, context: Context) -> tuple[list[Outcome], list[str]]:
    """Run the chain for every category; return each stage's outcome and messages for the user.

    With ``executor: ray`` the categories' expert stages (extract … prompt) run as Ray tasks and
    reasoning follows here, category by category; locally each category runs start to end in turn.
    """
    source = DataSource.of(config.run.data).resolved()
    categories = list(config.run.data.category) or source.categories()
    messages = [f"config keys accepted but not used by eagle: {', '.join(config.ignored)}"] if config.ignored else []
    if config.reason is None:
        messages.append(NO_MODEL)
    backend = SharedBackend(config.reason) if config.reason is not None else None
    if config.run.executor == "ray":
        from eagle_cli.ray_executor import expert_chains_on_ray

        experts = expert_chains_on_ray(config, categories, expert_chain, context=context)
    else:
        experts = {category: None for category in categories}  # computed in turn below
    outcomes: list[Outcome] = []
    for category in categories:
        expert = experts[category] or expert_chain(config, source, category, context=context)
        if isinstance(expert, str):  # its Ray task could not start
            expert = [Outcome(category, "extract", None, expert)]
        outcomes += expert
        if config.export is not None:
            outcomes += _exported(config, category, expert, messages)
        outcomes += reason_chain(config, category, expert, backend, context=context)
    done = tuple(sorted({o.category for o in outcomes if o.stage == "score" and o.ref is not None}))
    if done:
        try:
            report = run_report((context.run,), done, config.report, context=context)
            outcomes.append(Outcome("all", "report", report))
        except EagleError as exc:
            outcomes.append(Outcome("all", "report", None, str(exc)))
    return outcomes, messages


