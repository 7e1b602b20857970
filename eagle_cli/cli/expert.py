"""The expert's commands: extract, fit-bank, update-bank, fit-threshold, score, export."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.markup import escape

from eagle_cli import artifacts
from eagle_cli.cli.app import PresetOpt, Session, app, command, document, err, leave_out, only
from eagle_cli.cli.options import Categories, artifact_option, inputs
from eagle_cli.data.source import DataSource
from eagle_cli.params import (
    IN,
    BankParams,
    CalibrationParams,
    DataParams,
    ExportParams,
    ExtractParams,
    OutputParams,
    ScoreParams,
    Split,
    StoreParams,
    ThresholdParams,
)

TrainData = Annotated[DataParams, leave_out("test")]


@command(app)
def extract(
    data: DataParams, settings: ExtractParams, store: StoreParams, output: OutputParams,
    split: Annotated[Split, typer.Option(help="train (good images) or test.", rich_help_panel=IN)] = "train",
    preset: PresetOpt = None,
):
    """Extract patch features of a split into a **features** artifact.

    Example: eagle extract --data data/synth --category brick --backbone mobilenet_v2 --split test
    """
    from eagle_cli.stages.extract import run_extract

    session = Session("extract", output)
    source = DataSource.of(data).resolved()
    context = session.context(store)
    session.report([run_extract(source, name, split, settings, context=context)
                    for name in data.category or source.categories()])


@command(app, "fit-bank")
def fit_bank(
    data: TrainData, extract: ExtractParams, bank: BankParams, store: StoreParams, output: OutputParams,
    features: Annotated[Optional[str], artifact_option("features", "A train features")] = None,
    preset: PresetOpt = None,
):
    """Select a coreset memory bank from training features into a **bank** artifact (extracting them from --data or
    --good when given).

    Example: eagle fit-bank --data data/synth --backbone mobilenet_v2 --coreset-ratio 0.1
    """
    from eagle_cli.stages.extract import run_extract
    from eagle_cli.stages.fit_bank import run_fit_bank

    session = Session("fit-bank", output)
    context = session.context(store)
    if data.data or data.good:
        source = DataSource.of(data).resolved()
        refs = [run_extract(source, name, "train", extract, context=context)
                for name in data.category or source.categories()]
    else:
        refs = inputs(features, "features", data.category, store, where={"split": "train"})
    session.report([run_fit_bank(ref, bank, context=context) for ref in refs])


@command(app, "update-bank")
def update_bank(
    data: TrainData, runtime: Annotated[ExtractParams, only("batch_size", "device")],
    calibration: CalibrationParams, threshold: ThresholdParams, store: StoreParams, output: OutputParams,
    bank: Annotated[Optional[str], artifact_option("bank", "The bank to grow: a bank")] = None,
):
    """Add good images to a bank without refitting it: a new **bank** (and its **calibration** and **threshold**).

    Only the new images are extracted, with the bank's own settings; the greedy coreset continues from the bank's
    selection over old and new patches (the same bank as a greedy run seeded with the old selection; a bank with a
    --coreset-max grows by at least the new images' share of it), and the threshold is refitted on a calibration
    that includes the new images. The old bank is left as it was and is listed among the new bank's inputs.

    Example: eagle update-bank --bank 3fa9c2e1d0b47a65 --good new_good_parts/
    """
    from eagle_cli.stages.extract import run_extract
    from eagle_cli.stages.fit_threshold import check_target_of_bank, run_calibrate, run_fit_threshold
    from eagle_cli.stages.grow_bank import extraction_of, run_grow_bank

    if not (data.data or data.good):
        raise typer.BadParameter("say which good images to add: --good DIR, or --data ROOT with --category.")
    session = Session("update-bank", output)
    context = session.context(store)
    source = DataSource.of(data).resolved()
    parent = inputs(bank, "bank", () if bank else data.category, store)[0]
    category, extract = extraction_of(parent, runtime)
    new = run_extract(source, data.category[0] if data.category else category, "train", extract, context=context)
    grown = run_grow_bank(parent, new, context=context)
    check_target_of_bank(grown, calibration, threshold)
    scores = run_calibrate(grown, calibration, context=context)
    session.report([grown, scores, run_fit_threshold(scores, threshold, context=context)])


@command(app, "fit-threshold")
def fit_threshold(
    data: Categories, calibration: CalibrationParams, threshold: ThresholdParams,
    store: Annotated[StoreParams, leave_out("on_error")], output: OutputParams,
    bank: Annotated[Optional[str], artifact_option("bank")] = None,
    calibration_artifact: Annotated[Optional[str], typer.Option(
        help="Fit on this calibration artifact (path or id) instead of computing one for the bank.",
        rich_help_panel=IN)] = None,
    preset: PresetOpt = None,
):
    """Fit a threshold on normal data only (DBT): **calibration** scores, then a **threshold** artifact.

    The calibration artifact is reused by every method, so trying another --method re-scores nothing. The
    default, conformal at 5 %, says how many good parts it will flag; --calibration reference --method k-sigma
    is the reference code's DBT.

    Example: eagle fit-threshold --target-far 0.02

    Example: eagle fit-threshold --calibration reference --method k-sigma --kappa 3
    """
    from eagle_cli.stages.fit_threshold import check_target_of_bank, run_calibrate, run_fit_threshold

    session = Session("fit-threshold", output)
    context = session.context(store)
    if calibration_artifact:
        given = artifacts.resolve(calibration_artifact, root=store.artifacts, run=store.run, category="",
                                  kind="calibration")
        session.report([given, run_fit_threshold(given, threshold, context=context)])
        return
    refs = []
    for ref in inputs(bank, "bank", data.category, store):
        check_target_of_bank(ref, calibration, threshold)  # before a calibration is computed for nothing
        scores = run_calibrate(ref, calibration, context=context)
        refs += [scores, run_fit_threshold(scores, threshold, context=context)]
    session.report(refs)


@command(app)
def score(
    data: Annotated[DataParams, leave_out("good")], settings: ScoreParams, store: StoreParams, output: OutputParams,
    threshold: Annotated[Optional[str], artifact_option("threshold")] = None,
    features: Annotated[Optional[str], typer.Option(help="Test features artifact (path or id) instead of images.",
                                                    rich_help_panel=IN)] = None,
):
    """Score test images (default: the bank's dataset's test split) into a **scores** artifact.

    Example: eagle score --test photos/line3 --threshold 3f2a
    """
    from eagle_cli.stages.score import ScoreInputs, run_score

    session = Session("score", output)
    context = session.context(store)
    given = DataSource.of(data).resolved() if (data.data or data.test) else None
    refs = []
    for ref in inputs(threshold, "threshold", data.category, store):
        if features:
            test_set = ScoreInputs(features=artifacts.resolve(features, root=store.artifacts, run=store.run,
                                                              category=ref.category, kind="features"))
        else:
            test_set = ScoreInputs(source=given, category=ref.category) if given else ScoreInputs.of_bank(ref)
        refs.append(run_score(ref, test_set, settings, context=context))
    session.report(refs)


@command(app)
def export(
    data: Categories, settings: ExportParams, score: Annotated[ScoreParams, only("sigma_px", "batch_size")],
    store: Annotated[StoreParams, only("artifacts", "run")], output: OutputParams,
    threshold: Annotated[Optional[str], artifact_option("threshold", "The threshold to export: a threshold")] = None,
):
    """Export a fitted expert for a line PC: the feature network as an ONNX (or OpenVINO) graph, the bank, the
    image rule, τ and S_max, each file with a check value. Score with it without torch: eagle score --runtime onnx
    --export DIR, eagle serve --runtime onnx, or ExportedExpert.load(DIR) in Python; the runtime extra (pip install
    'eagle-cli[runtime]') is all a line PC installs. The export is checked against torch before it is written.

    Example: eagle export --threshold 3f2a --out exports, then eagle score --runtime onnx --export exports/bottle
    """
    from eagle_cli.export.writer import export_threshold

    session = Session("export", output)
    refs = inputs(threshold, "threshold", data.category, store)
    written = []
    with session.task(f"export {settings.format}", len(refs)) as advance:
        for ref in refs:
            written.append(export_threshold(ref, settings, score))
            advance()
    for folder, ref in zip(written, refs, strict=True):
        if not output.json:
            err.print(f"[green]wrote[/] {settings.format} export [bold]{escape(str(folder))}[/] (threshold {ref.id})")
    if output.json:
        print(json.dumps(document("export", written=[str(folder) for folder in written]), indent=2))
