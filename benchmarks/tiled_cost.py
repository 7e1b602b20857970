"""What a tiled expert costs as the image grows, against what its tiles cost on their own.

    python -m benchmarks.tiled_cost [--sizes 512,1024,2048] [--train 20] [--test 6] [--coreset-max auto[,4096…]]

For each image size and each bank limit ``--coreset-max`` asks for, on the ``highres`` brick category with every
other setting at its default (``--tile auto``, MobileNetV2, ImageNet weights), each stage runs in a fresh process
that reuses the artifacts of the stages before it and redoes its own, so its time and peak memory are its own:

* fit: the training images' extraction time E, then fit-bank (B) and fit-threshold (C), as ratios to E;
* score: the score stage's time per image, first in a fresh process (start-up included, shared by the few
  test images), then again in the same process (warm), and then what each image costs a long run: the stage on
  three times as many test images (other ones, seed 1) less the warm run, per image added. Against one image's
  tiles pushed through the backbone in batches (the extractor alone) plus one exact search of their patches in
  the bank, and against the same one tile at a time (tiles × one tile's forward and search), both timed in the
  same process after the stage;
* memory: each stage's peak resident memory, what its process held before the stage began (the libraries:
  torch, faiss and eagle imported), and the training features' own size (float16 on disk, read memory-mapped).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.highres import stages
from benchmarks.image_identity import timed
from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.synthetic import generate
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.features import PatchFeatureExtractor
from eagle_cli.expert.geometry import Geometry
from eagle_cli.formats.bank import open_bank
from eagle_cli.formats.features import features_info
from eagle_cli.lineage import Lineage
from eagle_cli.params import BankParams, ExtractParams, parse_count

EXTRACT = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu", feature_dtype="float16")
STAGES = ("extract", "fit-bank", "fit-threshold", "score")


def one_stage(workdir: Path, size: int, measured: str, bank: BankParams) -> dict:
    """The stages up to ``measured`` on the images of ``size``: earlier ones reused, this one redone and measured
    (run in its own process)."""
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    libraries_mb = _resident_mb()
    context = Context(artifacts=workdir / f"artifacts-{size}")
    made = {}
    for name, stage in stages(DataSource(root=workdir / f"data-{size}"), "brick", EXTRACT, bank).items():
        start = time.perf_counter()
        made[name] = stage(made, replace(context, force=name == measured))
        if name == measured:
            break
    out = {"seconds": time.perf_counter() - start, "libraries_mb": libraries_mb,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if measured == "score":
        images = made["score"].summary["images"]
        out["seconds"] /= images
        # Again in the same process, the first run's artifact removed so nothing is reused: a line scoring for
        # hours pays the backbone's build and first batches once, and only this per image.
        shutil.rmtree(made["score"].path)
        start = time.perf_counter()
        stages(DataSource(root=workdir / f"data-{size}"), "brick", EXTRACT, bank)["score"](made, context)
        warm = time.perf_counter() - start
        out["warm seconds"] = warm / images
        # More test images, still in the same process: the stage's own work (building the expert, reading the
        # threshold, the metrics) is paid once a run, so the images added cost what each image costs a long run.
        start = time.perf_counter()
        more = stages(DataSource(root=workdir / f"more-{size}"), "brick", EXTRACT, bank)["score"](made, context)
        out["added seconds"] = (time.perf_counter() - start - warm) / (more.summary["images"] - images)
        out["tiles alone"], out["tile by tile"] = _tiles_alone(made["extract"], made["fit-bank"])
    if measured == "fit-bank":
        info = features_info(made["extract"])
        tiles = len(Geometry.of(Lineage.from_dict(made["extract"].lineage)).tile_offsets())
        out.update(tiles=tiles, patches=tiles * info.grid[0] * info.grid[1], bank=open_bank(made["fit-bank"]).size,
                   features_mb=sum(f.stat().st_size for f in made["extract"].path.glob("*.safetensors")) / 2**20)
    return out


def _resident_mb() -> float:
    """This process's resident memory now (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _tiles_alone(features, bank) -> tuple[float, float]:
    """One image's tiles through the backbone and an exact search of their patches, seconds (the mean of three, as
    the stage's figures are means over its images: on a shared machine a best of three is biased low against them):
    in batches, as the extractor streams them, and one tile at a time (the issue's measure: tiles × one tile's
    forward and search)."""
    extract = features_info(features).extract
    extractor = PatchFeatureExtractor.from_params(extract)
    frame = torch.randn(1, 3, extractor.geometry.frame, extractor.geometry.frame)
    tiles = extractor.geometry.tiles(frame)
    opened = open_bank(bank)
    index = opened.index(backend="faiss", device="cpu")
    list(extractor.stream(frame))  # built and warm

    def batched():
        index.search(torch.cat([chunk for _, chunk in extractor.stream(frame)]).float(), opened.params.knn_k)

    def tile_by_tile():
        for tile in tiles:
            patches = extractor.features(tile[None].to(extractor.device, memory_format=torch.channels_last))[0]
            index.search(patches.float(), opened.params.knn_k)

    return tuple(float(np.mean([timed(run)[0] for _ in range(3)])) for run in (batched, tile_by_tile))


