"""Every stage's settings: the one place their names, defaults and checks are written (no torch here).

A setting has one name everywhere: the dataclass field, the CLI option (``--coreset-ratio``) and
the ``eagle run`` config key (``coreset_ratio``). Fields of a nested settings object take its
prefix (``PromptParams.box.level`` is ``box_level``; ``ReasonParams.caas.alpha`` is ``caas_alpha``).
Choices are ``Literal`` types, so the CLI lists them in ``--help`` and refuses others with a usage
error before any heavy import. Constructors check ranges, so a config file or a Python caller gets
the same messages as the command line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

from eagle_cli.devices import check_device
from eagle_cli.errors import ParameterError

Backbone = Literal["wide_resnet50_2", "resnet18", "mobilenet_v2"]
FeatureDtype = Literal["float32", "float16"]
CoresetInit = Literal["center_farthest", "pca_extremes", "random"]
CoresetUpdates = Literal["exact", "lists"]
KnnBackend = Literal["auto", "faiss", "torch"]
Estimator = Literal["refill", "leave-own-out", "cross-fit", "reference"]
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

BACKBONE_NAMES: tuple[str, ...] = get_args(Backbone)
#: Short names for the models people ask for most; anything else is a hub id or a local folder.
PRESETS = {
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2.5-vl-32b": "Qwen/Qwen2.5-VL-32B-Instruct",
    "llava-onevision-7b": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "internvl3-8b": "OpenGVLab/InternVL3-8B-hf",
}


def check_choice(name: str, value, choices) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (a tuple or a ``Literal`` type)."""
    allowed = get_args(choices) or tuple(choices)
    if value not in allowed:
        raise ParameterError(f"--{name.replace('_', '-')} must be one of {', '.join(map(str, allowed))}, "
                             f"got {value!r}.")


def _at_least(name: str, value, low) -> None:
    if value < low:
        raise ParameterError(f"--{name.replace('_', '-')} must be at least {low}, got {value}.")


def _at_most(name: str, value, high, why: str) -> None:
    if value > high:
        raise ParameterError(f"--{name.replace('_', '-')} must be at most {high} ({why}), got {value}.")


