"""Every setting of every stage, declared once (no torch here): name, default, bounds, choices, help, panel.

The command-line options, the ``eagle run`` config keys, docs/cli.md, the checks and what enters
an artifact id are all generated from these declarations (``settings.py``). A field's name is its
config key and, with dashes, its option (``coreset_ratio``, ``--coreset-ratio``); a group nested
in another names its fields with its ``PREFIX`` (``box_level``, ``caas_alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from eagle_cli.devices import device_rule
from eagle_cli.errors import SettingsError
from eagle_cli.settings import check, nested, setting

Backbone = Literal["wide_resnet50_2", "resnet18", "mobilenet_v2"]
FeatureDtype = Literal["float32", "float16"]
CoresetInit = Literal["center_farthest", "pca_extremes", "random"]
CoresetUpdates = Literal["auto", "exact", "lists"]
ImageScore = Literal["auto", "top-mean", "peak"]
KnnBackend = Literal["auto", "faiss", "torch"]
Estimator = Literal["refill", "reference"]
Method = Literal["conformal", "k-sigma", "quantile", "mad", "evt"]
Visual = Literal["boxes", "heatmap", "both", "none"]
TemplateSource = Literal["seeded", "similar", "random"]
ModelBackend = Literal["hf", "openai"]
ModelDtype = Literal["auto", "bfloat16", "float16", "float32"]
CaasMode = Literal["renorm", "scale"]
CaasImages = Literal["query", "all"]
OnError = Literal["skip", "fail"]
Executor = Literal["local", "ray"]
Layout = Literal["auto", "mvtec", "visa", "mmad", "folder"]
Split = Literal["train", "test"]
Runtime = Literal["torch", "onnx", "openvino"]
ExportFormat = Literal["onnx", "openvino"]
AuditImages = Literal["none", "anomalous", "all"]

BACKBONE_NAMES: tuple[str, ...] = get_args(Backbone)
IN, EXPERT, OUTPUT, RUNTIME = "Inputs", "Expert", "Output", "Runtime"
PROMPT, MODEL, CAAS, SERVER = "Prompt", "Model", "CAAS", "Server"

#: The bank's most entries for tiled features (``--coreset-max auto``).
TILED_BANK_MAX = 8192

#: Short names for the models people ask for most; anything else is a hub id or a local folder.
PRESETS = {
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2.5-vl-32b": "Qwen/Qwen2.5-VL-32B-Instruct",
    "llava-onevision-7b": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "internvl3-8b": "OpenGVLab/InternVL3-8B-hf",
}


def parse_names(spec: str | list | tuple) -> tuple[str, ...]:
    """'features.6,features.13' or a list of names → names; '' → none."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def parse_numbers(spec: str | list | tuple) -> tuple[float, ...]:
    """'3,1' or a list of numbers → numbers; '' → none."""
    items = spec if isinstance(spec, (list, tuple)) else [part for part in str(spec).split(",") if part.strip()]
    try:
        return tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise SettingsError.of("layer_weights", f"takes one number per layer, like 3,1; got {spec!r}") from None


def parse_layers(spec: str | list | tuple) -> tuple[float, ...]:
    """'9-14', '9,10,12' or a list of ints → sorted layer indices; '0.32-0.54' → a band of the depth."""
    if isinstance(spec, (list, tuple)):
        spec = ",".join(str(item) for item in spec) if not any(isinstance(i, float) for i in spec) \
            else "-".join(str(item) for item in spec)
    text = str(spec).strip()
    if "." in text:
        lo, _, hi = text.partition("-")
        try:
            band = (float(lo), float(hi))
        except ValueError:
            band = (-1.0, -1.0)
        if not 0 <= band[0] < band[1] <= 1:
            raise SettingsError.of("caas_layers", f"as a band of the depth takes two fractions lo-hi with "
                                                  f"0 <= lo < hi <= 1 (e.g. 0.32-0.54), got {spec!r}")
        return band
    layers: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SettingsError.of("caas_layers", f"takes ranges like 9-14, lists like 9,10,12 or a band of the depth "
                                              f"like 0.32-0.54, got {spec!r}") from None
    return tuple(sorted(layers))


def parse_count(value: int | str) -> int | str:
    """``auto`` or a whole number, from text or YAML (anything else is left for the check to name)."""
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def parse_ratio(value: float | str) -> float | str:
    """``auto`` or a share, from text or YAML (anything else is left for the check to name)."""
    try:
        return float(value)
    except ValueError:
        return str(value).strip()


