"""Options several commands share, and the helpers that turn them into sources and inputs.

Defaults come from the settings classes (``params.py``), so a default is written once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.data.source import FOLDER_CATEGORY, DataSource
from eagle_cli.errors import ParameterError
from eagle_cli.params import (
    EXPERT_PRESETS,
    Backbone,
    BankParams,
    CalibrationParams,
    ExtractParams,
    FeatureDtype,
    KnnBackend,
    Layout,
    OnError,
    PromptParams,
    ReasonParams,
    ReportParams,
    ScoreParams,
    ThresholdParams,
    parse_names,
    parse_weights,
)

IN, EXPERT, OUTPUT, RUNTIME = "Inputs", "Expert", "Output", "Runtime"
PROMPT, MODEL, CAAS, SERVER = "Prompt", "Model", "CAAS", "Server"

#: The defaults of every stage setting.
EXTRACT, BANK, CALIBRATION, THRESHOLD = ExtractParams(), BankParams(), CalibrationParams(), ThresholdParams()
SCORE, PROMPTING, REASON, REPORT = ScoreParams(), PromptParams(), ReasonParams(), ReportParams()

DataOpt = Annotated[Optional[Path], typer.Option("--data", help="Dataset root (MVTec-AD, VisA or MMAD layout).",
                                                 rich_help_panel=IN)]
LayoutOpt = Annotated[Layout, typer.Option(help="Dataset layout; auto detects it.", rich_help_panel=IN)]
CategoryOpt = Annotated[Optional[str], typer.Option(
    "--category", help="Comma-separated categories; default: every category found.", rich_help_panel=IN)]
GoodOpt = Annotated[Optional[Path], typer.Option(help="Folder of good training images (instead of --data).",
                                                 rich_help_panel=IN)]
TestOpt = Annotated[Optional[Path], typer.Option(
    "--test", help="Folder of test images; subfolders name their labels (good/ok/normal = good).", rich_help_panel=IN)]
MmadJsonOpt = Annotated[Optional[Path], typer.Option(help="MMAD question file (default: ROOT/mmad.json).",
                                                     rich_help_panel=IN)]
MmadDatasetOpt = Annotated[Optional[str], typer.Option(help="MMAD dataset to use, e.g. DS-MVTec or VisA.",
                                                       rich_help_panel=IN)]
SplitCsvOpt = Annotated[Optional[Path], typer.Option(help="VisA split CSV (default: ROOT/split_csv/1cls.csv).",
                                                     rich_help_panel=IN)]
ArtifactsOpt = Annotated[Path, typer.Option(
    "--artifacts", envvar="EAGLE_ARTIFACTS", help="Where artifacts live.", rich_help_panel=OUTPUT)]
RunOpt = Annotated[str, typer.Option(help="Run name: artifacts go to ARTIFACTS/RUN/CATEGORY/KIND/ID.",
                                     rich_help_panel=OUTPUT)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the work even if an identical artifact exists.",
                                        rich_help_panel=OUTPUT)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.", rich_help_panel=OUTPUT)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.",
                                       rich_help_panel=OUTPUT)]
OnErrorOpt = Annotated[OnError, typer.Option(help="A bad image: skip (list it in errors.jsonl) or fail.",
                                             rich_help_panel=RUNTIME)]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUNTIME)]
BatchOpt = Annotated[int, typer.Option(min=1, help="Images per backbone forward.", rich_help_panel=RUNTIME)]
KnnBackendOpt = Annotated[KnnBackend, typer.Option(
    help="kNN search: auto (torch on GPU, faiss on CPU), faiss or torch.", rich_help_panel=RUNTIME)]
BackboneOpt = Annotated[Backbone, typer.Option(help="Backbone network.", rich_help_panel=EXPERT)]
WeightsOpt = Annotated[str, typer.Option(
    help="imagenet (torchvision cache, TORCH_HOME), none (random; a warning), or a .pth state-dict path.",
    rich_help_panel=EXPERT)]
ResizeOpt = Annotated[int, typer.Option(min=1, help="Shorter side after resizing, px.", rich_help_panel=EXPERT)]
CropOpt = Annotated[int, typer.Option(
    min=0, help="Centre crop, px. 0: no crop — the whole image is resized to --resize × --resize (aspect ratio not "
    "kept), so nothing near the border is cut away.", rich_help_panel=EXPERT)]
TileOpt = Annotated[int, typer.Option(
    min=0, help="Cut the frame (--crop, or with --crop 0 the whole image at --resize) into TILE-px squares that each "
    "go through the backbone: a large image is seen at its own resolution, so small defects keep their pixels. "
    "Maps are stitched (overlaps averaged); the image score is taken over all tiles' patches (--image-top). "
    "0: no tiles.",
    rich_help_panel=EXPERT)]
OverlapOpt = Annotated[float, typer.Option(
    min=0, help="Share of a tile its neighbour covers again (with --tile), in [0, 1): a defect on a seam is then "
    "seen whole by one tile.", rich_help_panel=EXPERT)]
PretrainDimOpt = Annotated[int, typer.Option(
    min=0, help="Each layer's 3x3 neighbourhoods are pooled to this many values; 0 keeps the layer's own width "
                "(the mean of each channel).", rich_help_panel=EXPERT)]
TargetDimOpt = Annotated[int, typer.Option(
    min=0, help="Patch feature size after pooling the layers together; 0 concatenates them as they are.",
    rich_help_panel=EXPERT)]
PresetOpt = Annotated[Optional[str], typer.Option(
    help="reference: the reference code's expert (layers pooled to 1024 values, an image scored by its highest "
         "patch, k-sigma on its calibration). "
         "Options given on the command line still win.", rich_help_panel=EXPERT)]


def with_preset(context: typer.Context, preset: str | None, settings):
    """``settings`` (a params dataclass) with ``preset``'s values for the options left at their defaults."""
    if preset is None:
        return settings
    if preset not in EXPERT_PRESETS:
        raise ParameterError(f"--preset must be one of {', '.join(EXPERT_PRESETS)}, got {preset!r}.")
    names = {f.name for f in dataclasses.fields(settings)}
    chosen = {name: value for name, value in EXPERT_PRESETS[preset].items()
              # By name: typer carries its own copy of click, whose enum is not click's.
              if name in names and getattr(context.get_parameter_source(name), "name", None) == "DEFAULT"}
    return dataclasses.replace(settings, **chosen)


