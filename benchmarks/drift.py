"""The drift watch on simulated lines: how often it fires on an unchanged line, how soon after a change.

    python -m benchmarks.drift [--categories coins,brick] [--pool 2000] [--streams 200]

Per category of the realistic generator (pose, lighting and noise vary between good parts), an expert is fitted
on 60 good parts (MobileNetV2 ImageNet, defaults, 256 px) with its calibration; then --pool further good parts
are scored as they are and under each change: the lighting gain down 15 %, focus blur (Gaussian, 1.5 px), and
for an object the part shifted 5 px. A stream is the pool in a random order (each part once, so it is
exchangeable with the calibration when nothing changes); a changed stream shows parts as they are up to part
500 and changed from part 501. For each of --streams streams: does the alarm (δ = 0.01) fire before the change,
and how many parts after it? The same pools serve every stream, so the spread is over orders, not over pools.
The last column is the promise itself: the share of the pool's good parts, as they are or changed, at or above τ.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from eagle_cli import Expert
from eagle_cli.data.synthetic import generate
from eagle_cli.drift import DriftWatch
from eagle_cli.params import ExtractParams

CHANGE_AT, WITHIN = 500, 300
OBJECTS = {"coins", "washer"}


def _gain(image: Image.Image) -> Image.Image:
    return Image.fromarray((np.asarray(image, dtype=np.float32) * 0.85).round().astype(np.uint8))


def _blur(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(1.5))


def _shift(image: Image.Image) -> Image.Image:
    """The part moved 5 px right and down; the uncovered edge repeats the border, as a fixture's background."""
    array = np.asarray(image)
    return Image.fromarray(np.pad(array, ((5, 0), (5, 0), (0, 0)), mode="edge")[:array.shape[0], :array.shape[1]])


CHANGES = {"none": None, "lighting gain -15 %": _gain, "focus blur 1.5 px": _blur, "shift 5 px": _shift}


def _scores(expert: Expert, paths: list[Path], change) -> np.ndarray:
    out = []
    for start in range(0, len(paths), 16):
        images = [Image.open(path).convert("RGB") for path in paths[start:start + 16]]
        out.append(expert.score([change(image) if change else image for image in images]).scores)
    return np.concatenate(out)


def _first_alarm(calibration: np.ndarray, stream: np.ndarray, seed: int) -> int | None:
    watch = DriftWatch(calibration, seed=seed)
    for score in stream:
        watch.update(float(score))
        if watch.alarm_at is not None:
            return watch.alarm_at
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", default="coins,brick")
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"| category | change | streams | alarm before the change | fired within {WITHIN} after | median parts "
          f"after | mean score shift (SD of good) | good parts ≥ τ (target 5 %) |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for category in args.categories.split(","):
            root = Path(work) / category
            generate(root, categories=(category,), variation="realistic", n_train=60, n_test_good=args.pool,
                     n_test_per_defect=1, size=256, seed=7)
            good = sorted((root / category / "train" / "good").glob("*.png"))
            expert = Expert.fit([Image.open(path) for path in good], extract=ExtractParams(backbone="mobilenet_v2",
                                device="cpu"), category=category)
            pool = sorted((root / category / "test" / "good").glob("*.png"))
            base = _scores(expert, pool, None)
            for name, change in CHANGES.items():
                if name == "shift 5 px" and category not in OBJECTS:
                    continue  # a texture shifted is the same texture
                changed = base if change is None else _scores(expert, pool, change)
                early, delays = 0, []
                for seed in range(args.streams):
                    order = np.random.default_rng(seed).permutation(len(pool))
                    stream = np.where(np.arange(len(pool)) < CHANGE_AT, base[order], changed[order])
                    alarm = _first_alarm(expert.calibration_scores, stream, seed)
                    if alarm is not None and (change is None or alarm <= CHANGE_AT):
                        early += 1
                    elif alarm is not None:
                        delays.append(alarm - CHANGE_AT)
                within = "—" if change is None else f"{sum(d <= WITHIN for d in delays) / args.streams:.0%}"
                median = "—" if not delays else f"{np.median(delays):.0f}"
                shift = (changed.mean() - base.mean()) / base.std()
                print(f"| {category} | {name} | {args.streams} | {early / args.streams:.1%} | {within} | {median} | "
                      f"{shift:+.2f} | {np.mean(changed >= expert.tau):.1%} |", flush=True)


if __name__ == "__main__":
    main()
