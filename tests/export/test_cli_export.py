"""The export on the command line: `eagle run` exports from a config, `eagle score --runtime onnx` runs where torch
is not installed and writes what the torch runtime writes, and an export of another threshold is refused."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from eagle_cli import artifacts, load_expert
from eagle_cli.cli import app
from eagle_cli.export.writer import export_expert
from eagle_cli.formats.jsonl import ERRORS_FILE
from eagle_cli.formats.scores import read_scores
from tests.export.test_export import WITHOUT_FULL

runner = CliRunner()


@pytest.fixture(scope="module")
def exported_run(tiny_root, tmp_path_factory):
    """The tiny washer category through `eagle run` on tiles, with an export section."""
    tmp = tmp_path_factory.mktemp("export-run")
    config = tmp / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(tiny_root), "artifacts": str(tmp / "artifacts"), "category": ["washer"],
        "backbone": "mobilenet_v2", "weights": "none", "resize": 96, "crop": 0, "tile": 48, "overlap": 0.5,
        "device": "cpu", "target_far": 0.2, "export": {"out": "exports"}}))
    result = runner.invoke(app, ["run", str(config), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    refs = {o["stage"]: artifacts.open_artifact(o["path"]) for o in document["artifacts"]}
    return tmp, refs, document


def _eagle_without_full(*args: str) -> subprocess.CompletedProcess:
    script = WITHOUT_FULL + "import sys\nfrom eagle_cli.cli import main\nsys.argv = ['eagle', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)


def test_a_config_exports_and_the_score_stage_runs_the_export_without_torch(exported_run, tiny_root, tmp_path):
    tmp, refs, document = exported_run
    threshold = refs["fit-threshold"]
    export = tmp / "exports" / "washer"
    assert (export / "manifest.json").is_file()
    assert f"wrote onnx export {export} (threshold {threshold.id})" in document["notes"]
    # The test images and one file that is no image: both runtimes judge each alike.
    test = tmp_path / "test"
    shutil.copytree(tiny_root / "washer" / "test", test)
    (test / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    common = ["score", "--threshold", str(threshold.path), "--test", str(test), "--artifacts", str(tmp / "artifacts"),
              "--json"]
    torch_run = runner.invoke(app, common)
    assert torch_run.exit_code == 0, torch_run.output
    torch_ref = artifacts.open_artifact(json.loads(torch_run.stdout)["artifacts"][0]["path"])
    expected, expected_errors = read_scores(torch_ref), (torch_ref.path / ERRORS_FILE).read_text()

    onnx_run = _eagle_without_full(*common, "--runtime", "onnx", "--export", str(tmp / "exports"), "--force")
    assert onnx_run.returncode == 0, onnx_run.stderr
    onnx_ref = artifacts.open_artifact(json.loads(onnx_run.stdout)["artifacts"][0]["path"])
    assert onnx_ref.summary["runtime"] == "onnx" and torch_ref.summary["runtime"] == "torch"
    got = read_scores(onnx_ref)
    assert [row.path for row in got] == [row.path for row in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.score == pytest.approx(theirs.score, rel=1e-4)
        assert (mine.anomalous, mine.uncertain) == (theirs.anomalous, theirs.uncertain)
    assert (onnx_ref.path / ERRORS_FILE).read_text() == expected_errors and "broken.png" in expected_errors


def test_without_the_full_install_a_fitting_command_says_what_to_install(tiny_root, tmp_path):
    run = _eagle_without_full("extract", "--data", str(tiny_root), "--artifacts", str(tmp_path))
    assert run.returncode == 1
    assert "needs eagle's full install (torch is not installed): pip install 'eagle-cli[full]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_an_export_of_another_threshold_or_runtime_is_refused(exported_run, tmp_path):
    tmp, refs, _ = exported_run
    threshold = refs["fit-threshold"]
    other = export_expert(load_expert(threshold), tmp_path / "other", threshold={"id": "0123456789abcdef"})
    base = ["score", "--threshold", str(threshold.path), "--artifacts", str(tmp / "artifacts"), "--force"]
    result = runner.invoke(app, [*base, "--runtime", "onnx", "--export", str(other)])
    assert result.exit_code == 1 and "exported from threshold 0123456789abcdef" in result.output
    result = runner.invoke(app, [*base, "--runtime", "openvino", "--export", str(tmp / "exports")])
    assert result.exit_code == 1 and "holds an onnx export, and --runtime openvino was asked for" in result.output
    result = runner.invoke(app, [*base, "--runtime", "onnx"])
    assert result.exit_code == 1 and "pass --export DIR" in result.output
