"""What the faster coreset selection costs in quality next to the published greedy, and what it saves in time.

    python -m benchmarks.coreset [--train 240] [--bank-seeds 0,1,2] [--seeds 0] [--categories ...]
                                 [--json rows.jsonl] [--summarise rows.jsonl ...]

On the ``realistic`` synthetic set (MobileNetV2, ImageNet weights), per category, data seed and bank
seed, fit the bank with the greedy and each of ``--selections``, and compare the fit-bank time, the
covering radius (the largest distance from any training patch to its nearest bank entry, in the full
feature space) and the image AUROC:

``greedy``   one greedy over all training images with exact updates (the published selection);
``lists``    the greedy whose members update only their nearest k-means lists (``--coreset-updates lists``).

(A third selection, the greedy per group of images with the groups' members joined, lost to lists on
every set and was removed in 0.2.0; its rows, ``sharded``, are still tabulated by ``--summarise``.)

Each bank seed is another projection and other starting points: an equally valid greedy. How far the
greedy's own AUROC moves between bank seeds is the scale a difference between selections is read against,
so selections are compared by their mean over bank seeds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import realistic
from eagle_cli import metrics
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import read_features
from eagle_cli.params import BankParams, ExtractParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank

_SEARCH_ROWS = 1 << 16


def one_category(root: Path, category: str, context: Context, settings: dict[str, BankParams],
                 bank_seeds: list[int]) -> dict:
    source = DataSource(root=root)
    extract = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu")
    train = run_extract(source, category, "train", extract, context=context)
    test = run_extract(source, category, "test", extract, context=context)
    features, _, _ = read_features(train)
    flat = features.reshape(-1, features.shape[-1])
    row = {"category": category}
    for name, params in settings.items():
        row[name] = []
        for seed in bank_seeds:
            start = time.perf_counter()
            # Forced, so the fit is timed in this run even when an earlier run left the artifact.
            bank = run_fit_bank(train, replace(params, seed=seed), context=replace(context, force=True))
            seconds = time.perf_counter() - start
            index = open_bank(bank).index(backend="faiss", device="cpu")
            radius = max(float(index.search(flat[lo:lo + _SEARCH_ROWS], 1)[0].max())
                         for lo in range(0, len(flat), _SEARCH_ROWS)) ** 0.5
            row[name].append({"seconds": seconds, "radius": radius,
                              "image_auroc": metrics.image_auroc(*realistic.labelled_scores(bank, test, index))})
    return row


def _mean(rows: list[dict], name: str, key: str) -> float:
    return float(np.mean([fit[key] for r in rows for fit in r[name]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0", train=240, test_good=40)
    parser.add_argument("--bank-seeds", default="0,1,2")
    realistic.add_row_files(parser)
    args = parser.parse_args()
    settings = {"greedy": BankParams(coreset_updates="exact"), "lists": BankParams(coreset_updates="lists")}
    bank_seeds = [int(s) for s in args.bank_seeds.split(",")]
    realistic.measure_or_summarise(
        args, lambda root, category, context: one_category(root, category, context, settings, bank_seeds), summarise)


def summarise(rows: list[dict]) -> None:
    """Per category and selection, means over every bank seed and data seed of ``rows``."""
    names = [name for name in rows[0] if name not in ("seed", "category", "greedy")]
    counts = sorted({len(r["greedy"]) for r in rows})
    print(f"\n{'–'.join(map(str, counts))} bank seeds per row, data seeds {sorted({r['seed'] for r in rows})}")
    print("| category | image AUROC greedy (SD over bank seeds) | "
          + " | ".join(f"Δ AUROC {n} (SE) | radius {n} / greedy | time {n} / greedy" for n in names) + " |")
    print("|---|---|" + "---|---|---|" * len(names))
    deltas = {name: [] for name in names}
    for category in dict.fromkeys(r["category"] for r in rows):
        mine = [r for r in rows if r["category"] == category]
        greedy = _mean(mine, "greedy", "image_auroc")
        spread = np.mean([np.std([fit["image_auroc"] for fit in r["greedy"]]) for r in mine])
        cells = []
        for name in names:
            deltas[name].append(_mean(mine, name, "image_auroc") - greedy)
            ratios = [_mean(mine, name, key) / _mean(mine, "greedy", key) for key in ("radius", "seconds")]
            cells.append(f"{deltas[name][-1]:+.3f} ({_standard_error(mine, name):.3f}) | {ratios[0]:.2f} "
                         f"| {ratios[1]:.2f}")
        print(f"| {category} | {greedy:.3f} ({spread:.3f}) | " + " | ".join(cells) + " |")
    for name in names:
        print(f"{name}: mean Δ AUROC {np.mean(deltas[name]):+.4f}, categories more than 0.005 below the greedy: "
              f"{sum(d < -0.005 for d in deltas[name])} of {len(deltas[name])}")


def _standard_error(rows: list[dict], name: str) -> float:
    """Standard error of the mean AUROC difference from the greedy, over fits paired by bank seed."""
    differences = [a["image_auroc"] - b["image_auroc"] for r in rows for a, b in zip(r[name], r["greedy"], strict=True)]
    return float(np.std(differences, ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else float("nan")


if __name__ == "__main__":
    main()
