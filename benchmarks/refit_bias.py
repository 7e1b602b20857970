"""Why a tiled calibration sits above new good parts: a training image scored against the bank without its
entries, with the refill (the calibration's estimate), and against a bank refitted without the image (a jackknife).

    python -m benchmarks.refit_bias --scores DIR [--images 0,10,20,30,40,50] [--quantiles 0.999,0.99]

``DIR`` is a ``scores`` artifact of a category's test images (good ones among them), scored by the chain as
fitted. For each training image asked for: its score against the bank with its own entries left out, with the
refill as eagle's calibration computes it (``expert/calibration.py``'s ``Refill``: the orphans its entries
covered, farthest-first until each lies within the bank's covering radius — the largest cover distance), with
the refill run to each ``--quantiles`` quantile of the cover distances instead (a tighter cover, more entries),
its score against a bank fitted anew on the other training images with the same settings and seed, and how many
of the refitted bank's entries the fitted bank also holds. All are read with the fitted expert's image rule (for
``peak``, the calibration's cell norm of all images), so they differ only in the bank. The summary gives each
estimate's mean as a bias in standard deviations of the good test images' scores (above 0: a conservative τ), as
``benchmarks/calibration.py`` measures it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.calibration import bias
from eagle_cli.artifacts import open_artifact
from eagle_cli.expert.bank import fit_bank
from eagle_cli.expert.calibration import Refill
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.expert.knn import nearest_rows
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.expert import load_expert
from eagle_cli.formats.features import read_features
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import CalibrationParams


def image_score(rule: ImageRule, dist: np.ndarray) -> float:
    """The image score of one image's squared distances to its nearest entries ``(P, k)``."""
    return float(rule.scores(rule.values(patch_scores(dist)[None]))[0])


def refilled(refill: Refill, position: int, points: torch.Tensor, dist: np.ndarray, radius: float) -> np.ndarray:
    """``dist``, the squared distances of ``points`` (image ``refill.images[position]``'s patches) to their k nearest
    entries of other images, with the image's refill among them, run until every orphan lies within ``radius``."""
    refill.radius = radius
    entries = refill.entries(position)
    if entries is None:
        return dist
    found = nearest_rows(points, entries, dist.shape[1])[0]
    return np.sort(np.concatenate([dist, found], axis=1), axis=1)[:, :dist.shape[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scores", required=True, help="A scores artifact folder.")
    parser.add_argument("--images", default="0,10,20,30,40,50", help="Training images (positions) to refit without.")
    parser.add_argument("--quantiles", default="", help="Cover-distance quantiles to refill to, besides the largest "
                                                         "(comma-separated, e.g. 0.999,0.99).")
    args = parser.parse_args()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    scores = open_artifact(args.scores, "scores")
    threshold = scores.input("threshold")
    expert = load_expert(threshold)
    stored = open_bank(threshold.input("bank"))
    features, _, grid = read_features(stored.ref.input("features"), check_finite=False)
    rule = ImageRule.of(expert.bank, expert.geometry, grid, expert.norm)
    k = expert.bank.knn_k
    coreset = stored.coreset()
    held = coreset.selected.numpy()
    n_images, patches, _ = features.shape
    good = np.array([row.score for row in read_scores(scores) if row.label == 0])
    images = [i for i in (int(s) for s in args.images.split(",")) if i < n_images]
    quantiles = [1.0, *(float(q) for q in args.quantiles.split(",") if q)]
    refills = ["refill (eagle's)", *(f"refill to the {q} quantile" for q in quantiles[1:])]
    print(f"| training image | own entries left out | {' | '.join(refills)} | bank refitted without it "
          "| refitted entries also in the fitted bank |")
    print("|---" * (4 + len(refills)) + "|")
    # The calibration's refill of these images; with no bounds given, settling searches every orphan, so each radius
    # below reads the same exact orphan distances.
    refill = Refill(features, expert.index, coreset, np.array(images), proj_dim=stored.params.proj_dim,
                    generator=torch.Generator().manual_seed(stored.seed),
                    neighbours=CalibrationParams().extra_neighbours)
    refill.settle()
    radii = np.quantile(coreset.cover_sq_dist.numpy(), quantiles)  # the quantile 1 is the refill's own radius
    own_out, refitted, refill_scores = [], [], [[] for _ in quantiles]
    for position, image in enumerate(images):
        own = features[image].float()
        # The calibration's own search: the k nearest entries of other images.
        dist = expert.index.search_leave_own_out(own, k, np.full(patches, image))[0]
        own_out.append(image_score(rule, dist))
        for column, radius in zip(refill_scores, radii, strict=True):
            column.append(image_score(rule, refilled(refill, position, own, dist, float(radius))))
        others = torch.as_tensor([i for i in range(n_images) if i != image])
        refit = fit_bank(features[others], expert.bank, seed=stored.seed)
        refitted.append(image_score(rule, refit.index(backend="faiss").search(own, k)[0]))
        # The refitted bank's entries as places among all training patches, to compare with the fitted bank's.
        selected = refit.coreset.selected.numpy()
        places = others.numpy()[selected // patches] * patches + selected % patches
        shared = float(np.isin(places, held).mean())
        refill_cells = " | ".join(f"{column[-1]:.3f}" for column in refill_scores)
        print(f"| {image} | {own_out[-1]:.3f} | {refill_cells} | {refitted[-1]:.3f} | {shared:.2f} |", flush=True)
    estimates = {"own entries left out": own_out, **dict(zip(refills, refill_scores, strict=True)),
                 "refitted": refitted}
    print(f"\n{len(good)} good test images: mean {good.mean():.3f}, SD {good.std():.3f}. Bias (SD): "
          + ", ".join(f"{name} {bias(np.array(values), good):+.2f}" for name, values in estimates.items()) + ".")


if __name__ == "__main__":
    main()
