"""What folding the batch norms into their convolutions saves a backbone forward, both extractors in one process.

    python -m benchmarks.batch_norm_fold [--backbones mobilenet_v2,resnet18,wide_resnet50_2] [--tiles 8]
                                         [--rounds 6] [--repeats 5]

For each backbone: eagle's feature extractor (norms folded, ``expert/backbones.py``) and the same network's
extractor with its norms as torchvision builds them, each forward the aggregation included (eagle's default
settings). They alternate round by round so both see the same machine; a round is ``--repeats`` forwards one after
another, as a stage runs them (the first forward after the other extractor's pays for memory that one used).
Prints seconds per forward (median of the rounds), the ratio, and the largest difference of their patch features.
ImageNet weights where the cache has them (the difference then says what the fold does to real features), else
random ones: the time does not depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models.feature_extraction import create_feature_extractor

from eagle_cli.expert.backbones import cache_dir, get_spec, load_backbone
from eagle_cli.expert.features import PatchFeatureExtractor
from eagle_cli.params import ExtractParams


def compare(backbone: str, tiles: int, rounds: int, repeats: int) -> dict:
    """Seconds per forward of the folded and unfolded extractors of ``backbone``, and their features' difference."""
    weights = "imagenet" if (cache_dir() / get_spec(backbone).weights_file).is_file() else "none"
    params = ExtractParams(backbone=backbone, weights=weights, device="cpu", tile=0)  # one 224 px input
    extractor = PatchFeatureExtractor.from_params(params)
    folded = extractor.model
    unfolded = create_feature_extractor(load_backbone(backbone, weights)[0], return_nodes=list(extractor.layers))
    unfolded = unfolded.eval().to(memory_format=torch.channels_last)
    batch = torch.randn(tiles, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    seconds: dict[str, list[float]] = {"unfolded": [], "folded": []}
    with torch.inference_mode():
        outputs = {}
        for name, model in (("unfolded", unfolded), ("folded", folded)):
            extractor.model = model
            outputs[name] = extractor.features(batch)  # built and warm
        for _ in range(rounds):
            for name, model in (("unfolded", unfolded), ("folded", folded)):
                extractor.model = model
                start = time.perf_counter()
                for _ in range(repeats):
                    extractor.features(batch)
                seconds[name].append((time.perf_counter() - start) / repeats)
    return {"weights": weights, **{name: statistics.median(s) for name, s in seconds.items()},
            "difference": float((outputs["folded"] - outputs["unfolded"]).abs().max()),
            "largest": float(outputs["unfolded"].abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="mobilenet_v2,resnet18,wide_resnet50_2")
    parser.add_argument("--tiles", type=int, default=8, help="Tiles of 224 px per forward (eagle's batch size).")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5, help="Forwards per round.")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"\n{args.tiles} tiles of 224 px per forward, median of {args.rounds} alternating rounds "
          f"of {args.repeats}:\n")
    print("| backbone | weights | unfolded s / forward | folded s / forward | folded / unfolded | largest feature "
          "difference (of the largest value) |")
    print("|---|---|---|---|---|---|")
    for backbone in args.backbones.split(","):
        row = compare(backbone, args.tiles, args.rounds, args.repeats)
        print(f"| {backbone} | {row['weights']} | {row['unfolded']:.4f} | {row['folded']:.4f} | "
              f"{row['folded'] / row['unfolded']:.2f} | {row['difference']:.1e} (of {row['largest']:.1f}) |",
              flush=True)


if __name__ == "__main__":
    main()
