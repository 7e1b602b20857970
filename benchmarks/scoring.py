"""eagle score where users feel it: one image, the time per further image, memory as the test set grows.

    python -m benchmarks.scoring [--backbone wide_resnet50_2] [--images 50] [--memory-images 50,2000]

Random weights (timing only), clean synthetic gravel at 256 px, 2 threads; each figure is a ratio
to a baseline measured in the same run:
- one image: the wall time of ``eagle score`` on a folder with one image, against a ``python -c``
  that imports torch and torchvision, builds the backbone and runs one forward;
- per further image: (score of N images − score of 1) / (N − 1), in process, against a bare
  full-network forward (batch 8) plus the exact kNN search of the same patches, per image;
- memory: the peak RSS of ``eagle score`` processes on test sets of different sizes (MobileNetV2,
  which is quick; the maps and rows are what could grow).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.processes import measured

BASELINE = """
import torch, torchvision
torch.set_num_threads({threads})
model = getattr(torchvision.models, "{backbone}")().eval()
with torch.inference_mode():
    model(torch.zeros(1, 3, 224, 224))
"""


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a child process."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _fit(root: Path, artifacts: Path, backbone: str, env: dict, preset: str | None = None) -> None:
    common = ["--artifacts", str(artifacts), "-q"]
    subprocess.run([sys.executable, "-m", "eagle_cli", "fit-bank", "--data", str(root), "--backbone", backbone,
                    "--weights", "none", "--device", "cpu", *(["--preset", preset] if preset else []), *common],
                   check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "eagle_cli", "fit-threshold", "--method", "k-sigma", *common], check=True,
                   env=env, capture_output=True)


def one_image(tmp: Path, backbone: str, threads: int, env: dict, repeats: int = 3) -> dict:
    from eagle_cli.data.synthetic import generate

    generate(tmp / "data", categories=("gravel",), n_train=30, n_test_good=1, n_test_per_defect=0)
    _fit(tmp / "data", tmp / "artifacts", backbone, env)
    single = tmp / "single" / "good"
    single.mkdir(parents=True)
    shutil.copy(tmp / "data" / "gravel" / "test" / "good" / "000.png", single)
    score = [sys.executable, "-m", "eagle_cli", "score", "--test", str(single.parent), "--device", "cpu",
             "--artifacts", str(tmp / "artifacts"), "-q", "--force"]
    baseline = [sys.executable, "-c", BASELINE.format(threads=threads, backbone=backbone)]
    eagle = statistics.median(_timed(score, env)[0] for _ in range(repeats))
    bare = statistics.median(_timed(baseline, env)[0] for _ in range(repeats))
    return {"eagle score, one image (s)": eagle, "import + build + one forward (s)": bare, "ratio": eagle / bare}


def per_image(tmp: Path, backbone: str, images: int, preset: str | None = None) -> dict:
    import torch
    import torchvision

    from eagle_cli import artifacts
    from eagle_cli.context import Context
    from eagle_cli.data import DataSource
    from eagle_cli.data.synthetic import generate
    from eagle_cli.formats.bank import open_bank
    from eagle_cli.params import ScoreParams
    from eagle_cli.stages.score import ScoreInputs, run_score

    root = tmp / "data"
    generate(root, categories=("gravel",), n_train=60, n_test_good=images // 2,
             n_test_per_defect=(images - images // 2) // 4)
    one = tmp / "one" / "good"
    one.mkdir(parents=True)
    shutil.copy(root / "gravel" / "test" / "good" / "000.png", one)
    _fit(root, tmp / "artifacts", backbone, dict(os.environ), preset)
    threshold = artifacts.latest(tmp / "artifacts", "default", "gravel", "threshold")
    context = Context(artifacts=tmp / "artifacts", force=True)
    params = ScoreParams(device="cpu")
    run_score(threshold, ScoreInputs(source=DataSource(test=one.parent), category="gravel"), params, context=context)
    start = time.perf_counter()
    run_score(threshold, ScoreInputs(source=DataSource(test=one.parent), category="gravel"), params, context=context)
    single = time.perf_counter() - start
    start = time.perf_counter()
    scored = run_score(threshold, ScoreInputs(source=DataSource(root=root), category="gravel"), params, context=context)
    many = time.perf_counter() - start
    n = scored.summary["images"]
    model = getattr(torchvision.models, backbone)().eval()
    batch = torch.randn(8, 3, 224, 224)
    with torch.inference_mode():
        model(batch)
        start = time.perf_counter()
        for _ in range(0, n, 8):
            model(batch)
        forward = (time.perf_counter() - start) / (8 * len(range(0, n, 8)))
    index = open_bank(threshold.input("bank")).index(backend="faiss", device="cpu")
    queries = torch.randn(8 * 784, index.index.d)
    start = time.perf_counter()
    for _ in range(0, n, 8):
        index.search(queries, 1)
    knn = (time.perf_counter() - start) / (8 * len(range(0, n, 8)))
    marginal = (many - single) / (n - 1)
    return {"images": n, "per further image (s)": marginal, "bare forward per image (s)": forward,
            "exact kNN per image (s)": knn, "ratio": marginal / (forward + knn)}


def memory(tmp: Path, sizes: list[int], env: dict) -> dict:
    from eagle_cli.data.synthetic import generate

    out = {}
    for size in sizes:
        root = tmp / f"data-{size}"
        generate(root, categories=("gravel",), n_train=30, n_test_good=size // 2,
                 n_test_per_defect=(size - size // 2) // 4)
        _fit(root, tmp / f"artifacts-{size}", "mobilenet_v2", env)
        score = [sys.executable, "-m", "eagle_cli", "score", "--device", "cpu", "-q",
                 "--artifacts", str(tmp / f"artifacts-{size}")]
        out[f"peak RSS, {size} test images (MB)"] = measured(score, env)[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--memory-images", default="50,2000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="Comma-separated parts to skip: one, per-image, memory.")
    parser.add_argument("--preset", help="Expert preset for the per-image part (e.g. reference).")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        parts = {}
        if "one" not in skip:
            parts["one image"] = one_image(tmp / "one", args.backbone, args.threads, env)
        if "per-image" not in skip:
            parts["per further image"] = per_image(tmp / "throughput", args.backbone, args.images, args.preset)
        if "memory" not in skip:
            parts["memory"] = memory(tmp / "memory", [int(s) for s in args.memory_images.split(",")], env)
    for part, figures in parts.items():
        print(f"{part}:")
        for name, value in figures.items():
            print(f"  {name:40} {value:.3f}" if isinstance(value, float) else f"  {name:40} {value}")


if __name__ == "__main__":
    main()