def names_text(names: tuple) -> str:
    return ",".join(f"{name:g}" if isinstance(name, float) else str(name) for name in names)


def layers_text(layers: tuple[float, ...]) -> str:
    """The inverse of :func:`parse_layers`: a band as ``lo-hi``; runs of consecutive layers as ``a-b``."""
    if any(isinstance(layer, float) for layer in layers):
        return "-".join(f"{layer:g}" for layer in layers)
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def _not_empty(text: str) -> str | None:
    return None if text.strip() else "must not be empty"


def _distinct(names: tuple) -> str | None:
    return None if len(set(names)) == len(names) else "must name each block once"


# Settings several groups share: one declaration each.
def _device(help: str = "auto (a GPU when there is one), cpu, cuda or cuda:N.") -> str:
    return setting("auto", help, panel=RUNTIME, runtime=True, rule=device_rule)


def _batch_size(help: str = "Images per backbone forward.") -> int:
    return setting(8, help, panel=RUNTIME, low=1, runtime=True)


def _knn_backend() -> str:
    return setting("auto", "kNN search: auto (torch on a GPU, faiss on the CPU), faiss or torch; the same "
                   "neighbours either way.", panel=RUNTIME, runtime=True)


def _seed(help: str) -> int:
    return setting(0, help, panel=EXPERT)


def _categories() -> tuple[str, ...]:
    return setting((), "Comma-separated categories; default: every category found.", panel=IN, parse=parse_names,
                   text=names_text)


