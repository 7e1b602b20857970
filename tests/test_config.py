"""Settings declared once: the command line, a config file and a Python caller get the same settings, defaults,
bounds and messages, and one rule says what enters an artifact id."""

import math
from dataclasses import fields
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

from eagle_cli.cli import app
from eagle_cli.config import SECTIONS, RunConfig
from eagle_cli.errors import ParameterError, SettingsError
from eagle_cli.params import CaasSettings, ExtractParams, ReasonParams, ThresholdParams
from eagle_cli.settings import build, flag, identity, options_of

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
#: Values for settings whose type alone does not say what a valid other value is.
OTHER = {"device": "cpu", "weights": "none", "model": "some/model", "task": "all", "base_url": "http://h:1/v1",
         "api_key_env": "KEY", "caas_layers": "1-2", "layer_weights": "3,1", "min_pixels": 64 * 28 * 28,
         "layers": "layer1,layer2", "tile": 112, "coreset_ratio": 0.05, "coreset_max": 4096,
         "out": "elsewhere"}
#: What the text values of tuple settings become.
PARSED = {"caas_layers": (1, 2), "layer_weights": (3.0, 1.0), "layers": ("layer1", "layer2")}
#: Which stage settings each command takes.
COMMAND_SECTIONS = {"extract": ("extract",), "fit-bank": ("extract", "bank"),
                    "fit-threshold": ("calibration", "threshold"), "score": ("score",), "prompt": ("prompt",),
                    "reason": ("reason",), "report": ("report",), "export": ("export",)}
RUNNER = CliRunner()


def _other(option):
    """A valid value of ``option`` other than its default."""
    if option.name in OTHER:
        return OTHER[option.name]
    if get_origin(option.hint) is Literal:
        return next(choice for choice in get_args(option.hint) if choice != option.default)
    if option.hint is bool:
        return not option.default
    if option.hint is int:
        return option.default + 1
    if option.hint is float:
        return option.default / 2 if option.default else 0.5
    if option.default is None:  # optional paths
        return "some.json"
    raise AssertionError(f"no other value for {option.name}")


def _get(obj, path):
    for name in path:
        obj = getattr(obj, name)
    return obj


SETTINGS = [(section, option) for section, kind in SECTIONS.items() for option in options_of(kind)
            if option.spec is not None]


