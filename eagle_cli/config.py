"""`eagle run` settings: one YAML file naming every setting as the command line does.

A key is a run setting (``data``, ``category``, ``run``, ``artifacts``, ``executor``, …), a stage
setting under its option name (``coreset_ratio``, ``method``, ``box_level``, ``caas_alpha``, …), or
a section named after a stage (``threshold: {method: mad}``). A name several stages share
(``device``, ``seed``, ``batch_size``, ``knn_backend``) sets it in all of them; a section sets it in
one. ``model:`` turns reasoning on, ``caas: true`` turns CAAS on, ``preset: reference`` the
reference's expert. The reference code's ``qwen.yaml`` keys are translated, and the ones that name
behaviour eagle does differently are refused with the reason. Names, defaults and checks are the
declarations' own (``params.py``), so a bad value reads as it does on the command line, and exits 2.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eagle_cli.errors import SettingsError
from eagle_cli.params import (
    EXPERT_PRESETS,
    RUNTIME,
    BankParams,
    CalibrationParams,
    DataParams,
    Executor,
    ExportParams,
    ExtractParams,
    PromptParams,
    ReasonParams,
    ReportParams,
    ScoreParams,
    StoreParams,
    ThresholdParams,
)
from eagle_cli.settings import build, check, nested, options_of, setting
from eagle_cli.yaml_files import YamlProblem, load_yaml

#: The settings classes of the stages, by section name.
SECTIONS = {"extract": ExtractParams, "bank": BankParams, "calibration": CalibrationParams,
            "threshold": ThresholdParams, "score": ScoreParams, "prompt": PromptParams, "reason": ReasonParams,
            "report": ReportParams, "export": ExportParams}


@dataclass(frozen=True)
class RunSettings:
    """What `eagle run` itself needs besides the stages' settings."""

    data: DataParams = nested(DataParams)
    store: StoreParams = nested(StoreParams)
    mllm_alone: bool = setting(False, "Also ask the model without the expert's help, so the report compares the "
                               "expert, the model alone and EAGLE.", panel="Model")
    executor: Executor = setting("local", "local: here, category after category. ray: each category's expert stages "
                                 "as a task on a Ray cluster (the ray extra; artifacts and data on a path every node "
                                 "sees); reasoning stays here.", panel=RUNTIME)
    ray_address: str | None = setting(None, "The Ray cluster's head (HOST:PORT, or auto for a cluster started on "
                                      "this machine); unset: a Ray started for this run.", panel=RUNTIME)

    def __post_init__(self):
        check(self)
        if self.data.data is None and self.data.good is None:
            raise SettingsError.of("data", "is needed (or the reference's data_path_image): the dataset root")


