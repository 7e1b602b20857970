"""`eagle run` settings: one YAML file naming every stage setting as the command line does.

A key is a run setting (``data``, ``layout``, ``categories``, ``mmad_json``, ``mmad_dataset``,
``run``, ``artifacts``, ``on_error``, ``mllm_alone``, ``executor``, ``ray_address``), a stage
setting under its option name (``coreset_ratio``, ``method``, ``box_level``, ``caas_alpha``,
``timeout_s``, …), or a section named after a settings class (``threshold: {method: mad}``). A
name several stages share (``device``, ``seed``, ``batch_size``, ``knn_backend``) sets it in all of
them; a section sets it in one. ``model:`` turns reasoning on, ``caas: true`` turns CAAS on. The reference code's
``qwen.yaml`` keys are translated, and the ones that name behaviour eagle does differently are
refused with the reason. Defaults and checks are the settings classes' own (``params.py``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from eagle_cli.errors import ParameterError
from eagle_cli.params import (
    EXPERT_PRESETS,
    BankParams,
    CaasSettings,
    CalibrationParams,
    Executor,
    ExtractParams,
    OnError,
    PromptParams,
    ReasonParams,
    ReportParams,
    ScoreParams,
    ThresholdParams,
    check_choice,
    parse_layers,
    parse_names,
    parse_weights,
)

#: The settings classes of the stages, by section name.
SECTIONS = {"extract": ExtractParams, "bank": BankParams, "calibration": CalibrationParams,
            "threshold": ThresholdParams, "score": ScoreParams, "prompt": PromptParams, "reason": ReasonParams,
            "report": ReportParams}
#: Fields a run sets itself, not the config.
_NOT_SETTINGS = {("report", "runs"), ("report", "categories")}
#: Keys of earlier eagle configs, and what they are called now.
ALIASES = {"knn": "knn_k", "reason_batch_size": "prompt_batch"}


@dataclass(frozen=True)
class RunConfig:
    """Everything `eagle run` needs: where the data and artifacts are, and each stage's settings."""

    data: Path
    layout: str = "auto"
    categories: tuple[str, ...] = ()
    mmad_json: Path | None = None
    mmad_dataset: str | None = None
    run: str = "default"
    artifacts: Path = Path("artifacts")
    on_error: OnError = "skip"
    mllm_alone: bool = False  # also ask the model without the expert's help, for comparison
    executor: Executor = "local"  # ray: categories' expert stages as tasks on a Ray cluster
    ray_address: str | None = None  # None: start Ray on this machine
    extract: ExtractParams = field(default_factory=ExtractParams)
    bank: BankParams = field(default_factory=BankParams)
    calibration: CalibrationParams = field(default_factory=CalibrationParams)
    threshold: ThresholdParams = field(default_factory=ThresholdParams)
    score: ScoreParams = field(default_factory=ScoreParams)
    prompt: PromptParams = field(default_factory=PromptParams)
    reason: ReasonParams | None = None  # None: no model set, reasoning is skipped
    reasoning: ReasonParams = field(default_factory=ReasonParams)  # the file's reasoning settings, model or not
    report: ReportParams = field(default_factory=ReportParams)
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
        values = _with_preset(values)
        run_fields = {f.name for f in fields(cls) if f.name not in SECTIONS and f.name not in ("ignored", "reasoning")}
        settings = setting_table()
        run_values, staged, problems = {}, {name: {} for name in SECTIONS}, []
        for key, value in values.items():
            if key in SECTIONS and isinstance(value, dict):
                for name, item in value.items():
                    _stage_setting(staged, settings, key, name, item, base, problems)
            elif key in run_fields:
                run_values[key] = value
            elif key in settings or key == "caas":
                _stage_setting(staged, settings, None, key, value, base, problems)
            else:
                problems.append(_unknown(key, set(settings) | run_fields | set(SECTIONS)))
        if "data" not in run_values:
            problems.append("needs `data:` (or the reference's `data_path_image:`), the dataset root")
        if problems:
            raise ParameterError(f"{origin}:\n" + "\n".join(f"  {line}" for line in problems))
        for key in ("data", "artifacts", "mmad_json"):
            if run_values.get(key) is not None:
                run_values[key] = _path(run_values[key], base)
        categories = run_values.get("categories")
        if isinstance(categories, str):
            run_values["categories"] = tuple(c.strip() for c in categories.split(",") if c.strip())
        elif categories is not None:
            run_values["categories"] = tuple(categories)
        check_choice("on_error", run_values.get("on_error", "skip"), OnError)
        check_choice("executor", run_values.get("executor", "local"), Executor)
        sections = {name: _build(cls_, staged[name]) for name, cls_ in SECTIONS.items() if name != "reason"}
        # Built (so checked) even without a model: `--model` on the command line may name one later.
        reasoning = _build(ReasonParams, staged["reason"])
        reason = reasoning if ("model",) in staged["reason"] else None
        return cls(**run_values, **sections, reason=reason, reasoning=reasoning, ignored=tuple(ignored))

    def with_model(self, model: str) -> RunConfig:
        """The same config with reasoning by ``model`` (the file's other reasoning settings kept)."""
        return replace(self, reason=replace(self.reason or self.reasoning, model=model))


