"""Tiny defects on large parts: how each image rule and calibration reads a tiled frame's patch scores.

    python -m benchmarks.large_parts [--size 1024] [--train 60] [--test-good 40] [--test-per-defect 7]
                                     [--seeds 0] [--categories brick,gravel,coins] [--ratio 0.01]

On the ``highres`` synthetic set (defects of 0.005–0.1 % of the image, weak to clear, a third in the
border strip), per category and seed: the training images are extracted in tiles of the backbone's
native input at the image's own resolution (MobileNetV2, ImageNet weights), the bank is fitted with
list updates, every training image is calibrated (refill) and every test image searched once; then
each image rule is read off the same patch scores — the calibration's and the test images' — so the
rules are compared on identical evidence. Per rule: image AUROC, the conformal 5 % threshold's false
alarms on held-out good parts and misses, defects flagged in the border strip and elsewhere, and the
calibration's bias against the good test images (in their standard deviations). Times are ratios to
the tiles' extraction time measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import realistic
from eagle_cli import metrics
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.images import load_mask
from eagle_cli.expert.anomaly_map import frame_map
from eagle_cli.expert.calibration import calibrate
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import features_info, read_features
from eagle_cli.lineage import Lineage
from eagle_cli.params import BankParams, CalibrationParams, ExtractParams, ThresholdParams
from eagle_cli.stages.extract import run_extract
from eagle_cli.stages.fit_bank import run_fit_bank
from eagle_cli.threshold import fitted_tau


def rules(geometry: Geometry, grid: tuple[int, int]) -> dict:
    """Image rules, each ``calibrated(calibration patch scores (m, P))`` → (calibration scores, the rule fitted),
    then ``score(rule, test patch scores (B, P))`` → image scores."""
    def rule(norm_step=1, **settings):
        fresh = ImageRule.of(BankParams(**settings), geometry, grid)
        return lambda pp: fresh.calibrated(pp, norm_step), lambda fitted, pp: fitted.scores(fitted.values(pp))

    def raw_peak(sigma):
        peak = lambda pp: np.array([frame_map(p, grid, geometry, sigma_px=sigma).max() for p in pp])  # noqa: E731
        return lambda pp: (peak(pp), None), lambda _, pp: peak(pp)

    percent = max(1, len(geometry.tile_offsets()) * grid[0] * grid[1] // 100)
    return {"top-8 mean": rule(image_score="top-mean", image_top=8),
            "highest patch": rule(image_score="top-mean", image_top=1),
            "top-1% mean": rule(image_score="top-mean", image_top=percent),
            "map peak σ4 (raw)": raw_peak(4.0), "map peak σ8 (raw)": raw_peak(8.0),
            "peak (per cell), σ4": rule(image_score="peak", peak_sigma_px=4.0),
            "peak (per cell), σ8": rule(image_score="peak", peak_sigma_px=8.0),
            # The default since the calibration bounds the peaks: the norm needs only these tiles searched exactly.
            "peak (per cell), σ4, norm of ⅛ of the tiles": rule(image_score="peak", peak_sigma_px=4.0, norm_step=8)}


def in_border(mask_path: str | None, size: int) -> bool | None:
    """Whether a defect lies in the outer strip a 256 → 224 centre crop cuts away (6.25 % of each side)."""
    if not mask_path:
        return None
    ys, xs = np.nonzero(load_mask(Path(mask_path), (size, size)))
    edge = size * 0.0625
    return bool(min(xs.mean(), ys.mean(), size - xs.mean(), size - ys.mean()) < edge)


def one_category(root: Path, category: str, context: Context, size: int, ratio: float, tile: int,
                 overlap: float, updates: str, keep: Path | None = None) -> dict:
    """Measure one category; ``keep``: an ``.npz`` file the patch scores are also written to."""
    source = DataSource(root=root)
    extract = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu", resize=size, crop=0, tile=tile,
                            overlap=overlap, feature_dtype="float16")
    timed = {}
    start = time.perf_counter()
    train = run_extract(source, category, "train", extract, context=context)
    timed["extract"] = time.perf_counter() - start
    test = run_extract(source, category, "test", extract, context=context)
    bank_params = BankParams(coreset_ratio=ratio, coreset_updates=updates)
    start = time.perf_counter()
    bank_ref = run_fit_bank(train, bank_params, context=context)
    timed["fit-bank"] = time.perf_counter() - start
    bank = open_bank(bank_ref)
    info = features_info(train)
    geometry = Geometry.of(Lineage.from_dict(train.lineage))
    features, _, grid = read_features(train, check_finite=False)
    patches = features.shape[1]
    index = bank.index(backend="faiss", device="cpu")
    start = time.perf_counter()
    train_patches = calibrate(features, index, bank.coreset(), bank.params, CalibrationParams(calibration_images=0),
                              seed=bank.seed, progress=lambda n=1: None).per_patch
    timed["calibration"] = time.perf_counter() - start
    test_features, records, _ = read_features(test, check_finite=False)
    start = time.perf_counter()
    dist, _ = index.search(test_features.reshape(-1, test_features.shape[-1]).float(), bank.params.knn_k)
    timed["test search"] = time.perf_counter() - start
    test_patches = patch_scores(dist).reshape(len(records), patches)
    labels = np.array([r.label for r in records])
    border = np.array([in_border(r.mask, size) if r.label else False for r in records])
    if keep:
        np.savez_compressed(keep, train=train_patches, test=test_patches, labels=labels, border=border,
                            bank=bank.size, grid=np.array(grid),
                            geometry=np.array([geometry.resize, geometry.crop, geometry.tile, geometry.overlap]))
    out = {"category": category, "images": info.n_images, "patches": patches, "bank": bank.size,
           "seconds": timed, "rules": evaluate(rules(geometry, grid), train_patches, test_patches, labels, border)}
    return out


def evaluate(named: dict, train_patches: np.ndarray, test_patches: np.ndarray, labels: np.ndarray,
             border: np.ndarray) -> dict:
    """Each rule's figures on the same patch scores."""
    out = {}
    for name, (calibrated, score) in named.items():
        calibration, fitted = calibrated(train_patches)
        scores = score(fitted, test_patches)
        tau = fitted_tau(calibration, ThresholdParams(target_far=0.05))
        good, bad = scores[labels == 0], scores[labels == 1]
        flagged = scores >= tau
        out[name] = {
            "image_auroc": metrics.image_auroc(labels, scores), "far": float(np.mean(good >= tau)),
            "miss": float(np.mean(bad < tau)),
            "border_found": float(np.mean(flagged[(labels == 1) & border])) if (border & (labels == 1)).any()
            else None,
            "central_found": float(np.mean(flagged[(labels == 1) & ~border])),
            "bias": float((calibration.mean() - good.mean()) / good.std()),
            "calibration_vs_good_auroc": metrics.image_auroc(
                np.r_[np.zeros(len(calibration)), np.ones(len(good))], np.r_[calibration, good])}
    return out


