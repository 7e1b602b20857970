"""Benchmark the expert stages against the bare backbone forward measured in the same run.

    python benchmarks/expert.py [--train 100] [--test 50] [--size 256] [--backbone wide_resnet50_2]

Each stage runs in its own process so its peak RSS is its own; "stage RSS" is the peak minus the
process's RSS after imports (torch alone is several hundred MB). Random weights (timing only).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def worker(stage: str, root: Path, artifacts: Path, backbone: str, threads: int) -> dict:
    import torch

    from eagle_cli import artifacts as store
    from eagle_cli.context import Context
    from eagle_cli.data import DataSource
    from eagle_cli.expert.backbones import load_backbone
    from eagle_cli.expert.faiss_after_torch import faiss
    from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams
    from eagle_cli.stages.extract import run_extract
    from eagle_cli.stages.fit_bank import run_fit_bank
    from eagle_cli.stages.fit_threshold import run_threshold
    from eagle_cli.stages.score import ScoreInputs, run_score

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    context = Context(artifacts=artifacts)
    source = DataSource(root=root)
    params = ExtractParams(backbone=backbone, weights="none", device="cpu")
    baseline = _current_rss_mb()
    start = time.perf_counter()
    if stage == "forward":
        model = load_backbone(backbone, "none")[0]
        samples = source.resolved().scan("gravel", "test")
        from eagle_cli.data.images import decode
        from eagle_cli.expert.geometry import Geometry

        batch = torch.stack([torch.from_numpy(Geometry.of(params).to_array(decode(s.path))) for s in samples])
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(batch), params.batch_size):
                model(batch[i:i + params.batch_size])
        images = len(batch)
    elif stage == "extract":
        ref = run_extract(source, "gravel", "train", params, context=context)
        images = ref.summary["images"]
    elif stage == "fit-bank":
        features = store.latest(artifacts, "default", "gravel", "features")
        run_fit_bank(features, BankParams(), context=context)
        images = features.summary["images"]
    elif stage == "fit-threshold":
        run_threshold(store.latest(artifacts, "default", "gravel", "bank"), CalibrationParams(), ThresholdParams(),
                      context=context)
        images = 0
    else:
        threshold = store.latest(artifacts, "default", "gravel", "threshold")
        ref = run_score(threshold, ScoreInputs(source=source, category="gravel"), ScoreParams(device="cpu"),
                        context=context)
        images = ref.summary["images"]
    seconds = time.perf_counter() - start
    return {"stage": stage, "seconds": seconds, "images": images, "peak_rss_mb": _rss_mb(),
            "baseline_rss_mb": baseline, "stage_rss_mb": _rss_mb() - baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--test", type=int, default=50, help="test images (half good, the rest defects)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args.artifacts, args.backbone, args.threads)))
        return

    from eagle_cli.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        root, artifacts = Path(tmp) / "data", Path(tmp) / "artifacts"
        generate(root, categories=("gravel",), n_train=args.train, n_test_good=args.test // 2,
                 n_test_per_defect=max(1, (args.test - args.test // 2) // 4), size=args.size)
        rows = {}
        for stage in ("forward", "extract", "fit-bank", "fit-threshold", "score"):
            cmd = [sys.executable, __file__, "--worker", stage, "--root", str(root), "--artifacts", str(artifacts),
                   "--backbone", args.backbone, "--threads", str(args.threads)]
            rows[stage] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    feature_mb = args.train * 28 * 28 * 1024 * 4 / 2**20
    for row in rows.values():
        rate = f"{row['images'] / row['seconds']:7.2f} img/s" if row["images"] else " " * 13
        print(f"{row['stage']:14} {row['seconds']:7.2f} s  {rate}  peak RSS {row['peak_rss_mb']:7.0f} MB  "
              f"stage RSS {row['stage_rss_mb']:6.0f} MB")
    forward_per_image = rows["forward"]["seconds"] / rows["forward"]["images"]
    score_per_image = rows["score"]["seconds"] / rows["score"]["images"]
    print(f"training features: {feature_mb:.0f} MB ({args.train} images x 784 x 1024 float32)")
    checks = [
        ("coreset / extract time", rows["fit-bank"]["seconds"] / rows["extract"]["seconds"], 1.0),
        # fit-threshold computes the default (refill) calibration, then τ.
        ("fit-threshold / extract time", rows["fit-threshold"]["seconds"] / rows["extract"]["seconds"], 2.5),
        ("fit-threshold stage RSS / fit-bank's",
         rows["fit-threshold"]["stage_rss_mb"] / rows["fit-bank"]["stage_rss_mb"], 1.0),
        ("score / bare forward per image", score_per_image / forward_per_image, 1.5),
        ("fit-bank stage RSS / training features", rows["fit-bank"]["stage_rss_mb"] / feature_mb, 2.0),
    ]
    for name, ratio, target in checks:
        print(f"{name:40} {ratio:5.2f}  (target <= {target})  {'ok' if ratio <= target else 'MISSED'}")


if __name__ == "__main__":
    main()
