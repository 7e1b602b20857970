"""Fit at scale: extract, fit-bank and fit-threshold over many training images, each as its own process.

    python -m benchmarks.fit_scale [--images 1000] [--backbone wide_resnet50_2] [--lists]

Random weights (timing only), clean synthetic gravel at 256 px (224 crop), 2 threads. Each stage is
an ``eagle`` process, timed with its peak RSS (GNU time). Figures are ratios to baselines measured in
the same run: fit time against the extraction time of the same images, peak RSS against the
memory-mapped training features plus a process that imports torch and faiss and runs the backbone
once. One fit-bank with the published greedy over all images, and with ``--lists`` one whose greedy
updates by lists (``--coreset-updates lists``); the first bank's
fit-threshold (default calibration: refill on at most 200 sampled images) — the calibration's cost
does not depend on how the bank was selected.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.processes import measured

BASELINE = """
import faiss, torch, torchvision
torch.set_num_threads({threads})
model = getattr(torchvision.models, "{backbone}")().eval()
with torch.inference_mode():
    model(torch.zeros({batch}, 3, 224, 224))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--lists", action="store_true", help="Also fit a bank with --coreset-updates lists.")
    parser.add_argument("--feature-dtype", default="float16")
    parser.add_argument("--target-far", default="0.05", help="The threshold's target (a few images need a larger one).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="Keep data and artifacts here.")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    eagle = [sys.executable, "-m", "eagle_cli"]
    from eagle_cli.data.synthetic import generate

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or Path(scratch)
        root, artifacts = tmp / f"data-{args.images}", tmp / "artifacts"
        start = time.perf_counter()
        if not root.is_dir():
            generate(root, categories=("gravel",), n_train=args.images, n_test_good=1, n_test_per_defect=0)
        rows = {"generate": (time.perf_counter() - start, 0.0)}
        rows["baseline"] = measured([sys.executable, "-c", BASELINE.format(threads=args.threads,
                                                                          backbone=args.backbone, batch=8)], env)[:2]
        common = ["--artifacts", str(artifacts), "--json", "--force"]
        seconds, peak, out = measured([*eagle, "extract", "--data", str(root), "--split", "train", "--backbone",
                                       args.backbone, "--weights", "none", "--device", "cpu", "--feature-dtype",
                                       args.feature_dtype, *common], env)
        rows["extract"] = (seconds, peak)
        features = Path(json.loads(out)["artifacts"][0]["path"])
        feature_mb = sum(f.stat().st_size for f in features.iterdir()) / 2**20
        selections = {"greedy": []}
        if args.lists:
            selections["updates by lists"] = ["--coreset-updates", "lists"]
        for name, options in selections.items():
            seconds, peak, out = measured([*eagle, "fit-bank", "--features", str(features), *options, *common], env)
            bank = json.loads(out)["artifacts"][0]
            rows[f"fit-bank, {name}"] = (seconds, peak)
            print(f"bank with {name}: {bank['summary']}", flush=True)
            if "fit-threshold" not in rows:
                seconds, peak, out = measured([*eagle, "fit-threshold", "--bank", bank["path"], "--target-far",
                                                    args.target_far, *common], env)
                rows["fit-threshold"] = (seconds, peak)
                print(f"threshold: {json.loads(out)['artifacts'][-1]['summary']}", flush=True)
    extract_s = rows["extract"][0]
    memory_bound = 1.5 * feature_mb + rows["baseline"][1]
    print(f"\n{args.images} images, {args.backbone}, features {feature_mb:.0f} MB on disk ({args.feature_dtype}); "
          f"baseline process (imports, backbone, one forward) {rows['baseline'][1]:.0f} MB")
    print("| stage | wall | / extract | peak RSS | / (1.5 × features + baseline) |")
    print("|---|---|---|---|---|")
    for name, (seconds, peak) in rows.items():
        if name not in ("generate", "baseline"):
            print(f"| {name} | {seconds:.0f} s | {seconds / extract_s:.2f} | {peak:.0f} MB "
                  f"| {peak / memory_bound:.2f} |")
    print(f"generate: {rows['generate'][0]:.0f} s")


if __name__ == "__main__":
    main()