@dataclass(frozen=True)
class DataParams:
    """Where images come from: a dataset root with its layout, or plain folders."""

    data: Path | None = setting(None, "Dataset root (MVTec-AD, VisA or MMAD layout).", panel=IN)
    layout: Layout = setting("auto", "Dataset layout; auto detects it.", panel=IN)
    category: tuple[str, ...] = _categories()
    good: Path | None = setting(None, "Folder of good training images (instead of --data).", panel=IN)
    test: Path | None = setting(None, "Folder of test images; subfolders name their labels (good/ok/normal = good).",
                                panel=IN)
    split_csv: Path | None = setting(None, "VisA split CSV (default: ROOT/split_csv/1cls.csv).", panel=IN)
    mmad_json: Path | None = setting(None, "MMAD question file (default: ROOT/mmad.json).", panel=IN)
    mmad_dataset: str | None = setting(None, "MMAD dataset to use, e.g. DS-MVTec or VisA.", panel=IN)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class StoreParams:
    """Where artifacts are published and how a stage treats existing work and bad images."""

    artifacts: Path = setting(Path("artifacts"), "Where artifacts live.", panel=OUTPUT, envvar="EAGLE_ARTIFACTS")
    run: str = setting("default", "Run name: artifacts go to ARTIFACTS/RUN/CATEGORY/KIND/ID.", panel=OUTPUT,
                       rule=_not_empty)
    force: bool = setting(False, "Redo the work even if an identical artifact exists.", panel=OUTPUT)
    on_error: OnError = setting("skip", "A bad image: skip it (listed in errors.jsonl) or fail.", panel=RUNTIME)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class OutputParams:
    """How a command talks: progress and tables, or one JSON document."""

    quiet: bool = setting(False, "No progress bars or tables.", panel=OUTPUT, short="-q")
    json: bool = setting(False, "Print one JSON document on stdout: what was written, reused or failed.",
                         panel=OUTPUT)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class ExtractParams:
    """Backbone, preprocessing and feature layout: WideResNet-50-2, 256 → 224 as the reference; each layer's
    channels at their own width, weighted (``EXPERT_PRESETS["reference"]`` pools them to 1024 as it does)."""

    backbone: Backbone = setting("wide_resnet50_2", "Backbone network (eagle backbones ls).", panel=EXPERT)
    weights: str = setting("imagenet", "imagenet (torchvision cache, TORCH_HOME), none (random; a warning), or a "
                           ".pth state-dict path.", panel=EXPERT, rule=_not_empty)
    resize: int = setting(256, "Shorter side after resizing, px (with --crop 0: both sides).", panel=EXPERT, low=1,
                          high=16384)
    crop: int = setting(224, "Centre crop, px. 0: no crop — the whole image is resized to --resize × --resize "
                        "(aspect ratio not kept), so nothing near the border is cut away.", panel=EXPERT, low=0)
    tile: int | Literal["auto"] = setting(
        "auto", "Cut the frame (--crop, or with --crop 0 the whole image at --resize) into TILE-px squares that each "
        "go through the backbone: a large image is seen at its own resolution, so small defects keep their pixels. "
        "Maps are stitched (overlaps averaged) and the image is scored as --image-score says. 0: no tiles. auto: "
        "images at least twice the backbone's input are seen whole at their own resolution (up to 2048 px a side) in "
        "tiles of that input overlapping by 10 %, smaller ones as --resize and --crop say.", panel=EXPERT, low=0,
        parse=parse_count, text=str)
    overlap: float = setting(0.25, "Share of a tile its neighbour covers again: a defect on a seam is then seen "
                             "whole by one tile.", panel=EXPERT, low=0, high=1, high_open=True,
                             only=lambda s: s.tile not in (0, "auto"), when="with --tile N")
    # Native widths, weighted widest / width (benchmarks/ablation.py, MobileNetV2 on realistic data: image
    # AUROC 0.880 → 0.909, pixel AUROC 0.967 → 0.970); the reference's 1024/1024 is the `reference` preset.
    pretrain_dim: int = setting(0, "Each layer's 3x3 neighbourhoods are pooled to this many values; 0 keeps the "
                                "layer's own width (the mean of each channel).", panel=EXPERT, low=0, high=16384)
    target_dim: int = setting(0, "Patch feature size after pooling the layers together; 0 concatenates them as they "
                              "are.", panel=EXPERT, low=0, high=16384)
    layer_weights: tuple[float, ...] = setting(
        (), "One weight per backbone layer (e.g. 3,1), multiplying its values before they are stacked: a layer's "
        "share of a distance grows with its weight squared. Empty: widest layer / each layer's width (1 for layers "
        "pooled to one width).", panel=EXPERT, low=0, low_open=True, parse=parse_numbers, text=names_text)
    layers: tuple[str, ...] = setting(
        (), "The backbone blocks whose outputs describe a patch, shallow first (the first sets the patch grid), e.g. "
        "features.6,features.10 on mobilenet_v2 or layer1,layer2 on a ResNet. Empty: layer2,layer3 on ResNets, "
        "features.6,features.13 on mobilenet_v2. A wrong name lists the blocks there are.", panel=EXPERT,
        parse=parse_names, text=names_text, rule=_distinct)
    feature_dtype: FeatureDtype = setting("float32", "Stored feature precision (float16 halves the disk).",
                                          panel=OUTPUT)
    batch_size: int = _batch_size()
    device: str = _device()

    def __post_init__(self):
        check(self)
        if self.crop > self.resize:
            raise SettingsError.of("crop", f"must be at most --resize ({self.resize}); 0 is no crop (the whole "
                                           f"image), got {self.crop}")
        frame = self.crop or self.resize
        if isinstance(self.tile, int) and self.tile > frame:
            raise SettingsError.of("tile", f"is larger than the {frame} px frame the images are resized"
                                           f"{' and cropped' if self.crop else ''} to; lower --tile or raise --resize"
                                           f"{' (with --crop 0 for the whole image)' if self.crop else ''}, got "
                                           f"{self.tile}")