LAYER_WEIGHTS = ",".join(f"{weight:g}" for weight in EXTRACT.layer_weights)
LayerWeightsOpt = Annotated[str, typer.Option(
    help="One weight per backbone layer (e.g. 3,1), multiplying its values before they are stacked: a layer's "
         "share of a distance grows with its weight squared. Empty: widest layer / each layer's width "
         "(1 for layers pooled to one width).", rich_help_panel=EXPERT)]
LayersOpt = Annotated[str, typer.Option(
    help="The backbone blocks whose outputs describe a patch, shallow first (the first sets the patch grid), e.g. "
         "features.6,features.10 on mobilenet_v2 or layer1,layer2 on a ResNet. Empty: layer2,layer3 on ResNets, "
         "features.6,features.13 on mobilenet_v2. A wrong name lists the blocks there are.", rich_help_panel=EXPERT)]
FeatureDtypeOpt = Annotated[FeatureDtype, typer.Option(
    "--feature-dtype", "--dtype", help="Stored feature precision (--dtype: its earlier name).", rich_help_panel=OUTPUT)]


def source(data, layout, good, test, split_csv, mmad_json=None, mmad_dataset=None) -> DataSource:
    return DataSource(layout=layout, root=data, good=good, test=test, split_csv=split_csv, mmad_json=mmad_json,
                      mmad_dataset=mmad_dataset).resolved()


def categories(category: Optional[str], fallback: list[str]) -> list[str]:
    return [c.strip() for c in category.split(",") if c.strip()] if category else fallback


def inputs(spec: Optional[str], kind: str, category: Optional[str], root: Path, run: str,
           where: Optional[dict] = None) -> list[ArtifactRef]:
    """The artifact given by path or id, or the latest of ``kind`` for each category (default: all in the run)."""
    if spec:
        return [artifacts.resolve(spec, root=root, run=run, category="", kind=kind)]
    names = categories(category, artifacts.categories_with(root, run, kind)) or [FOLDER_CATEGORY]
    return [artifacts.latest(root, run, name, kind, where=where) for name in names]


def extract_params(backbone, weights, resize, crop, tile, overlap, pretrain_dim, target_dim, layer_weights, layers,
                   feature_dtype, batch_size, device) -> ExtractParams:
    return ExtractParams(backbone=backbone, weights=weights, resize=resize, crop=crop, tile=tile, overlap=overlap,
                         pretrain_dim=pretrain_dim, target_dim=target_dim, layer_weights=parse_weights(layer_weights),
                         layers=parse_names(layers), feature_dtype=feature_dtype, batch_size=batch_size,
                         device=device)
