"""The ``eagle`` command: one thin function per stage — parse, call the stage, say where it wrote."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from eagle_cli import __version__, artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.config import RunConfig
from eagle_cli.context import Context
from eagle_cli.data.source import FOLDER_CATEGORY, LAYOUTS, DataSource
from eagle_cli.errors import EagleError
from eagle_cli.expert.names import BACKBONE_NAMES
from eagle_cli.mllm.openai_api import ServerSettings
from eagle_cli.mllm.settings import PRESETS, CaasSettings, parse_layers

# Stage modules (torch, transformers, matplotlib) are imported inside the commands that use them,
# so `eagle --help` and usage errors answer at once.

app = typer.Typer(help="eagle: industrial visual inspection — expert anomaly scoring, normal-only thresholds, "
                       "staged artifacts.", no_args_is_help=True, rich_markup_mode="rich")
data_app = typer.Typer(help="Datasets: generate the synthetic demo data.", no_args_is_help=True)
backbones_app = typer.Typer(help="Backbones: list them, bring weights onto an offline machine.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Artifacts: list and inspect what the stages wrote.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(backbones_app, name="backbones")
app.add_typer(artifacts_app, name="artifacts")

err = Console(stderr=True, soft_wrap=True)  # paths must survive copy and paste
out = Console(soft_wrap=True)

IN, EXPERT, OUTPUT, RUNTIME = "Inputs", "Expert", "Output", "Runtime"
PROMPT, MODEL, CAAS, SERVER = "Prompt", "Model", "CAAS", "Server"

# Shared options -------------------------------------------------------------------------------
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="Dataset root (MVTec-AD or VisA layout).", rich_help_panel=IN)]
LayoutOpt = Annotated[str, typer.Option(help=f"Dataset layout: {', '.join(LAYOUTS)}.", rich_help_panel=IN)]
CategoryOpt = Annotated[Optional[str], typer.Option(
    "--category", help="Comma-separated categories; default: every category found.", rich_help_panel=IN)]
GoodOpt = Annotated[Optional[Path], typer.Option(help="Folder of good training images (instead of --data).", rich_help_panel=IN)]
TestOpt = Annotated[Optional[Path], typer.Option(
    "--test", help="Folder of test images; subfolders name their labels (good/ok/normal = good).", rich_help_panel=IN)]
MmadJsonOpt = Annotated[Optional[Path], typer.Option(help="MMAD question file (default: ROOT/mmad.json).", rich_help_panel=IN)]
MmadDatasetOpt = Annotated[Optional[str], typer.Option(help="MMAD dataset to use, e.g. DS-MVTec or VisA.", rich_help_panel=IN)]
SplitCsvOpt = Annotated[Optional[Path], typer.Option(help="VisA split CSV (default: ROOT/split_csv/1cls.csv).", rich_help_panel=IN)]
ArtifactsOpt = Annotated[Path, typer.Option(
    "--artifacts", envvar="EAGLE_ARTIFACTS", help="Where artifacts live.", rich_help_panel=OUTPUT)]
RunOpt = Annotated[str, typer.Option(help="Run name: artifacts go to ARTIFACTS/RUN/CATEGORY/KIND/ID.", rich_help_panel=OUTPUT)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the work even if an identical artifact exists.", rich_help_panel=OUTPUT)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.", rich_help_panel=OUTPUT)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.", rich_help_panel=OUTPUT)]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.", rich_help_panel=RUNTIME)]
OnErrorOpt = Annotated[str, typer.Option(help="A bad image: skip (list it in errors.jsonl) or fail.", rich_help_panel=RUNTIME)]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUNTIME)]
BatchOpt = Annotated[int, typer.Option(help="Images per backbone forward.", rich_help_panel=RUNTIME)]
KnnBackendOpt = Annotated[str, typer.Option(
    help="kNN search: auto (torch on GPU, faiss on CPU), faiss or torch.", rich_help_panel=RUNTIME)]
BackboneOpt = Annotated[str, typer.Option(help=f"Backbone: {', '.join(BACKBONE_NAMES)}.", rich_help_panel=EXPERT)]
WeightsOpt = Annotated[str, typer.Option(
    help="imagenet (torchvision cache, TORCH_HOME), none (random; a warning), or a .pth state-dict path.",
    rich_help_panel=EXPERT)]
ResizeOpt = Annotated[int, typer.Option(help="Shorter side after resizing, px.", rich_help_panel=EXPERT)]
CropOpt = Annotated[int, typer.Option(help="Centre crop, px.", rich_help_panel=EXPERT)]
DtypeOpt = Annotated[str, typer.Option(help="Stored feature precision: float32 or float16.", rich_help_panel=OUTPUT)]


@dataclass
class Session:
    """Output settings of one command."""

    quiet: bool
    as_json: bool

    @contextmanager
    def task(self, description: str, total: int) -> Iterator:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err, disable=self.quiet, transient=False) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)

    def context(self, artifacts_root: Path, run: str, force: bool, on_error: str = "skip") -> Context:
        return Context(artifacts=artifacts_root, run=run, force=force, on_error=on_error, reporter=self)

    def report(self, refs: list[ArtifactRef]) -> None:
        if self.as_json:
            print(json.dumps([{"kind": r.kind, "id": r.id, "path": str(r.path), "reused": r.reused,
                               "category": r.path.parent.parent.name, "summary": r.summary} for r in refs], indent=2))
            return
        for ref in refs:
            verb = "reused" if ref.reused else "wrote"
            err.print(f"[green]{verb}[/] {ref.kind} [bold]{ref.path}[/]")
            if not self.quiet:
                _print_summary(ref)


def _print_summary(ref: ArtifactRef) -> None:
    flat = {}
    for key, value in ref.summary.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            flat[key] = value
    err.print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in flat.items()))
    if ref.lineage.get("weights") == "none":
        err.print("  [yellow]warning:[/] random backbone weights (--weights none): scores are not meaningful.")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _source(data, layout, good, test, split_csv, mmad_json=None, mmad_dataset=None) -> DataSource:
    return DataSource(layout=layout, root=data, good=good, test=test, split_csv=split_csv, mmad_json=mmad_json,
                      mmad_dataset=mmad_dataset).resolved()


def _categories(category: Optional[str], fallback: list[str]) -> list[str]:
    return [c.strip() for c in category.split(",") if c.strip()] if category else fallback


def _inputs(spec: Optional[str], kind: str, category: Optional[str], root: Path, run: str,
            where: Optional[dict] = None) -> list[ArtifactRef]:
    """The artifact given by path or id, or the latest of ``kind`` for each category (default: all in the run)."""
    if spec:
        return [artifacts.resolve(spec, root=root, run=run, category="", kind=kind)]
    names = _categories(category, artifacts.categories_with(root, run, kind)) or [FOLDER_CATEGORY]
    return [artifacts.latest(root, run, name, kind, where=where) for name in names]


def _extract_params(backbone, weights, resize, crop, dtype, batch_size, device):
    from eagle_cli.stages.extract import ExtractParams

    return ExtractParams(backbone=backbone, weights=weights, resize=resize, crop=crop, dtype=dtype,
                         batch_size=batch_size, device=device)


def command(typer_app: typer.Typer, name: Optional[str] = None):
    """Register a command whose :class:`EagleError` becomes one red paragraph and exit code 1."""

    def register(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except EagleError as exc:
                if kwargs.get("debug") or os.environ.get("EAGLE_DEBUG") == "1":
                    raise
                err.print(f"[red]error:[/] {exc}", highlight=False, markup=True)
                raise typer.Exit(1) from None

        return typer_app.command(name)(wrapper)

    return register


# Stages ---------------------------------------------------------------------------------------
@command(app)
def extract(
    split: Annotated[str, typer.Option(help="train (good images) or test.", rich_help_panel=IN)] = "train",
    data: DataOpt = None, layout: LayoutOpt = "auto", category: CategoryOpt = None, good: GoodOpt = None,
    test: TestOpt = None, split_csv: SplitCsvOpt = None, mmad_json: MmadJsonOpt = None,
    mmad_dataset: MmadDatasetOpt = None,
    backbone: BackboneOpt = "wide_resnet50_2", weights: WeightsOpt = "imagenet", resize: ResizeOpt = 256,
    crop: CropOpt = 224, dtype: DtypeOpt = "float32",
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = "auto", batch_size: BatchOpt = 8, on_error: OnErrorOpt = "skip", debug: DebugOpt = False,
):
    """Extract patch features of a split into a [bold]features[/] artifact."""
    from eagle_cli.stages.extract import run_extract

    session = Session(quiet, as_json)
    source = _source(data, layout, good, test, split_csv, mmad_json, mmad_dataset)
    params = _extract_params(backbone, weights, resize, crop, dtype, batch_size, device)
    ctx = session.context(artifacts_root, run, force, on_error)
    session.report([run_extract(source, c, split, params, context=ctx) for c in _categories(category, source.categories())])


@command(app, "fit-bank")
def fit_bank(
    features: Annotated[Optional[str], typer.Option(
        help="A train features artifact (path or id); default: extract from --data/--good, or the latest.",
        rich_help_panel=IN)] = None,
    data: DataOpt = None, layout: LayoutOpt = "auto", category: CategoryOpt = None, good: GoodOpt = None,
    split_csv: SplitCsvOpt = None, mmad_json: MmadJsonOpt = None, mmad_dataset: MmadDatasetOpt = None,
    backbone: BackboneOpt = "wide_resnet50_2", weights: WeightsOpt = "imagenet", resize: ResizeOpt = 256,
    crop: CropOpt = 224, dtype: DtypeOpt = "float32",
    coreset_ratio: Annotated[float, typer.Option(help="Share of patches kept in the bank.", rich_help_panel=EXPERT)] = 0.1,
    proj_dim: Annotated[int, typer.Option(help="Random-projection size for coreset distances.", rich_help_panel=EXPERT)] = 128,
    n_starts: Annotated[int, typer.Option(help="Coreset starting points.", rich_help_panel=EXPERT)] = 10,
    init: Annotated[str, typer.Option(help="Start: center_farthest, pca_extremes or random.", rich_help_panel=EXPERT)] = "center_farthest",
    seed: Annotated[int, typer.Option(help="Global seed; each category derives its own from it.", rich_help_panel=EXPERT)] = 0,
    knn: Annotated[int, typer.Option("--knn", help="Neighbours averaged per patch score (k).", rich_help_panel=EXPERT)] = 1,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = "auto", batch_size: BatchOpt = 8, on_error: OnErrorOpt = "skip", debug: DebugOpt = False,
):
    """Select a coreset memory bank from training features into a [bold]bank[/] artifact."""
    from eagle_cli.stages.extract import run_extract
    from eagle_cli.stages.fit_bank import BankParams, run_fit_bank

    session = Session(quiet, as_json)
    ctx = session.context(artifacts_root, run, force, on_error)
    params = BankParams(coreset_ratio=coreset_ratio, proj_dim=proj_dim, n_starts=n_starts, init=init, seed=seed, knn_k=knn)
    if data or good:
        source = _source(data, layout, good, None, split_csv, mmad_json, mmad_dataset)
        extract_params = _extract_params(backbone, weights, resize, crop, dtype, batch_size, device)
        inputs = [run_extract(source, c, "train", extract_params, context=ctx) for c in _categories(category, source.categories())]
    else:
        inputs = _inputs(features, "features", category, artifacts_root, run, where={"split": "train"})
    session.report([run_fit_bank(ref, params, context=ctx) for ref in inputs])


@command(app, "fit-threshold")
def fit_threshold(
    bank: Annotated[Optional[str], typer.Option(help="Bank artifact (path or id); default: the latest.", rich_help_panel=IN)] = None,
    category: CategoryOpt = None,
    calibration: Annotated[str, typer.Option(
        help="How each training image is scored as if the bank had not seen it: refill (default: the bank "
             "without the image's entries, refilled as a coreset of the other images would be; the least "
             "biased on realistic data), leave-own-out (all patches, own entries removed; biased high), "
             "cross-fit (K folds, banks refitted; biased high, K coreset fits), reference (the reference's "
             "unselected patches; biased low: too many false alarms).",
        rich_help_panel=EXPERT)] = "refill",
    folds: Annotated[int, typer.Option(help="cross-fit: number of folds K (2 … number of training images).", rich_help_panel=EXPERT)] = 5,
    calibration_artifact: Annotated[Optional[str], typer.Option(
        help="Fit on this calibration artifact (path or id) of the same bank instead of computing one.",
        rich_help_panel=IN)] = None,
    method: Annotated[str, typer.Option(help="conformal, k-sigma, quantile, mad or evt.", rich_help_panel=EXPERT)] = "conformal",
    target_far: Annotated[float, typer.Option(
        help="conformal: the false-alarm rate α to keep on new good parts. τ is the ⌈(n+1)(1−α)⌉-th smallest "
             "of n calibration scores: if new good parts score like the calibration images (same "
             "production conditions), the expected share flagged is at most α. n images support α ≥ 1/(n+1). "
             "Nothing is promised about misses, or after the line drifts.",
        rich_help_panel=EXPERT)] = 0.05,
    kappa: Annotated[float, typer.Option(help="k-sigma: τ = mean + κ·std.", rich_help_panel=EXPERT)] = 3.0,
    q: Annotated[float, typer.Option(help="quantile: percentile of the normal scores.", rich_help_panel=EXPERT)] = 99.0,
    mad_factor: Annotated[float, typer.Option(help="mad: τ = median + factor·MAD.", rich_help_panel=EXPERT)] = 3.0,
    mad_consistency: Annotated[bool, typer.Option(help="mad: scale MAD by 1.4826 (normal consistency).", rich_help_panel=EXPERT)] = False,
    evt_p: Annotated[float, typer.Option(help="evt: quantile of the fitted GEV.", rich_help_panel=EXPERT)] = 0.99,
    min_unselected: Annotated[int, typer.Option(help="reference calibration: leave out training images with fewer unselected patches.", rich_help_panel=EXPERT)] = 32,
    extra_neighbours: Annotated[int, typer.Option(help="Extra neighbours searched to skip an image's own bank entries.", rich_help_panel=RUNTIME)] = 32,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = "auto", knn_backend: KnnBackendOpt = "auto", debug: DebugOpt = False,
):
    """Fit a threshold on normal data only (DBT): [bold]calibration[/] scores of the training images, then a [bold]threshold[/] artifact.

    The calibration artifact is reused by every method, so trying another --method redoes no scoring.
    The default, conformal at 5 %, says how many good parts it will flag; --calibration reference
    --method k-sigma is the reference code's DBT.
    """
    from eagle_cli.stages.calibrate import CalibrationParams, run_calibrate
    from eagle_cli.stages.fit_threshold import FitThresholdParams, check_target, run_fit_threshold
    from eagle_cli.threshold import ThresholdParams

    session = Session(quiet, as_json)
    dbt = ThresholdParams(method=method, target_far=target_far, kappa=kappa, q=q, mad_factor=mad_factor,
                          mad_consistency=mad_consistency, evt_p=evt_p)
    params = FitThresholdParams(dbt=dbt, calibration=CalibrationParams(
        estimator=calibration, folds=folds, min_unselected=min_unselected, extra_neighbours=extra_neighbours,
        knn_backend=knn_backend, device=device))
    ctx = session.context(artifacts_root, run, force)
    given = artifacts.resolve(calibration_artifact, root=artifacts_root, run=run, category="",
                              kind="calibration") if calibration_artifact else None
    banks = [given.input("bank")] if given and not bank else _inputs(bank, "bank", category, artifacts_root, run)
    refs = []
    for ref in banks:
        check_target(ref, dbt)
        scores = given or run_calibrate(ref, params.calibration, context=ctx)
        refs += [scores, run_fit_threshold(ref, params, context=ctx, calibration=scores)]
    session.report(refs)


@command(app)
def score(
    threshold: Annotated[Optional[str], typer.Option(help="Threshold artifact (path or id); default: the latest.", rich_help_panel=IN)] = None,
    features: Annotated[Optional[str], typer.Option(help="Test features artifact (path or id) instead of images.", rich_help_panel=IN)] = None,
    data: DataOpt = None, layout: LayoutOpt = "auto", category: CategoryOpt = None, test: TestOpt = None,
    split_csv: SplitCsvOpt = None, mmad_json: MmadJsonOpt = None, mmad_dataset: MmadDatasetOpt = None,
    sigma: Annotated[float, typer.Option(help="Gaussian smoothing of the anomaly map, px.", rich_help_panel=EXPERT)] = 4.0,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = "auto", batch_size: BatchOpt = 8, knn_backend: KnnBackendOpt = "auto",
    on_error: OnErrorOpt = "skip", debug: DebugOpt = False,
):
    """Score test images (default: the test split of the dataset the bank was fitted on) into a [bold]scores[/] artifact."""
    from eagle_cli.stages.score import ScoreParams, run_score

    session = Session(quiet, as_json)
    ctx = session.context(artifacts_root, run, force, on_error)
    params = ScoreParams(sigma_px=sigma, batch_size=batch_size, knn_backend=knn_backend, device=device)
    refs = []
    for ref in _inputs(threshold, "threshold", category, artifacts_root, run):
        name = ref.path.parent.parent.name
        given = _source(data, layout, None, test, split_csv, mmad_json, mmad_dataset) if (data or test) else None
        refs.append(run_score(ref, _test_set(ref, name, features, given, artifacts_root, run), params, context=ctx))
    session.report(refs)


def _test_set(threshold_ref, category, features, given: Optional[DataSource], root, run):
    from eagle_cli.stages.score import ScoreInputs

    if features:
        return ScoreInputs(features=artifacts.resolve(features, root=root, run=run, category=category, kind="features"))
    if given is not None:
        return ScoreInputs(source=given, category=category)
    source = DataSource.from_description(threshold_ref.input("bank").input("features").params["source"])
    if source.layout == "folder" and source.test is None:
        raise EagleError("The bank was fitted on a --good folder; pass --test DIR with the images to score.")
    return ScoreInputs(source=source, category=category)


@command(app)
def prompt(
    scores: Annotated[Optional[str], typer.Option(help="Scores artifact (path or id); default: the latest.", rich_help_panel=IN)] = None,
    category: CategoryOpt = None,
    visual: Annotated[str, typer.Option(help="Visual prompt with an anomalous verdict: boxes, heatmap, both or none.", rich_help_panel=PROMPT)] = "boxes",
    instruction: Annotated[bool, typer.Option(help="Open with the inspector instruction and the answer format.", rich_help_panel=PROMPT)] = True,
    verdict: Annotated[bool, typer.Option(help="State the expert's verdict in the text (the textual prior).", rich_help_panel=PROMPT)] = True,
    shots: Annotated[int, typer.Option(help="Normal training images shown as references (MMAD uses 1).", rich_help_panel=PROMPT)] = 0,
    template_source: Annotated[str, typer.Option(help="Reference images: seeded (from the training set), or MMAD's similar or random template lists.", rich_help_panel=PROMPT)] = "seeded",
    seed: Annotated[int, typer.Option(help="Seed for choosing the reference images.", rich_help_panel=PROMPT)] = 0,
    task: Annotated[str, typer.Option(help='MMAD question type to ask, e.g. "Anomaly Detection", or all.', rich_help_panel=PROMPT)] = "all",
    domain_knowledge: Annotated[Optional[Path], typer.Option(help="MMAD-format domain_knowledge.json to include.", rich_help_panel=PROMPT)] = None,
    template: Annotated[Optional[Path], typer.Option(help="YAML file with your own wording (copy eagle_cli/prompts/templates/default.yaml).", rich_help_panel=PROMPT)] = None,
    box_level: Annotated[float, typer.Option(help="Boxes enclose map regions above this fraction of τ.", rich_help_panel=PROMPT)] = 2 / 3,
    top_k: Annotated[int, typer.Option(help="Most boxes per image.", rich_help_panel=PROMPT)] = 3,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False, on_error: OnErrorOpt = "skip", debug: DebugOpt = False,
):
    """Turn scores into multimodal prompts (box images + text) in a [bold]prompts[/] artifact."""
    from eagle_cli.prompts.boxes import BoxParams
    from eagle_cli.stages.prompt import PromptParams, run_prompt

    session = Session(quiet, as_json)
    params = PromptParams(visual=visual, instruction=instruction, verdict=verdict, shots=shots, seed=seed, domain_knowledge=domain_knowledge,
                          template=template, box=BoxParams(level=box_level, top_k=top_k), task=task,
                          template_source=template_source)
    ctx = session.context(artifacts_root, run, force, on_error)
    session.report([run_prompt(ref, params, context=ctx) for ref in _inputs(scores, "scores", category, artifacts_root, run)])


@command(app)
def reason(
    prompts: Annotated[Optional[str], typer.Option(help="Prompts artifact (path or id); default: the latest.", rich_help_panel=IN)] = None,
    category: CategoryOpt = None,
    backend: Annotated[str, typer.Option(help="hf (transformers in this process) or openai (an OpenAI-compatible server such as vLLM).", rich_help_panel=MODEL)] = "hf",
    model: Annotated[str, typer.Option(help=f"Hugging Face id, local folder, or preset ({', '.join(PRESETS)}); with openai, the served model name.", rich_help_panel=MODEL)] = "qwen2.5-vl-7b",
    base_url: Annotated[str, typer.Option(envvar="EAGLE_BASE_URL", help="openai: the server's /v1 URL.", rich_help_panel=SERVER)] = "http://127.0.0.1:8000/v1",
    api_key_env: Annotated[str, typer.Option(help="openai: environment variable holding the API key.", rich_help_panel=SERVER)] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="openai: requests in flight at once.", rich_help_panel=SERVER)] = 8,
    timeout: Annotated[float, typer.Option(help="openai: seconds to wait for one answer.", rich_help_panel=SERVER)] = 120.0,
    retries: Annotated[int, typer.Option(help="openai: retries on 429/5xx or a lost connection (exponential backoff).", rich_help_panel=SERVER)] = 4,
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16 or float32.", rich_help_panel=MODEL)] = "auto",
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.", rich_help_panel=MODEL)] = 128,
    trust_remote_code: Annotated[bool, typer.Option(help="Run model code from its repository (only for models you trust).", rich_help_panel=MODEL)] = False,
    caas_on: Annotated[bool, typer.Option("--caas", help="Strengthen attention to the query image when τ < score < S_max.", rich_help_panel=CAAS)] = False,
    caas_alpha: Annotated[float, typer.Option(help="CAAS: weights on visual tokens × (1 + α).", rich_help_panel=CAAS)] = 0.6,
    caas_layers: Annotated[str, typer.Option(help="CAAS: 0-based decoder layers, e.g. 9-14 or 9,11.", rich_help_panel=CAAS)] = "9-14",
    caas_mode: Annotated[str, typer.Option(help="CAAS: renorm (SDPA-compatible) or scale (eager, no renormalising).", rich_help_panel=CAAS)] = "renorm",
    caas_images: Annotated[str, typer.Option(help="CAAS: strengthen the query image only, or all images.", rich_help_panel=CAAS)] = "query",
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = "auto", batch_size: Annotated[int, typer.Option(help="Prompts per generate call.", rich_help_panel=RUNTIME)] = 1,
    on_error: OnErrorOpt = "skip", debug: DebugOpt = False,
):
    """Ask a multimodal LLM every prompt; answers are saved as they come and a rerun resumes ([bold]answers[/])."""
    from eagle_cli.stages.reason import ReasonParams, SharedBackend, run_reason

    session = Session(quiet, as_json)
    settings = CaasSettings(alpha=caas_alpha, layers=parse_layers(caas_layers), mode=caas_mode,
                            images=caas_images) if caas_on else None
    server = ServerSettings(base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, timeout_s=timeout,
                            retries=retries)
    params = ReasonParams(model=model, backend=backend, dtype=dtype, device=device, max_new_tokens=max_new_tokens,
                          batch_size=batch_size,
                          trust_remote_code=trust_remote_code, caas=settings, server=server)
    ctx = session.context(artifacts_root, run, force, on_error)
    refs = _inputs(prompts, "prompts", category, artifacts_root, run)
    backend = SharedBackend(params)  # loaded once, and only if some prompt is still unanswered
    session.report([run_reason(ref, params, context=ctx, backend=backend) for ref in refs])


@command(app)
def report(
    runs: Annotated[Optional[str], typer.Option("--run", help="Run to report, or two comma-separated runs side by side.", rich_help_panel=IN)] = "default",
    category: CategoryOpt = None,
    gallery: Annotated[int, typer.Option(help="Most images in the gallery (misses, false alarms, disagreements first).", rich_help_panel=OUTPUT)] = 120,
    fmt: Annotated[str, typer.Option("--format", help="html (write the report) or md (also print the tables as Markdown).", rich_help_panel=OUTPUT)] = "html",
    artifacts_root: ArtifactsOpt = Path("artifacts"), force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False, debug: DebugOpt = False,
):
    """Metrics, plots and an image gallery for one run, or two side by side ([bold]report[/] artifact)."""
    from eagle_cli.stages.report import ReportParams, markdown, run_report

    if fmt not in ("html", "md"):
        raise EagleError(f"--format must be html or md, got {fmt!r}.")
    session = Session(quiet or fmt == "md", as_json)
    names = tuple(r.strip() for r in (runs or "default").split(",") if r.strip())
    params = ReportParams(runs=names, categories=tuple(_categories(category, [])), gallery=gallery)
    ref = run_report(params, context=session.context(artifacts_root, names[0], force))
    if fmt == "md":
        print(markdown(ref))
    session.report([ref])
    if not as_json:
        err.print(f"open [bold]{ref.path / 'report.html'}[/] in a browser")


@command(app, "run")
def run_chain(
    config: Annotated[Path, typer.Argument(help="YAML config (eagle's keys or the reference qwen.yaml's); see examples/.")],
    categories: Annotated[Optional[str], typer.Option("--categories", help="Only these comma-separated categories.", rich_help_panel=IN)] = None,
    model: Annotated[Optional[str], typer.Option(help="Override the config's model (folder, hub id or preset).", rich_help_panel=MODEL)] = None,
    force: ForceOpt = False, quiet: QuietOpt = False, as_json: JsonOpt = False, debug: DebugOpt = False,
):
    """Run extract → fit-bank → fit-threshold → score → prompt → reason → report for every category, redoing only what changed."""
    from eagle_cli.pipeline import run_pipeline

    session = Session(quiet, as_json)
    settings = RunConfig.load(config)
    overrides = {"categories": tuple(_categories(categories, []))} if categories else {}
    settings = dataclasses.replace(settings, **overrides, **({"model": model} if model else {}))
    outcomes, messages = run_pipeline(settings, context=session.context(settings.artifacts, settings.run, force))
    for message in messages:
        err.print(f"[yellow]note:[/] {message}")
    _print_outcomes(session, outcomes)
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


def _print_outcomes(session: Session, outcomes) -> None:
    if session.as_json:
        print(json.dumps([{"category": o.category, "stage": o.stage, "reused": o.reused, "error": o.error,
                           "path": str(o.ref.path) if o.ref else None} for o in outcomes], indent=2))
        return
    for o in outcomes:
        if o.error:
            err.print(f"[red]failed[/] {o.category} {o.stage}: {o.error}", highlight=False)
        elif not session.quiet or o.stage == "report":
            err.print(f"{'reused' if o.reused else '[green]wrote[/]'} {o.category} {o.stage} {o.ref.path}")
    report_ref = next((o.ref for o in outcomes if o.stage == "report" and o.ref), None)
    if report_ref is not None:
        err.print(f"open [bold]{report_ref.path / 'report.html'}[/] in a browser")
    failed = sorted({f"{o.category}/{o.stage}" for o in outcomes if o.error})
    if failed:
        err.print(f"[red]{len(failed)} stage(s) failed:[/] {', '.join(failed)}; the other categories completed.")


# Helpers: data, backbones, artifacts ----------------------------------------------------------
@command(data_app, "synth")
def data_synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into (MVTec-AD layout).")],
    variation: Annotated[str, typer.Option(
        help="clean: steady parts and strong defects (easy; proves the plumbing). realistic: pose, lighting, "
             "blur and noise vary between good parts and defects are weak (for judging thresholds and quality).")] = "clean",
    categories: Annotated[Optional[str], typer.Option(
        help="Comma-separated; clean: brick, grass, gravel, washer; realistic adds tissue and coins. "
             "Default: all of the variation.")] = None,
    train: Annotated[int, typer.Option(help="Good training images per category.")] = 30,
    test_good: Annotated[int, typer.Option(help="Good test images per category.")] = 10,
    test_per_defect: Annotated[int, typer.Option(help="Test images per defect kind (scratch, stain, hole, patch).")] = 4,
    size: Annotated[int, typer.Option(help="Image side, px.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same pixels.")] = 0,
    quiet: QuietOpt = False, debug: DebugOpt = False,
):
    """Generate a seeded synthetic MVTec-AD-style dataset with exact defect masks (offline)."""
    from eagle_cli.data.synthetic import CATEGORIES, REALISTIC_CATEGORIES, generate

    names = tuple(_categories(categories, list(REALISTIC_CATEGORIES if variation == "realistic" else CATEGORIES)))
    with Session(quiet, False).task("synthesise", len(names)) as advance:
        folders = generate(out_dir, categories=names, variation=variation, n_train=train, n_test_good=test_good,
                           n_test_per_defect=test_per_defect, size=size, seed=seed, progress=advance)
    err.print(f"[green]wrote[/] {len(folders)} categories under [bold]{out_dir}[/]")


@command(backbones_app, "ls")
def backbones_ls():
    """List backbones, their feature layers and whether ImageNet weights are cached."""
    from eagle_cli.expert.backbones import BACKBONES, cache_dir

    for spec in BACKBONES.values():
        cached = (cache_dir() / spec.weights_file).is_file()
        out.print(f"{spec.name:18} layers={','.join(spec.layers):24} {spec.weights_file:36} "
                  f"{'[green]cached[/]' if cached else '[yellow]not cached[/]'}")
    out.print(f"cache: {cache_dir()}")


@command(backbones_app, "import-weights")
def backbones_import(
    name: Annotated[str, typer.Argument(help="Backbone name, e.g. mobilenet_v2.")],
    file: Annotated[Path, typer.Argument(help="torchvision's ImageNet .pth file for it, copied from elsewhere.")],
    debug: DebugOpt = False,
):
    """Check a weights file's published sha256 prefix and put it in the torchvision cache."""
    from eagle_cli.expert.backbones import get_spec, import_weights

    target = import_weights(get_spec(name), file)
    err.print(f"[green]wrote[/] {target}")