@dataclass(frozen=True)
class BankParams:
    """Coreset and scoring settings; except ``image_top`` (the reference's is 1: the highest patch), the
    defaults are the reference's (10 %, 128-d, 10 starts, k = 1)."""

    # Tiled: 19,600 patches a 1024 px image; 10 % of them makes every search ten times slower than 1 %, which
    # on the high-resolution set keeps the image AUROC above 0.93 (BENCHMARKS.md, "Tiny defects on large parts").
    coreset_ratio: float | Literal["auto"] = setting(
        "auto", "Share of patches kept in the bank. auto: 10 % (the reference's), 1 % of tiled features.",
        panel=EXPERT, low=0, high=1, low_open=True, parse=parse_ratio, text=str)
    # Every search costs bank entries × patches searched, and a tiled bank grows with the patches: at 1 % of 20
    # images of 2048 px it holds 19,000 entries and calibrating costs 3× extracting. Past a few thousand entries
    # the high-resolution set finds no more defects (BENCHMARKS.md, "A bank of bounded size").
    coreset_max: int | Literal["auto"] = setting(
        "auto", "Most entries the bank keeps, whatever --coreset-ratio gives. auto: "
        f"{TILED_BANK_MAX} for tiled features (a large image's patches are many; a larger bank makes every search "
        "slower and found no more defects), no limit otherwise. 0: no limit.", panel=EXPERT, low=0, parse=parse_count,
        text=str)
    proj_dim: int = setting(128, "Random-projection size for coreset distances (it only needs to keep distances; "
                            "128 does).", panel=EXPERT, low=1, high=4096)
    n_starts: int = setting(10, "Coreset starting points.", panel=EXPERT, low=1)
    init: CoresetInit = setting("center_farthest", "How the coreset's starting points are chosen.", panel=EXPERT)
    seed: int = _seed("Global seed; each category derives its own from it.")
    knn_k: int = setting(1, "Neighbours averaged per patch score (k).", panel=EXPERT, low=1)
    # The mean of the 8 highest patch scores (1 % of a 28 × 28 grid): benchmarks/ablation.py on realistic data,
    # image AUROC 0.903 → 0.907 over 3 seeds and the weakest category (grass) 0.874 → 0.895. A count of
    # patches, not a share, so a small defect in a large or tiled frame is not averaged away.
    image_score: ImageScore = setting(
        "auto", "How an image's score is read from its patch scores. top-mean: the mean of the --image-top highest. "
        "peak: the peak of the anomaly map, with each patch score standardised against the good images' scores at "
        "the same cell of their tiles — a defect of a few pixels in a frame of thousands of patches keeps its score "
        "(needs --calibration refill). auto: peak for tiled features, top-mean otherwise.", panel=EXPERT)
    image_top: int = setting(8, "An image scores the mean of its this many highest patch scores (1: the highest "
                             "alone, as the reference; 8 is 1 % of a 28 × 28 grid).", panel=EXPERT, low=1, high=4096,
                             only=lambda s: s.image_score != "peak", when="top-mean")
    peak_sigma_px: float = setting(4.0, "Gaussian smoothing, px, of the map whose peak is the image score.",
                                   panel=EXPERT, low=0, only=lambda s: s.image_score != "top-mean", when="peak")
    coreset_updates: CoresetUpdates = setting(
        "auto", "How the greedy coreset lowers distances after choosing a member. exact: every patch, as "
        "published. lists: only the patches in the member's 8 nearest k-means lists of about 3,000 patches — 2.5× "
        "faster at 1,000 images, with the exact greedy's covering radius and image AUROC on our data "
        "(BENCHMARKS.md). auto: lists for tiled features (their patches are many), exact otherwise.", panel=EXPERT)

    def __post_init__(self):
        check(self)

    def resolved(self, *, tiled: bool) -> BankParams:
        """These settings with every ``auto`` decided for features that are ``tiled`` or not."""
        return replace(self, coreset_ratio=(0.01 if tiled else 0.1) if self.coreset_ratio == "auto" else
                       self.coreset_ratio,
                       coreset_max=(TILED_BANK_MAX if tiled else 0) if self.coreset_max == "auto" else self.coreset_max,
                       coreset_updates=("lists" if tiled else "exact") if self.coreset_updates == "auto" else
                       self.coreset_updates,
                       image_score=("peak" if tiled else "top-mean") if self.image_score == "auto" else
                       self.image_score)


