"""Large images with small defects: the 224 px centre crop, the full frame and tiles, side by side.

    python -m benchmarks.highres [--size 1024] [--train 20] [--seeds 0] [--categories brick,tissue]

On the ``highres`` synthetic set (every defect under 0.1 % of the image, a third of them in the
border strip a centre crop cuts away), per category and seed, each mode fits its own bank and
default threshold on the same good images (MobileNetV2, ImageNet weights) and scores the same test
images: image AUROC, pixel AUROC and PRO over the whole original image (what a mode never saw
scores 0), the share of defects whose
image is flagged, and the scoring time per image (features extracted in the stage, exact kNN).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import realistic
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_threshold
from eagle_cli.stages.score import ScoreInputs, run_score

BASE = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu", feature_dtype="float16")


def modes(size: int, tile: int) -> dict[str, ExtractParams]:
    """The three ways to look at a ``size``-px image."""
    return {"crop 256→224": BASE,
            "full frame 256": replace(BASE, crop=0),
            f"tiles {tile} of {size // 2}": replace(BASE, resize=size // 2, crop=0, tile=tile, overlap=0.25)}


def one_category(root: Path, category: str, context: Context, tile: int, size: int) -> dict:
    context = replace(context, force=True)  # every figure is measured in this run
    out = {"category": category}
    source = DataSource(root=root)
    for name, extract in modes(size, tile).items():
        start = time.perf_counter()
        bank = run_fit_bank(run_extract(source, category, "train", extract, context=context),
                            BankParams(coreset_ratio=0.1), context=context)
        threshold = run_threshold(bank, CalibrationParams(), ThresholdParams(), context=context)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = run_score(threshold, ScoreInputs(source=source, category=category), ScoreParams(device="cpu"),
                           context=context)
        seconds = time.perf_counter() - start
        rows = [json.loads(line) for line in (scores.path / "scores.jsonl").read_text().splitlines()]
        defects = [r for r in rows if r["label"] == 1]  # as a user reads scores.jsonl
        out[name] = {"image_auroc": scores.summary["image_auroc"],
                     "pixel_auroc": scores.summary["pixel_auroc_original"], "pro": scores.summary["pro_original"],
                     "found": float(np.mean([r["anomalous"] for r in defects])),
                     "s_per_image": seconds / len(rows), "fit_s": fit_seconds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0", train=20, test_good=10, variation="highres", size=1024)
    parser.add_argument("--tile", type=int, default=256, help="Tile side at half the image's resolution, px.")
    args = parser.parse_args()
    rows = realistic.measure_all(args, lambda root, category, context: one_category(root, category, context,
                                                                                     args.tile, args.size))
    names = list(modes(args.size, args.tile))
    print(f"\n{args.size} px images, defects under 0.1 % of the area; {args.train} good training images")
    print("| mode | image AUROC | pixel AUROC (whole image) | PRO (whole image) | defects flagged | s / image (score) "
          "| fit s (extract + bank + threshold) |")
    print("|---|---|---|---|---|---|---|")
    keys = ("image_auroc", "pixel_auroc", "pro", "found", "s_per_image", "fit_s")
    for name in names:
        values = {key: [r[name][key] for r in rows] for key in keys}
        print(f"| {name} | " + " | ".join(f"{np.mean(values[k]):.3f} ± {np.std(values[k]):.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
