"""Locally aware patch features: preprocessing, 3×3 neighbourhood aggregation, projection to 1024-d.

Reference parity (eagle-method.md A.3): frames are prepared as expert/geometry.py says; per layer unfold 3×3
neighbourhoods (zero padding 1), bring the deeper layer to the first layer's grid with bilinear interpolation,
adaptive-average-pool each location's C·9 vector to 1024, then pool the stacked layers to 1024.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import torch
import torch.nn.functional as F

from eagle_cli import allocator
from eagle_cli.devices import resolve_device
from eagle_cli.errors import ParameterError
from eagle_cli.expert.backbones import feature_extractor, get_spec
from eagle_cli.expert.geometry import Geometry
from eagle_cli.lineage import Lineage
from eagle_cli.params import ExtractParams

#: Auto tiling (``--tile auto``): the largest side an image is seen at (2048 px is 100 tiles of 224, 78,400
#: patches of MobileNetV2 or a ResNet; larger images are resized to it), and the overlap of neighbouring tiles:
#: 10 % of 224 px is 3 patch cells, so a defect a few pixels wide on a seam lies whole inside a tile.
AUTO_FRAME_MAX = 2048
AUTO_OVERLAP = 0.1

PATCH_SIZE = 3


def resolve_tiling(params: ExtractParams, shorter_side: int) -> ExtractParams:
    """``params`` with ``tile="auto"`` decided for images whose shorter side is ``shorter_side`` px: at least twice
    the backbone's input, the whole image at its own resolution (at most :data:`AUTO_FRAME_MAX`) in tiles of that
    input; smaller, untiled as ``resize`` and ``crop`` say. Other settings are returned as they are."""
    if params.tile != "auto":
        return params
    side = get_spec(params.backbone).input_side
    if shorter_side < 2 * side:
        return replace(params, tile=0)
    return replace(params, resize=min(shorter_side, AUTO_FRAME_MAX), crop=0, tile=side, overlap=AUTO_OVERLAP)


def aggregate(feature_maps: list[torch.Tensor], *, pretrain_dim: int = 1024, target_dim: int = 1024,
              layer_weights: tuple[float, ...] = ()) -> torch.Tensor:
    """Turn per-layer maps ``(B, C_l, h_l, w_l)`` into patch embeddings ``(B, H*W, D)``.

    Each layer's 3x3 neighbourhoods are pooled to ``pretrain_dim`` values, the layers are stacked
    and pooled together to ``D = target_dim`` (the reference). ``pretrain_dim = 0`` keeps each
    layer's own width (the 3x3 mean of every channel) and ``target_dim = 0`` keeps the stacked
    layers as they are: native widths, as the PatchCore paper describes, where the reference pools a
    small backbone's few channels up to 1024 and weighs every layer equally whatever its width.
    ``layer_weights`` multiply each layer's values before they are stacked: a layer's share of a
    squared distance grows with the square of its weight.

    The grid (H, W) is the first layer's. Pooling runs before the grid alignment: both are linear
    maps acting on different axes, so the order does not change the result (beyond float rounding),
    and interpolating 1024 pooled channels is 9× cheaper than interpolating WideResNet's 9216.
    """
    batch, _, height, width = feature_maps[0].shape
    per_layer = []
    for fmap in feature_maps:
        channels, h, w = fmap.shape[1:]
        if pretrain_dim in (0, channels):
            # Each pooling bin is then exactly one channel's 3x3 neighbourhood (zeros included at
            # the border, as unfold pads): a 3x3 average pool, without materialising 9x the data.
            pooled = F.avg_pool2d(fmap, PATCH_SIZE, stride=1, padding=PATCH_SIZE // 2, count_include_pad=True)
            pooled = pooled.permute(0, 2, 3, 1)
        else:
            neighbourhoods = F.unfold(fmap, kernel_size=PATCH_SIZE, padding=PATCH_SIZE // 2)  # (B, C*9, h*w)
            flat = neighbourhoods.transpose(1, 2).reshape(batch * h * w, 1, channels * 9)
            pooled = F.adaptive_avg_pool1d(flat, pretrain_dim).reshape(batch, h, w, pretrain_dim)
        if (h, w) != (height, width):
            grid = F.interpolate(pooled.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
            pooled = grid.permute(0, 2, 3, 1)
        per_layer.append(pooled.reshape(batch * height * width, -1))
    if layer_weights:
        per_layer = [block * weight for block, weight in zip(per_layer, layer_weights, strict=True)]
    stacked = torch.cat(per_layer, dim=1)
    if not target_dim:
        return stacked.reshape(batch, height * width, -1)
    return F.adaptive_avg_pool1d(stacked[:, None], target_dim).reshape(batch, height * width, target_dim)


class PatchFeatureExtractor:
    """Backbone + aggregation: images ``(B, 3, frame, frame)`` to patch features ``(B, P, D) float32``."""

    def __init__(
        self,
        backbone: str,
        *,
        weights: str,
        geometry: Geometry,
        device: torch.device,
        batch_size: int = 8,
        pretrain_dim: int = 1024,
        target_dim: int = 1024,
        layer_weights: tuple[float, ...] = (),
        layers: tuple[str, ...] = (),
    ):
        self.spec = get_spec(backbone)
        self.layers = tuple(layers) or self.spec.layers
        if layer_weights and len(layer_weights) != len(self.layers):
            raise ParameterError(f"--layer-weights gives {len(layer_weights)} weights, but {len(self.layers)} layers "
                                 f"are used ({', '.join(self.layers)}).")
        self._given_weights = tuple(layer_weights)
        self.geometry = geometry
        self.batch_size = batch_size
        self.device = device
        self.pretrain_dim = pretrain_dim
        self.target_dim = target_dim
        model, self.weights_tag = feature_extractor(backbone, weights, self.layers)
        allocator.tune()  # every forward's activations reuse the last one's memory (eagle_cli/allocator.py)
        # channels_last lets oneDNN pick faster convolutions (WideResNet to layer3 + aggregation:
        # 0.52 s vs 0.64 s per 8 images on 2 CPU cores); same arithmetic, rounding differs ~1e-6.
        self.model = model.to(device, memory_format=torch.channels_last)
        self._shapes: tuple[tuple[int, int], list[int]] | None = None
        self._weights: tuple[float, ...] | None = None

    @classmethod
    def from_params(cls, params: ExtractParams) -> PatchFeatureExtractor:
        """The extractor ``params`` describe, on the device they name."""
        return cls(params.backbone, weights=params.weights, geometry=Geometry.of(params),
                   device=resolve_device(params.device), batch_size=params.batch_size, pretrain_dim=params.pretrain_dim,
                   target_dim=params.target_dim, layer_weights=params.layer_weights, layers=params.layers)

    @property
    def layer_weights(self) -> tuple[float, ...]:
        """The weights given, or widest layer / this layer's width (all 1 when the layers are pooled to one
        width). A narrow layer's few channels then count as much as a wide one's many, and more: MobileNetV2's
        32-channel layer gets 3, three times the 96-channel layer's share of a squared distance. Measured on
        realistic data (benchmarks/ablation.py) against the √ weights that would give equal shares, this
        keeps image AUROC and raises pixel AUROC above the reference's."""
        if self._given_weights:
            return self._given_weights
        widths = [self.pretrain_dim or channels for channels in self._probe()[1]]
        return tuple(max(widths) / width for width in widths)

    @property
    def feature_dim(self) -> int:
        """The size of one patch feature."""
        if self.target_dim:
            return self.target_dim
        return sum(self.pretrain_dim or channels for channels in self._probe()[1])

    @property
    def lineage(self) -> Lineage:
        geometry = self.geometry
        return Lineage(backbone=self.spec.name, layers=tuple(self.layers), weights=self.weights_tag,
                       resize=geometry.resize, crop=geometry.crop, tile=geometry.tile,
                       overlap=geometry.overlap if geometry.tile else 0.0, feature_dim=self.feature_dim,
                       pooling=(self.pretrain_dim, self.target_dim), layer_weights=tuple(self.layer_weights))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features ``(B, T * H * W, D)`` of frames ``(B, 3, frame, frame)``: T tiles of an (H, W) grid each."""
        parts: list[list[torch.Tensor]] = [[] for _ in range(len(images))]
        for index, chunk in self.stream(images):
            parts[index].append(chunk)
        return torch.stack([torch.cat(chunks) for chunks in parts])

    @torch.inference_mode()
    def stream(self, images: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (image index, patch features ``(n, D)``) in order, image after image, tile after tile.

        Tiles go through the backbone ``batch_size`` at a time and come out in pieces that never span
        two images, so a caller can write or search them as they come: an image of many tiles is
        never held whole.
        """
        tiles = self.geometry.tiles(images)
        per_image = len(tiles) // len(images)
        step = self.batch_size if per_image > 1 else len(tiles)
        for start in range(0, len(tiles), step):
            features = self.features(tiles[start:start + step].to(self.device, memory_format=torch.channels_last))
            tile = start
            while tile < start + len(features):
                image = tile // per_image
                end = min(start + len(features), (image + 1) * per_image)  # this image's last tile in the batch
                yield image, features[tile - start:end - start].flatten(0, 1)
                tile = end

    def features(self, tiles: torch.Tensor) -> torch.Tensor:
        """Patch features ``(N, H * W, D)`` of tiles ``(N, 3, tile, tile)`` on the extractor's device: the backbone,
        then the aggregation (what ``eagle export`` writes as a graph)."""
        outputs = self.model(tiles)
        return aggregate([outputs[layer] for layer in self.layers], pretrain_dim=self.pretrain_dim,
                         target_dim=self.target_dim, layer_weights=self.multipliers())

    def multipliers(self) -> tuple[float, ...]:
        """The layer weights multiplied on every forward: none when all are 1 (layers pooled to one width, as the
        reference)."""
        if self._weights is None:
            self._weights = self.layer_weights if any(w != 1 for w in self.layer_weights) else ()
        return self._weights

    def grid(self) -> tuple[int, int]:
        """The patch grid (H, W) of one tile (the frame without tiling), read off one dummy forward."""
        return self._probe()[0]

    def _probe(self) -> tuple[tuple[int, int], list[int]]:
        """(the first layer's grid, every layer's channels), from one dummy forward."""
        if self._shapes is None:
            side = self.geometry.tile_side
            with torch.inference_mode():
                outputs = self.model(torch.zeros(1, 3, side, side, device=self.device))
            self._shapes = (tuple(outputs[self.layers[0]].shape[-2:]),
                            [outputs[layer].shape[1] for layer in self.layers])
        return self._shapes
