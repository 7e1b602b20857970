"""What a tiled expert costs as the image grows, against what its tiles cost on their own.

    python -m benchmarks.tiled_cost [--sizes 512,1024,2048] [--train 20] [--test 6]

For each image size, in a fresh process (so its peak memory is its own), on the ``highres`` brick
category with every setting at its default (``--tile auto``, MobileNetV2, ImageNet weights):

* fit: the training images' extraction time E, then fit-bank (B) and fit-threshold (C), as ratios to E;
* score: the score stage's time per image, against one image's tiles pushed through the backbone in
  batches (the extractor alone) plus one exact search of their patches in the bank, timed in the same
  process;
* memory: the process's peak resident memory, and the training features' own size, which any fit
  holds (memory-mapped).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from benchmarks.highres import timed_chain
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import generate
from eagle_cli.expert.features import PatchFeatureExtractor
from eagle_cli.expert.geometry import Geometry
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import features_info
from eagle_cli.lineage import Lineage
from eagle_cli.params import ExtractParams

EXTRACT = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu", feature_dtype="float16")


def one_size(workdir: Path, size: int, train: int, test: int) -> dict:
    """Every figure of one image size (run in its own process)."""
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    root = workdir / f"data-{size}"
    generate(root, categories=("brick",), variation="highres", n_train=train, n_test_good=test,
             n_test_per_defect=1, size=size, seed=0)
    context = Context(artifacts=workdir / f"artifacts-{size}")
    features, bank, _, timed = timed_chain(DataSource(root=root), "brick", EXTRACT, context)
    timed["tiles alone per image"] = _tiles_alone(features, bank)
    info = features_info(features)
    geometry = Geometry.of(Lineage.from_dict(features.lineage))
    tiles = len(geometry.tile_offsets())
    return {"size": size, "tiles": tiles, "frame": geometry.frame, "patches": tiles * info.grid[0] * info.grid[1],
            "bank": open_bank(bank).size, "seconds": timed,
            "features_mb": sum(f.stat().st_size for f in features.path.glob("*.safetensors")) / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _tiles_alone(features, bank) -> float:
    """One image's tiles through the backbone in batches, plus one exact search of their patches: seconds, the
    best of three."""
    extract = features_info(features).extract
    extractor = PatchFeatureExtractor.from_params(extract)
    frame = torch.randn(1, 3, extractor.geometry.frame, extractor.geometry.frame)
    opened = open_bank(bank)
    index = opened.index(backend="faiss", device="cpu")
    list(extractor.stream(frame))  # built and warm
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        patches = torch.cat([chunk for _, chunk in extractor.stream(frame)])
        index.search(patches.float(), opened.params.knn_k)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--train", type=int, default=20)
    parser.add_argument("--test", type=int, default=6, help="Good test images (plus one per defect kind).")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.workdir, args.one, args.train, args.test)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in [int(s) for s in args.sizes.split(",")]:
            out = subprocess.run([sys.executable, "-m", "benchmarks.tiled_cost", "--one", str(size), "--workdir",
                                  scratch, "--train", str(args.train), "--test", str(args.test)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| image px | tiles | patches / image | bank | fit-bank / extract | (fit-bank + fit-threshold) / extract "
          "| score / (tiles alone) | s / image scored | features MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        s = row["seconds"]
        print(f"| {row['size']} | {row['tiles']} | {row['patches']} | {row['bank']} | "
              f"{s['fit-bank'] / s['extract']:.2f} | {(s['fit-bank'] + s['fit-threshold']) / s['extract']:.2f} | "
              f"{s['score per image'] / s['tiles alone per image']:.2f} | {s['score per image']:.2f} | "
              f"{row['features_mb']:.0f} | {row['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
