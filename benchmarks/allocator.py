"""What glibc's allocator thresholds cost a backbone forward, each side in its own fresh process.

    python -m benchmarks.allocator [--backbone mobilenet_v2] [--tiles 25] [--side 224] [--repeats 8]

One batch of tiles through the feature extractor, repeated, with glibc's own thresholds (the baseline) and with
``eagle_cli.allocator.tune`` (what every eagle extractor sets): seconds per forward (median), minor page faults per
forward, system time and peak RSS. ImageNet weights are not needed: memory does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_ONE_SIDE = """
import json, resource, statistics, sys, time
import torch
from eagle_cli import allocator
from eagle_cli.expert.features import Geometry, PatchFeatureExtractor

backbone, tiles, side, repeats, tuned = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if tuned != "tuned":
    allocator.tune = lambda: False  # the baseline: glibc as it starts
torch.set_num_threads(2)
extractor = PatchFeatureExtractor(backbone, weights="none", geometry=Geometry(side, 0), device=torch.device("cpu"),
                                  batch_size=tiles, pretrain_dim=0, target_dim=0)
batch = torch.randn(tiles, 3, side, side)
extractor.features(batch)  # built and warm
usage = resource.getrusage(resource.RUSAGE_SELF)
seconds = []
for _ in range(repeats):
    start = time.perf_counter()
    extractor.features(batch)
    seconds.append(time.perf_counter() - start)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": statistics.median(seconds), "faults": (after.ru_minflt - usage.ru_minflt) / repeats,
                  "system_s": (after.ru_stime - usage.ru_stime) / repeats, "peak_mb": after.ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--tiles", type=int, default=25, help="Tiles per forward (25: a 1024 px frame).")
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    rows = {}
    for side in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", _ONE_SIDE, args.backbone, str(args.tiles), str(args.side),
                              str(args.repeats), side], capture_output=True, text=True, check=True)
        rows[side] = json.loads(out.stdout.strip().splitlines()[-1])
        print(side, rows[side], flush=True)
    print(f"\n{args.backbone}, {args.tiles} tiles of {args.side} px per forward, median of {args.repeats}:\n")
    print("| allocator | s / forward | page faults / forward | system s / forward | peak RSS MB |")
    print("|---|---|---|---|---|")
    for side, row in rows.items():
        print(f"| {side} | {row['seconds']:.3f} | {row['faults']:.0f} | {row['system_s']:.3f} | {row['peak_mb']:.0f} |")
    print(f"\ndefault / tuned: {rows['default']['seconds'] / rows['tuned']['seconds']:.2f}× the time per forward")


if __name__ == "__main__":
    main()
