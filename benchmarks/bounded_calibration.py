"""The peak rule's calibration bounded to what its norm and peaks need, against every patch searched.

    python -m benchmarks.bounded_calibration [--size 2048] [--train 20] [--rounds 2] [--category brick]

On the ``highres`` set (``--tile auto``, MobileNetV2 ImageNet weights, the default bank), in this process: the
training images' extraction (E, the stage redone), then, alternating for ``--rounds``:

* ``every patch``: every training patch searched exactly (the calibration with ``--norm-tile-step 1``), read
  by the peak rule with the cell norm of every tile;
* ``bounded``: the default (``--norm-tile-step 8``): the norm from an eighth of the tiles, the peaks bounded by
  the bank entries nearest each patch's covering entry and searched exactly only where they can be decided.

Each is timed as fit-threshold's calibration is (from the stored bank and features) and given as a ratio to E.
The bounded scores are checked against the same rule (norm of an eighth of the tiles) read off every patch's exact
score: the largest difference, relative to the score, and the share of patches the bounded run searched exactly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.highres import stages
from benchmarks.tiled_cost import EXTRACT
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import generate
from eagle_cli.expert.calibration import calibrate, calibrated_scores
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.geometry import Geometry
from eagle_cli.expert.image_rule import ImageRule
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import read_features
from eagle_cli.lineage import Lineage
from eagle_cli.params import CalibrationParams


def quiet(n=1):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--train", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--category", default="brick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        generate(root, categories=(args.category,), variation="highres", n_train=args.train, n_test_good=1,
                 n_test_per_defect=0, size=args.size, seed=args.seed)
        context = Context(artifacts=Path(scratch) / "artifacts")
        chain = stages(DataSource(root=root), args.category, EXTRACT)
        made = {"extract": chain["extract"]({}, context)}
        start = time.perf_counter()
        made["extract"] = chain["extract"]({}, replace(context, force=True))
        extract_s = time.perf_counter() - start
        bank = open_bank(chain["fit-bank"](made, context))
        features, _, grid = read_features(bank.ref.input("features"), check_finite=False)
        rule = ImageRule.of(bank.params, Geometry.of(Lineage.from_dict(bank.ref.lineage)), grid)
        index = bank.index(backend="faiss", device="cpu")
        coreset = bank.coreset()
        exact_rows = []
        search = index.search_leave_own_out

        def counted(queries, k, owners):
            exact_rows.append(len(queries))
            return search(queries, k, owners)

        index.search_leave_own_out = counted
        patches = features.shape[0] * features.shape[1]
        print(f"{args.category}, {args.size} px, {features.shape[0]} training images, {features.shape[1]} patches "
              f"each, bank {bank.size}; extraction {extract_s:.1f} s\n")
        print("| round | calibration | seconds | / extraction | largest relative difference | patches searched "
              "exactly |")
        print("|---|---|---|---|---|---|")
        for round_ in range(args.rounds):
            exact_rows.clear()
            start = time.perf_counter()
            per_patch = calibrate(features, index, coreset, bank.params, CalibrationParams(calibration_images=0),
                                  seed=bank.seed, progress=quiet).per_patch
            rule.calibrated(per_patch, 1)
            every_s, every_rows = time.perf_counter() - start, sum(exact_rows)
            exact_rows.clear()
            start = time.perf_counter()
            bounded = calibrated_scores(features, index, coreset, bank.params,
                                        CalibrationParams(calibration_images=0), rule, seed=bank.seed, progress=quiet)
            bounded_s = time.perf_counter() - start
            expected = rule.calibrated(per_patch, CalibrationParams().norm_tile_step)[0]
            difference = float(np.max(np.abs(bounded.scores - expected) / np.abs(expected)))
            for name, seconds, rows, diff in (("every patch", every_s, every_rows, "—"),
                                              ("bounded", bounded_s, sum(exact_rows), f"{difference:.1e}")):
                print(f"| {round_ + 1} | {name} | {seconds:.1f} | {seconds / extract_s:.2f} | {diff} | "
                      f"{rows / patches:.3f} |", flush=True)


if __name__ == "__main__":
    main()
