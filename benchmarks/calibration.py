"""How well each calibration estimator predicts the scores of good images the expert has never seen.

    python -m benchmarks.calibration [--seeds 0,1,2] [--categories ...] [--train 60] [--test-good 100]

On the ``realistic`` synthetic set (pose, lighting and sensor variation between good parts, weak
defects), per category and seed: extract train and test features (MobileNetV2, ImageNet weights),
fit the default bank, compute every estimator's calibration scores, and compare them with the
scores of held-out good test images: the bias of the mean in units of the good-test std, the
observed false-alarm rate and miss rate of the conformal threshold at --target-far and of k-sigma,
and their balanced accuracy against the label oracle (the best threshold chosen with test labels).
Each estimator's time is given as a ratio to the extract time of the same training images,
measured in the same run. ``leave-own-out`` and ``cross-fit-K`` are the experiments of
``benchmarks/estimators.py``, which lost to refill here.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks import estimators as experiments
from benchmarks import realistic
from eagle_cli import metrics
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.expert import calibration as cal
from eagle_cli.expert.coreset import Coreset
from eagle_cli.expert.image_rule import scored_top_mean
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import read_features
from eagle_cli.params import BankParams, ExtractParams, ThresholdParams
from eagle_cli.seeds import category_seed
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.threshold import conformal_rank, fitted_tau

ESTIMATORS = ("reference", "leave-own-out", "refill", "cross-fit-5")
#: The reference code's other threshold methods, at its defaults.
OTHER_METHODS = {"quantile 99": ThresholdParams("quantile"), "mad 3": ThresholdParams("mad"),
                 "mad 3 (consistent)": ThresholdParams("mad", mad_consistency=True), "evt 0.99": ThresholdParams("evt")}


def balanced_accuracy(good: np.ndarray, bad: np.ndarray, tau: float) -> float:
    return 0.5 * (np.mean(good < tau) + np.mean(bad >= tau))


def bias(calibration: np.ndarray, good: np.ndarray) -> float:
    """How far the calibration scores' mean sits above the good test images', in good-test standard deviations:
    above 0, τ is conservative."""
    return float((calibration.mean() - good.mean()) / good.std())


def oracle(good: np.ndarray, bad: np.ndarray) -> float:
    candidates = np.concatenate([good, bad, [np.inf]])
    return max(balanced_accuracy(good, bad, t) for t in candidates)


def estimate(name: str, category: str, features, index, cover: Coreset, bank_params: BankParams
             ) -> tuple[np.ndarray, float]:
    n_images, patches, _ = features.shape
    images = np.arange(n_images)
    start = time.perf_counter()
    quiet = lambda n: None  # noqa: E731
    if name == "reference":
        selected = torch.zeros(n_images * patches, dtype=torch.bool)
        selected[cover.selected] = True
        result = cal.reference_scores(features, index, ~selected.reshape(n_images, patches), images,
                                      knn_k=bank_params.knn_k, min_unselected=32, progress=quiet)
    elif name == "leave-own-out":
        result = experiments.leave_own_out_scores(features, index, images, knn_k=bank_params.knn_k, progress=quiet)
    elif name == "refill":
        seed = category_seed(bank_params.seed, category)
        result = cal.refill_scores(features, index, cover, images, knn_k=bank_params.knn_k,
                                   proj_dim=bank_params.proj_dim, generator=torch.Generator().manual_seed(seed),
                                   neighbours=32, progress=quiet)
    else:
        folds = int(name.rsplit("-", 1)[1])
        result, _ = experiments.cross_fit_scores(features, images, folds=folds, coreset=bank_params, seed=7,
                                                 progress=quiet)
    scores = scored_top_mean(result.per_patch, bank_params.image_top)
    return scores[np.isfinite(scores)], time.perf_counter() - start


def one_category(root: Path, category: str, context: Context, extract: ExtractParams, targets: list[float],
                 estimators: tuple[str, ...]) -> dict:
    source = DataSource(root=root)
    start = time.perf_counter()
    # Forced, so the extract time is measured in this run even when the artifact exists.
    train = run_extract(source, category, "train", extract, context=replace(context, force=True))
    extract_seconds = time.perf_counter() - start
    test = run_extract(source, category, "test", extract, context=context)
    bank = run_fit_bank(train, BankParams(), context=context)
    bank_params = open_bank(bank).params  # as fitted: its automatic settings decided
    cover = open_bank(bank).coreset()
    index = open_bank(bank).index(backend="faiss", device="cpu")
    features, _, _ = read_features(train)
    labels, test_scores = realistic.labelled_scores(bank, test, index)
    good, bad = test_scores[labels == 0], test_scores[labels == 1]
    out = {"category": category, "extract_s": extract_seconds, "good_mean": float(good.mean()),
           "good_std": float(good.std()), "oracle": oracle(good, bad), "estimators": {},
           "image_auroc": metrics.image_auroc(labels, test_scores)}
    for name in estimators:
        scores, seconds = estimate(name, category, features, index, cover, bank_params)
        taus = {f"conformal {t:g}": np.sort(scores)[conformal_rank(len(scores), t) - 1] for t in targets}
        taus["k-sigma"] = fitted_tau(scores, ThresholdParams("k-sigma"))
        for rule, method in OTHER_METHODS.items():
            taus[rule] = fitted_tau(scores, method)
        out["estimators"][name] = {
            "seconds": seconds, "cost": seconds / extract_seconds,
            "bias": bias(scores, good),
            "std_ratio": float(scores.std() / good.std()),
            **{rule: {"far": float(np.mean(good >= tau)), "miss": float(np.mean(bad < tau)),
                      "bal_acc": balanced_accuracy(good, bad, tau)} for rule, tau in taus.items()},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0,1,2", train=60, test_good=100)
    parser.add_argument("--targets", default="0.02,0.05,0.1", help="False-alarm targets of the conformal threshold.")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--json", type=Path, help="Also write every figure to this file.")
    parser.add_argument("--summarise", type=Path, nargs="+", help="Only print the tables of earlier --json files.")
    args = parser.parse_args()
    if args.summarise:
        summarise([row for path in args.summarise for row in json.loads(path.read_text())])
        return
    extract = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu")
    estimators = tuple(args.estimators.split(","))
    targets = [float(t) for t in args.targets.split(",")]
    results = realistic.measure_all(
        args, lambda root, category, context: one_category(root, category, context, extract, targets, estimators))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    summarise(results)


def summarise(results: list[dict]) -> None:
    """Markdown tables: per category, the mean (± std) over seeds of each figure."""
    categories = list(dict.fromkeys(r["category"] for r in results))
    estimators = list(dict.fromkeys(name for r in results for name in r["estimators"]))
    first = results[0]["estimators"][estimators[0]]
    rules = [key for key, value in first.items() if isinstance(value, dict)]

    def rows_of(category, name):
        return [r for r in results if r["category"] == category and name in r["estimators"]]

    def cell(values, fmt="+.2f"):
        values = np.asarray(values, dtype=float)
        return f"{values.mean():{fmt}} ± {values.std():.2f}" if len(values) > 1 else f"{values.mean():{fmt}}"

    seeds = sorted({r["seed"] for r in results})
    print(f"\nseeds {seeds}; image AUROC: " + ", ".join(
        f"{c} {np.mean([r['image_auroc'] for r in results if r['category'] == c]):.3f}" for c in categories))
    for key, title in (("bias", "bias of the calibration mean, in good-test standard deviations"),
                       ("std_ratio", "calibration spread / good-test spread")):
        print(f"\n{title} (mean ± std over seeds)")
        print("| estimator | " + " | ".join(categories) + " | cost / extract |")
        print("|---|" + "---|" * (len(categories) + 1))
        for name in estimators:
            cells = [cell([r["estimators"][name][key] for r in rows_of(c, name)], "+.2f" if key == "bias" else ".2f")
                     for c in categories]
            cost = np.mean([r["estimators"][name]["cost"] for r in results if name in r["estimators"]])
            print(f"| {name} | " + " | ".join(cells) + f" | {cost:.2f} |")
    for rule in rules:
        print(f"\n{rule}: false alarms / misses / balanced accuracy − oracle, in points (mean over seeds)")
        print("| estimator | " + " | ".join(categories) + " | worst false alarms | mean gap to oracle |")
        print("|---|" + "---|" * (len(categories) + 2))
        for name in estimators:
            cells, gaps, fars = [], [], []
            for c in categories:
                rows = rows_of(c, name)
                far = 100 * np.mean([r["estimators"][name][rule]["far"] for r in rows])
                miss = 100 * np.mean([r["estimators"][name][rule]["miss"] for r in rows])
                gap = 100 * np.mean([r["estimators"][name][rule]["bal_acc"] - r["oracle"] for r in rows])
                gaps.append(gap)
                fars.append(far)
                cells.append(f"{far:.0f} / {miss:.0f} / {gap:+.1f}")
            print(f"| {name} | " + " | ".join(cells) + f" | {max(fars):.0f} | {np.mean(gaps):+.1f} |")


if __name__ == "__main__":
    main()