def _finite(settings, prefix: str = "") -> None:
    """Refuse NaN and infinity in any number of ``settings`` (they pass every comparison unnoticed); the
    option names of a nested settings object carry its ``prefix``."""
    for item in fields(settings):
        value = getattr(settings, item.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
            raise ParameterError(f"--{(prefix + item.name).replace('_', '-')} must be a finite number, got {value}.")


def _fraction(name: str, value, *, closed_top: bool = False) -> None:
    if not (0 < value <= 1 if closed_top else 0 < value < 1):
        raise ParameterError(f"--{name.replace('_', '-')} must be in (0, 1{']' if closed_top else ')'}, got {value}.")


@dataclass(frozen=True)
class ExtractParams:
    """Backbone, preprocessing and feature layout: WideResNet-50-2, 256 → 224 as the reference; each layer's
    channels at their own width, weighted (``EXPERT_PRESETS["reference"]`` pools them to 1024 as it does)."""

    backbone: Backbone = "wide_resnet50_2"
    weights: str = "imagenet"
    resize: int = 256
    crop: int = 224
    tile: int = 0
    overlap: float = 0.25
    # Native widths, weighted widest / width (benchmarks/ablation.py, MobileNetV2 on realistic data: image
    # AUROC 0.880 → 0.909, pixel AUROC 0.967 → 0.970); the reference's 1024/1024 is the `reference` preset.
    pretrain_dim: int = 0
    target_dim: int = 0
    layer_weights: tuple[float, ...] = ()
    layers: tuple[str, ...] = ()  # the backbone blocks used; empty: its two defaults (layer2/layer3's place)
    feature_dtype: FeatureDtype = "float32"
    batch_size: int = 8
    device: str = "auto"

    def __post_init__(self):
        _finite(self)
        check_device(self.device)
        check_choice("backbone", self.backbone, Backbone)
        check_choice("feature_dtype", self.feature_dtype, FeatureDtype)
        if not 0 <= self.crop <= self.resize:
            raise ParameterError(f"The crop ({self.crop}) must be at most the resize ({self.resize}); 0 is no crop "
                                 "(the whole image).")
        frame = self.crop or self.resize
        if not 0 <= self.tile <= frame:
            raise ParameterError(f"The tile ({self.tile} px) is larger than the {frame} px frame the images are "
                                 f"resized{' and cropped' if self.crop else ''} to; lower --tile or raise --resize"
                                 f"{' (with --crop 0 for the whole image)' if self.crop else ''}.")
        if not 0 <= self.overlap < 1:
            raise ParameterError(f"--overlap is the share of a tile its neighbour covers again, in [0, 1); got "
                                 f"{self.overlap}.")
        _at_least("batch_size", self.batch_size, 1)
        # A mistyped size would otherwise ask for gigabytes per image before anything says why.
        _at_most("resize", self.resize, 16384, "a side in pixels; tile larger images with --tile")
        for name in ("pretrain_dim", "target_dim"):
            _at_least(name, getattr(self, name), 0)
            _at_most(name, getattr(self, name), 16384, "values per patch; 0 keeps each layer's own width")
        if len(set(self.layers)) != len(self.layers) or any(not name for name in self.layers):
            raise ParameterError(f"--layers names each block once, like features.6,features.13; got "
                                 f"{list(self.layers)}.")
        if any(weight <= 0 for weight in self.layer_weights):
            raise ParameterError(f"--layer-weights must be positive, got {list(self.layer_weights)}.")

    def identity(self) -> dict:
        """Parameters that change the features (device and batch size do not)."""
        values = asdict(self)
        del values["batch_size"], values["device"]
        if not self.tile:
            # Untiled features keep the ids they had before tiling existed.
            del values["tile"], values["overlap"]
        if not self.layer_weights:
            del values["layer_weights"]  # likewise for unweighted layers
        else:
            values["layer_weights"] = list(self.layer_weights)
        if not self.layers:
            del values["layers"]  # and for the backbone's default layers
        else:
            values["layers"] = list(self.layers)
        # Stored under its name before the rename, so features extracted earlier keep their ids.
        values["dtype"] = values.pop("feature_dtype")
        return values

    @classmethod
    def of_features(cls, identity: dict, *, batch_size: int = 8, device: str = "auto") -> ExtractParams:
        """The settings a features artifact with parameters ``identity`` was extracted with."""
        return cls(backbone=identity["backbone"], weights=identity["weights"], resize=identity["resize"],
                   crop=identity["crop"], tile=identity.get("tile", 0), overlap=identity.get("overlap", 0.25),
                   pretrain_dim=identity["pretrain_dim"], target_dim=identity["target_dim"],
                   layer_weights=tuple(identity.get("layer_weights", ())), layers=tuple(identity.get("layers", ())),
                   feature_dtype=identity.get("dtype", "float32"), batch_size=batch_size, device=device)


@dataclass(frozen=True)
class BankParams:
    """Coreset and scoring settings; except ``image_top`` (the reference's is 1: the highest patch), the
    defaults are the reference's (10 %, 128-d, 10 starts, k = 1)."""

    coreset_ratio: float = 0.1
    proj_dim: int = 128
    n_starts: int = 10
    init: CoresetInit = "center_farthest"
    seed: int = 0
    knn_k: int = 1
    # The mean of the 8 highest patch scores (1 % of a 28 × 28 grid): benchmarks/ablation.py on realistic data,
    # image AUROC 0.903 → 0.907 over 3 seeds and the weakest category (grass) 0.874 → 0.895. A count of
    # patches, not a share, so a small defect in a large or tiled frame is not averaged away.
    image_top: int = 8
    coreset_shard_images: int = 0
    coreset_updates: CoresetUpdates = "exact"

    def __post_init__(self):
        _finite(self)
        check_choice("init", self.init, CoresetInit)
        _fraction("coreset_ratio", self.coreset_ratio, closed_top=True)
        for name in ("proj_dim", "n_starts", "knn_k", "image_top"):
            _at_least(name, getattr(self, name), 1)
        _at_most("proj_dim", self.proj_dim, 4096, "the projection only needs to keep distances, 128 does")
        _at_most("image_top", self.image_top, 4096, "it counts patches, a defect's few")
        _at_least("coreset_shard_images", self.coreset_shard_images, 0)
        check_choice("coreset_updates", self.coreset_updates, CoresetUpdates)
        if self.coreset_updates != "exact" and self.coreset_shard_images:
            raise ParameterError("--coreset-updates lists and --coreset-shard-images are two ways to a faster "
                                 "selection; choose one.")

    def identity(self) -> dict:
        values = asdict(self)
        if self.image_top == 1:
            del values["image_top"]  # banks from before the setting scored by the highest patch: same ids
        if self.coreset_updates == "exact":
            del values["coreset_updates"]  # banks from before the setting updated exactly: same ids
        return values

    @classmethod
    def of_bank(cls, identity: dict) -> BankParams:
        """The settings a bank with parameters ``identity`` was fitted with."""
        return cls(**{"image_top": 1, **identity})


@dataclass(frozen=True)
class CalibrationParams:
    """How training images are scored as if unseen; ``folds`` is read by cross-fit, ``min_unselected`` by reference."""

    calibration: Estimator = "refill"
    folds: int = 5
    min_unselected: int = 32
    calibration_images: int = 200
    extra_neighbours: int = 32
    knn_backend: KnnBackend = "auto"
    device: str = "auto"

    def __post_init__(self):
        check_device(self.device)
        check_choice("calibration", self.calibration, Estimator)
        check_choice("knn_backend", self.knn_backend, KnnBackend)
        _at_least("folds", self.folds, 2)
        _at_least("min_unselected", self.min_unselected, 1)
        _at_least("calibration_images", self.calibration_images, 0)
        _at_least("extra_neighbours", self.extra_neighbours, 0)

    def sampled(self, n_images: int) -> int:
        """How many of ``n_images`` training images are scored: all, or ``calibration_images`` when fewer (> 0)."""
        return min(n_images, self.calibration_images) if self.calibration_images else n_images

    def identity(self, n_images: int) -> dict:
        # Search settings change speed, never the scores; a cap that samples nothing changes nothing.
        own = {"cross-fit": {"folds": self.folds}, "reference": {"min_unselected": self.min_unselected}}
        sample = {"calibration_images": self.sampled(n_images)} if self.sampled(n_images) < n_images else {}
        return {"estimator": self.calibration, **own.get(self.calibration, {}), **sample}


@dataclass(frozen=True)
class ThresholdParams:
    """The DBT method and its parameters; only those of ``method`` take effect (see threshold.py)."""

    method: Method = "conformal"
    target_far: float = 0.05
    kappa: float = 3.0
    q: float = 99.0
    mad_factor: float = 3.0
    mad_consistency: bool = False
    evt_p: float = 0.99

    def __post_init__(self):
        _finite(self)
        check_choice("method", self.method, Method)
        _at_least("kappa", self.kappa, 0)
        _at_least("mad_factor", self.mad_factor, 0)
        _fraction("target_far", self.target_far)
        _fraction("evt_p", self.evt_p)
        if not 0 < self.q <= 100:
            raise ParameterError(f"--q must be in (0, 100], got {self.q}.")

    def effective(self) -> dict:
        """The parameters that ``method`` reads (what the artifact id depends on)."""
        used = {"conformal": ("target_far",), "k-sigma": ("kappa",), "quantile": ("q",),
                "mad": ("mad_factor", "mad_consistency"), "evt": ("evt_p",)}
        values = asdict(self)
        return {"method": self.method, **{key: values[key] for key in used[self.method]}}


@dataclass(frozen=True)
class ScoreParams:
    sigma_px: float = 4.0
    batch_size: int = 8
    knn_backend: KnnBackend = "auto"
    device: str = "auto"

    def __post_init__(self):
        _finite(self)
        check_device(self.device)
        check_choice("knn_backend", self.knn_backend, KnnBackend)
        _at_least("sigma_px", self.sigma_px, 0)
        _at_least("batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class BoxParams:
    """Boxes around map regions above ``level`` × τ (reference: 2/3 of the map's own max, 0.1 %, 0.3, 20 px, 3)."""

    level: float = 2 / 3
    min_area: float = 0.001  # fraction of the image area a region must exceed
    merge_iou: float = 0.3
    merge_centre_px: float = 20.0
    top_k: int = 3

    def __post_init__(self):
        _finite(self, "box_")
        _at_least("box_level", self.level, 0)
        _at_least("box_top_k", self.top_k, 1)
        _at_least("box_merge_centre_px", self.merge_centre_px, 0)
        for name in ("min_area", "merge_iou"):
            if not 0 <= getattr(self, name) <= 1:
                raise ParameterError(f"--box-{name.replace('_', '-')} is a share, in [0, 1]; got "
                                     f"{getattr(self, name)}.")


@dataclass(frozen=True)
class PromptParams:
    """Which parts the prompt has; defaults follow the reference (boxes, textual prior, 0 shots)."""

    visual: Visual = "boxes"
    instruction: bool = True
    verdict: bool = True
    shots: int = 0
    seed: int = 0
    domain_knowledge: Path | None = None
    template: Path | None = None
    box: BoxParams = field(default_factory=BoxParams, metadata={"prefix": "box_"})
    # The headline (MMAD's balanced accuracy) needs only the detection question; "all" asks MMAD's
    # other four types too, about five times the calls.
    task: str = "Anomaly Detection"
    template_source: TemplateSource = "seeded"

    def __post_init__(self):
        check_choice("visual", self.visual, Visual)
        check_choice("template_source", self.template_source, TemplateSource)
        _at_least("shots", self.shots, 0)


#: The reference's CAAS layers 9–14 of Qwen2.5-VL-7B's 28, as a band of the depth: the same layers
#: there, and the same middle stretch of a 36-layer 3B (12–18) or a 64-layer 32B (20–34).
CAAS_DEPTH = (0.32, 0.54)


@dataclass(frozen=True)
class CaasSettings:
    """α, the decoder layers it acts in, the mode, and which images' tokens count.

    ``layers`` is either 0-based layer indices (integers) or a band of the depth (two fractions:
    the layers whose middle lies in [lo, hi) of the model's depth), resolved per model.
    """

    alpha: float = 0.6
    layers: tuple[float, ...] = CAAS_DEPTH
    mode: CaasMode = "renorm"
    images: CaasImages = "query"

    def __post_init__(self):
        _finite(self, "caas_")
        _at_least("caas_alpha", self.alpha, 0)
        check_choice("caas_mode", self.mode, CaasMode)
        check_choice("caas_images", self.images, CaasImages)

    @property
    def is_band(self) -> bool:
        return any(isinstance(layer, float) for layer in self.layers)

    def indices(self, n_layers: int) -> tuple[int, ...]:
        """The 0-based layers CAAS acts in for a model of ``n_layers`` decoder layers; refused if none or outside."""
        if self.is_band:
            lo, hi = self.layers
            chosen = tuple(i for i in range(n_layers) if lo <= (i + 0.5) / n_layers < hi)
            if not chosen:
                raise ParameterError(f"--caas-layers {lo}-{hi} (a band of the depth) holds no layer of this "
                                     f"{n_layers}-layer model; widen the band.")
            return chosen
        bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
        if bad:
            raise ParameterError(f"--caas-layers {bad} are outside this model's decoder layers 0–{n_layers - 1}.")
        return tuple(int(layer) for layer in self.layers)


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
            raise ParameterError(f"--caas-layers as a band of the depth takes two fractions lo-hi with "
                                 f"0 <= lo < hi <= 1 (e.g. 0.32-0.54), got {spec!r}.")
        return band
    layers: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ParameterError(f"--caas-layers takes ranges like 9-14, lists like 9,10,12 or a band of the depth like "
                             f"0.32-0.54, got {spec!r}.") from None
    return tuple(sorted(layers))


def parse_names(spec: str | list | tuple) -> tuple[str, ...]:
    """'features.6,features.13' or a list of names → names; '' → none (the backbone's defaults)."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def parse_weights(spec: str | list | tuple) -> tuple[float, ...]:
    """'3,1' or a list of numbers → per-layer weights; '' → none (every layer 1)."""
    items = spec if isinstance(spec, (list, tuple)) else [part for part in str(spec).split(",") if part.strip()]
    try:
        return tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise ParameterError(f"--layer-weights takes one number per layer, like 3,1; got {spec!r}.") from None


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


@dataclass(frozen=True)
class ServerSettings:
    """An OpenAI-compatible server: where, how many requests at once, how long to wait, how often to retry."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 1.0

    def __post_init__(self):
        _finite(self)
        _at_least("concurrency", self.concurrency, 1)
        _at_least("retries", self.retries, 0)
        _at_least("backoff_s", self.backoff_s, 0)
        if not self.base_urls:
            raise ParameterError("--base-url is empty; give the server's address (http://HOST:PORT/v1).")
        if self.timeout_s <= 0:
            raise ParameterError(f"--timeout-s must be positive, got {self.timeout_s}.")
        for url in self.base_urls:
            if not url.startswith(("http://", "https://")):
                raise ParameterError(f"--base-url {url!r} is not an http(s) URL (several: separate them with commas).")

    @property
    def base_urls(self) -> list[str]:
        """The servers: ``base_url`` split at commas."""
        return [url.strip() for url in self.base_url.split(",") if url.strip()]


#: Named bundles of expert settings (config/option names). ``reference`` is the reference code's expert:
#: every layer's neighbourhoods pooled to 1024 values and the layers pooled together to 1024, and its
#: DBT (k-sigma on the scores of each training image's unselected patches).
EXPERT_PRESETS: dict[str, dict] = {
    "reference": {"pretrain_dim": 1024, "target_dim": 1024, "layer_weights": (), "image_top": 1,
                  "calibration": "reference", "method": "k-sigma"},
}


#: Pixels per image the reference gives Qwen2.5-VL (min = max = 512·28²: about 512 visual tokens).
QWEN_IMAGE_PIXELS = 512 * 28 * 28


@dataclass(frozen=True)
class ReasonParams:
    model: str = "qwen2.5-vl-7b"
    backend: ModelBackend = "hf"
    dtype: ModelDtype = "auto"
    device: str = "auto"
    max_new_tokens: int = 128
    min_pixels: int = QWEN_IMAGE_PIXELS
    max_pixels: int = QWEN_IMAGE_PIXELS
    prompt_batch: int = 1
    trust_remote_code: bool = False
    caas: CaasSettings | None = field(default=None, metadata={"prefix": "caas_"})
    server: ServerSettings = field(default_factory=ServerSettings, metadata={"prefix": ""})

    def __post_init__(self):
        check_device(self.device)
        if not self.model.strip():
            raise ParameterError("--model is empty; name a model folder, a hub id or a preset "
                                 f"({', '.join(PRESETS)}).")
        check_choice("backend", self.backend, ModelBackend)
        check_choice("dtype", self.dtype, ModelDtype)
        _at_least("max_new_tokens", self.max_new_tokens, 1)
        _at_least("prompt_batch", self.prompt_batch, 1)
        _at_least("min_pixels", self.min_pixels, 28 * 28)
        if self.max_pixels < self.min_pixels:
            raise ParameterError(f"--max-pixels ({self.max_pixels}) is below --min-pixels ({self.min_pixels}).")
        if self.caas is not None and self.backend != "hf":
            raise ParameterError("--caas edits attention inside the model, so it needs --backend hf; "
                                 "a server only returns text.")

    @property
    def prompts_per_call(self) -> int:
        """Prompts handed to the backend at once: a server gets enough to keep --concurrency requests in flight."""
        return self.prompt_batch if self.backend == "hf" else max(self.prompt_batch, self.server.concurrency)

    def identity(self) -> dict:
        # Batching, device, address and concurrency change speed, not the greedy answers.
        # The image budget is applied in this process only (a server resizes images its own way).
        budget = {"image_pixels": [self.min_pixels, self.max_pixels]} if self.backend == "hf" else {}
        return {"backend": self.backend, "model": self.model, "dtype": self.dtype,
                "max_new_tokens": self.max_new_tokens, **budget, "caas": asdict(self.caas) if self.caas else None}


@dataclass(frozen=True)
class ReportParams:
    runs: tuple[str, ...] = ("default",)
    categories: tuple[str, ...] = ()
    gallery: int = 120

    def __post_init__(self):
        if not 1 <= len(self.runs) <= 2:
            raise ParameterError(f"A report covers one run, or two side by side; got {len(self.runs)}.")
        _at_least("gallery", self.gallery, 0)
