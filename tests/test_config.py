from pathlib import Path

import pytest

from eagle_cli.config import RunConfig
from eagle_cli.errors import ParameterError

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_config_loads(path):
    config = RunConfig.load(path)
    assert config.data.is_absolute() and ".." not in config.data.parts


def test_reference_qwen_yaml_keys_are_translated_and_unused_ones_listed():
    config = RunConfig.load(Path(__file__).parents[1] / "examples" / "reference_qwen.yaml")
    assert (config.backbone, config.crop, config.resize, config.knn) == ("wide_resnet50_2", 224, 256, 1)
    assert (config.model, config.verdict, config.threshold_method) == ("qwen2.5-vl-7b", True, "k-sigma")
    assert config.ignored == ("faiss_on_gpu",)


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ParameterError, match=r"threshhold_method \(did you mean 'threshold_method'\?\)"):
        RunConfig.from_dict({"data": "d", "threshhold_method": "k-sigma"})


def test_reference_settings_eagle_does_differently_are_refused_with_the_reason():
    with pytest.raises(ParameterError, match="real_label' would use test labels"):
        RunConfig.from_dict({"data": "d", "threshold_method": "real_label"})
    with pytest.raises(ParameterError, match="patchsize = 5"):
        RunConfig.from_dict({"data": "d", "patchsize": 5})
    with pytest.raises(ParameterError, match="exactly one backbone"):
        RunConfig.from_dict({"data": "d", "backbone_names": ["wideresnet50", "resnet18"]})


def test_data_is_required_and_paths_are_relative_to_the_file(tmp_path):
    with pytest.raises(ParameterError, match="needs `data:`"):
        RunConfig.from_dict({"run": "x"})
    path = tmp_path / "c.yaml"
    path.write_text("data: sub/data\ncategories: a, b\n")
    config = RunConfig.load(path)
    assert config.data == (tmp_path / "sub" / "data").resolve() and config.categories == ("a", "b")


def test_config_defaults_are_the_stage_defaults():
    # RunConfig restates the defaults so that loading a config needs no torch; this keeps them equal.
    from eagle_cli.pipeline import stage_params
    from eagle_cli.stages.extract import ExtractParams
    from eagle_cli.stages.fit_bank import BankParams
    from eagle_cli.stages.fit_threshold import FitThresholdParams
    from eagle_cli.stages.prompt import PromptParams

    params = stage_params(RunConfig(data=Path("d")))
    assert params["extract"] == ExtractParams()
    assert params["bank"] == BankParams()
    assert params["threshold"] == FitThresholdParams()
    assert params["prompt"] == PromptParams()
