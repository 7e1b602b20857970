"""Patch features reproduce the reference aggregation; backbones load offline or say where the file goes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image

from eagle_cli.errors import ParameterError, WeightsError
from eagle_cli.expert.backbones import cache_dir, feature_extractor, fold_batch_norms, get_spec, load_backbone
from eagle_cli.expert.features import PatchFeatureExtractor, aggregate
from eagle_cli.expert.geometry import Geometry


def reference_aggregate(maps, dim=1024, target=1024):
    """The reference's order of operations, written out literally (eagle-method.md A.3)."""
    unfold = torch.nn.Unfold(kernel_size=3, stride=1, padding=1)
    height, width = maps[0].shape[-2:]
    per_layer = []
    for fmap in maps:
        b, c, h, w = fmap.shape
        patches = unfold(fmap).reshape(b, c, 3, 3, h * w).permute(0, 4, 1, 2, 3)  # (B, hw, C, 3, 3)
        if (h, w) != (height, width):
            x = patches.reshape(b, h, w, c, 3, 3).permute(0, 3, 4, 5, 1, 2).reshape(-1, h, w)
            x = F.interpolate(x.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False).squeeze(1)
            patches = x.reshape(b, c, 3, 3, height, width).permute(0, 4, 5, 1, 2, 3).reshape(b, -1, c, 3, 3)
        flat = patches.reshape(-1, c * 9)
        per_layer.append(F.adaptive_avg_pool1d(flat.reshape(len(flat), 1, -1), dim).squeeze(1))
    stacked = torch.stack(per_layer, dim=1).reshape(len(per_layer[0]), 1, -1)
    return F.adaptive_avg_pool1d(stacked, target).reshape(maps[0].shape[0], height * width, target)


@pytest.mark.parametrize("channels", [(512, 1024), (32, 96), (64, 128)])
def test_aggregation_matches_the_reference_order(channels):
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, channels[0], 8, 8, generator=g), torch.randn(2, channels[1], 4, 4, generator=g)]
    ours = aggregate(maps)
    assert ours.shape == (2, 64, 1024)
    torch.testing.assert_close(ours, reference_aggregate(maps), atol=1e-5, rtol=1e-5)


def test_native_widths_are_each_channels_3x3_mean_on_the_first_layers_grid():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 32, 8, 8, generator=g), torch.randn(2, 96, 4, 4, generator=g)]
    native = aggregate(maps, pretrain_dim=0, target_dim=0)
    assert native.shape == (2, 64, 32 + 96)
    local = [F.avg_pool2d(m, 3, stride=1, padding=1) for m in maps]  # zero padding counted, as unfold pads
    expected = torch.cat([local[0], F.interpolate(local[1], size=(8, 8), mode="bilinear", align_corners=False)], 1)
    torch.testing.assert_close(native, expected.flatten(2).transpose(1, 2))
    assert aggregate(maps, pretrain_dim=0, target_dim=64).shape == (2, 64, 64)


def test_layer_weights_multiply_each_layers_values_and_enter_the_lineage():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(1, 32, 8, 8, generator=g), torch.randn(1, 96, 4, 4, generator=g)]
    plain = aggregate(maps, pretrain_dim=0, target_dim=0)
    weighted = aggregate(maps, pretrain_dim=0, target_dim=0, layer_weights=(3.0, 0.5))
    torch.testing.assert_close(weighted[..., :32], 3 * plain[..., :32])
    torch.testing.assert_close(weighted[..., 32:], 0.5 * plain[..., 32:])
    extractor = PatchFeatureExtractor("mobilenet_v2", weights="none", geometry=Geometry(96, 80),
                                      device=torch.device("cpu"), pretrain_dim=0, target_dim=0, layer_weights=(3, 1))
    assert extractor.lineage.layer_weights == (3, 1) and extractor.lineage.pooling == (0, 0)
    reference = PatchFeatureExtractor("mobilenet_v2", weights="none", geometry=Geometry(96, 80),
                                      device=torch.device("cpu"))
    assert reference.lineage.layer_weights == (1.0, 1.0) and reference.lineage.pooling == (1024, 1024)
    with pytest.raises(ParameterError, match="2 layers"):
        PatchFeatureExtractor("mobilenet_v2", weights="none", geometry=Geometry(96, 80), device=torch.device("cpu"),
                              layer_weights=(1.0,))


def test_the_extractor_reports_the_native_feature_size_it_writes():
    extractor = PatchFeatureExtractor("mobilenet_v2", weights="none", geometry=Geometry(96, 80),
                                      device=torch.device("cpu"), pretrain_dim=0, target_dim=0)
    features = extractor(torch.zeros(1, 3, 80, 80))
    assert features.shape[-1] == extractor.feature_dim == extractor.lineage.feature_dim == 32 + 96


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (1024, 777)])
def test_geometry_matches_torchvision_resize_and_centre_crop(size):
    geometry = Geometry(256, 224)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    expected = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                          T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(image)
    torch.testing.assert_close(torch.from_numpy(geometry.to_array(image)), expected)
    resized = T.Resize(256)(image)
    assert geometry.resized_size(*size) == resized.size


