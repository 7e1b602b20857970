"""What a sharded coreset costs in quality next to the published greedy, and what it saves in time.

    python -m benchmarks.coreset [--train 240] [--shard-images 60] [--seeds 0,1] [--categories ...]

On the ``realistic`` synthetic set (MobileNetV2, ImageNet weights), per category and seed: fit the
bank with one greedy over all training images (``--coreset-shard-images 0``, the published
selection) and with the greedy run per group of ``--shard-images`` images, and compare the fit-bank
time, the covering radius (the largest distance from any training patch to its nearest bank entry,
in the full feature space) and the image AUROC on the test set (exact kNN, k = 1).
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
from eagle_cli.formats.bank import read_bank
from eagle_cli.formats.features import read_features
from eagle_cli.params import BankParams, ExtractParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank

_SEARCH_ROWS = 1 << 16


def one_category(root: Path, category: str, context: Context, shard_images: int) -> dict:
    source = DataSource(root=root)
    extract = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu")
    train = run_extract(source, category, "train", extract, context=context)
    test = run_extract(source, category, "test", extract, context=context)
    features, _, _ = read_features(train)
    flat = features.reshape(-1, features.shape[-1])
    row = {"category": category}
    for name, shards in (("greedy", 0), ("sharded", shard_images)):
        start = time.perf_counter()
        # Forced, so the fit is timed in this run even when an earlier run left the artifact.
        bank = run_fit_bank(train, BankParams(coreset_shard_images=shards), context=replace(context, force=True))
        seconds = time.perf_counter() - start
        index = read_bank(bank, backend="faiss", device="cpu")
        radius = max(float(index.search(flat[lo:lo + _SEARCH_ROWS], 1)[0].max())
                     for lo in range(0, len(flat), _SEARCH_ROWS)) ** 0.5
        row[name] = {"seconds": seconds, "radius": radius,
                     "image_auroc": metrics.image_auroc(*realistic.labelled_scores(bank, test, index))}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0,1", train=240, test_good=40)
    parser.add_argument("--shard-images", type=int, default=60)
    args = parser.parse_args()
    rows = realistic.measure_all(
        args, lambda root, category, context: one_category(root, category, context, args.shard_images))
    print(f"\n{args.train} training images, shards of {args.shard_images} images; sharded − greedy per seed")
    print("| category | image AUROC greedy | Δ AUROC | covering radius greedy | radius ratio | time ratio |")
    print("|---|---|---|---|---|---|")
    for category in dict.fromkeys(r["category"] for r in rows):
        mine = [r for r in rows if r["category"] == category]
        auroc = [r["greedy"]["image_auroc"] for r in mine]
        delta = [r["sharded"]["image_auroc"] - r["greedy"]["image_auroc"] for r in mine]
        radius = [r["greedy"]["radius"] for r in mine]
        ratio = [r["sharded"]["radius"] / r["greedy"]["radius"] for r in mine]
        speed = [r["sharded"]["seconds"] / r["greedy"]["seconds"] for r in mine]
        print(f"| {category} | {np.mean(auroc):.3f} | " + ", ".join(f"{d:+.3f}" for d in delta)
              + f" | {np.mean(radius):.2f} | {np.mean(ratio):.3f} | {np.mean(speed):.2f} |")
    deltas = [r["sharded"]["image_auroc"] - r["greedy"]["image_auroc"] for r in rows]
    print(f"\nlargest |Δ AUROC| {max(abs(d) for d in deltas):.4f}, mean Δ {np.mean(deltas):+.4f} "
          "(target: within 0.005)")


if __name__ == "__main__":
    main()