@command(artifacts_app, "ls")
def artifacts_ls(
    kind: Annotated[Optional[str], typer.Option(help="Only this kind.")] = None,
    run: Annotated[Optional[str], typer.Option(help="Only this run.")] = None,
    category: Annotated[Optional[str], typer.Option(help="Only this category.")] = None,
    artifacts_root: ArtifactsOpt = Path("artifacts"), as_json: JsonOpt = False,
):
    """List artifacts, oldest first."""
    refs = artifacts.list_artifacts(artifacts_root, run=run, category=category, kind=kind)
    if as_json:
        print(json.dumps([{"kind": r.kind, "id": r.id, "path": str(r.path), "created": r.manifest.get("created")}
                          for r in refs], indent=2))
        return
    for ref in refs:
        out.print(f"{ref.manifest.get('created', '')[:19]}  {ref.kind:10} {ref.id}  {ref.path}")


@command(artifacts_app, "show")
def artifacts_show(
    ref: Annotated[str, typer.Argument(help="Artifact path or id (prefix).")],
    artifacts_root: ArtifactsOpt = Path("artifacts"), debug: DebugOpt = False,
):
    """Print an artifact's manifest and its lineage chain (validating hashes)."""
    path = Path(ref)
    if not path.exists():
        matches = [r for r in artifacts.list_artifacts(artifacts_root) if r.id.startswith(ref)]
        if len(matches) != 1:
            raise EagleError(f"{len(matches)} artifacts match {ref!r} under {artifacts_root}; give a path or more digits.")
        path = matches[0].path
    opened = artifacts.open_artifact(path)
    print(json.dumps(opened.manifest, indent=2))
    chain, current = [], opened
    while current.manifest["inputs"]:
        item = current.manifest["inputs"][0]
        current = artifacts.open_artifact(item["path"], item["kind"], verify=False)
        chain.append(f"{current.kind} {current.id} {current.path}")
    for line in chain:
        err.print(f"  ← {line}")


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False):
    if version:
        out.print(f"eagle {__version__}")
        raise typer.Exit()


def main() -> None:
    """Run the CLI: exit 0 ok, 1 user error (one paragraph, no traceback unless --debug), 2 usage error."""
    app()
