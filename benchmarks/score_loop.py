"""What the score loop adds to an image's tiles through the backbone and one search of their patches.

    python -m benchmarks.score_loop [--size 1024] [--images 10] [--rounds 3] [--bank-rows 4000]

An image's work as the score stage does it, in one process: its tiles through the backbone, their patches
searched in a faiss bank, the map drawn. Four loops over the same frames, alternated round after round: without
the map (the baseline), with eagle's map (its products on the calling thread), with the same map on numpy's
default BLAS threads, and with eagle's map but the patches searched 8,192 at a time as the tiles come (as the
score stage did before it searched 8 M values at a time). Seconds per image, and each against the baseline. The
weights are random and the bank is random rows: the time does not depend on either.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from eagle_cli.expert import anomaly_map
from eagle_cli.expert.faiss_after_torch import faiss
from eagle_cli.expert.features import Geometry, PatchFeatureExtractor


def _default_threads(first: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    for matrix in rest:
        first = first @ matrix
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="Frame side, px (tiles of 224, overlap 0.1).")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bank-rows", type=int, default=4000, help="4,000: about the bank tiled_cost fits at 1024 px.")
    args = parser.parse_args()
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    geometry = Geometry(args.size, 0, tile=224, overlap=0.1)
    extractor = PatchFeatureExtractor("mobilenet_v2", weights="none", geometry=geometry, device=torch.device("cpu"),
                                      batch_size=8, pretrain_dim=0, target_dim=0)  # eagle's --batch-size
    index = faiss.IndexFlatL2(extractor.feature_dim)
    index.add(np.random.default_rng(0).standard_normal((args.bank_rows, extractor.feature_dim), dtype=np.float32))
    frames = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    grid = extractor.grid()
    eagles = anomaly_map._products

    def searched(frame: torch.Tensor, rows: int) -> np.ndarray:
        """The frame's patch distances, its patches searched ``rows`` at a time as the tiles come."""
        pending, distances = [], []
        for _, chunk in extractor.stream(frame[None]):
            pending.append(chunk)
            if sum(len(p) for p in pending) >= rows:
                distances.append(index.search(torch.cat(pending).float().numpy(), 1)[0][:, 0])
                pending = []
        if pending:
            distances.append(index.search(torch.cat(pending).float().numpy(), 1)[0][:, 0])
        return np.concatenate(distances)

    def loop(products, rows: int = 1 << 30) -> float:
        anomaly_map._products = products or eagles
        started = time.perf_counter()
        for frame in frames:
            distances = searched(frame, rows)
            if products:
                anomaly_map.frame_map(distances, grid, geometry)
        anomaly_map._products = eagles
        return (time.perf_counter() - started) / len(frames)

    sides = {"forward + search (baseline)": lambda: loop(None),
             "+ map, products on one thread (eagle)": lambda: loop(eagles),
             "+ map, numpy's default threads": lambda: loop(_default_threads),
             "+ map, searched 8,192 patches at a time": lambda: loop(eagles, 8192)}
    loop(eagles)  # warm
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name, run in sides.items():
            seconds[name].append(run())
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {s[-1]:.3f}" for name, s in seconds.items()), flush=True)
    baseline = statistics.median(seconds["forward + search (baseline)"])
    print(f"\n{args.size} px, {len(geometry.tile_offsets())} tiles of 224, {args.images} images, "
          f"{args.bank_rows} bank rows, median of {args.rounds} rounds:\n")
    print("| loop | s / image | × the baseline |")
    print("|---|---|---|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.median(values) / baseline:.2f} |")


if __name__ == "__main__":
    main()