def test_mobilenet_imagenet_weights_load_offline_and_classify():
    model, tag = load_backbone("mobilenet_v2", "imagenet")
    assert tag == "imagenet:IMAGENET1K_V1"
    from skimage import data

    image = torch.from_numpy(Geometry(256, 224).to_array(Image.fromarray(data.chelsea())))
    with torch.inference_mode():
        top = model(image[None]).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet's domestic-cat classes


def test_folded_batch_norms_leave_the_imagenet_features_as_they_were():
    torch.manual_seed(0)
    model, _ = load_backbone("mobilenet_v2", "imagenet")
    layers = list(get_spec("mobilenet_v2").layers)
    unfolded = torchvision.models.feature_extraction.create_feature_extractor(model, return_nodes=layers).eval()
    folded, _ = feature_extractor("mobilenet_v2", "imagenet")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        want, got = unfolded(images), folded(images)
    for layer in layers:
        torch.testing.assert_close(got[layer], want[layer], atol=1e-4, rtol=1e-4)


class _ConvReadTwice(torch.nn.Module):
    """A convolution whose output a batch norm rescales and a residual also reads, then a plain conv → norm."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
        self.head, self.head_norm = torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.head_norm(self.head(self.norm(y) + y))


def test_a_norm_is_folded_only_where_its_convolution_feeds_nothing_else():
    torch.manual_seed(0)
    model = _ConvReadTwice()
    for norm in (model.norm, model.head_norm):  # running statistics that are not the identity
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 2)
    model.eval()
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model(images)
        got = fold_batch_norms(model)(images)
    assert isinstance(model.norm, torch.nn.BatchNorm2d)  # its convolution's raw output is read again
    assert isinstance(model.head_norm, torch.nn.Identity)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_missing_weights_name_the_file_and_where_to_put_it(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    spec = get_spec("resnet18")
    assert not (cache_dir() / spec.weights_file).exists()
    with pytest.raises(WeightsError, match=rf"{spec.weights_file}.*{cache_dir()}"):
        load_backbone("resnet18", "imagenet")


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(load_backbone("resnet18", "none")[0].state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit mobilenet_v2"):
        load_backbone("mobilenet_v2", str(path))


@pytest.mark.parametrize("content,message", [
    (b"hello", "is not a loadable state dict \\(KeyError"),
    (torch.zeros(3), "holds a Tensor, not a state dict"),
    ({"a": torch.zeros(1)}, "262 of its tensors are missing .* and 1 are not its own \\(e.g. \\['a'\\]\\)"),
])
def test_a_weights_file_that_is_no_mobilenet_state_dict_is_one_message(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=message):
        load_backbone("mobilenet_v2", str(path))


@pytest.mark.parametrize("backbone,layers,grid,dim,weights", [
    ("mobilenet_v2", ("features.6", "features.10"), (10, 10), 32 + 64, (2.0, 1.0)),
    ("mobilenet_v2", ("features.6", "features.13", "features.16"), (10, 10), 32 + 96 + 160, (5.0, 160 / 96, 1.0)),
    ("resnet18", ("layer1", "layer2"), (20, 20), 64 + 128, (2.0, 1.0)),
])
def test_other_blocks_give_their_grid_widths_and_weights(backbone, layers, grid, dim, weights):
    extractor = PatchFeatureExtractor(backbone, weights="none", geometry=Geometry(96, 80), device=torch.device("cpu"),
                                      pretrain_dim=0, target_dim=0, layers=layers)
    features = extractor(torch.zeros(1, 3, 80, 80))
    assert extractor.grid() == grid and features.shape == (1, grid[0] * grid[1], dim)
    assert extractor.layer_weights == pytest.approx(weights) and extractor.lineage.layers == tuple(layers)


def test_a_block_the_backbone_does_not_have_lists_the_ones_it_has():
    with pytest.raises(ParameterError, match="features.19: not a block of mobilenet_v2; its blocks are "
                                             "features.0, .* features.18 \\(default features.6, features.13\\)"):
        PatchFeatureExtractor("mobilenet_v2", weights="none", geometry=Geometry(96, 80), device=torch.device("cpu"),
                              layers=("features.6", "features.19"))
    with pytest.raises(ParameterError, match="3 weights, but 2 layers are used \\(layer1, layer3\\)"):
        PatchFeatureExtractor("resnet18", weights="none", geometry=Geometry(96, 80), device=torch.device("cpu"),
                              layers=("layer1", "layer3"), layer_weights=(1.0, 1.0, 1.0))


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ParameterError, match="wide_resnet50_2, resnet18, mobilenet_v2"):
        get_spec("vit")


@pytest.mark.parametrize("backbone", ["wide_resnet50_2", "resnet18", "mobilenet_v2"])
def test_extractor_gives_layer2_grid_and_1024_dims(backbone):
    extractor = PatchFeatureExtractor(backbone, weights="none", geometry=Geometry(96, 80), device=torch.device("cpu"))
    features = extractor(torch.zeros(2, 3, 80, 80))
    assert extractor.grid() == (10, 10)
    assert features.shape == (2, 100, 1024)
    assert extractor.lineage.weights == "none" and extractor.lineage.backbone == backbone