@dataclass(frozen=True)
class CalibrationParams:
    """How training images are scored as if the bank had not seen them (``expert/calibration.py``)."""

    calibration: Estimator = setting(
        "refill", "How each training image is scored as if the bank had not seen it: refill (the bank without the "
        "image's entries, refilled as a coreset of the other images would be; unbiased within noise on realistic "
        "data) or reference (the reference's unselected patches; biased low: too many false alarms).", panel=EXPERT)
    min_unselected: int = setting(32, "Leave out training images with fewer unselected patches.", panel=EXPERT,
                                  low=1, only=lambda s: s.calibration == "reference", when="reference")
    # The calibration records how many images it scored; the cap itself changes nothing when it samples nothing.
    calibration_images: int = setting(
        200, "Score at most this many training images for calibration, a seeded random sample (still exchangeable "
        "with new good parts, so the conformal promise holds for them): the calibration's time grows with the bank "
        "times this number. 0: all.", panel=EXPERT, low=0, runtime=True)
    extra_neighbours: int = setting(32, "Entries near an orphan's covering entry tried as its bound before it is "
                                    "searched again (time only: the scores do not change).",
                                    panel=RUNTIME, low=0, runtime=True, only=lambda s: s.calibration == "refill",
                                    when="refill")
    norm_tile_step: int = setting(
        8, "Under the peak image rule (tiled features), measure the cell norm on every n-th tile of each calibration "
        "image; only those patches, and the ones that can still reach an image's peak, are searched exactly (the "
        "others are bounded by the bank entries nearest the entry that covers them): the calibration takes under "
        "half as long at 2048 px, image AUROC unchanged on the high-resolution set. 1: every patch searched "
        "exactly.",
        panel=EXPERT, low=1, only=lambda s: s.calibration == "refill", when="refill")
    knn_backend: KnnBackend = _knn_backend()
    device: str = _device()

    def __post_init__(self):
        check(self)

    def sampled(self, n_images: int) -> int:
        """How many of ``n_images`` training images are scored: all, or ``calibration_images`` when fewer (> 0)."""
        return min(n_images, self.calibration_images) if self.calibration_images else n_images


def _method(name: str):
    return lambda settings: settings.method == name


@dataclass(frozen=True)
class ThresholdParams:
    """The DBT method and its parameters; each parameter applies to one method (``threshold.py``)."""

    method: Method = setting("conformal", "How τ is fitted on the calibration scores.", panel=EXPERT)
    target_far: float = setting(
        0.05, "The false-alarm rate α to keep on new good parts. τ is the ⌈(n+1)(1−α)⌉-th smallest of n calibration "
        "scores: if new good parts score like the calibration images (same production conditions), the expected "
        "share flagged is at most α. n images support α ≥ 1/(n+1). Nothing is promised about misses, or after the "
        "line drifts.", panel=EXPERT, low=0, high=1, low_open=True, high_open=True, only=_method("conformal"),
        when="conformal")
    kappa: float = setting(3.0, "τ = mean + κ·std.", panel=EXPERT, low=0, only=_method("k-sigma"), when="k-sigma")
    q: float = setting(99.0, "τ = this percentile of the calibration scores.", panel=EXPERT, low=0, high=100,
                       low_open=True, only=_method("quantile"), when="quantile")
    mad_factor: float = setting(3.0, "τ = median + factor·MAD.", panel=EXPERT, low=0, only=_method("mad"), when="mad")
    mad_consistency: bool = setting(False, "Scale MAD by 1.4826 (normal consistency).", panel=EXPERT,
                                    only=_method("mad"), when="mad")
    evt_p: float = setting(0.99, "τ = this quantile of a GEV fitted to the calibration scores.", panel=EXPERT, low=0,
                           high=1, low_open=True, high_open=True, only=_method("evt"), when="evt")

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class ScoreParams:
    sigma_px: float = setting(4.0, "Gaussian smoothing of the anomaly map, px. The peak image rule scores with the "
                              "bank's --peak-sigma-px: at the same value the map's peak is the image score.",
                              panel=EXPERT, low=0)
    batch_size: int = _batch_size()
    knn_backend: KnnBackend = _knn_backend()
    device: str = _device()
    runtime: Runtime = setting("torch", "torch: the expert as fitted. onnx or openvino: an `eagle export` folder "
                               "(--export), scored without torch; the same scores to 1e-4.", panel=RUNTIME,
                               runtime=True)
    export: Path | None = setting(None, "The folder `eagle export` wrote (or one holding a folder per category), "
                                  "for --runtime onnx or openvino.", panel=RUNTIME, runtime=True)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class ExportParams:
    """An exported expert for a line PC: what format, and where (`eagle export`; an export section in a config)."""

    format: ExportFormat = setting("onnx", "onnx: an ONNX graph, scored with onnxruntime. openvino: OpenVINO's "
                                   "own files, scored with openvino.", panel=OUTPUT)
    out: Path = setting(Path("exports"), "Folder that gets one export folder per category.", panel=OUTPUT)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class BoxParams:
    """Boxes around map regions above ``level`` × τ (reference: 2/3 of the map's own max, 0.1 %, 0.3, 20 px, 3)."""

    PREFIX = "box_"

    level: float = setting(2 / 3, "Boxes enclose map regions above this fraction of τ.", panel=PROMPT, low=0)
    min_area: float = setting(0.001, "Smallest region boxed, as a share of the image.", panel=PROMPT, low=0, high=1)
    merge_iou: float = setting(0.3, "Merge boxes overlapping more than this IoU.", panel=PROMPT, low=0, high=1)
    merge_centre_px: float = setting(20.0, "Merge boxes whose centres are closer, px.", panel=PROMPT, low=0)
    top_k: int = setting(3, "Most boxes per image.", panel=PROMPT, low=1)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class PromptParams:
    """Which parts the prompt has; defaults follow the reference (boxes, textual prior, 0 shots)."""

    visual: Visual = setting("boxes", "Visual prompt shown with an anomalous verdict.", panel=PROMPT)
    instruction: bool = setting(True, "Open with the inspector instruction and the answer format.", panel=PROMPT)
    verdict: bool = setting(True, "State the expert's verdict in the text (the textual prior).", panel=PROMPT)
    shots: int = setting(0, "Normal training images shown as references (MMAD uses 1).", panel=PROMPT, low=0)
    template_source: TemplateSource = setting(
        "seeded", "Reference images: seeded (from the training set), or MMAD's similar or random template lists.",
        panel=PROMPT)
    seed: int = setting(0, "Seed for choosing the reference images.", panel=PROMPT)
    # The headline (MMAD's balanced accuracy) needs only the detection question; "all" asks MMAD's
    # other four types too, about five times the calls.
    task: str = setting("Anomaly Detection", 'MMAD question type to ask: "Anomaly Detection" (the headline\'s only '
                        'question), another type, or all (about 5x the model calls).', panel=PROMPT, rule=_not_empty)
    # Files enter artifact ids by their content (the prompt stage hashes them), not by their path.
    domain_knowledge: Path | None = setting(None, "MMAD-format domain_knowledge.json to include.", panel=PROMPT,
                                            runtime=True)
    template: Path | None = setting(None, "YAML file with your own wording (copy "
                                    "eagle_cli/prompts/templates/default.yaml).", panel=PROMPT, runtime=True)
    box: BoxParams = nested(BoxParams)

    def __post_init__(self):
        check(self)