def one_size(workdir: Path, size: int, coreset_max: str) -> dict:
    """Every figure of one image size and bank limit, each stage in its own process."""
    row = {"size": size, "coreset_max": coreset_max}
    for stage in STAGES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.tiled_cost", "--one", str(size), "--stage", stage,
                              "--workdir", str(workdir), "--coreset-max", coreset_max], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{stage} at {size} px failed:\n{out.stderr[-3000:]}")
        row[stage] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--train", type=int, default=20)
    parser.add_argument("--test", type=int, default=6, help="Good test images (plus one per defect kind).")
    parser.add_argument("--coreset-max", default="auto",
                        help="The bank's most entries (eagle fit-bank --coreset-max); several, comma-separated.")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        bank = BankParams(coreset_max=parse_count(args.coreset_max))
        print(json.dumps(one_stage(args.workdir, args.one, args.stage, bank)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in [int(s) for s in args.sizes.split(",")]:
            generate(Path(scratch) / f"data-{size}", categories=("brick",), variation="highres", n_train=args.train,
                     n_test_good=args.test, n_test_per_defect=1, size=size, seed=0)
            generate(Path(scratch) / f"more-{size}", categories=("brick",), variation="highres", n_train=1,
                     n_test_good=3 * args.test, n_test_per_defect=1, size=size, seed=1)
            for coreset_max in args.coreset_max.split(","):
                rows.append(one_size(Path(scratch), size, coreset_max))
                print(json.dumps(rows[-1]), flush=True)
    print("\n| image px | --coreset-max | tiles | patches / image | bank | fit-bank / extract "
          "| fit-threshold / extract | score / (tiles alone): fresh process, warm, each added image "
          "| each added image / (tile by tile) | s / image scored: fresh, warm, each added "
          "| features MB | peak RSS MB: extract / fit-bank / fit-threshold / score | of which libraries MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        extract, bank, score = row["extract"]["seconds"], row["fit-bank"], row["score"]
        peaks = " / ".join(f"{row[stage]['peak_rss_mb']:.0f}" for stage in STAGES)
        libraries = max(row[stage]["libraries_mb"] for stage in STAGES)
        per_image = [score[key] for key in ("seconds", "warm seconds", "added seconds")]
        ratios = ", ".join(f"{seconds / score['tiles alone']:.2f}" for seconds in per_image)
        print(f"| {row['size']} | {row['coreset_max']} | {bank['tiles']} | {bank['patches']} | {bank['bank']} | "
              f"{bank['seconds'] / extract:.2f} | {row['fit-threshold']['seconds'] / extract:.2f} | "
              f"{ratios} | "
              f"{per_image[2] / score['tile by tile']:.2f} | {', '.join(f'{s:.2f}' for s in per_image)} | "
              f"{bank['features_mb']:.0f} | {peaks} | {libraries:.0f} |")


if __name__ == "__main__":
    main()