def rescored(path: Path) -> dict:
    """A row of the rules' figures from the patch scores a ``--keep`` run wrote to ``path``."""
    kept = np.load(path)
    resize, crop, tile, overlap = kept["geometry"]
    geometry, grid = Geometry(int(resize), int(crop), int(tile), float(overlap)), tuple(int(g) for g in kept["grid"])
    seed, category = path.stem.split("-")[2], path.stem.rsplit("-", 1)[1]
    return {"seed": int(seed), "category": category, "images": len(kept["train"]), "patches": kept["train"].shape[1],
            "bank": int(kept["bank"]), "seconds": {},
            "rules": evaluate(rules(geometry, grid), kept["train"], kept["test"], kept["labels"], kept["border"])}


def summarise(rows: list[dict]) -> None:
    names = list(rows[0]["rules"])
    categories = list(dict.fromkeys(r["category"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    first = rows[0]
    print(f"\nseeds {seeds}; {first['patches']} patches per image, bank {first['bank']} of "
          f"{first['images'] * first['patches']}")
    keys = ("image_auroc", "far", "miss", "border_found", "central_found", "bias", "calibration_vs_good_auroc")
    for key in keys:
        print(f"\n{key} (mean over seeds)")
        print("| rule | " + " | ".join(categories) + " | mean |")
        print("|---|" + "---|" * (len(categories) + 1))
        for name in names:
            per = [np.mean([r["rules"][name][key] for r in rows if r["category"] == c
                            and r["rules"][name][key] is not None] or [np.nan]) for c in categories]
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in per) + f" | {np.nanmean(per):.3f} |")
    if not first["seconds"]:
        return
    print("\ntimes / extract: " + ", ".join(
        f"{k} {np.mean([r['seconds'][k] / r['seconds']['extract'] for r in rows]):.2f}" for k in first["seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    realistic.add_arguments(parser, seeds="0", train=60, test_good=40, variation="highres", size=1024)
    parser.set_defaults(test_per_defect=7, categories="brick,gravel,coins")
    parser.add_argument("--ratio", type=float, default=0.01, help="Coreset ratio.")
    parser.add_argument("--tile", type=int, default=224)
    parser.add_argument("--overlap", type=float, default=0.1)
    parser.add_argument("--updates", default="lists", help="The coreset's updates: exact or lists.")
    parser.add_argument("--keep", type=Path, help="A folder the patch scores are kept in, one .npz per run.")
    parser.add_argument("--rescore", type=Path, help="Only read the rules again off the patch scores a --keep run "
                        "left in this folder.")
    realistic.add_row_files(parser)
    args = parser.parse_args()
    if args.rescore:
        summarise([rescored(path) for path in sorted(args.rescore.glob("*.npz"))])
        return
    realistic.measure_or_summarise(
        args, lambda root, category, context: one_category(
            root, category, context, args.size, args.ratio, args.tile, args.overlap, args.updates,
            args.keep and args.keep / f"{root.name}-{category}.npz"), summarise)


if __name__ == "__main__":
    main()