@dataclass(frozen=True)
class RunConfig:
    """Everything `eagle run` needs: the run's own settings and each stage's."""

    run: RunSettings
    extract: ExtractParams = field(default_factory=ExtractParams)
    bank: BankParams = field(default_factory=BankParams)
    calibration: CalibrationParams = field(default_factory=CalibrationParams)
    threshold: ThresholdParams = field(default_factory=ThresholdParams)
    score: ScoreParams = field(default_factory=ScoreParams)
    prompt: PromptParams = field(default_factory=PromptParams)
    reason: ReasonParams | None = None  # None: no model set, reasoning is skipped
    export: ExportParams | None = None  # None: no export section, nothing exported
    report: ReportParams = field(default_factory=ReportParams)
    ignored: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def load(cls, path: Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        """The config at ``path``, with ``overrides`` (``--set KEY=VALUE``) over its top-level keys."""
        if not path.is_file():
            raise SettingsError.of("config", f"names {path}, which does not exist")
        try:
            raw = load_yaml(path) or {}
        except YamlProblem as exc:
            raise ConfigError(str(path), [("config", str(exc))]) from None
        if not isinstance(raw, dict):
            raise ConfigError(str(path), [("config", "must be a mapping of settings")])
        return cls.from_dict({**raw, **(overrides or {})}, origin=str(path), base=path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, origin: str = "config", base: Path = Path(".")) -> RunConfig:
        values, ignored = _translate(raw, origin)
        values = _with_preset(values)
        run_names = {o.name for o in options_of(RunSettings)}
        known = {name: {o.name for o in options_of(kind)} for name, kind in SECTIONS.items()}
        shared, per_section, problems = {}, {name: {} for name in SECTIONS}, []
        setting_names = run_names.union(*known.values())
        for key, value in values.items():
            # "calibration" names both a section and a folder setting: a mapping means the section.
            if key in SECTIONS and (isinstance(value, dict) or key not in setting_names):
                if not isinstance(value, dict):
                    problems.append(f"{key}: is a section; give it settings of the {key} stage, like "
                                    f"{key}: {{{sorted(known[key])[0]}: ...}}, not {value!r}")
                    continue
                for name, item in value.items():
                    if name in known[key]:
                        per_section[key][name] = item
                    else:
                        problems.append(_unknown(name, known[key], section=key))
            elif key in setting_names:
                shared[key] = value
            else:
                problems.append(_unknown(key, setting_names | set(SECTIONS)))
        built = {}
        for name, kind in [("run", RunSettings), *SECTIONS.items()]:
            names = run_names if name == "run" else known[name]
            try:
                built[name] = build(kind, {**{k: v for k, v in shared.items() if k in names},
                                           **per_section.get(name, {})}, base=base)
            except SettingsError as error:
                problems += [f"{key}: {problem}" for key, problem in error.problems]
        if problems:
            raise ConfigError(origin, list(dict.fromkeys(problems)))
        # Built (so checked) even without a model: `--set model=…` may name one later.
        has_model = "model" in shared or "model" in per_section["reason"]
        wants_export = "export" in values or any(key in known["export"] for key in shared)
        return cls(**{**built, "reason": built["reason"] if has_model else None,
                      "export": built["export"] if wants_export else None}, ignored=tuple(ignored))


class ConfigError(SettingsError):
    """A config file's problems, one per line under the file's name (a usage error: exit 2)."""

    def __init__(self, origin: str, problems: list[str | tuple[str, str]]):
        lines = [p if isinstance(p, str) else f"{p[0]}: {p[1]}" for p in problems]
        super().__init__([(origin, line) for line in lines])
        self.args = (f"{origin}:\n" + "\n".join(f"  {line}" for line in lines),)

    def __str__(self) -> str:
        return self.args[0]


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
        raise SettingsError.of(key, f"expected true or false, got {value!r}")
    return value


def _backbone(value) -> dict:
    names = value if isinstance(value, list) else [value]
    if len(names) != 1:
        raise SettingsError.of("backbone_names", f"{names}: the reference accepts ensembles but uses only the last "
                                                 "model; eagle takes exactly one backbone")
    if names[0] not in _BACKBONE_NAMES:
        raise SettingsError.of("backbone_names", f"names an unknown backbone {names[0]!r}")
    return {"backbone": _BACKBONE_NAMES[names[0]]}


def _method(value) -> dict:
    if value not in _METHODS:
        raise SettingsError.of("threshold_method", f"{value!r}: eagle fits thresholds on normal data only "
                                                   f"({', '.join(sorted(set(_METHODS.values())))}); 'real_label' "
                                                   "would use test labels")
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
    "class_name": lambda v: {"category": v},
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
    # The reference's own layers are eagle's defaults: left unnamed, so the ids are those of the default.
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
        raise SettingsError.of("preset", f"must be one of {', '.join(EXPERT_PRESETS)}, got {name!r}")
    return {**EXPERT_PRESETS[name], **values}


def _translate(raw: dict[str, Any], origin: str) -> tuple[dict[str, Any], list[str]]:
    """Reference keys into eagle's; the reference keys eagle has no use for, listed."""
    values: dict[str, Any] = {}
    ignored = []
    for key, value in raw.items():
        if key in REFERENCE_FIXED:
            if value != REFERENCE_FIXED[key]:
                raise ConfigError(origin, [(key, f"= {value!r}; eagle implements the reference's "
                                                 f"{REFERENCE_FIXED[key]!r} only")])
        elif key in REFERENCE_KEYS:
            if REFERENCE_KEYS[key] is None:
                ignored.append(key)
            else:
                values.update(REFERENCE_KEYS[key](value))
        elif key in _SAME_NAME:
            values.update(_SAME_NAME[key](value))
        else:
            values[key] = value
    if any(key in REFERENCE_KEYS or key in REFERENCE_FIXED for key in raw):
        values.setdefault("preset", "reference")  # the reference's own config means the reference's expert
    return values, ignored

