"""Extracting tiles of large images: peak memory against image size and image count.

    python -m benchmarks.tile_memory [--sizes 1024,2048] [--images 4,16] [--tile 256]

Clean synthetic gravel at each size, read at full resolution (``--resize SIZE --crop 0``) and cut
into 256 px tiles with 25 % overlap (MobileNetV2, random weights: timing and memory only, float16
features, 2 threads). Each ``eagle extract`` is its own process, measured with GNU time. Features
are written to disk as they are extracted, so peak RSS should follow the batch (one image's tiles),
not the number of images, while the features file grows with both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.processes import measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--images", default="4,16")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    from eagle_cli.data.synthetic import generate

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for size in [int(s) for s in args.sizes.split(",")]:
            data = tmp / f"data-{size}"
            generate(data, categories=("gravel",), n_train=max(int(n) for n in args.images.split(",")),
                     n_test_good=0, n_test_per_defect=0, size=size, seed=0)
            good = sorted((data / "gravel" / "train" / "good").glob("*.png"))
            for count in [int(n) for n in args.images.split(",")]:
                folder = tmp / f"good-{size}-{count}"
                folder.mkdir()
                for path in good[:count]:
                    shutil.copy(path, folder / path.name)
                seconds, rss, out = measured(
                    [sys.executable, "-m", "eagle_cli", "extract", "--good", str(folder), "--backbone", "mobilenet_v2",
                     "--weights", "none", "--resize", str(size), "--crop", "0", "--tile", str(args.tile),
                     "--overlap", "0.25", "--feature-dtype", "float16", "--device", "cpu", "--artifacts",
                     str(tmp / "artifacts"), "--json", "--quiet"], env)
                path = Path(json.loads(out)["artifacts"][0]["path"])
                rows.append({"size": size, "images": count, "seconds": seconds, "rss_mb": rss,
                             "features_mb": (path / "features.safetensors").stat().st_size / 2 ** 20})
                print(json.dumps(rows[-1]), flush=True)
                shutil.rmtree(path)
    base = rows[0]
    print("\n| image side | images | features file | peak RSS | RSS / first row | s / image |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['images']} | {r['features_mb']:.0f} MB | {r['rss_mb']:.0f} MB | "
              f"{r['rss_mb'] / base['rss_mb']:.2f} | {r['seconds'] / r['images']:.2f} |")


if __name__ == "__main__":
    main()