def setting_table() -> dict[str, list[tuple[str, tuple[str, ...], Any]]]:
    """Every stage setting's name → where it lives: [(section, field path, type)]; shared names list several."""
    table: dict[str, list[tuple[str, tuple[str, ...], Any]]] = {}
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in fields(cls):
            if (section, f.name) in _NOT_SETTINGS:
                continue
            if "prefix" in f.metadata:
                nested = next(t for t in (get_args(hints[f.name]) or (hints[f.name],)) if is_dataclass(t))
                nested_hints = get_type_hints(nested)
                for g in fields(nested):
                    table.setdefault(f.metadata["prefix"] + g.name, []).append(
                        (section, (f.name, g.name), nested_hints[g.name]))
            else:
                table.setdefault(f.name, []).append((section, (f.name,), hints[f.name]))
    return table


def _stage_setting(staged: dict, settings: dict, section: str | None, key: str, value, base: Path,
                   problems: list) -> None:
    """Record ``key: value`` for every section it names (or only ``section``), converted to the field's type."""
    if key == "caas":
        if not isinstance(value, bool):
            problems.append(f"caas: expected true or false, got {value!r}")
        else:
            staged["reason"]["caas_on"] = value
        return
    places = [p for p in settings.get(key, []) if section is None or p[0] == section]
    if not places:
        problems.append(_unknown(key, {k for k, ps in settings.items() if section is None
                                       or any(p[0] == section for p in ps)}, section=section))
        return
    for name, path, hint in places:
        try:
            staged[name][path] = _convert(parse_weights(value) if key == "layer_weights" else value, hint, base)
        except (TypeError, ValueError, ParameterError) as exc:
            problems.append(f"{key}: {exc}")
            return


def _build(cls, staged: dict):
    """A settings object from ``{field path: value}``, nested objects built from their own fields."""
    top, nested = {}, {}
    for path, value in staged.items():
        if path == "caas_on":
            continue
        if len(path) == 1:
            top[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1]] = value
    hints = get_type_hints(cls)
    for name, values in nested.items():
        kind = next(t for t in (get_args(hints[name]) or (hints[name],)) if is_dataclass(t))
        top[name] = kind(**values)
    if cls is ReasonParams:
        top["caas"] = top.get("caas", CaasSettings()) if staged.get("caas_on") else None
    return cls(**top)