#: The reference's CAAS layers 9–14 of Qwen2.5-VL-7B's 28, as a band of the depth: the same layers
#: there, and the same middle stretch of a 36-layer 3B (12–18) or a 64-layer 32B (20–34).
CAAS_DEPTH = (0.32, 0.54)


@dataclass(frozen=True)
class CaasSettings:
    """α, the decoder layers it acts in, the mode, and which images' tokens count.

    ``layers`` is either 0-based layer indices (integers) or a band of the depth (two fractions:
    the layers whose middle lies in [lo, hi) of the model's depth), resolved per model.
    """

    PREFIX = "caas_"

    alpha: float = setting(0.6, "Attention weights on the image's visual tokens × (1 + α).", panel=CAAS, low=0)
    layers: tuple[float, ...] = setting(
        CAAS_DEPTH, "0-based decoder layers (9-14 or 9,11), or a band of the model's depth (0.32-0.54: the "
        "reference's 9-14 on Qwen2.5-VL-7B, the same middle stretch on any size).", panel=CAAS, parse=parse_layers,
        text=layers_text)
    mode: CaasMode = setting("renorm", "renorm (SDPA-compatible) or scale (eager, no renormalising).", panel=CAAS)
    images: CaasImages = setting("query", "Strengthen the query image only, or all images.", panel=CAAS)

    def __post_init__(self):
        check(self)

    @property
    def is_band(self) -> bool:
        return any(isinstance(layer, float) for layer in self.layers)

    def indices(self, n_layers: int) -> tuple[int, ...]:
        """The 0-based layers CAAS acts in for a model of ``n_layers`` decoder layers; refused if none or outside."""
        if self.is_band:
            lo, hi = self.layers
            chosen = tuple(i for i in range(n_layers) if lo <= (i + 0.5) / n_layers < hi)
            if not chosen:
                raise SettingsError.of("caas_layers", f"{lo}-{hi} (a band of the depth) holds no layer of this "
                                                      f"{n_layers}-layer model; widen the band")
            return chosen
        bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
        if bad:
            raise SettingsError.of("caas_layers", f"{bad} are outside this model's decoder layers 0–{n_layers - 1}")
        return tuple(int(layer) for layer in self.layers)