@pytest.mark.parametrize("section, option", SETTINGS, ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_stage_setting_is_reachable_from_a_config_file(section, option):
    value = _other(option)
    extra = {"model": "m"} if section == "reason" and option.name != "model" else {}
    if option.path[0] == "caas":
        extra["caas"] = True
    config = RunConfig.from_dict({"data": "d", section: {option.name: value}, **extra})
    got = _get(getattr(config, section), option.path)
    expected = Path(value).resolve() if isinstance(got, Path) else PARSED.get(option.name, value)
    assert got == expected and got != option.default


@pytest.mark.parametrize("command, sections", COMMAND_SECTIONS.items())
def test_each_command_takes_its_stage_settings_under_the_config_names_with_the_same_defaults(command, sections):
    options = {p.opts[0]: p for p in typer.main.get_command(app).commands[command].params if p.opts}
    for section in sections:
        for option in options_of(SECTIONS[section]):
            given = options.get(flag(option.name))
            assert given is not None, f"eagle {command} has no {flag(option.name)}"
            default = option.spec.text(option.default) if option.spec and option.spec.text else option.default
            assert given.default == default, option.name
            if option.spec is not None:
                assert given.help == option.help  # the declaration's help, range included


def _owner(kind, path):
    """The settings class that declares the field at ``path`` (a group's own class for a nested field)."""
    for name in path[:-1]:
        kind = next(f.metadata["group"].kind for f in fields(kind) if f.name == name)
    return kind


def _out_of_range(option):
    spec = option.spec
    if spec.low is not None:
        return spec.low - 1 if option.hint is int else (spec.low if spec.low_open else spec.low - 0.5)
    return spec.high + 1 if option.hint is int else (spec.high if spec.high_open else spec.high + 0.5)


BOUNDED = [(section, option) for section, option in SETTINGS
           if option.hint in (int, float) and (option.spec.low is not None or option.spec.high is not None)]


@pytest.mark.parametrize("section, option", BOUNDED, ids=lambda v: v if isinstance(v, str) else v.name)
def test_a_value_out_of_range_is_the_same_usage_error_from_the_command_line_a_config_and_python(section, option):
    value = _out_of_range(option)
    with pytest.raises(SettingsError) as from_python:
        _owner(SECTIONS[section], option.path)(**{option.path[-1]: value})
    problem = dict(from_python.value.problems)[option.name]
    switch = {"caas": True} if option.path[0] == "caas" else {}
    with pytest.raises(SettingsError) as from_config:
        RunConfig.from_dict({"data": "d", section: {option.name: value, **switch}})
    assert f"{option.name}: {problem}" in str(from_config.value)
    command = next(c for c, sections in COMMAND_SECTIONS.items() if section in sections)
    result = RUNNER.invoke(app, [command, flag(option.name), str(value), *map(flag, switch)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and f"Invalid value for '{flag(option.name)}': {problem}" in result.output


def test_a_bad_config_value_exits_2_like_a_bad_option(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: d\ncoreset_ratio: 2\n")
    result = RUNNER.invoke(app, ["run", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "coreset_ratio: must be in (0, 1], got 2" in result.output


def test_an_artifact_id_holds_what_changes_results_where_it_applies():
    # Runtime settings never enter; a setting another one did not choose does not either.
    assert identity(ExtractParams(device="cpu", batch_size=2)) == identity(ExtractParams())
    assert "overlap" not in identity(ExtractParams()) and "overlap" in identity(ExtractParams(crop=0, tile=64))
    assert identity(ThresholdParams("k-sigma", kappa=2)) == {"method": "k-sigma", "kappa": 2}
    assert identity(ReasonParams(model="m"))["caas"] is False and "caas_alpha" not in identity(ReasonParams(model="m"))
    assert identity(ReasonParams(model="m", caas=CaasSettings()))["caas_alpha"] == 0.6
    assert "base_url" not in identity(ReasonParams(model="m"))
    for kind in SECTIONS.values():
        assert build(kind, identity(kind())) == kind()  # what an artifact recorded rebuilds the settings


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_config_loads(path):
    config = RunConfig.load(path)
    assert config.run.data.data.is_absolute() and ".." not in config.run.data.data.parts


def test_reference_qwen_yaml_keys_are_translated_and_unused_ones_listed():
    config = RunConfig.load(Path(__file__).parents[1] / "examples" / "reference_qwen.yaml")
    assert (config.extract.backbone, config.extract.crop, config.extract.resize, config.bank.knn_k) == \
        ("wide_resnet50_2", 224, 256, 1)
    assert (config.reason.model, config.prompt.verdict, config.threshold.method) == ("qwen2.5-vl-7b", True, "k-sigma")
    assert config.ignored == ("faiss_on_gpu",)


def test_sections_set_one_stage_and_shared_names_set_all():
    config = RunConfig.from_dict({"data": "d", "seed": 4, "prompt": {"seed": 9}, "threshold": {"method": "mad"},
                                  "calibration": {"calibration": "reference", "min_unselected": 3}, "device": "cpu"})
    assert (config.bank.seed, config.prompt.seed, config.threshold.method) == (4, 9, "mad")
    assert (config.calibration.calibration, config.calibration.min_unselected) == ("reference", 3)
    assert {config.extract.device, config.calibration.device, config.score.device} == {"cpu"}
    assert config.reason is None  # no model, no reasoning


def test_every_bad_setting_is_named_on_its_own_line():
    with pytest.raises(SettingsError) as caught:
        RunConfig.from_dict({"data": "d", "coreset_ratio": "lots", "method": "oracle", "threshhold_method": "mad",
                             "bank": {"knn": 2}})
    lines = str(caught.value).splitlines()
    assert any("coreset_ratio: must be a number or one of auto, got 'lots'" in line for line in lines)
    assert any("method: must be one of conformal" in line for line in lines)
    assert any("threshhold_method (did you mean 'threshold_method'?)" in line for line in lines)
    assert any("bank: knn (did you mean 'knn_k'?)" in line for line in lines)


def test_earlier_names_are_gone_and_say_what_they_are_called_now():
    with pytest.raises(SettingsError, match=r"knn \(did you mean 'knn_k'\?\)"):
        RunConfig.from_dict({"data": "d", "knn": 3})


def test_values_out_of_range_get_the_settings_own_message():
    with pytest.raises(ParameterError, match=r"coreset_ratio: must be in \(0, 1\]"):
        RunConfig.from_dict({"data": "d", "coreset_ratio": 3})
    with pytest.raises(ParameterError, match="needs --backend hf"):
        RunConfig.from_dict({"data": "d", "model": "m", "backend": "openai", "caas": True})


def test_reference_settings_eagle_does_differently_are_refused_with_the_reason():
    with pytest.raises(ParameterError, match="real_label' would use test labels"):
        RunConfig.from_dict({"data": "d", "threshold_method": "real_label"})
    with pytest.raises(ParameterError, match="patchsize: = 5"):
        RunConfig.from_dict({"data": "d", "patchsize": 5})
    with pytest.raises(ParameterError, match="exactly one backbone"):
        RunConfig.from_dict({"data": "d", "backbone_names": ["wideresnet50", "resnet18"]})


def test_the_references_layer_and_width_keys_choose_eagles_options():
    same = RunConfig.from_dict({"data": "d", "layers_to_extract_from": ["layer2", "layer3"],
                                "pretrain_embed_dimension": 1024, "target_embed_dimension": 1024})
    assert same.extract == RunConfig.from_dict({"data": "d", "preset": "reference"}).extract  # same ids
    other = RunConfig.from_dict({"data": "d", "layers_to_extract_from": ["layer1", "layer2"],
                                 "target_embed_dimension": 512})
    assert (other.extract.layers, other.extract.pretrain_dim, other.extract.target_dim) == \
        (("layer1", "layer2"), 1024, 512)


def test_data_is_required_and_paths_are_relative_to_the_file(tmp_path):
    with pytest.raises(ParameterError, match="data: is needed"):
        RunConfig.from_dict({"run": "x"})
    path = tmp_path / "c.yaml"
    path.write_text("data: sub/data\ncategory: a, b\ntemplate: words.yaml\n")
    config = RunConfig.load(path)
    assert config.run.data.data == (tmp_path / "sub" / "data").resolve() and config.run.data.category == ("a", "b")
    assert config.prompt.template == (tmp_path / "words.yaml").resolve()


def test_settings_classes_are_torch_free():
    import subprocess
    import sys

    code = ("import sys, eagle_cli.config, eagle_cli.params; "
            "print(sorted(m for m in ('torch', 'faiss', 'transformers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    assert all(fields(cls) for cls in SECTIONS.values())


def test_a_quoted_false_in_a_reference_key_is_refused_not_read_as_true():
    with pytest.raises(ParameterError, match="status expected true or false, got 'false'"):
        RunConfig.from_dict({"data": "d", "status": "false"})
    assert RunConfig.from_dict({"data": "d", "status": False}).prompt.verdict is False


def test_the_reference_preset_and_the_references_own_config_give_the_references_expert():
    reference = RunConfig.from_dict({"data": "d", "preset": "reference"})
    assert (reference.extract.pretrain_dim, reference.extract.target_dim) == (1024, 1024)
    assert (reference.calibration.calibration, reference.threshold.method) == ("reference", "k-sigma")
    assert reference.bank.image_top == 1  # an image scores its highest patch
    mixed = RunConfig.from_dict({"data": "d", "preset": "reference", "method": "conformal"})
    assert mixed.threshold.method == "conformal" and mixed.extract.pretrain_dim == 1024  # the file's keys win
    ours = RunConfig.from_dict({"data": "d"})
    assert (ours.extract.pretrain_dim, ours.extract.target_dim, ours.bank.image_top) == (0, 0, 8)
    theirs = RunConfig.load(Path(__file__).parents[1] / "examples" / "reference_qwen.yaml")
    assert (theirs.extract.pretrain_dim, theirs.extract.target_dim, theirs.bank.image_top) == (1024, 1024, 1)
    with pytest.raises(ParameterError, match="must be one of reference"):
        RunConfig.from_dict({"data": "d", "preset": "fast"})


@pytest.mark.parametrize("key,value,message", [
    ("resize", 100000000, r"resize: must be in \[1, 16384\]"),
    ("proj_dim", "1e9", "proj_dim: must be a whole number, got '1e9'"),
    ("device", "gpu", "device: must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("layer_weights", [3, float("nan")], "layer_weights: must be a finite number"),
    ("model", " ", "model: must not be empty"),
    ("base_url", "", "base_url: is empty"),
    # Reasoning settings are checked even when the file names no model (--set model=… may name one later).
    ("max_new_tokens", 0, "max_new_tokens: must be ≥ 1, got 0"),
])
def test_absurd_values_in_a_config_are_one_message(key, value, message):
    with pytest.raises(ParameterError, match=message):
        RunConfig.from_dict({"data": "d", key: value})


@pytest.mark.parametrize("section, option", [(s, o) for s, o in SETTINGS if o.hint is float],
                         ids=lambda v: v if isinstance(v, str) else v.name)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_no_number_setting_takes_nan_or_infinity(section, option, value):
    # NaN passes every range comparison, so each would reach the stages unnoticed.
    switch = {"caas": True} if option.path[0] == "caas" else {}
    with pytest.raises(ParameterError, match=f"{option.name}: must be a finite number"):
        RunConfig.from_dict({"data": "d", section: {option.name: value, **switch}})


@pytest.mark.parametrize("value", ["features.6, features.10", ["features.6", "features.10"]])
def test_layers_are_names_as_text_or_a_list(value):
    config = RunConfig.from_dict({"data": "d", "layers": value})
    assert config.extract.layers == ("features.6", "features.10")
    assert identity(config.extract)["layers"] == ["features.6", "features.10"]
    with pytest.raises(ParameterError, match="must name each block once"):
        RunConfig.from_dict({"data": "d", "layers": "features.6,features.6"})


def test_a_model_set_on_the_command_line_keeps_the_files_reasoning_settings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: d\nmax_new_tokens: 7\ncaas: true\n")
    assert RunConfig.load(path).reason is None  # no model: reasoning is skipped
    chosen = RunConfig.load(path, {"model": "some/model"}).reason
    assert (chosen.model, chosen.max_new_tokens, chosen.caas is not None) == ("some/model", 7, True)
