from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import typer

from eagle_cli.cli import app
from eagle_cli.config import SECTIONS, RunConfig, setting_table
from eagle_cli.errors import ParameterError
from eagle_cli.params import CaasSettings

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
#: Values for settings whose type alone does not say what a valid other value is.
OTHER = {"device": "cpu", "weights": "none", "model": "some/model", "task": "all",
         "base_url": "http://h:1/v1", "api_key_env": "KEY", "caas_layers": "1-2", "layer_weights": "3,1",
         "min_pixels": 64 * 28 * 28, "layers": "layer1,layer2"}
#: What the text values of tuple settings become.
PARSED = {"caas_layers": (1, 2), "layer_weights": (3.0, 1.0), "layers": ("layer1", "layer2")}
#: Which stage settings each command takes.
COMMAND_SECTIONS = {"extract": ("extract",), "fit-bank": ("extract", "bank"),
                    "fit-threshold": ("calibration", "threshold"),
                    "score": ("score",), "prompt": ("prompt",), "reason": ("reason",), "report": ("report",)}


def _other(key, hint, default):
    """A valid value of ``hint`` different from ``default``."""
    if key in OTHER:
        return OTHER[key]
    if get_origin(hint) is Literal:
        return next(choice for choice in get_args(hint) if choice != default)
    if hint is bool:
        return not default
    if hint is int:
        return default + 1
    if hint is float:
        return default / 2 if default else 0.5
    if default is None:  # optional paths
        return "some.json"
    raise AssertionError(f"no other value for {key}")


def _get(obj, path):
    for name in path:
        obj = getattr(obj, name)
    return obj


@pytest.mark.parametrize("key", sorted(setting_table()))
def test_every_stage_setting_is_reachable_from_a_config_file(key):
    places = setting_table()[key]
    section, path, hint = places[0]
    default = _get(SECTIONS[section](), path) if path[0] != "caas" else _get(CaasSettings(), path[1:])
    value = _other(key, hint, default)
    extra = {"model": "m"} if any(place[0] == "reason" for place in places) and key != "model" else {}
    if path[0] == "caas":
        extra["caas"] = True
    config = RunConfig.from_dict({"data": "d", key: value, **extra})
    for section, path, _ in places:  # a name several stages share reaches all of them
        got = _get(getattr(config, section), path)
        expected = Path(value).resolve() if isinstance(got, Path) else PARSED.get(key, value)
        assert got == expected and got != default, (section, path)


@pytest.mark.parametrize("command, sections", COMMAND_SECTIONS.items())
def test_each_command_takes_its_stage_settings_under_the_config_names_with_the_same_defaults(command, sections):
    options = {p.opts[0]: p for p in typer.main.get_command(app).commands[command].params if p.opts}
    for key, places in setting_table().items():
        for section, path, _ in places:
            if section not in sections or key == "backoff_s" and command != "reason":
                continue
            option = options.get("--" + key.replace("_", "-"))
            assert option is not None, f"eagle {command} has no --{key.replace('_', '-')}"
            default = _get(SECTIONS[section](), path) if path[0] != "caas" else _get(CaasSettings(), path[1:])
            if key in PARSED:
                continue  # a text option ("9-14") for a tuple
            assert option.default == default or (default is None and option.default is None), key


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_config_loads(path):
    config = RunConfig.load(path)
    assert config.data.is_absolute() and ".." not in config.data.parts


def test_reference_qwen_yaml_keys_are_translated_and_unused_ones_listed():
    config = RunConfig.load(Path(__file__).parents[1] / "examples" / "reference_qwen.yaml")
    assert (config.extract.backbone, config.extract.crop, config.extract.resize, config.bank.knn_k) == \
        ("wide_resnet50_2", 224, 256, 1)
    assert (config.reason.model, config.prompt.verdict, config.threshold.method) == ("qwen2.5-vl-7b", True, "k-sigma")
    assert config.ignored == ("faiss_on_gpu",)


def test_sections_set_one_stage_and_shared_names_set_all():
    config = RunConfig.from_dict({"data": "d", "seed": 4, "prompt": {"seed": 9}, "threshold": {"method": "mad"},
                                  "calibration": {"calibration": "cross-fit", "folds": 3}, "device": "cpu"})
    assert (config.bank.seed, config.prompt.seed, config.threshold.method) == (4, 9, "mad")
    assert (config.calibration.calibration, config.calibration.folds) == ("cross-fit", 3)
    assert {config.extract.device, config.calibration.device, config.score.device} == {"cpu"}
    assert config.reason is None  # no model, no reasoning
    assert RunConfig.from_dict({"data": "d", "calibration": "reference"}).calibration.calibration == "reference"


def test_earlier_names_still_load():
    config = RunConfig.from_dict({"data": "d", "knn": 3, "model": "m", "reason_batch_size": 4, "caas": True,
                                  "caas_alpha": 0.2})
    assert (config.bank.knn_k, config.reason.prompt_batch, config.reason.caas.alpha) == (3, 4, 0.2)


