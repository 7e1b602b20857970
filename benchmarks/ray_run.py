"""eagle run on this machine against the same run on a two-node Ray cluster on loopback.

    python -m benchmarks.ray_run [--categories brick,grass,gravel,tissue] [--train 60]

Realistic synthetic set (MobileNetV2 ImageNet weights, default settings, no model). Local: the
categories one after another with ``--threads`` torch threads. Ray: a head and a second node
started here with one CPU each (``ray start``), each category's expert stages one task. Both runs
redo every stage (``force``) into their own artifacts folder; the figure is the wall time of
``run_pipeline``, Ray's start-up and connection included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from eagle_cli.config import RunConfig
from eagle_cli.context import Context
from eagle_cli.data.synthetic import generate
from eagle_cli.pipeline import run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--categories", default="brick,grass,gravel,tissue")
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ray = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    node = ["--num-cpus=1", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    names = tuple(args.categories.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        generate(root / "data", categories=names, variation="realistic", n_train=args.train, n_test_good=20,
                 n_test_per_defect=5, seed=0)
        seconds = {}
        for executor in ("local", "ray"):
            config = RunConfig.from_dict({"data": str(root / "data"), "backbone": "mobilenet_v2", "device": "cpu",
                                          "category": list(names), "artifacts": str(root / executor),
                                          "executor": executor, "ray_address": "127.0.0.1:6390"})
            if executor == "ray":
                subprocess.run([ray, "start", "--head", "--port=6390", "--include-dashboard=false", *node], env=env,
                               check=True, capture_output=True)
                subprocess.run([ray, "start", "--address=127.0.0.1:6390", *node], env=env, check=True,
                               capture_output=True)
            try:
                start = time.perf_counter()
                outcomes, _ = run_pipeline(config, context=Context(artifacts=root / executor, force=True))
                seconds[executor] = time.perf_counter() - start
                assert not any(o.error for o in outcomes), [o.error for o in outcomes if o.error]
            finally:
                if executor == "ray":
                    subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)
    print(f"\n{len(names)} categories, {args.train} training images each, no model")
    print("| executor | wall time | ratio to local |")
    print("|---|---|---|")
    print(f"| local ({args.threads} threads) | {seconds['local']:.1f} s | 1.00 |")
    print(f"| Ray, 2 nodes × 1 CPU (loopback) | {seconds['ray']:.1f} s | {seconds['ray'] / seconds['local']:.2f} |")


if __name__ == "__main__":
    main()
