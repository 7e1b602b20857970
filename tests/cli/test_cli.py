"""The eagle command: help for every option, exit codes, messages, JSON summaries, kills."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from eagle_cli import artifacts
from eagle_cli.cli import app
from eagle_cli.formats.bank import open_bank
from eagle_cli.lineage import Lineage

runner = CliRunner()
TINY_ARGS = ["--backbone", "mobilenet_v2", "--weights", "none", "--resize", "96", "--crop", "80", "--device", "cpu"]


def _commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


@pytest.mark.parametrize("path,command", list(_commands()), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_and_option_is_explained(path, command):
    assert command.help, f"eagle {' '.join(path)} has no help"
    for param in command.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"eagle {' '.join(path)} {param.name} has no help"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0


def test_stage_help_shows_defaults():
    result = runner.invoke(app, ["fit-bank", "--help"], env={"COLUMNS": "200"})
    assert "--coreset-ratio" in result.output and "[default: auto]" in result.output
    assert "wide_resnet50_2" in result.output and "EAGLE_ARTIFACTS" in result.output


@pytest.mark.parametrize("args", [["fit-bank", "--coreset-ratio", "lots"], ["fit-threshold", "--method", "foo"],
                                  ["fit-threshold", "--target-far", "2"], ["prompt", "--visual", "arrows"],
                                  ["reason", "--caas-mode", "loud"], ["extract", "--backbone", "vgg"],
                                  ["fit-bank", "--coreset-updates", "fast"], ["extract", "--tile", "big"],
                                  ["fit-bank", "--image-score", "mean"]])
def test_a_bad_choice_or_number_is_a_usage_error_that_names_the_choices(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and args[1] in result.output


def test_usage_errors_answer_before_any_heavy_import():
    code = ("import sys; from eagle_cli.cli import main; sys.argv = ['eagle', 'fit-threshold', '--method', 'foo']\n"
            "try:\n    main()\nexcept SystemExit as exit:\n"
            "    print(exit.code, sorted(m for m in ('torch', 'faiss') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "2 []"


def test_user_error_exits_1_with_one_message_and_no_traceback(tmp_path):
    result = runner.invoke(app, ["extract", "--data", str(tmp_path / "missing"), *TINY_ARGS])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_version_prints_and_exits_0():
    from eagle_cli import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"eagle {__version__}"


def test_a_path_with_brackets_is_printed_as_typed(tmp_path):
    missing = tmp_path / "line[bold]3[/]"
    result = runner.invoke(app, ["extract", "--data", str(missing), *TINY_ARGS])
    assert result.exit_code == 1 and str(missing) in result.output


def test_a_run_name_that_leaves_the_artifacts_folder_is_refused(tiny_root, tmp_path):
    result = runner.invoke(app, ["extract", "--data", str(tiny_root), "--category", "brick", *TINY_ARGS,
                                 "--artifacts", str(tmp_path / "a"), "--run", "../.."])
    assert result.exit_code == 1 and "not a plain folder name" in result.output
    assert not (tmp_path / "brick").exists() and not list(tmp_path.parent.glob("brick"))


def test_the_reference_preset_fills_only_the_options_left_at_their_defaults(tiny_root, tmp_path):
    def extracted(*args):
        result = runner.invoke(app, ["extract", "--data", str(tiny_root), "--category", "brick", *TINY_ARGS,
                                     "--artifacts", str(tmp_path), "--json", "-q", *args])
        assert result.exit_code == 0, result.output
        return artifacts.open_artifact(json.loads(result.stdout)["artifacts"][0]["path"])

    ours, reference = extracted(), extracted("--preset", "reference")
    lineage = lambda ref: Lineage.from_dict(ref.lineage)  # noqa: E731
    assert lineage(ours).feature_dim == 32 + 96 and lineage(ours).layer_weights == (3, 1)
    assert lineage(reference).feature_dim == 1024 and lineage(reference).layer_weights == (1, 1)
    assert lineage(extracted("--preset", "reference", "--target-dim", "512")).feature_dim == 512


def test_the_reference_preset_scores_an_image_by_its_highest_patch_unless_told_otherwise(tiny_root, tmp_path):
    def bank(*args):
        result = runner.invoke(app, ["fit-bank", "--data", str(tiny_root), "--category", "brick", *TINY_ARGS,
                                     "--artifacts", str(tmp_path), "--json", "-q", *args])
        assert result.exit_code == 0, result.output
        return open_bank(artifacts.open_artifact(json.loads(result.stdout)["artifacts"][0]["path"])).params

    assert bank().image_top == 8 and bank("--preset", "reference").image_top == 1
    assert bank("--preset", "reference", "--image-top", "4").image_top == 4
    assert bank().coreset_updates == "exact" and bank("--coreset-updates", "lists").coreset_updates == "lists"


def test_unknown_category_is_a_user_error(tiny_root, tmp_path):
    result = runner.invoke(app, ["extract", "--data", str(tiny_root), "--category", "bricks", *TINY_ARGS,
                                 "--artifacts", str(tmp_path)])
    assert result.exit_code == 1 and "Did you mean 'brick'" in result.output


def test_stages_chain_on_the_command_line_with_json_summaries(tiny_root, tmp_path):
    common = ["--artifacts", str(tmp_path), "--json", "--category", "washer"]
    bank = runner.invoke(app, ["fit-bank", "--data", str(tiny_root), *TINY_ARGS, *common])
    assert bank.exit_code == 0, bank.output
    threshold = runner.invoke(app, ["fit-threshold", "--method", "quantile", "--q", "90", *common])
    scores = runner.invoke(app, ["score", "--device", "cpu", *common])
    assert threshold.exit_code == 0 and scores.exit_code == 0, scores.output
    document = json.loads(scores.stdout)
    assert (document["command"], document["ok"], document["failed"]) == ("score", True, [])
    summary = document["artifacts"]
    assert summary[0]["kind"] == "scores" and summary[0]["summary"]["images"] == 11
    assert summary[0]["category"] == "washer" and not summary[0]["reused"]
    again = json.loads(runner.invoke(app, ["score", "--device", "cpu", *common]).stdout)["artifacts"]
    assert again[0]["reused"] and again[0]["path"] == summary[0]["path"]
    listed = json.loads(runner.invoke(app, ["artifacts", "ls", "--artifacts", str(tmp_path), "--json"]).stdout)
    assert listed.keys() == document.keys()  # one document shape for every command
    assert {a["kind"] for a in listed["artifacts"]} == {"features", "bank", "calibration", "threshold", "scores"}
    shown = runner.invoke(app, ["artifacts", "show", summary[0]["id"][:8], "--artifacts", str(tmp_path)])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["id"] == summary[0]["id"]


def test_edited_artifact_is_a_clear_error_on_the_command_line(tiny_root, tmp_path):
    common = ["--artifacts", str(tmp_path), "--category", "brick", "-q"]
    assert runner.invoke(app, ["fit-bank", "--data", str(tiny_root), *TINY_ARGS, *common]).exit_code == 0
    bank = artifacts.latest(tmp_path, "default", "brick", "bank")
    with open(bank.path / "bank.safetensors", "ab") as fh:
        fh.write(b"!")
    result = runner.invoke(app, ["fit-threshold", *common])
    assert result.exit_code == 1 and "bank.safetensors was changed after it was written" in result.output


def test_kill_during_extract_leaves_nothing_accepted_and_the_rerun_completes(tmp_path):
    from eagle_cli.data.synthetic import generate

    generate(tmp_path / "data", categories=("grass",), n_train=60, n_test_good=0, n_test_per_defect=0, size=96)
    root = tmp_path / "artifacts"
    cmd = [sys.executable, "-m", "eagle_cli", "extract", "--data", str(tmp_path / "data"), *TINY_ARGS,
           "--artifacts", str(root), "--batch-size", "1", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(root.rglob(".tmp-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert artifacts.list_artifacts(root) == []
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert [r.kind for r in artifacts.list_artifacts(root)] == ["features"]


def test_explicit_input_paths_are_used_once(tiny_root, tmp_path):
    common = ["--artifacts", str(tmp_path), "-q", "--json"]
    assert runner.invoke(app, ["fit-bank", "--data", str(tiny_root), *TINY_ARGS, *common]).exit_code == 0
    bank = artifacts.latest(tmp_path, "default", "washer", "bank")
    result = runner.invoke(app, ["fit-threshold", "--bank", str(bank.path), "--method", "mad", *common])
    written = json.loads(result.stdout)["artifacts"]
    assert [w["kind"] for w in written] == ["calibration", "threshold"]
    assert {w["category"] for w in written} == {"washer"} and written[1]["summary"]["method"] == "mad"


def test_fit_threshold_refuses_a_target_its_images_cannot_support_and_reuses_a_given_calibration(tiny_root, tmp_path):
    common = ["--artifacts", str(tmp_path), "--category", "brick", "--json"]
    assert runner.invoke(app, ["fit-bank", "--data", str(tiny_root), *TINY_ARGS, *common]).exit_code == 0
    refused = runner.invoke(app, ["fit-threshold", *common])
    assert refused.exit_code == 1 and "8 can promise targets down to 0.111" in refused.output
    assert {a.kind for a in artifacts.list_artifacts(tmp_path)} == {"features", "bank"}
    first = json.loads(runner.invoke(app, ["fit-threshold", "--target-far", "0.2", *common]).stdout)["artifacts"]
    calibration = first[0]["path"]
    assert first[1]["summary"]["smallest_target"] == pytest.approx(1 / 9)
    second = runner.invoke(app, ["fit-threshold", "--calibration-artifact", calibration, "--method", "k-sigma",
                                 "--json", "--artifacts", str(tmp_path)])
    written = json.loads(second.stdout)["artifacts"]
    assert written[0]["path"] == calibration and written[1]["summary"]["method"] == "k-sigma"


def test_help_answers_without_loading_torch_and_names_every_backbone():
    from eagle_cli.expert.backbones import BACKBONES
    from eagle_cli.params import BACKBONE_NAMES

    assert tuple(BACKBONES) == BACKBONE_NAMES
    code = ("import sys, eagle_cli.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
