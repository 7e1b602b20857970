"""Which feature and scoring choices raise image and pixel AUROC, next to anomalib's PatchCore on the same images.

    python -m benchmarks.ablation [--seeds 0,1,2] [--categories ...] [--train 60] [--test-good 40]
        [--anomalib-python /path/to/venv/bin/python] [--json rows.jsonl] [--summarise rows.jsonl ...]

On the ``realistic`` synthetic set (pose, lighting and sensor variation between good parts, weak
defects), per category and seed, MobileNetV2 with its ImageNet weights, 256 → 224, a 10 % coreset,
for each expert:
- ``reference``: each layer's 3x3 neighbourhoods pooled to 1024 values, the layers pooled together
  to 1024 (the reference code; it stretches MobileNetV2's 32 and 96 channels to 1024 each), and the
  reference's coreset start (10 points around the centre, mean distance to them);
- ``native``: each channel's 3x3 mean, the layers concatenated at their own widths (128 values);
- ``native k-center``: the same features, the coreset started from one random point (plain
  k-center greedy, as the PatchCore paper and anomalib select);
- ``default``: eagle's defaults, native widths weighted widest / width (3 : 1 on MobileNetV2, as w3);
- ``native w1.7``, ``native w3``: native widths with the shallow layer's values weighted 1.73 or 3
  (``--layer-weights``): 1.73 gives both layers the same share of a squared distance (1.73² × 32
  channels = 96), roughly as the reference's pooling does; 3 gives the shallow layer three times
  the deep one's;
- ``layers 6+10``, ``layers 6+13+16``: the default's layout on other blocks (``--layers``): the
  default's shallow block with a less deep one (64 channels, stride 16), or with a third, deeper one
  (160 channels, stride 32), each weighted widest / width;
and, from one search of the 9 nearest bank entries of every test patch, each image score:
- ``max``: the largest patch distance (k = 1; the reference);
- ``k3``, ``k9``: a patch scores the mean of its 3 or 9 nearest squared distances;
- ``top1%``: the mean of the top 1 % of patch scores;
- ``reweight``: the PatchCore paper's reweighting of the max (9 neighbours of the nearest bank
  entry, a softmax over Euclidean distances), as anomalib computes it.
Pixel AUROC comes from ``eagle score`` for each expert. With ``--anomalib-python`` (an interpreter
of an environment where anomalib is installed) anomalib's own PatchcoreModel runs on the same images
with the same backbone weights (``benchmarks/anomalib_patchcore.py``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import realistic
from eagle_cli import metrics
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import read_features
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ScoreParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.stages.fit_threshold import run_threshold
from eagle_cli.stages.score import ScoreInputs, run_score

#: The extraction settings (beyond MobileNetV2, ImageNet, CPU) and coreset settings of each expert compared.
EXPERTS = {
    "reference": ({"pretrain_dim": 1024, "target_dim": 1024}, BankParams()),
    "native": ({"layer_weights": (1.0, 1.0)}, BankParams()),
    "native k-center": ({"layer_weights": (1.0, 1.0)}, BankParams(n_starts=1, init="random")),
    "native w1.7": ({"layer_weights": (1.73, 1.0)}, BankParams()),
    "native w3": ({"layer_weights": (3.0, 1.0)}, BankParams()),
    "default": ({}, BankParams()),
    "layers 6+10": ({"layers": ("features.6", "features.10")}, BankParams()),
    "layers 6+13+16": ({"layers": ("features.6", "features.13", "features.16")}, BankParams()),
}
SCORES = ("max", "k3", "k9", "top1%", "reweight")


def image_scores(test: torch.Tensor, index, bank: torch.Tensor) -> dict[str, np.ndarray]:
    """Every image score of test features ``(N, P, D)`` against one bank."""
    n_images, patches, dim = test.shape
    sq, rows = index.search(test.reshape(-1, dim), 9)
    sq, rows = np.maximum(sq, 0).reshape(n_images, patches, 9), rows.reshape(n_images, patches, 9)
    nearest = sq[:, :, 0]
    top = max(1, int(np.ceil(0.01 * patches)))
    out = {"max": nearest.max(1), "k3": sq[:, :, :3].mean(2).max(1), "k9": sq.mean(2).max(1),
           "top1%": np.sort(nearest, 1)[:, -top:].mean(1)}
    reweighted = []
    for image in range(n_images):
        worst = int(nearest[image].argmax())
        support = index.search(bank[rows[image, worst, 0]][None], 9)[1][0]
        distances = torch.cdist(test[image, worst][None], bank[support]).squeeze(0)
        weight = 1 - torch.softmax(distances, 0)[0]
        reweighted.append(float(weight) * float(np.sqrt(nearest[image, worst])))
    out["reweight"] = np.array(reweighted)
    return out


def one_category(root: Path, category: str, context: Context, *, experts: tuple[str, ...] = tuple(EXPERTS),
                 anomalib_python: str | None = None, threads: int = 2) -> dict:
    source = DataSource(root=root)
    row: dict = {"category": category, "image_auroc": {}, "pixel_auroc": {}, "seconds": {}}
    for layout, (extraction, bank_params) in EXPERTS.items():
        if layout not in experts:
            continue
        extract = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu", **extraction)
        start = time.perf_counter()
        bank_ref = run_fit_bank(run_extract(source, category, "train", extract, context=context), bank_params,
                                context=context)
        fit_seconds = time.perf_counter() - start
        test_ref = run_extract(source, category, "test", extract, context=context)
        test, records, _ = read_features(test_ref)
        labels = np.array([r.label for r in records])
        index = open_bank(bank_ref).index(backend="faiss", device="cpu")
        bank = open_bank(bank_ref).tensors(("bank",))["bank"]
        for name, scores in image_scores(test.float(), index, bank).items():
            row["image_auroc"][f"{layout} {name}"] = metrics.image_auroc(labels, scores)
        # Pixel AUROC does not depend on τ; k-sigma fits on any number of training images.
        threshold = run_threshold(bank_ref, CalibrationParams(), ThresholdParams("k-sigma"), context=context)
        start = time.perf_counter()
        scored = run_score(threshold, ScoreInputs(source=source, category=category), ScoreParams(device="cpu"),
                           context=context)
        row["pixel_auroc"][layout] = scored.summary["pixel_auroc"]
        row["seconds"][layout] = {"fit": fit_seconds, "score": time.perf_counter() - start}
    if anomalib_python:
        row["anomalib"] = anomalib_rows(anomalib_python, root, category, threads)[category]
    return row


def anomalib_rows(python: str, root: Path, categories: str, threads: int) -> dict[str, dict]:
    """anomalib's PatchCore on every category of ``root``, in its own interpreter."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([python, "-m", "benchmarks.anomalib_patchcore", str(root), "--categories", categories,
                           "--threads", str(threads)], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"anomalib run failed:\n{done.stderr[-3000:]}")
    return {row["category"]: row for row in map(json.loads, done.stdout.splitlines())}


