"""How much of a tiled calibration image's exact search its peak needs: bounds from a search in principal components.

    python -m benchmarks.peak_bounds --threshold DIR [--images 0,4,8,12,16] [--dims 32] [--refine 0.005]

``DIR`` is a ``threshold`` artifact of a tiled expert with the ``peak`` image rule. The calibration scores every
patch of every training image exactly (the other images' nearest entry), but an image's score is the peak of its
map, and the map is a weighted mean of standardised patch scores with weights that are never negative: bounds on
every patch give bounds on every pixel. For each training image asked for:

* a search of the bank's top ``--dims`` principal components (leave-own-out, as the calibration's) gives each patch
  a lower bound — a projection onto orthonormal components never lengthens a distance — and the entry it finds an
  upper bound (its exact distance);
* the peak of the map of lower bounds is a lower bound of the true peak; raised by measuring the ``--refine`` share
  of patches with the highest upper bounds exactly;
* ``hot`` is the share of patches whose upper bound reaches that lower bound of the peak (only they, and the
  patches around them, can decide the peak), ``pixels`` the share of the map's pixels whose upper bound reaches it.

Scores are leave-own-out without the refill (which only lowers some scores; the bounds would take the same
minimum), read with the expert's rule and its cell norm of all images. Times: the calibration's exact search and
the principal-component search, each over the image's patches in this process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from eagle_cli.artifacts import open_artifact
from eagle_cli.expert.anomaly_map import frame_map
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.expert.knn import BankIndex
from eagle_cli.expert.peak_calibration import principal_components
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.expert import load_expert
from eagle_cli.formats.features import read_features


def one_image(rule: ImageRule, patches: torch.Tensor, own: int, index: BankIndex, reduced: BankIndex,
              mean: np.ndarray, components: np.ndarray, refine: float) -> dict:
    """Bounds, peaks and times of one training image's ``patches``."""
    owners = np.full(len(patches), own)
    start = time.perf_counter()
    exact = index.search_leave_own_out(patches, 1, owners)[0]
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    low, found = reduced.search_leave_own_out(torch.from_numpy((patches.numpy() - mean) @ components), 1, owners)
    reduced_s = time.perf_counter() - start
    bank = torch.from_numpy(index.rows())
    high = (patches - bank[torch.as_tensor(found[:, 0])]).square_().sum(1, keepdim=True).numpy()
    values = {name: rule.values(patch_scores(d)[None])[0] for name, d in (("exact", exact), ("low", low),
                                                                            ("high", high))}

    def peak_map(v: np.ndarray) -> np.ndarray:
        return frame_map(v, rule.grid, rule.geometry, sigma_px=rule.sigma_px)

    maps = {name: peak_map(v) for name, v in values.items()}
    # The highest upper bounds measured exactly: the map of lower bounds with them is still a lower bound.
    measured = np.argsort(values["high"])[::-1][:max(1, int(refine * len(patches)))]
    mixed = values["low"].copy()
    mixed[measured] = values["exact"][measured]
    floor = float(peak_map(mixed).max())
    return {"exact s": exact_s, "reduced s": reduced_s, "peak": float(maps["exact"].max()),
            "low peak": float(maps["low"].max()), "floor": floor, "high peak": float(maps["high"].max()),
            "bounds hold": bool((maps["low"] <= maps["exact"] + 1e-4).all() and (maps["exact"] <= maps["high"] + 1e-4)
                                .all() and floor <= maps["exact"].max() + 1e-4),
            "hot": float((values["high"] >= floor).mean()), "pixels": float((maps["high"] >= floor).mean()),
            "upper exact": float(np.isclose(high[:, 0], exact[:, 0], rtol=1e-4).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", required=True, help="A threshold artifact folder (tiled, peak rule).")
    parser.add_argument("--images", default="0,4,8,12,16", help="Training images (positions).")
    parser.add_argument("--dims", type=int, default=32, help="Principal components of the bounding search.")
    parser.add_argument("--refine", type=float, default=0.005,
                        help="Share of patches (highest upper bounds) measured exactly to raise the peak's bound.")
    args = parser.parse_args()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    threshold = open_artifact(args.threshold, "threshold")
    expert = load_expert(threshold)
    stored = open_bank(threshold.input("bank"))
    features, _, grid = read_features(stored.ref.input("features"), check_finite=False)
    rule = ImageRule.of(expert.bank, expert.geometry, grid, expert.norm)
    if rule.kind != "peak":
        raise SystemExit(f"{args.threshold} scores images by {rule.kind}, not the peak of the map.")
    index = expert.index
    mean, components, share = principal_components(index.rows(), args.dims)
    reduced = BankIndex(torch.from_numpy((index.rows() - mean) @ components), torch.as_tensor(index.image_ids),
                        backend="faiss", device=torch.device("cpu"))
    images = [i for i in (int(s) for s in args.images.split(",")) if i < len(features)]
    print(f"{features.shape[1]} patches per image against {index.rows().shape[0]} entries; {args.dims} principal "
          f"components hold {share:.1%} of the bank's variance; {args.refine:.1%} of the patches measured to raise "
          "the peak's lower bound.\n")
    print("| image | exact search s | components search s | peak | lower bound: plain, refined | upper bound | "
          "bounds hold | hot patches | pixels that can peak | upper bound exact |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for image in images:
        r = one_image(rule, features[image].float(), image, index, reduced, mean, components, args.refine)
        rows.append(r)
        print(f"| {image} | {r['exact s']:.2f} | {r['reduced s']:.2f} | {r['peak']:.2f} | {r['low peak']:.2f}, "
              f"{r['floor']:.2f} | {r['high peak']:.2f} | {r['bounds hold']} | {r['hot']:.4f} | {r['pixels']:.4f} | "
              f"{r['upper exact']:.3f} |", flush=True)
    ratio = np.mean([r["reduced s"] for r in rows]) / np.mean([r["exact s"] for r in rows])
    hot, pixels = (np.mean([r[key] for r in rows]) for key in ("hot", "pixels"))
    print(f"\nmean: components search {ratio:.2f}× the exact search; hot patches {hot:.4f}, pixels {pixels:.4f}")


if __name__ == "__main__":
    main()
