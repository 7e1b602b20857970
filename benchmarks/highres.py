"""Tiny defects on large parts, end to end: the default for large images (``--tile auto``) against a centre crop
and the whole frame resized.

    python -m benchmarks.highres [--size 1024] [--train 60] [--test-good 40] [--test-per-defect 7]
                                 [--seeds 0,1,2] [--categories brick,gravel,coins] [--modes auto,crop,full]

On the ``highres`` synthetic set (defects of 0.005–0.1 % of the image, weak to clear, a third of them in
the border strip a centre crop cuts away), per category and seed, each mode runs the stages as a user
would — extract, fit-bank, fit-threshold and score with every other setting at its default (MobileNetV2,
ImageNet weights) — on the same images. Per mode: image AUROC, pixel AUROC and PRO over the whole original
image (what a mode never saw scores 0), false alarms on the held-out good parts for the 5 % target, misses,
defects flagged in the border strip and elsewhere, and the stages' times.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import realistic
from benchmarks.calibration import bias
from benchmarks.large_parts import in_border
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.formats.calibration import calibration_scores
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams, parse_count
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_threshold
from eagle_cli.stages.score import ScoreInputs, run_score

BASE = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu", feature_dtype="float16")
MODES = {"auto": BASE, "crop": replace(BASE, tile=0), "full": replace(BASE, tile=0, resize=512, crop=0)}
NAMES = {"auto": "tiles, auto (default)", "crop": "crop 256→224", "full": "full frame at 512"}


def stages(source: DataSource, category: str, extract: ExtractParams, bank: BankParams = BankParams()
           ) -> dict[str, Callable[[dict[str, ArtifactRef], Context], ArtifactRef]]:
    """The chain as a user runs it, every setting beyond ``extract`` and ``bank`` at its default: each stage makes
    its artifact from those the stages before it ``made`` (keyed by stage)."""
    return {"extract": lambda made, context: run_extract(source, category, "train", extract, context=context),
            "fit-bank": lambda made, context: run_fit_bank(made["extract"], bank, context=context),
            "fit-threshold": lambda made, context: run_threshold(made["fit-bank"], CalibrationParams(),
                                                                 ThresholdParams(), context=context),
            "score": lambda made, context: run_score(made["fit-threshold"],
                                                     ScoreInputs(source=source, category=category),
                                                     ScoreParams(device="cpu"), context=context)}


def timed_chain(source: DataSource, category: str, extract: ExtractParams, context: Context,
                bank: BankParams = BankParams()) -> tuple[ArtifactRef, ArtifactRef, ArtifactRef, dict]:
    """Run :func:`stages` on ``category``: the features, bank and scores, and the seconds of each stage (scoring
    per test image)."""
    timed, made = {}, {}
    for name, stage in stages(source, category, extract, bank).items():
        start = time.perf_counter()
        made[name] = stage(made, context)
        timed[name] = time.perf_counter() - start
    timed["score per image"] = timed.pop("score") / made["score"].summary["images"]
    return made["extract"], made["fit-bank"], made["score"], timed


def one_category(root: Path, category: str, context: Context, size: int, modes: list[str], bank: BankParams
                 ) -> dict:
    context = replace(context, force=True)  # every figure is measured in this run
    out = {"category": category}
    source = DataSource(root=root)
    border_of = {str(sample.path): in_border(str(sample.mask), size)
                 for sample in source.resolved().scan(category, "test") if sample.mask}
    for mode in modes:
        _, _, scores, timed = timed_chain(source, category, MODES[mode], context, bank)
        rows = read_scores(scores)
        good = [r for r in rows if r.label == 0]
        defects = [r for r in rows if r.label == 1]
        found_in_border = np.array([r.anomalous for r in defects if border_of[r.path]])
        found_elsewhere = np.array([r.anomalous for r in defects if not border_of[r.path]])
        out[mode] = {"image_auroc": scores.summary["image_auroc"],
                     "pixel_auroc": scores.summary["pixel_auroc_original"], "pro": scores.summary["pro_original"],
                     "far": float(np.mean([r.anomalous for r in good])),
                     "miss": float(np.mean([not r.anomalous for r in defects])),
                     "border_found": float(found_in_border.mean()), "central_found": float(found_elsewhere.mean()),
                     "calibration_bias": calibration_bias(scores, good), "seconds": timed}
    return out


def calibration_bias(scores: ArtifactRef, good: list) -> float:
    """:func:`benchmarks.calibration.bias` of the calibration behind ``scores`` against its ``good`` test rows."""
    calibration = calibration_scores(scores.input("threshold").input("calibration"))
    return bias(calibration, np.array([r.score for r in good]))


def summarise(rows: list[dict]) -> None:
    modes = [mode for mode in MODES if mode in rows[0]]
    categories = list(dict.fromkeys(r["category"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    keys = ("image_auroc", "pixel_auroc", "pro", "far", "miss", "border_found", "central_found", "calibration_bias")
    for mode in modes:
        print(f"\n{NAMES[mode]}: per category, mean ± SD over seeds {seeds}")
        print("| category | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        for category in categories + ["mean"]:
            chosen = [r[mode] for r in rows if category in ("mean", r["category"])]
            # Rows measured before a figure existed leave it out (NaN).
            values = {k: [c.get(k, np.nan) for c in chosen] for k in keys}
            cells = [f"{np.mean(values[k]):.3f} ± {np.std(values[k]):.3f}" for k in keys]
            print(f"| {category} | " + " | ".join(cells) + " |")
        times = {k: np.mean([r[mode]["seconds"][k] for r in rows]) for k in rows[0][mode]["seconds"]}
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0,1,2", train=60, test_good=40, variation="highres", size=1024)
    parser.set_defaults(test_per_defect=7, categories="brick,gravel,coins")
    parser.add_argument("--modes", default="auto,crop,full", help=f"Some of {', '.join(MODES)}.")
    parser.add_argument("--coreset-max", default="auto", help="The bank's most entries (eagle fit-bank --coreset-max).")
    realistic.add_row_files(parser)
    args = parser.parse_args()
    modes = args.modes.split(",")
    bank = BankParams(coreset_max=parse_count(args.coreset_max))
    realistic.measure_or_summarise(
        args, lambda root, category, context: one_category(root, category, context, args.size, modes, bank), summarise)


if __name__ == "__main__":
    main()