def merged(rows: list[dict]) -> list[dict]:
    """Rows of the same seed and category (from runs with different --experts) as one."""
    out: dict[tuple, dict] = {}
    for row in rows:
        into = out.setdefault((row["seed"], row["category"]), {"seed": row["seed"], "category": row["category"],
                                                                "image_auroc": {}, "pixel_auroc": {}, "seconds": {}})
        for key in ("image_auroc", "pixel_auroc", "seconds"):
            into[key].update(row[key])
        if "anomalib" in row:
            into["anomalib"] = row["anomalib"]
    return list(out.values())


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def _table(rows: list[dict], title: str, columns: list[str], value) -> None:
    """One line per column: per category mean ± sd over seeds, then the mean over categories (± sd over seeds)."""
    categories = sorted({r["category"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    print(f"\n{title}, mean ± sd over seeds {seeds}")
    print("| choice | " + " | ".join(categories) + " | mean |")
    print("|---" * (len(categories) + 2) + "|")
    for column in columns:
        per_category = [[v for r in rows if r["category"] == c and (v := value(r, column)) is not None]
                        for c in categories]
        per_seed = [[v for r in rows if r["seed"] == s and (v := value(r, column)) is not None] for s in seeds]
        means = [statistics.mean(v) for v in per_seed if len(v) == len(categories)]
        print(f"| {column} | " + " | ".join(_cell(v) for v in per_category) + f" | {_cell(means)} |")


def summarise(rows: list[dict]) -> None:
    rows = merged(rows)
    experts = [name for name in EXPERTS if any(name in r["pixel_auroc"] for r in rows)]
    anomalib = ["anomalib"] if any("anomalib" in r for r in rows) else []

    def image(row: dict, column: str) -> float | None:
        return row.get("anomalib", {}).get("image_auroc") if column == "anomalib" else row["image_auroc"].get(column)

    def pixel(row: dict, column: str) -> float | None:
        return row.get("anomalib", {}).get("pixel_auroc") if column == "anomalib" else row["pixel_auroc"].get(column)

    _table(rows, "image AUROC", [f"{e} {s}" for e in experts for s in SCORES] + anomalib, image)
    _table(rows, "pixel AUROC (crop frame; eagle maps from the k = 1 patch scores)", experts + anomalib, pixel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0,1,2", train=60, test_good=40)
    parser.add_argument("--anomalib-python", help="Interpreter of an environment with anomalib, to run it alongside.")
    parser.add_argument("--experts", default=",".join(EXPERTS), help="Which of the experts to measure.")
    realistic.add_row_files(parser)
    args = parser.parse_args()
    measure = functools.partial(one_category, experts=tuple(args.experts.split(",")),
                                anomalib_python=args.anomalib_python, threads=args.threads)
    realistic.measure_or_summarise(args, measure, summarise)


if __name__ == "__main__":
    main()
