"""The whole chain on an MMAD-format folder from the command line, with MMAD's questions and templates."""

import json

from typer.testing import CliRunner

from eagle_cli.cli import app
from tests.cli.test_cli import TINY_ARGS

runner = CliRunner()


def test_mmad_chain_asks_mmads_questions_with_its_templates(mmad_root, tiny_qwen, tmp_path):
    common = ["--artifacts", str(tmp_path), "-q"]
    steps = [["fit-bank", "--data", str(mmad_root), *TINY_ARGS], ["fit-threshold", "--target-far", "0.2"],
             ["score", "--device", "cpu"],
             ["prompt", "--shots", "1", "--template-source", "random", "--task", "all"]]
    for args in steps:
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == 0, result.output
    prompts = next(tmp_path.rglob("prompts.jsonl")).read_text().splitlines()
    records = [json.loads(line) for line in prompts]
    assert len(records) == 11 + 8  # every image's detection question, plus classification for the defects
    assert {r["type"] for r in records} == {"Anomaly Detection", "Defect Classification"}
    template = next(i for i in records[0]["message"] if i["type"] == "image" and i["role"] == "template")
    assert template["path"].endswith("MVTec-AD/brick/train/good/006.png")  # random_templates[0]
    result = runner.invoke(app, ["reason", "--model", str(tiny_qwen), "--device", "cpu", "--max-new-tokens", "2",
                                 "--prompt-batch", "4", "--json", *common])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["artifacts"][0]["summary"]["answers"] == 19


def test_by_default_only_the_detection_question_is_asked_and_a_server_needs_no_torch(mmad_root, tmp_path):
    import subprocess
    import sys

    common = ["--artifacts", str(tmp_path), "-q"]
    for args in (["fit-bank", "--data", str(mmad_root), *TINY_ARGS], ["fit-threshold", "--target-far", "0.2"],
                 ["score", "--device", "cpu"], ["prompt"]):
        assert runner.invoke(app, [*args, *common]).exit_code == 0
    records = [json.loads(line) for line in next(tmp_path.rglob("prompts.jsonl")).read_text().splitlines()]
    assert len(records) == 11 and {r["type"] for r in records} == {"Anomaly Detection"}
    # Asking a server (none listens here) reads the prompts and images but needs no torch at all.
    code = ("import sys; from eagle_cli.cli import main\n"
            f"sys.argv = ['eagle', 'reason', '--backend', 'openai', '--base-url', 'http://127.0.0.1:9/v1', '--model',"
            f" 'm', '--retries', '0', '--artifacts', '{tmp_path}', '-q']\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    print(exit.code)\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["1", "[]"] and "did not answer" in done.stderr
