"""anomalib's PatchCore on a generated set, fed exactly what eagle is fed: one JSON line per category.

    <python with anomalib> -m benchmarks.anomalib_patchcore ROOT --categories brick,coins [--resize 256 --crop 224]

Run by ``benchmarks.ablation`` with the interpreter of an environment where anomalib is installed
(it is not a dependency of eagle). The model is anomalib's own ``PatchcoreModel`` (k-center-greedy
coreset, 10 %, its 9-neighbour image-score reweighting, its anomaly maps); what it is given is
eagle's: torchvision's MobileNetV2 with the same offline ImageNet file, the same layers, and the
same resized, centre-cropped, normalised images. Image AUROC from its image scores; pixel AUROC from
its maps over the crop, against the masks brought into the crop as eagle does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def one_category(root: Path, category: str, resize: int, crop: int, batch_size: int) -> dict:
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from eagle_cli import metrics
    from eagle_cli.data import DataSource
    from eagle_cli.data.images import decode, load_mask
    from eagle_cli.expert.backbones import get_spec, load_backbone
    from eagle_cli.expert.geometry import Geometry

    source = DataSource(root=root).resolved()
    geometry = Geometry(resize, crop)
    spec = get_spec("mobilenet_v2")
    backbone, _ = load_backbone("mobilenet_v2", "imagenet")
    start = time.perf_counter()
    model = PatchcoreModel(layers=list(spec.layers), backbone=backbone, pre_trained=False)
    model.train()

    def tensors(samples):
        for begin in range(0, len(samples), batch_size):
            chunk = samples[begin:begin + batch_size]
            yield chunk, torch.stack([torch.from_numpy(geometry.to_array(decode(s.path))) for s in chunk])

    for _, batch in tensors(source.scan(category, "train")):
        model(batch)
    model.subsample_embedding(0.1)
    model.eval()
    labels, scores, maps, masks = [], [], [], []
    for chunk, batch in tensors(source.scan(category, "test")):
        with torch.no_grad():
            output = model(batch)
        for sample, score, amap in zip(chunk, output.pred_score, output.anomaly_map, strict=True):
            labels.append(sample.label)
            scores.append(float(score))
            image = decode(sample.path)
            mask = load_mask(sample.mask, image.size) if sample.mask else np.zeros((image.height, image.width), bool)
            maps.append(amap.squeeze().numpy())
            masks.append(geometry.crop_mask(mask))
    low, high = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
    pixels = metrics.PixelMetrics(low, high)
    for amap, mask in zip(maps, masks, strict=True):
        pixels.add(amap, mask)
    return {"category": category, "image_auroc": metrics.image_auroc(np.array(labels), np.array(scores)),
            "pixel_auroc": pixels.pixel_auroc(), "seconds": time.perf_counter() - start,
            "bank": int(model.memory_bank.shape[0]), "dim": int(model.memory_bank.shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--categories", required=True)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for category in args.categories.split(","):
        print(json.dumps(one_category(args.root, category, args.resize, args.crop, args.batch_size)), flush=True)


if __name__ == "__main__":
    main()
