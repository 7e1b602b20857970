"""eagle run on a real two-node Ray cluster on loopback: the same artifacts as a local run, failures
reported per category, clear messages for an unreachable cluster and an unshared artifacts folder."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from typer.testing import CliRunner

from eagle_cli import artifacts
from eagle_cli.cli import app
from eagle_cli.config import RunConfig
from eagle_cli.context import Context
from eagle_cli.errors import EagleError
from eagle_cli.formats.scores import read_scores
from eagle_cli.pipeline import expert_chain, run_pipeline
from eagle_cli.ray_executor import _expert_chain_task
from tests.mllm.servers import free_port

runner = CliRunner()
RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
NODE = ["--num-cpus=1", "--object-store-memory=80000000", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node on loopback, one CPU each; stopped afterwards."""
    port = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *NODE], env=ENV,
                   check=True, capture_output=True)
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *NODE], env=ENV, check=True,
                       capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True)


def _config(path, data, artifacts, **extra):
    path.write_text(yaml.safe_dump({"data": str(data), "artifacts": str(artifacts), "run": "r",
                                    "backbone": "mobilenet_v2", "weights": "none", "resize": 96, "crop": 80,
                                    "device": "cpu", "target_far": 0.2, **extra}))
    return path


def _written(stdout):
    """Each (category, stage) of a `run --json` document: its artifact entry, or its failure."""
    document = json.loads(stdout)
    return {(o["category"], o["stage"]): {**o, "error": None} for o in document["artifacts"]} | {
        (o["category"], o["stage"]): o for o in document["failed"]}


def test_ray_writes_what_a_local_run_writes_and_reports_a_failing_category(cluster, tiny_root, tmp_path):
    local = runner.invoke(app, ["run", str(_config(tmp_path / "local.yaml", tiny_root, tmp_path / "local")),
                                "--json"])
    assert local.exit_code == 0, local.output
    config = _config(tmp_path / "ray.yaml", tiny_root, tmp_path / "ray", category=["brick", "washer", "bolt"])
    result = runner.invoke(app, ["run", str(config), "--json", "--set", "executor=ray", "--set",
                                 f"ray_address={cluster}"])
    assert result.exit_code == 1  # bolt does not exist; the others completed
    on_ray, here = _written(result.stdout), _written(local.stdout)
    assert on_ray[("bolt", "extract")]["error"] and "bolt" in on_ray[("bolt", "extract")]["error"]
    for key, outcome in here.items():
        if key[0] == "all":
            continue
        theirs = on_ray[key]
        assert theirs["error"] is None
        # Same stage, same settings, same inputs: the same artifact id under the same run/category/kind.
        assert Path(theirs["path"]).relative_to(tmp_path / "ray") == Path(outcome["path"]).relative_to(
            tmp_path / "local")
        if key[1] == "score":
            ours, other = read_scores_at(outcome["path"]), read_scores_at(theirs["path"])
            assert [r.path for r in ours] == [r.path for r in other]
            for a, b in zip(ours, other, strict=True):
                assert a.score == pytest.approx(b.score, rel=1e-4) and a.anomalous == b.anomalous
    # Two nodes of one CPU each, and tasks that need one CPU: two categories ran at once, one per node.
    assert sum(node["Alive"] for node in ray.nodes()) == 2


def _kill_first_task(killed: list, timeout_s: float = 120) -> None:
    """SIGKILL the first worker seen running an expert chain (Ray names the process after the task)."""
    deadline = time.time() + timeout_s
    while not killed and time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                running = b"ray::_expert_chain_task" in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if running:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.02)


def test_a_worker_killed_mid_task_is_retried_by_ray_and_the_run_completes(cluster, tiny_root, tmp_path):
    config = _config(tmp_path / "ray.yaml", tiny_root, tmp_path / "ray", category=["washer"], executor="ray",
                     ray_address=cluster)
    killed: list = []
    killer = threading.Thread(target=_kill_first_task, args=(killed,))
    killer.start()
    result = runner.invoke(app, ["run", str(config), "--json"])
    killer.join()
    assert killed, "no task was seen running"
    assert result.exit_code == 0, result.output
    outcomes = _written(result.stdout)
    assert {stage for (category, stage), o in outcomes.items() if category == "washer" and not o["error"]} >= {
        "extract", "score"}


def read_scores_at(path):
    return read_scores(artifacts.open_artifact(path))


def test_a_node_that_cannot_see_the_artifacts_folder_is_named_with_the_fix(tiny_root, tmp_path):
    config = RunConfig.from_dict({"data": str(tiny_root), "artifacts": str(tmp_path)})
    refused = _expert_chain_task(expert_chain, config, "brick", str(tmp_path / "elsewhere" / ".eagle-ray-x"), Context())
    assert "is not shared with Ray node" in refused and "same path" in refused


def test_an_unreachable_cluster_is_one_message(tiny_root, tmp_path):
    ray.shutdown()
    config = RunConfig.from_dict({"data": str(tiny_root), "artifacts": str(tmp_path), "executor": "ray",
                                  "ray_address": f"127.0.0.1:{free_port()}", "category": ["brick"]})
    with pytest.raises(EagleError, match="Cannot reach a Ray cluster at 127.0.0.1"):
        run_pipeline(config, context=Context(artifacts=tmp_path))
