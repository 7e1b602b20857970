"""Why a tiled calibration sits above new good parts: a training image scored against the bank without its
entries, against a bank refitted without the image (a jackknife).

    python -m benchmarks.refit_bias --scores DIR [--images 0,10,20,30,40,50]

``DIR`` is a ``scores`` artifact of a category's test images (good ones among them), scored by the chain as
fitted. For each training image asked for: its score against the bank with its own entries left out (what the
refill estimator gives where it refills nothing, as at a 1 % coreset), its score against a bank fitted anew on
the other training images with the same settings and seed, and how many of the refitted bank's entries the
fitted bank also holds. Both are read with the fitted expert's image rule (for ``peak``, the calibration's cell
norm of all images), so they differ only in the bank. The summary gives each estimate's mean as a bias in
standard deviations of the good test images' scores (above 0: a conservative τ), as
``benchmarks/calibration.py`` measures it.
"""

from __future__ import annotations

import argparse

import faiss
import numpy as np
import torch

from benchmarks.calibration import bias
from eagle_cli.artifacts import open_artifact
from eagle_cli.expert.bank import fit_bank
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.expert.scoring import patch_scores
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.expert import load_expert
from eagle_cli.formats.features import read_features
from eagle_cli.formats.scores import read_scores


def image_score(rule: ImageRule, dist: np.ndarray) -> float:
    """The image score of one image's squared distances to its nearest entries ``(P, k)``."""
    return float(rule.scores(rule.values(patch_scores(dist)[None]))[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scores", required=True, help="A scores artifact folder.")
    parser.add_argument("--images", default="0,10,20,30,40,50", help="Training images (positions) to refit without.")
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
    held = stored.coreset().selected.numpy()
    n_images, patches, _ = features.shape
    good = np.array([row.score for row in read_scores(scores) if row.label == 0])
    images = [i for i in (int(s) for s in args.images.split(",")) if i < n_images]
    print("| training image | own entries left out | bank refitted without it | refitted entries also in the "
          "fitted bank |")
    print("|---|---|---|---|")
    own_out, refitted = [], []
    for image in images:
        own = features[image].float()
        # The calibration's own search: the k nearest entries of other images.
        dist = expert.index.search_leave_own_out(own, k, np.full(patches, image))[0]
        own_out.append(image_score(rule, dist))
        others = torch.as_tensor([i for i in range(n_images) if i != image])
        refit = fit_bank(features[others], expert.bank, seed=stored.seed)
        refitted.append(image_score(rule, refit.index(backend="faiss").search(own, k)[0]))
        # The refitted bank's entries as places among all training patches, to compare with the fitted bank's.
        selected = refit.coreset.selected.numpy()
        places = others.numpy()[selected // patches] * patches + selected % patches
        shared = float(np.isin(places, held).mean())
        print(f"| {image} | {own_out[-1]:.3f} | {refitted[-1]:.3f} | {shared:.2f} |", flush=True)
    print(f"\n{len(good)} good test images: mean {good.mean():.3f}, SD {good.std():.3f}. Bias (SD): own entries left "
          f"out {bias(np.array(own_out), good):+.2f}, refitted {bias(np.array(refitted), good):+.2f}.")


if __name__ == "__main__":
    main()