def _convert(value, hint, base: Path):
    """``value`` as the field type ``hint`` wants it; a clear error for anything else."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(value, next(a for a in args if a is not type(None)), base)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"choose one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        wrong = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong or (hint is int and not isinstance(value, int)):
            raise ValueError(f"expected {'an integer' if hint is int else 'a number'}, got {value!r}")
        return hint(value)
    if hint is Path:
        return _path(value, base)
    if origin is tuple:
        if isinstance(value, tuple):
            return value
        return parse_names(value) if args[0] is str else parse_layers(value)
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _path(value, base: Path) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _unknown(key: str, names: set[str], section: str | None = None) -> str:
    close = difflib.get_close_matches(key, sorted(names | set(REFERENCE_KEYS) | set(REFERENCE_FIXED)), n=1)
    where = f"{section}: " if section else ""
    return f"{where}{key} (did you mean {close[0]!r}?)" if close else f"{where}{key} is not a setting"


_BACKBONE_NAMES = {"wideresnet50": "wide_resnet50_2", "wide_resnet50": "wide_resnet50_2", "resnet18": "resnet18",
                   "mobilenet_v2": "mobilenet_v2", "wide_resnet50_2": "wide_resnet50_2"}
_METHODS = {"conformal": "conformal", "k-sigma": "k-sigma", "ksigma": "k-sigma", "p-quantile": "quantile",
            "quantile": "quantile", "mad": "mad", "EVT": "evt", "evt": "evt"}


def _boolean(key: str, value) -> bool:
    # bool("false") is True: a quoted word must not silently switch a setting on.
    if not isinstance(value, bool):
        raise ParameterError(f"{key}: expected true or false, got {value!r}.")
    return value


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
    return {"method": _METHODS[value]}


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
    "percentage": lambda v: {"coreset_ratio": float(v)},
    "init_strategy": lambda v: {"init": v},
    "anomaly_scorer_num_nn": lambda v: {"knn_k": int(v)},
    "threshold_method": _method,
    "model_path": lambda v: {"model": v},
    "status": lambda v: {"verdict": _boolean("status", v)},
    "few_shot_model": lambda v: {"shots": int(v)},
    "task_type": lambda v: {"task": v},
    "pretrain_embed_dimension": lambda v: {"pretrain_dim": int(v)},
    "target_embed_dimension": lambda v: {"target_dim": int(v)},
    # The reference's own layers are eagle's defaults: left unnamed, so the ids stay those of the default.
    "layers_to_extract_from": lambda v: {} if list(v) == ["layer2", "layer3"] else {"layers": tuple(v)},
    "faiss_on_gpu": None,
    "faiss_num_workers": None,
    "dataset_name": None,
}
#: Reference keys whose eagle name is the same but whose values need translating.
_SAME_NAME = {"domain_knowledge": _domain_knowledge}

#: Reference keys eagle accepts only at the reference's value (the 3×3 neighbourhood is fixed).
REFERENCE_FIXED = {"patchsize": 3}


def _with_preset(values: dict[str, Any]) -> dict[str, Any]:
    """``preset: NAME`` expanded into its settings, which the file's own keys then override."""
    name = values.pop("preset", None)
    if name is None:
        return values
    if name not in EXPERT_PRESETS:
        raise ParameterError(f"preset: {name!r} is not one of {', '.join(EXPERT_PRESETS)}.")
    return {**EXPERT_PRESETS[name], **values}


def _translate(raw: dict[str, Any], origin: str) -> tuple[dict[str, Any], list[str]]:
    """Reference keys and old names into eagle's; the reference keys eagle has no use for, listed."""
    values: dict[str, Any] = {}
    ignored = []
    for key, value in raw.items():
        if key in REFERENCE_FIXED:
            if value != REFERENCE_FIXED[key]:
                raise ParameterError(f"{origin}: {key} = {value!r}; eagle implements the reference's "
                                     f"{REFERENCE_FIXED[key]!r} only.")
        elif key in REFERENCE_KEYS:
            if REFERENCE_KEYS[key] is None:
                ignored.append(key)
            else:
                values.update(REFERENCE_KEYS[key](value))
        elif key in _SAME_NAME:
            values.update(_SAME_NAME[key](value))
        else:
            values[ALIASES.get(key, key)] = value
    if any(key in REFERENCE_KEYS or key in REFERENCE_FIXED for key in raw):
        values.setdefault("preset", "reference")  # the reference's own config means the reference's expert
    return values, ignored
