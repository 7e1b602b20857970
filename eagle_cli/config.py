"""`eagle run` settings: one YAML file, eagle's own keys or the reference code's ``qwen.yaml`` keys.

Unknown keys are refused with the closest valid name; reference keys are translated (and the ones
that name behaviour eagle does differently are refused with the reason).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from eagle_cli.errors import ParameterError


@dataclass(frozen=True)
class RunConfig:
    """Everything `eagle run` needs; every field has the default the stage commands have."""

    data: Path
    layout: str = "auto"
    categories: tuple[str, ...] = ()
    mmad_json: Path | None = None
    mmad_dataset: str | None = None
    run: str = "default"
    artifacts: Path = Path("artifacts")
    device: str = "auto"
    # expert
    backbone: str = "wide_resnet50_2"
    weights: str = "imagenet"
    resize: int = 256
    crop: int = 224
    batch_size: int = 8
    coreset_ratio: float = 0.1
    proj_dim: int = 128
    n_starts: int = 10
    init: str = "center_farthest"
    seed: int = 0
    knn: int = 1
    # calibration and threshold
    calibration: str = "refill"
    folds: int = 5
    threshold_method: str = "conformal"
    target_far: float = 0.05
    kappa: float = 3.0
    q: float = 99.0
    mad_factor: float = 3.0
    evt_p: float = 0.99
    min_unselected: int = 32
    # prompts
    visual: str = "boxes"
    verdict: bool = True
    shots: int = 0
    template_source: str = "seeded"
    domain_knowledge: Path | None = None
    template: Path | None = None
    task: str = "all"
    # reasoning (skipped when model is None)
    model: str | None = None
    backend: str = "hf"
    base_url: str = "http://127.0.0.1:8000/v1"
    concurrency: int = 8
    dtype: str = "auto"
    max_new_tokens: int = 128
    reason_batch_size: int = 1
    caas: bool = False
    caas_alpha: float = 0.6
    caas_layers: str = "9-14"
    caas_mode: str = "renorm"
    mllm_alone: bool = False  # also ask the model without the expert's help, for comparison
    ignored: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        if not path.is_file():
            raise ParameterError(f"Config file {path} does not exist.")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ParameterError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ParameterError(f"{path} must be a mapping of settings.")
        return cls.from_dict(raw, origin=str(path), base=path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, origin: str = "config", base: Path = Path(".")) -> RunConfig:
        values, ignored = _translate(raw, origin)
        names = {f.name for f in fields(cls)} - {"ignored"}
        unknown = [key for key in values if key not in names]
        if unknown:
            lines = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(names | set(REFERENCE_KEYS) | set(REFERENCE_FIXED)), n=1)
                lines.append(f"  {key}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ParameterError(f"{origin} has unknown settings:\n" + "\n".join(lines))
        if "data" not in values:
            raise ParameterError(f"{origin} needs `data:` (or the reference's `data_path_image:`), the dataset root.")
        for key in ("data", "artifacts", "mmad_json", "domain_knowledge", "template"):
            if values.get(key) is not None:
                path = Path(values[key]).expanduser()
                values[key] = (path if path.is_absolute() else base / path).resolve()
        if isinstance(values.get("categories"), str):
            values["categories"] = tuple(c.strip() for c in values["categories"].split(",") if c.strip())
        elif values.get("categories") is not None:
            values["categories"] = tuple(values["categories"])
        return cls(**values, ignored=tuple(ignored))


_BACKBONE_NAMES = {"wideresnet50": "wide_resnet50_2", "wide_resnet50": "wide_resnet50_2", "resnet18": "resnet18",
                   "mobilenet_v2": "mobilenet_v2", "wide_resnet50_2": "wide_resnet50_2"}
_METHODS = {"conformal": "conformal", "k-sigma": "k-sigma", "ksigma": "k-sigma", "p-quantile": "quantile", "quantile": "quantile",
            "mad": "mad", "EVT": "evt", "evt": "evt"}


def _backbone(value) -> dict:
    names = value if isinstance(value, list) else [value]
    if len(names) != 1:
        raise ParameterError(f"backbone_names {names}: the reference accepts ensembles but uses only the last "
                             "model; eagle takes exactly one backbone.")
    if names[0] not in _BACKBONE_NAMES:
        raise ParameterError(f"backbone_names: unknown backbone {names[0]!r}.")
    return {"backbone": _BACKBONE_NAMES[names[0]]}


def _method(value) -> dict:
    if value not in _METHODS:
        raise ParameterError(f"threshold_method {value!r}: eagle fits thresholds on normal data only "
                             f"({', '.join(sorted(set(_METHODS.values())))}); 'real_label' would use test labels.")
    return {"threshold_method": _METHODS[value]}


def _domain_knowledge(value) -> dict:
    # The reference's flag is a boolean that loads nothing; eagle needs the file.
    if isinstance(value, bool):
        return {} if not value else {"domain_knowledge": "domain_knowledge.json"}
    return {"domain_knowledge": value}


#: The reference's qwen.yaml keys: a translation into eagle settings, or None for keys that tune
#: things eagle does not have (they are accepted and listed as ignored).
REFERENCE_KEYS = {
    "data_path_image": lambda v: {"data": v},
    "class_name": lambda v: {"categories": v},
    "backbone_names": _backbone,
    "imagesize": lambda v: {"crop": int(v)},
    "resize": lambda v: {"resize": int(v)},
    "percentage": lambda v: {"coreset_ratio": float(v)},
    "init_strategy": lambda v: {"init": v},
    "anomaly_scorer_num_nn": lambda v: {"knn": int(v)},
    "threshold_method": _method,
    "q": lambda v: {"q": float(v)},
    "model_path": lambda v: {"model": v},
    "status": lambda v: {"verdict": bool(v)},
    "domain_knowledge": _domain_knowledge,
    "few_shot_model": lambda v: {"shots": int(v)},
    "task_type": lambda v: {"task": "all" if v == "all" else v},
    "seed": lambda v: {"seed": int(v)},
    "faiss_on_gpu": None,
    "faiss_num_workers": None,
    "dataset_name": None,
}


#: Reference keys eagle accepts only at the reference's value (the aggregation is fixed to it).
REFERENCE_FIXED = {"patchsize": 3, "pretrain_embed_dimension": 1024, "target_embed_dimension": 1024,
                   "layers_to_extract_from": ["layer2", "layer3"]}


def _translate(raw: dict[str, Any], origin: str) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    ignored = []
    for key, value in raw.items():
        if key in REFERENCE_FIXED:
            if value != REFERENCE_FIXED[key]:
                raise ParameterError(f"{origin}: {key} = {value!r}; eagle implements the reference's "
                                     f"{REFERENCE_FIXED[key]!r} only.")
            continue
        if key in REFERENCE_KEYS and key not in {f.name for f in fields(RunConfig)}:
            translate = REFERENCE_KEYS[key]
            if translate is None:
                ignored.append(key)
                continue
            values.update(translate(value))
        elif key in REFERENCE_KEYS and key in ("threshold_method", "domain_knowledge"):
            values.update(REFERENCE_KEYS[key](value))
        else:
            values[key] = value
    return values, ignored
