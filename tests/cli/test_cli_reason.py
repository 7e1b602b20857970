"""eagle prompt and eagle reason from the command line, with a tiny Qwen2.5-VL folder."""

import json

from typer.testing import CliRunner

from eagle_cli.cli import app
from tests.cli.test_cli import TINY_ARGS

runner = CliRunner()


def test_prompt_then_reason_with_caas_on_the_command_line(tiny_root, tiny_qwen, tmp_path):
    common = ["--artifacts", str(tmp_path), "--category", "brick", "-q"]
    for args in (["fit-bank", "--data", str(tiny_root), *TINY_ARGS],
                 ["fit-threshold", "--method", "quantile", "--q", "5"],
                 ["score", "--device", "cpu"], ["prompt", "--visual", "both", "--shots", "1"]):
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["reason", "--model", str(tiny_qwen), "--device", "cpu", "--max-new-tokens", "3",
                                 "--caas", "--caas-layers", "1-2", "--prompt-batch", "3", "--json", *common])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["artifacts"][0]
    assert summary["kind"] == "answers" and summary["summary"]["answers"] == 11
    missing = runner.invoke(app, ["reason", "--model", str(tmp_path / "no-such-model"), "--device", "cpu", *common],
                            env={"HF_HUB_OFFLINE": "1"})
    assert missing.exit_code == 1 and "Cannot load" in missing.output and "Traceback" not in missing.output
    hub = runner.invoke(app, ["reason", "--model", "some-org/not-cached", "--device", "cpu", *common],
                        env={"HF_HUB_OFFLINE": "1"})
    assert "HF_HUB_OFFLINE=1 is set" in hub.output and "set HF_HUB_OFFLINE" not in hub.output


def test_reason_refuses_caas_layers_the_model_does_not_have(tiny_root, tiny_qwen, tmp_path):
    common = ["--artifacts", str(tmp_path), "--category", "washer", "-q"]
    for args in (["fit-bank", "--data", str(tiny_root), *TINY_ARGS],
                 ["fit-threshold", "--method", "quantile", "--q", "5"],
                 ["score", "--device", "cpu"], ["prompt"]):
        assert runner.invoke(app, [*args, *common]).exit_code == 0
    result = runner.invoke(app, ["reason", "--model", str(tiny_qwen), "--device", "cpu", "--caas", "--caas-layers",
                                 "9-14", *common])
    assert result.exit_code == 2 and "outside this model's decoder layers 0–3" in result.output
    assert "Loading weights" not in result.output  # refused from the config, before any weight is read


def test_reason_through_a_server_from_the_command_line(tiny_root, tmp_path):
    from tests.mllm.servers import completion, scripted_server

    common = ["--artifacts", str(tmp_path), "--category", "washer", "-q"]
    for args in (["fit-bank", "--data", str(tiny_root), *TINY_ARGS], ["fit-threshold", "--target-far", "0.2"],
                 ["score", "--device", "cpu"],
                 ["prompt", "--no-instruction", "--no-verdict", "--visual", "none"]):
        assert runner.invoke(app, [*args, *common]).exit_code == 0
    prompts = [json.loads(line) for line in next(tmp_path.rglob("prompts.jsonl")).read_text().splitlines()]
    assert all([i["role"] for i in p["message"] if i["type"] == "image"] == ["query"] for p in prompts)
    assert all("inspect" not in " ".join(i.get("text", "") for i in p["message"]) for p in prompts)
    refused = runner.invoke(app, ["reason", "--backend", "openai", "--caas", "--model", "m", *common],
                            env={"COLUMNS": "250"})
    assert refused.exit_code == 2 and "needs --backend hf" in refused.output
    with scripted_server([(200, completion("A"))]) as (url, served):
        result = runner.invoke(app, ["reason", "--backend", "openai", "--base-url", url, "--model", "served-model",
                                     "--concurrency", "3", "--json", *common])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["artifacts"][0]["summary"]
    assert summary["answers"] == 11 and summary["invalid"] == 0 and len(served) == 11 and summary["warnings"] == []
    with scripted_server([(200, completion("zzz"))]) as (url, served):
        garbled = runner.invoke(app, ["reason", "--backend", "openai", "--base-url", url, "--model", "other-model",
                                      *common])
    assert garbled.exit_code == 0 and "warning: none of the 11 answers names an option" in garbled.output
