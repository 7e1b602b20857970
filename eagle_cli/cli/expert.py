"""The expert's commands: extract, fit-bank, update-bank, fit-threshold, score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from eagle_cli import artifacts
from eagle_cli.cli.app import Session, app, command
from eagle_cli.cli.options import (
    BANK,
    CALIBRATION,
    EXPERT,
    EXTRACT,
    IN,
    LAYER_WEIGHTS,
    RUNTIME,
    SCORE,
    THRESHOLD,
    ArtifactsOpt,
    BackboneOpt,
    BatchOpt,
    CategoryOpt,
    CropOpt,
    DataOpt,
    DeviceOpt,
    FeatureDtypeOpt,
    ForceOpt,
    GoodOpt,
    JsonOpt,
    KnnBackendOpt,
    LayersOpt,
    LayerWeightsOpt,
    LayoutOpt,
    MmadDatasetOpt,
    MmadJsonOpt,
    OnErrorOpt,
    OverlapOpt,
    PresetOpt,
    PretrainDimOpt,
    QuietOpt,
    ResizeOpt,
    RunOpt,
    SplitCsvOpt,
    TargetDimOpt,
    TestOpt,
    TileOpt,
    WeightsOpt,
    categories,
    extract_params,
    inputs,
    source,
    with_preset,
)
from eagle_cli.params import (
    BankParams,
    CalibrationParams,
    CoresetInit,
    CoresetUpdates,
    Estimator,
    Method,
    ScoreParams,
    Split,
    ThresholdParams,
)


@command(app)
def extract(
    context: typer.Context,
    split: Annotated[Split, typer.Option(help="train (good images) or test.", rich_help_panel=IN)] = "train",
    data: DataOpt = None, layout: LayoutOpt = "auto", category: CategoryOpt = None, good: GoodOpt = None,
    test: TestOpt = None, split_csv: SplitCsvOpt = None, mmad_json: MmadJsonOpt = None,
    mmad_dataset: MmadDatasetOpt = None,
    backbone: BackboneOpt = EXTRACT.backbone, weights: WeightsOpt = EXTRACT.weights, resize: ResizeOpt = EXTRACT.resize,
    crop: CropOpt = EXTRACT.crop, tile: TileOpt = EXTRACT.tile, overlap: OverlapOpt = EXTRACT.overlap,
    pretrain_dim: PretrainDimOpt = EXTRACT.pretrain_dim,
    target_dim: TargetDimOpt = EXTRACT.target_dim,
    layer_weights: LayerWeightsOpt = LAYER_WEIGHTS, layers: LayersOpt = "", preset: PresetOpt = None,
    feature_dtype: FeatureDtypeOpt = EXTRACT.feature_dtype,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = EXTRACT.device, batch_size: BatchOpt = EXTRACT.batch_size, on_error: OnErrorOpt = "skip",
):
    """Extract patch features of a split into a **features** artifact.

    Example: eagle extract --data data/synth --category brick --backbone mobilenet_v2 --split test
    """
    from eagle_cli.stages.extract import run_extract

    session = Session(quiet, as_json)
    images = source(data, layout, good, test, split_csv, mmad_json, mmad_dataset)
    params = with_preset(context, preset, extract_params(
        backbone, weights, resize, crop, tile, overlap, pretrain_dim, target_dim, layer_weights, layers, feature_dtype,
        batch_size, device))
    ctx = session.context(artifacts_root, run, force, on_error)
    names = categories(category, images.categories())
    session.report([run_extract(images, name, split, params, context=ctx) for name in names])


@command(app, "fit-bank")
def fit_bank(
    context: typer.Context,
    features: Annotated[Optional[str], typer.Option(
        help="A train features artifact (path or id); default: extract from --data/--good, or the latest.",
        rich_help_panel=IN)] = None,
    data: DataOpt = None, layout: LayoutOpt = "auto", category: CategoryOpt = None, good: GoodOpt = None,
    split_csv: SplitCsvOpt = None, mmad_json: MmadJsonOpt = None, mmad_dataset: MmadDatasetOpt = None,
    backbone: BackboneOpt = EXTRACT.backbone, weights: WeightsOpt = EXTRACT.weights, resize: ResizeOpt = EXTRACT.resize,
    crop: CropOpt = EXTRACT.crop, tile: TileOpt = EXTRACT.tile, overlap: OverlapOpt = EXTRACT.overlap,
    pretrain_dim: PretrainDimOpt = EXTRACT.pretrain_dim,
    target_dim: TargetDimOpt = EXTRACT.target_dim,
    layer_weights: LayerWeightsOpt = LAYER_WEIGHTS, layers: LayersOpt = "", preset: PresetOpt = None,
    feature_dtype: FeatureDtypeOpt = EXTRACT.feature_dtype,
    coreset_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of patches kept in the bank.",
                                                 rich_help_panel=EXPERT)] = BANK.coreset_ratio,
    proj_dim: Annotated[int, typer.Option(min=1, help="Random-projection size for coreset distances.",
                                          rich_help_panel=EXPERT)] = BANK.proj_dim,
    n_starts: Annotated[int, typer.Option(min=1, help="Coreset starting points.",
                                          rich_help_panel=EXPERT)] = BANK.n_starts,
    init: Annotated[CoresetInit, typer.Option(help="How the coreset's starting points are chosen.",
                                              rich_help_panel=EXPERT)] = BANK.init,
    seed: Annotated[int, typer.Option(help="Global seed; each category derives its own from it.",
                                      rich_help_panel=EXPERT)] = BANK.seed,
    knn_k: Annotated[int, typer.Option("--knn-k", "--knn", min=1, help="Neighbours averaged per patch score (k).",
                                       rich_help_panel=EXPERT)] = BANK.knn_k,
    image_top: Annotated[int, typer.Option(
        min=1, max=4096, help="An image scores the mean of its this many highest patch scores (1: the highest alone, "
        "as the reference; the default 8 is 1 % of a 28 × 28 grid — a count, so small defects in large frames "
        "keep their score).", rich_help_panel=EXPERT)] = BANK.image_top,
    coreset_shard_images: Annotated[int, typer.Option(
        min=0, help="Run the greedy coreset separately on groups of this many training images and join the results: "
        "time grows linearly with the images instead of quadratically, at a slightly larger covering radius (see "
        "BENCHMARKS.md). 0: one greedy over all images, as published.", rich_help_panel=EXPERT)]
        = BANK.coreset_shard_images,
    coreset_updates: Annotated[CoresetUpdates, typer.Option(
        help="How the greedy coreset lowers distances after choosing a member. exact: every patch, as published. "
        "lists: only the patches in the member's 8 nearest k-means lists of about 3,000 patches — 2.5× faster at "
        "1,000 images, with the exact greedy's covering radius and image AUROC on our data (see BENCHMARKS.md).",
        rich_help_panel=EXPERT)] = BANK.coreset_updates,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = EXTRACT.device, batch_size: BatchOpt = EXTRACT.batch_size, on_error: OnErrorOpt = "skip",
):
    """Select a coreset memory bank from training features into a **bank** artifact (extracting them if asked).

    Example: eagle fit-bank --data data/synth --backbone mobilenet_v2 --coreset-ratio 0.1
    """
    from eagle_cli.stages.extract import run_extract
    from eagle_cli.stages.fit_bank import run_fit_bank

    session = Session(quiet, as_json)
    ctx = session.context(artifacts_root, run, force, on_error)
    params = with_preset(context, preset, BankParams(
        coreset_ratio=coreset_ratio, proj_dim=proj_dim, n_starts=n_starts, init=init, seed=seed, knn_k=knn_k,
        image_top=image_top, coreset_shard_images=coreset_shard_images,
        coreset_updates=coreset_updates))
    if data or good:
        images = source(data, layout, good, None, split_csv, mmad_json, mmad_dataset)
        extracting = with_preset(context, preset, extract_params(
            backbone, weights, resize, crop, tile, overlap, pretrain_dim, target_dim, layer_weights, layers,
            feature_dtype, batch_size, device))
        names = categories(category, images.categories())
        refs = [run_extract(images, name, "train", extracting, context=ctx) for name in names]
    else:
        refs = inputs(features, "features", category, artifacts_root, run, where={"split": "train"})
    session.report([run_fit_bank(ref, params, context=ctx) for ref in refs])


@command(app, "update-bank")
def update_bank(
    bank: Annotated[Optional[str], typer.Option(help="The bank to grow (path or id); default: the latest.",
                                                rich_help_panel=IN)] = None,
    data: DataOpt = None, layout: LayoutOpt = "auto", category: CategoryOpt = None, good: GoodOpt = None,
    split_csv: SplitCsvOpt = None, mmad_json: MmadJsonOpt = None, mmad_dataset: MmadDatasetOpt = None,
    target_far: Annotated[float, typer.Option(
        min=0, max=1, help="The refitted threshold's false-alarm target (conformal); other methods: eagle "
        "fit-threshold --bank on the new bank.", rich_help_panel=EXPERT)] = THRESHOLD.target_far,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = EXTRACT.device, batch_size: BatchOpt = EXTRACT.batch_size, on_error: OnErrorOpt = "skip",
):
    """Add good images to a bank without refitting it: a new **bank** (and its **calibration** and **threshold**).

    Only the new images are extracted, with the bank's own settings; the greedy coreset continues from the bank's
    selection over old and new patches (the same bank as a greedy run seeded with the old selection), and the
    threshold is refitted on a calibration that includes the new images. The old bank is left as it was and is
    listed among the new bank's inputs.

    Example: eagle update-bank --bank 3fa9c2e1d0b47a65 --good new_good_parts/
    """
    from eagle_cli.stages.fit_threshold import FitThresholdParams, check_target, run_calibrate, run_fit_threshold
    from eagle_cli.stages.grow_bank import run_grow_bank

    if not (data or good):
        raise typer.BadParameter("say which good images to add: --good DIR, or --data ROOT with --category.")
    session = Session(quiet, as_json)
    ctx = session.context(artifacts_root, run, force, on_error)
    images = source(data, layout, good, None, split_csv, mmad_json, mmad_dataset)
    parent = inputs(bank, "bank", None if bank else category, artifacts_root, run)[0]
    grown = run_grow_bank(parent, images, category=category, batch_size=batch_size, device=device, context=ctx)
    params = FitThresholdParams(dbt=ThresholdParams(target_far=target_far))
    check_target(grown, params)
    calibration = run_calibrate(grown, params.calibration, context=ctx)
    session.report([grown, calibration, run_fit_threshold(grown, params, context=ctx, calibration=calibration)])


@command(app, "fit-threshold")
def fit_threshold(
    context: typer.Context,
    bank: Annotated[Optional[str], typer.Option(help="Bank artifact (path or id); default: the latest.",
                                                rich_help_panel=IN)] = None,
    category: CategoryOpt = None, preset: PresetOpt = None,
    calibration: Annotated[Estimator, typer.Option(
        help="How each training image is scored as if the bank had not seen it: refill (the bank without the "
             "image's entries, refilled as a coreset of the other images would be; the least biased on realistic "
             "data), leave-own-out (all patches, own entries removed; biased high), cross-fit (K folds, banks "
             "refitted; biased high, K coreset fits), reference (the reference's unselected patches; biased low: "
             "too many false alarms).", rich_help_panel=EXPERT)] = CALIBRATION.calibration,
    folds: Annotated[int, typer.Option(min=2, help="cross-fit: number of folds K (2 … number of training images).",
                                       rich_help_panel=EXPERT)] = CALIBRATION.folds,
    calibration_images: Annotated[int, typer.Option(
        min=0, help="Score at most this many training images for calibration, a seeded random sample (still "
        "exchangeable with new good parts, so the conformal promise holds for them): the calibration's time grows with "
        "the bank times this number. 0: all.", rich_help_panel=EXPERT)] = CALIBRATION.calibration_images,
    calibration_artifact: Annotated[Optional[str], typer.Option(
        help="Fit on this calibration artifact (path or id) of the same bank instead of computing one.",
        rich_help_panel=IN)] = None,
    method: Annotated[Method, typer.Option(help="How τ is fitted on the calibration scores.",
                                           rich_help_panel=EXPERT)] = THRESHOLD.method,
    target_far: Annotated[float, typer.Option(
        min=0, max=1, help="conformal: the false-alarm rate α to keep on new good parts. τ is the ⌈(n+1)(1−α)⌉-th "
        "smallest of n calibration scores: if new good parts score like the calibration images (same production "
        "conditions), the expected share flagged is at most α. n images support α ≥ 1/(n+1). Nothing is promised "
        "about misses, or after the line drifts.", rich_help_panel=EXPERT)] = THRESHOLD.target_far,
    kappa: Annotated[float, typer.Option(help="k-sigma: τ = mean + κ·std.", rich_help_panel=EXPERT)] = THRESHOLD.kappa,
    q: Annotated[float, typer.Option(min=0, max=100, help="quantile: percentile of the calibration scores.",
                                     rich_help_panel=EXPERT)] = THRESHOLD.q,
    mad_factor: Annotated[float, typer.Option(help="mad: τ = median + factor·MAD.",
                                              rich_help_panel=EXPERT)] = THRESHOLD.mad_factor,
    mad_consistency: Annotated[bool, typer.Option(help="mad: scale MAD by 1.4826 (normal consistency).",
                                                  rich_help_panel=EXPERT)] = THRESHOLD.mad_consistency,
    evt_p: Annotated[float, typer.Option(min=0, max=1, help="evt: quantile of the fitted GEV.",
                                         rich_help_panel=EXPERT)] = THRESHOLD.evt_p,
    min_unselected: Annotated[int, typer.Option(
        min=1, help="reference calibration: leave out training images with fewer unselected patches.",
        rich_help_panel=EXPERT)] = CALIBRATION.min_unselected,
    extra_neighbours: Annotated[int, typer.Option(
        min=0, help="Extra neighbours searched to skip an image's own bank entries.",
        rich_help_panel=RUNTIME)] = CALIBRATION.extra_neighbours,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = CALIBRATION.device, knn_backend: KnnBackendOpt = CALIBRATION.knn_backend,
):
    """Fit a threshold on normal data only (DBT): **calibration** scores, then a **threshold** artifact.

    The calibration artifact is reused by every method, so trying another --method re-scores nothing. The
    default, conformal at 5 %, says how many good parts it will flag; --calibration reference --method k-sigma
    is the reference code's DBT.

    Example: eagle fit-threshold --target-far 0.02

    Example: eagle fit-threshold --calibration reference --method k-sigma --kappa 3
    """
    from eagle_cli.stages.fit_threshold import FitThresholdParams, check_target, run_calibrate, run_fit_threshold

    session = Session(quiet, as_json)
    params = FitThresholdParams(
        dbt=with_preset(context, preset, ThresholdParams(method=method, target_far=target_far, kappa=kappa, q=q,
                                                mad_factor=mad_factor, mad_consistency=mad_consistency, evt_p=evt_p)),
        calibration=with_preset(context, preset, CalibrationParams(
            calibration=calibration, folds=folds, min_unselected=min_unselected,
            calibration_images=calibration_images, extra_neighbours=extra_neighbours, knn_backend=knn_backend,
            device=device)))
    ctx = session.context(artifacts_root, run, force)
    given = artifacts.resolve(calibration_artifact, root=artifacts_root, run=run, category="",
                              kind="calibration") if calibration_artifact else None
    refs = []
    for ref in [given.input("bank")] if given and not bank else inputs(bank, "bank", category, artifacts_root, run):
        check_target(ref, params)  # before a calibration is computed for nothing
        scores = given or run_calibrate(ref, params.calibration, context=ctx)
        refs += [scores, run_fit_threshold(ref, params, context=ctx, calibration=scores)]
    session.report(refs)


@command(app)
def score(
    threshold: Annotated[Optional[str], typer.Option(help="Threshold artifact (path or id); default: the latest.",
                                                     rich_help_panel=IN)] = None,
    features: Annotated[Optional[str], typer.Option(help="Test features artifact (path or id) instead of images.",
                                                    rich_help_panel=IN)] = None,
    data: DataOpt = None, layout: LayoutOpt = "auto", category: CategoryOpt = None, test: TestOpt = None,
    split_csv: SplitCsvOpt = None, mmad_json: MmadJsonOpt = None, mmad_dataset: MmadDatasetOpt = None,
    sigma_px: Annotated[float, typer.Option("--sigma-px", "--sigma", min=0, rich_help_panel=EXPERT,
                                            help="Gaussian smoothing of the anomaly map, px.")] = SCORE.sigma_px,
    artifacts_root: ArtifactsOpt = Path("artifacts"), run: RunOpt = "default", force: ForceOpt = False,
    quiet: QuietOpt = False, as_json: JsonOpt = False,
    device: DeviceOpt = SCORE.device, batch_size: BatchOpt = SCORE.batch_size,
    knn_backend: KnnBackendOpt = SCORE.knn_backend, on_error: OnErrorOpt = "skip",
):
    """Score test images (default: the bank's dataset's test split) into a **scores** artifact.

    Example: eagle score --test photos/line3 --threshold 3f2a
    """
    from eagle_cli.stages.score import ScoreInputs, run_score

    session = Session(quiet, as_json)
    ctx = session.context(artifacts_root, run, force, on_error)
    params = ScoreParams(sigma_px=sigma_px, batch_size=batch_size, knn_backend=knn_backend, device=device)
    given = source(data, layout, None, test, split_csv, mmad_json, mmad_dataset) if (data or test) else None
    refs = []
    for ref in inputs(threshold, "threshold", category, artifacts_root, run):
        name = ref.path.parent.parent.name
        if features:
            test_set = ScoreInputs(features=artifacts.resolve(features, root=artifacts_root, run=run, category=name,
                                                              kind="features"))
        else:
            test_set = ScoreInputs(source=given, category=name) if given else ScoreInputs.of_bank(ref, name)
        refs.append(run_score(ref, test_set, params, context=ctx))
    session.report(refs)
