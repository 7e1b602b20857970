"""What it costs to know images by their content rather than by their timestamps.

    python -m benchmarks.image_identity [--images 60] [--size 1024] [--extract 12]

On a highres synthetic brick set (PNG at --size px, MobileNetV2 ImageNet, --tile auto), times per
image: the digest eagle 0.3 took (size and modification time: no image read), the content digest
with an empty cache (every image hashed), with a warm cache (nothing changed: nothing read), after
every image was touched (all hashed again, the ids unchanged), and the extraction of the same
images. Each is printed as a ratio to the extraction measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from eagle_cli.context import Context
from eagle_cli.data import DataSource
from eagle_cli.data.sample import samples_digest
from eagle_cli.data.synthetic import generate
from eagle_cli.params import ExtractParams
from eagle_cli.stages.extract import run_extract


def stat_digest(samples) -> str:
    """eagle 0.3's identity: the listing with each file's size and modification time."""
    entries = []
    for sample in samples:
        stat = sample.path.stat()
        entries.append([asdict(sample), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()[:16]


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--extract", type=int, default=12, help="Images extracted for the baseline.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        generate(work / "data", categories=("brick",), variation="highres", n_train=args.images, n_test_good=1,
                 n_test_per_defect=1, size=args.size, seed=0)
        source = DataSource(root=work / "data")
        samples = source.scan("brick", "train")
        megabytes = sum(s.path.stat().st_size for s in samples) / 1e6
        cache = work / "store"
        rows = {"stat only (0.3)": timed(lambda: stat_digest(samples))[0],
                "content, empty cache": timed(lambda: samples_digest(samples, cache))[0],
                "content, warm cache": timed(lambda: samples_digest(samples, cache))[0]}
        before = samples_digest(samples, cache)
        for sample in samples:
            os.utime(sample.path)
        rows["content, all touched"], after = timed(lambda: samples_digest(samples, cache))
        assert after == before, "touching changed the identity"
        few = work / "few"
        (few / "brick" / "train" / "good").mkdir(parents=True)
        for sample in samples[:args.extract]:
            os.link(sample.path, few / "brick" / "train" / "good" / sample.path.name)
        params = ExtractParams(backbone="mobilenet_v2", weights="imagenet", device="cpu")
        extract = timed(lambda: run_extract(DataSource(root=few), "brick", "train", params,
                                            context=Context(artifacts=work / "extract")))[0] / args.extract
    print(f"{args.images} PNG images of {args.size} px ({megabytes / args.images:.2f} MB each); "
          f"extract (tile auto): {1000 * extract:.0f} ms per image")
    print(f"{'identity':24} {'ms per image':>12} {'× extract':>10}")
    for name, seconds in rows.items():
        per_image = seconds / args.images
        print(f"{name:24} {1000 * per_image:12.3f} {per_image / extract:10.4f}")


if __name__ == "__main__":
    main()