def _url_rule(text: str) -> str | None:
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls:
        return "is empty; give the server's address (http://HOST:PORT/v1)"
    bad = [url for url in urls if not url.startswith(("http://", "https://"))]
    return f"must be http(s) URLs (several: separated by commas), not {bad[0]!r}" if bad else None


@dataclass(frozen=True)
class ServerSettings:
    """An OpenAI-compatible server: where, with which key, how many requests at once, how long, how often."""

    base_url: str = setting("http://127.0.0.1:8000/v1", "openai: the server's /v1 URL; several, comma-separated, "
                            "share the questions (a server that goes away is taken out and its questions go to the "
                            "others).", panel=SERVER, runtime=True, rule=_url_rule, envvar="EAGLE_BASE_URL")
    api_key_env: str = setting("OPENAI_API_KEY", "openai: the environment variable holding the server's API key.",
                               panel=SERVER, runtime=True)
    concurrency: int = setting(8, "openai: requests in flight at once.", panel=SERVER, low=1, runtime=True)
    timeout_s: float = setting(120.0, "openai: seconds to wait for one answer.", panel=SERVER, low=0, low_open=True,
                               runtime=True)
    retries: int = setting(4, "openai: retries on 429/5xx, a timeout or a lost connection.", panel=SERVER, low=0,
                           runtime=True)

    def __post_init__(self):
        check(self)

    @property
    def base_urls(self) -> list[str]:
        """The servers: ``base_url`` split at commas."""
        return [url.strip() for url in self.base_url.split(",") if url.strip()]


#: Named bundles of expert settings (config/option names). ``reference`` is the reference code's expert:
#: every layer's neighbourhoods pooled to 1024 values and the layers pooled together to 1024, an image
#: scored by its highest patch, and its DBT (k-sigma on the scores of each training image's unselected patches).
EXPERT_PRESETS: dict[str, dict] = {
    "reference": {"tile": 0, "pretrain_dim": 1024, "target_dim": 1024, "layer_weights": (), "image_score": "top-mean",
                  "image_top": 1, "calibration": "reference", "method": "k-sigma"},
}

#: Pixels per image the reference gives Qwen2.5-VL (min = max = 512·28²: about 512 visual tokens).
QWEN_IMAGE_PIXELS = 512 * 28 * 28


def _in_process(settings) -> bool:
    return settings.backend == "hf"


@dataclass(frozen=True)
class ReasonParams:
    model: str = setting("qwen2.5-vl-7b", f"Hugging Face id, local folder, or preset ({', '.join(PRESETS)}); with "
                         "--backend openai, the served model name.", panel=MODEL, rule=_not_empty)
    backend: ModelBackend = setting("hf", "hf (transformers in this process) or openai (an OpenAI-compatible server "
                                    "such as vLLM).", panel=MODEL)
    model_dtype: ModelDtype = setting("auto", "Model precision; auto: bf16 on a GPU, fp32 on the CPU.", panel=MODEL)
    device: str = _device()
    max_new_tokens: int = setting(128, "Longest answer, in tokens.", panel=MODEL, low=1)
    # The image budget is applied in this process only (a server resizes images its own way).
    min_pixels: int = setting(QWEN_IMAGE_PIXELS, "Qwen2-VL/2.5-VL image budget, least pixels per image (the "
                              "reference: 512·28²).", panel=MODEL, low=28 * 28, only=_in_process, when="hf")
    max_pixels: int = setting(QWEN_IMAGE_PIXELS, "Qwen2-VL/2.5-VL image budget, most pixels per image (the "
                              "reference: 512·28²).", panel=MODEL, low=28 * 28, only=_in_process, when="hf")
    prompt_batch: int = setting(1, "Prompts per generate call (a server gets at least --concurrency at once).",
                                panel=RUNTIME, low=1, runtime=True)
    trust_remote_code: bool = setting(False, "Run model code from its repository (only for models you trust).",
                                      panel=MODEL, runtime=True)
    caas: CaasSettings | None = nested(CaasSettings, switch="caas", panel=CAAS, help=(
        "Strengthen attention to the query image when the expert is unsure (τ < score < S_max); needs --backend hf."))
    server: ServerSettings = nested(ServerSettings, runtime=True)

    def __post_init__(self):
        check(self)
        if self.max_pixels < self.min_pixels:
            raise SettingsError.of("max_pixels", f"is below --min-pixels ({self.min_pixels}), got {self.max_pixels}")
        if self.caas is not None and self.backend != "hf":
            raise SettingsError.of("caas", "edits attention inside the model, so it needs --backend hf; a server "
                                           "only returns text")

    @property
    def prompts_per_call(self) -> int:
        """Prompts handed to the backend at once: a server gets enough to keep --concurrency requests in flight."""
        return self.prompt_batch if self.backend == "hf" else max(self.prompt_batch, self.server.concurrency)


