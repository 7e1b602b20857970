"""A bank that grows: adding images with update-bank against a full refit, in time and in image AUROC.

    python -m benchmarks.grow [--train 220] [--added 20] [--seeds 0] [--categories ...]

On the ``realistic`` synthetic set (MobileNetV2, ImageNet weights), per category and seed: fit a
bank on the first ``train − added`` good images, then (a) grow it with the last ``added`` images
(``run_grow_bank``: extract the new images, join the features, continue the greedy) and (b) refit
from scratch on all ``train`` images (extract all, one greedy). Both are timed in the same run, and
both banks score the same test set (exact kNN, k = 1). Thresholds are left out of both timings: the
refitted threshold costs the same either way.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

from benchmarks import realistic
from eagle_cli import metrics
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.params import BankParams, ExtractParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.grow_bank import extraction_of, run_grow_bank

EXTRACT = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu")


def _auroc(bank, test) -> float:
    return metrics.image_auroc(*realistic.labelled_scores(bank, test))


def one_category(root: Path, category: str, context: Context, added: int) -> dict:
    good = sorted((root / category / "train" / "good").iterdir())
    old, new = root / f"{category}-old", root / f"{category}-new"
    for folder, files in ((old, good[:-added]), (new, good[-added:])):
        if not folder.is_dir():
            folder.mkdir()
            for path in files:
                shutil.copy(path, folder / path.name)
    forced = replace(context, force=True)  # everything timed here is computed in this run
    parent = run_fit_bank(run_extract(DataSource(good=old).resolved(), category, "train", EXTRACT, context=forced),
                          BankParams(), context=forced)
    start = time.perf_counter()
    bank_category, extract = extraction_of(parent, EXTRACT)
    added = run_extract(DataSource(good=new).resolved(), bank_category, "train", extract, context=forced)
    grown = run_grow_bank(parent, added, context=forced)
    grow_s = time.perf_counter() - start
    start = time.perf_counter()
    everything = run_extract(DataSource(good=root / category / "train" / "good").resolved(), category, "train",
                             EXTRACT, context=forced)
    refit = run_fit_bank(everything, BankParams(), context=forced)
    refit_s = time.perf_counter() - start
    test = run_extract(DataSource(root=root).resolved(), category, "test", EXTRACT, context=context)
    return {"category": category, "grow_s": grow_s, "refit_s": refit_s, "grown_auroc": _auroc(grown, test),
            "refit_auroc": _auroc(refit, test), "parent_auroc": _auroc(parent, test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0", train=220, test_good=40)
    parser.add_argument("--added", type=int, default=20, help="How many of the training images are added last.")
    args = parser.parse_args()
    rows = realistic.measure_all(
        args, lambda root, category, context: one_category(root, category, context, args.added))
    print(f"\n{args.train - args.added} images, then {args.added} added: update-bank against a full refit")
    print("| category | seed | update-bank / refit time | image AUROC refit | grown − refit | before adding |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['category']} | {r['seed']} | {r['grow_s'] / r['refit_s']:.2f} ({r['grow_s']:.1f} / "
              f"{r['refit_s']:.1f} s) | {r['refit_auroc']:.3f} | {r['grown_auroc'] - r['refit_auroc']:+.3f} | "
              f"{r['parent_auroc']:.3f} |")
    deltas = [r["grown_auroc"] - r["refit_auroc"] for r in rows]
    ratios = [r["grow_s"] / r["refit_s"] for r in rows]
    print(f"\nworst time ratio {max(ratios):.2f} (target <= 0.25); largest |Δ AUROC| "
          f"{max(abs(d) for d in deltas):.3f} (target <= 0.01)")


if __name__ == "__main__":
    main()
