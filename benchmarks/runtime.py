"""The exported runtime (onnx, openvino) against the torch path: cold start, per image, peak memory, install size.

    python -m benchmarks.runtime [--backbones mobilenet_v2,wide_resnet50_2] [--rss-images 50,2000] [--install]

On realistic coins parts (256 px, 20 good training images, default settings but a 10 % target), each backbone
is fitted and exported once (WideResNet-50 with untrained weights where its ImageNet file is not cached: the
arithmetic, and so the time, is the same). Then, each in a fresh process, as a line PC would run it:
  cold    load the expert and score one image, from the interpreter's start (median of 3 processes);
  image   each further image scored alone, as parts arrive one by one (mean of 20);
  RSS     peak resident memory of `eagle score --test DIR` over 50 and 2,000 images (MobileNetV2).
Each runtime's figure is printed with its ratio to the torch path's, measured in the same run. --install builds a
fresh virtual environment with `pip install '.[runtime]'` and compares its size with torch's own installation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: One process: load the expert, score one image (the cold time is the process's), then images one by one.
_SCORE = """
import json, sys, time
from pathlib import Path
from PIL import Image
runtime, expert_path, images = sys.argv[1], sys.argv[2], sorted(Path(sys.argv[3]).rglob("*.png"))
if runtime == "torch":
    import torch
    torch.set_num_threads(2)
    from eagle_cli import load_expert
    expert = load_expert(expert_path)
else:
    from eagle_cli.export.runtime import ExportedExpert
    expert = ExportedExpert.load(expert_path)
expert.score([Image.open(images[0])])
print(json.dumps({"first_done": time.time()}), flush=True)
started = time.perf_counter()
for path in images[1:21]:
    expert.score([Image.open(path)])
print(json.dumps({"per_image": (time.perf_counter() - started) / len(images[1:21])}))
"""

#: One process: run a command and print the peak RSS (MB) of its children.
_PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def _eagle(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "eagle_cli", *args, "-q"], check=True, cwd=cwd)


def _cold_and_per_image(runtime: str, expert: Path, images: Path) -> tuple[float, float]:
    colds, per_image = [], None
    for _ in range(3):
        started = time.time()
        run = subprocess.run([sys.executable, "-c", _SCORE, runtime, str(expert), str(images)], check=True,
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        colds.append(lines[0]["first_done"] - started)
        per_image = lines[1]["per_image"]
    return statistics.median(colds), per_image


def _peak_rss(args: list[str], cwd: Path) -> float:
    run = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "eagle_cli", *args, "-q", "--force"],
                         check=True, capture_output=True, text=True, cwd=cwd)
    return float(run.stdout.strip())


def _installed_mb(names: list[str]) -> float:
    total = 0
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower()
        if any(name == n or name.startswith(n) for n in names):
            total += sum((dist.locate_file(f).stat().st_size for f in dist.files or [] if dist.locate_file(f).exists()))
    return total / 1e6


def _install_sizes(work: Path) -> tuple[float, float]:
    """(MB of a fresh venv's site-packages after pip install '.[runtime]', MB of torch's own installation here)."""
    venv = work / "runtime-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"{ROOT}[runtime]"], check=True)
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is None)"], check=True, capture_output=True, text=True)
    assert check.stdout.strip() == "True", "torch was installed into the runtime venv"
    site = next((venv / "lib").glob("python*/site-packages"))
    runtime_mb = sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 1e6
    return runtime_mb, _installed_mb(["torch", "torchvision", "nvidia-", "triton"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="mobilenet_v2,wide_resnet50_2")
    parser.add_argument("--rss-images", default="50,2000", help="Test-set sizes for the peak memory (0: skip).")
    parser.add_argument("--runtimes", default="onnx,openvino")
    parser.add_argument("--install", action="store_true", help="Also build the runtime venv and compare sizes.")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    rss_sizes = [int(n) for n in args.rss_images.split(",") if int(n)]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        _eagle("data", "synth", "data", "--variation", "realistic", "--category", "coins", "--train", "20",
               "--test-good", str(max([25, *rss_sizes])), "--test-per-defect", "1", "--size", "256", cwd=work)
        test = work / "data" / "coins" / "test"
        print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}\n")
        print("| backbone | runtime | cold, s | ratio | per image, ms | ratio |\n|---|---|---|---|---|---|")
        for backbone in args.backbones.split(","):
            weights = "imagenet" if backbone == "mobilenet_v2" else "none"
            run = f"r-{backbone}"
            common = ["--artifacts", "artifacts", "--run", run, "--category", "coins"]
            _eagle("fit-bank", "--data", "data", "--backbone", backbone, "--weights", weights, *common, cwd=work)
            _eagle("fit-threshold", "--target-far", "0.1", *common, cwd=work)
            threshold = next((work / "artifacts" / run / "coins" / "threshold").iterdir())
            for runtime in runtimes:
                _eagle("export", "--format", runtime, "--out", f"exports/{backbone}-{runtime}", *common, cwd=work)
            cold_torch, image_torch = _cold_and_per_image("torch", threshold, test)
            print(f"| {backbone} | torch | {cold_torch:.2f} | 1 | {image_torch * 1e3:.0f} | 1 |")
            for runtime in runtimes:
                cold, image = _cold_and_per_image(runtime, work / "exports" / f"{backbone}-{runtime}" / "coins", test)
                print(f"| {backbone} | {runtime} | {cold:.2f} | {cold / cold_torch:.2f} | {image * 1e3:.0f} | "
                      f"{image / image_torch:.2f} |", flush=True)
        if rss_sizes:
            print("\n| runtime | test images | peak RSS, MB | ratio to torch |\n|---|---|---|---|")
            run = ["--artifacts", "artifacts", "--run", "r-mobilenet_v2", "--category", "coins"]
            for size in rss_sizes:
                folder = work / f"test-{size}" / "good"
                folder.mkdir(parents=True)
                for path in sorted((test / "good").glob("*.png"))[:size]:
                    os.link(path, folder / path.name)
                torch_mb = _peak_rss(["score", "--test", str(folder.parent), *run], work)
                print(f"| torch | {size} | {torch_mb:.0f} | 1 |")
                for runtime in runtimes:
                    mb = _peak_rss(["score", "--test", str(folder.parent), "--runtime", runtime, "--export",
                                    f"exports/mobilenet_v2-{runtime}", *run], work)
                    print(f"| {runtime} | {size} | {mb:.0f} | {mb / torch_mb:.2f} |", flush=True)
        if args.install:
            runtime_mb, torch_mb = _install_sizes(work)
            print(f"\nruntime venv (pip install '.[runtime]', no torch): {runtime_mb:.0f} MB; torch's own installation "
                  f"here (torch, torchvision, nvidia-*, triton): {torch_mb:.0f} MB; ratio {runtime_mb / torch_mb:.3f}")


if __name__ == "__main__":
    main()