@dataclass(frozen=True)
class ReportParams:
    gallery: int = setting(120, "Most images in the gallery (misses, false alarms, disagreements first).",
                           panel=OUTPUT, low=0)
    include_incomplete: bool = setting(
        False, "Also show the answers an interrupted eagle reason left unfinished, as a system marked incomplete; by "
        "default they are only named in a note, with how to finish them.", panel=OUTPUT)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class ServeParams:
    """The inspection service: where it listens, how it batches, what it accepts."""

    host: str = setting("127.0.0.1", "Address to listen on; 0.0.0.0 for every interface.", panel=SERVER,
                        rule=_not_empty)
    port: int = setting(8000, "TCP port.", panel=SERVER, low=1, high=65535)
    max_wait_ms: float = setting(10.0, "How long a request waits for others to share its forward, ms.",
                                 panel=SERVER, low=0)
    queue: int = setting(64, "Requests that may wait; one more is answered 503 busy at once.", panel=SERVER, low=1)
    max_bytes: int = setting(50_000_000, "Largest upload, bytes (413 above).", panel=SERVER, low=1)
    max_image_pixels: int = setting(40_000_000, "Largest image, pixels, read from the header before decoding (413 "
                                    "above).",
                              panel=SERVER, low=1)
    client_key_env: str | None = setting(None, "Environment variable holding the key clients must send "
                                         "(Authorization: Bearer KEY or X-API-Key); unset: no key.", panel=SERVER)
    with_model: bool = setting(False, "Also ask the multimodal model (--model, --backend …) whether the part is "
                               "defective; its answer joins each reply.", panel=MODEL)
    audit_log: Path | None = setting(None, "Append every verdict to this JSON Lines file (time, request id, image "
                                     "sha256, score, p-value, verdict, boxes, ids, the model's answer); unset: none.",
                                     panel=SERVER)
    audit_max_mb: float = setting(100.0, "Rotate the audit log past this size (NAME.1 … NAME.5 kept), MB.",
                                  panel=SERVER, low=0, low_open=True)
    audit_images: AuditImages = setting("none", "Keep the uploaded images beside the audit log (images/<request "
                                        "id>.<kind>): none, anomalous or all.", panel=SERVER)
    feedback_dir: Path | None = setting(None, "Keep the parts operators label through POST /feedback here: "
                                        "DIR/CATEGORY/good is what eagle update-bank --good takes; unset: off.",
                                        panel=SERVER)
    drift_delta: float = setting(0.01, "The drift watch's alarm level: on a line whose parts stay exchangeable with "
                                 "the calibration images it ever fires with at most this probability.",
                                 panel=SERVER, low=0, high=1, low_open=True, high_open=True)

    def __post_init__(self):
        check(self)


Variation = Literal["clean", "realistic", "highres"]


@dataclass(frozen=True)
class SynthParams:
    """The synthetic dataset: how hard, how many images of what size, and its seed."""

    variation: Variation = setting(
        "clean", "clean: steady parts and strong defects (easy; proves the plumbing). realistic: pose, lighting, blur "
        "and noise vary between good parts and defects are weak (for judging thresholds and quality). highres: "
        "realistic textures with small defects (each under 0.1 % of the image, a third near the border), for --size "
        "1024 and up (for judging full-frame and tiled inspection).", panel=IN)
    train: int = setting(30, "Good training images per category.", panel=IN, low=0)
    test_good: int = setting(10, "Good test images per category.", panel=IN, low=0)
    test_per_defect: int = setting(4, "Test images per defect kind (scratch, stain, hole, patch).", panel=IN, low=0)
    size: int = setting(256, "Image side, px.", panel=IN, low=64)
    seed: int = setting(0, "Seed; the same seed writes the same pixels.", panel=IN)

    def __post_init__(self):
        check(self)