def test_every_bad_setting_is_named_on_its_own_line():
    with pytest.raises(ParameterError) as caught:
        RunConfig.from_dict({"data": "d", "coreset_ratio": "lots", "method": "oracle", "threshhold_method": "mad",
                             "bank": {"knn": 2}})
    lines = str(caught.value).splitlines()
    assert any("coreset_ratio: expected a number, got 'lots'" in line for line in lines)
    assert any("method: choose one of conformal" in line for line in lines)
    assert any("threshhold_method (did you mean 'threshold_method'?)" in line for line in lines)
    assert any("bank: knn (did you mean 'knn_k'?)" in line for line in lines)


def test_values_out_of_range_get_the_settings_own_message():
    with pytest.raises(ParameterError, match="--coreset-ratio must be in"):
        RunConfig.from_dict({"data": "d", "coreset_ratio": 3})
    with pytest.raises(ParameterError, match="needs --backend hf"):
        RunConfig.from_dict({"data": "d", "model": "m", "backend": "openai", "caas": True})


def test_reference_settings_eagle_does_differently_are_refused_with_the_reason():
    with pytest.raises(ParameterError, match="real_label' would use test labels"):
        RunConfig.from_dict({"data": "d", "threshold_method": "real_label"})
    with pytest.raises(ParameterError, match="patchsize = 5"):
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
    with pytest.raises(ParameterError, match="needs `data:`"):
        RunConfig.from_dict({"run": "x"})
    path = tmp_path / "c.yaml"
    path.write_text("data: sub/data\ncategories: a, b\ntemplate: words.yaml\n")
    config = RunConfig.load(path)
    assert config.data == (tmp_path / "sub" / "data").resolve() and config.categories == ("a", "b")
    assert config.prompt.template == (tmp_path / "words.yaml").resolve()


def test_settings_classes_are_torch_free():
    import subprocess
    import sys

    code = ("import sys, eagle_cli.config, eagle_cli.params; "
            "print(sorted(m for m in ('torch', 'faiss', 'transformers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    assert all(is_dataclass(cls) and fields(cls) for cls in SECTIONS.values())


def test_a_quoted_false_in_a_reference_key_is_refused_not_read_as_true():
    with pytest.raises(ParameterError, match="status: expected true or false, got 'false'"):
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
    with pytest.raises(ParameterError, match="not one of reference"):
        RunConfig.from_dict({"data": "d", "preset": "fast"})


@pytest.mark.parametrize("key,value,message", [
    ("resize", 100000000, "resize must be at most 16384"),
    ("proj_dim", 1000000000, "proj-dim must be at most 4096"),
    ("proj_dim", "1e9", "expected an integer"),
    ("target_dim", 10**9, "target-dim must be at most 16384"),
    ("image_top", 0, "image-top must be at least 1"),
    ("device", "gpu", "Unknown device 'gpu'; use auto, cpu or cuda"),
    ("kappa", -1, "kappa must be at least 0"),
    ("box_min_area", 2, "box-min-area is a share, in \\[0, 1\\]"),
    ("box_merge_iou", -0.5, "box-merge-iou is a share"),
    ("layer_weights", [3, float("nan")], "layer-weights must be a finite number"),
    ("model", " ", "--model is empty"),
    ("base_url", "", "--base-url is empty"),
    # Reasoning settings are checked even when the file names no model (--model may name one later).
    ("max_new_tokens", 0, "max-new-tokens must be at least 1"),
    ("caas_alpha", -1, "caas-alpha must be at least 0"),
])
def test_absurd_values_in_a_config_are_one_message(key, value, message):
    with pytest.raises(ParameterError, match=message):
        RunConfig.from_dict({"data": "d", key: value})


FLOAT_SETTINGS = sorted(key for key, places in setting_table().items() if places[0][2] is float)


@pytest.mark.parametrize("key", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_no_number_setting_takes_nan_or_infinity(key, value):
    # NaN passes every range comparison, so each would reach the stages unnoticed.
    with pytest.raises(ParameterError, match=f"{key.replace('_', '-')} must be a finite number"):
        RunConfig.from_dict({"data": "d", key: value})


@pytest.mark.parametrize("value", ["features.6, features.10", ["features.6", "features.10"]])
def test_layers_are_names_as_text_or_a_list(value):
    config = RunConfig.from_dict({"data": "d", "layers": value})
    assert config.extract.layers == ("features.6", "features.10")
    assert config.extract.identity()["layers"] == ["features.6", "features.10"]
    assert "layers" not in RunConfig.from_dict({"data": "d"}).extract.identity()  # default ids unchanged
    with pytest.raises(ParameterError, match="names each block once"):
        RunConfig.from_dict({"data": "d", "layers": "features.6,features.6"})


def test_a_model_named_on_the_command_line_keeps_the_files_reasoning_settings(tmp_path):
    config = RunConfig.from_dict({"data": "d", "max_new_tokens": 7, "caas": True})
    assert config.reason is None  # no model: reasoning is skipped
    chosen = config.with_model("some/model")
    assert (chosen.reason.model, chosen.reason.max_new_tokens, chosen.reason.caas is not None) == \
        ("some/model", 7, True)
