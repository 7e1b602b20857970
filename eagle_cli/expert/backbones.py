"""Torchvision backbones by name, their feature layers, and offline-safe weight loading."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.error import URLError

import torch
import torchvision
from torch import fx
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import feature_extraction

from eagle_cli.digests import sha256_file
from eagle_cli.errors import ParameterError, WeightsError


@dataclass(frozen=True)
class BackboneSpec:
    """A torchvision architecture, the two blocks playing PatchCore's layer2/layer3, and its weights."""

    name: str
    layers: tuple[str, ...]
    build: Callable[..., torch.nn.Module]
    weights: torchvision.models.WeightsEnum
    #: The side of the images it was trained on (ImageNet's crop): ``--tile auto`` tiles at it.
    input_side: int = 224

    @property
    def weights_file(self) -> str:
        return self.weights.url.rsplit("/", 1)[-1]


# IMAGENET1K_V1 everywhere: the reference loads WideResNet with the legacy pretrained=True, i.e. V1.
BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "wide_resnet50_2",
            ("layer2", "layer3"),
            torchvision.models.wide_resnet50_2,
            torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1,
        ),
        BackboneSpec(
            "resnet18", ("layer2", "layer3"), torchvision.models.resnet18,
            torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        ),
        # features.6 (32 ch, stride 8) and features.13 (96 ch, stride 16) sit where ResNet's layer2/layer3 do.
        BackboneSpec(
            "mobilenet_v2",
            ("features.6", "features.13"),
            torchvision.models.mobilenet_v2,
            torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
        ),
    )
}


def block_names(model: torch.nn.Module) -> list[str]:
    """The blocks whose outputs can serve as feature layers: the backbone's stages (ResNet's ``layer1``…
    ``layer4``) or, where the stages are one sequence, its members (MobileNetV2's ``features.0``…)."""
    names = []
    for name, child in model.named_children():
        if name in ("fc", "classifier", "avgpool"):
            continue
        if isinstance(child, torch.nn.Sequential) and name == "features":
            names += [f"{name}.{index}" for index in range(len(child))]
        else:
            names.append(name)
    return names


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ParameterError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    return BACKBONES[name]


def cache_dir() -> Path:
    """torchvision's weight cache: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _expected_prefix(file_name: str) -> str | None:
    # torchvision names files <arch>-<first 8 hex of sha256>.pth
    stem = Path(file_name).stem
    prefix = stem.rsplit("-", 1)[-1]
    return prefix if len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix) else None


def import_weights(spec: BackboneSpec, source: Path) -> Path:
    """Copy a downloaded torchvision weights file into the cache after checking its sha256 prefix."""
    if not source.is_file():
        raise WeightsError(f"{source} does not exist.")
    prefix = _expected_prefix(spec.weights_file)
    digest = sha256_file(source)
    if prefix and not digest.startswith(prefix):
        raise WeightsError(
            f"{source} has sha256 {digest[:12]}…, not the {prefix}… of torchvision's {spec.weights_file}; "
            "it is another file or corrupt."
        )
    target = cache_dir() / spec.weights_file
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _imagenet_state(spec: BackboneSpec) -> dict:
    path = cache_dir() / spec.weights_file
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(spec.weights.url, str(path), progress=False)
        except (URLError, OSError, RuntimeError) as exc:
            raise WeightsError(
                f"ImageNet weights for {spec.name} are not in the cache and could not be downloaded ({exc}). "
                f"Copy {spec.weights_file} into {path.parent} (or run `eagle backbones import-weights "
                f"{spec.name} FILE`), set TORCH_HOME to a folder holding hub/checkpoints/{spec.weights_file}, "
                "or pass --weights PATH."
            ) from None
    prefix = _expected_prefix(spec.weights_file)
    if prefix and not sha256_file(path).startswith(prefix):
        raise WeightsError(f"{path} does not match its published sha256 prefix {prefix}; delete it and fetch it again.")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_backbone(name: str, weights: str) -> tuple[torch.nn.Module, str]:
    """Build ``name`` with ``weights`` ("imagenet", "none" or a file path) in eval mode.

    Returns the model and a lineage string naming the weights ("imagenet:IMAGENET1K_V1",
    "none", or "file:<sha256 prefix>"), so banks and features from different weights never mix.
    """
    spec = get_spec(name)
    # Random init is seeded so that "none" means the same network in every stage and every run:
    # a bank and the features scored against it must come from one set of weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = spec.build(weights=None)
    if weights == "imagenet":
        state, tag = _imagenet_state(spec), f"imagenet:{spec.weights.name}"
    elif weights == "none":
        return model.eval(), "none"
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"Weights file {path} does not exist; pass imagenet, none, or a .pth state dict.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any file at all: the safe unpickler fails in many ways
            raise WeightsError(f"{path} is not a loadable state dict ({type(exc).__name__}: {exc}); pass a "
                               f".pth file saved from torchvision's {name} with torch.save(model.state_dict(), …)."
                               ) from None
        if not isinstance(state, dict):
            raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict (names → tensors).")
        tag = f"file:{sha256_file(path)[:16]}"
    _load_matching(model, state, name)
    return model.eval(), tag


def _load_matching(model: torch.nn.Module, state: dict, name: str) -> None:
    """Load ``state`` into ``model``, or say which tensors do not fit."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape; torch lists each on its own line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise WeightsError(f"The weights do not fit {name}: {lines[-1] if len(lines) > 1 else lines[0]}") from None
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if missing or unexpected:
        raise WeightsError(f"The weights do not fit {name}: {len(missing)} of its tensors are missing (e.g. "
                           f"{missing[:1]}) and {len(unexpected)} are not its own (e.g. {unexpected[:1]}); pass a "
                           f"state dict saved from torchvision's {name}.")


def feature_extractor(name: str, weights: str, layers: tuple[str, ...] = ()) -> tuple[torch.nn.Module, str]:
    """Return a module mapping images to ``{layer: feature map}`` (``layers``, default the backbone's two)
    that stops after the last layer."""
    spec = get_spec(name)
    layers = tuple(layers) or spec.layers
    model, tag = load_backbone(name, weights)
    blocks = block_names(model)
    unknown = [layer for layer in layers if layer not in blocks]
    if unknown:
        raise ParameterError(f"--layers {', '.join(unknown)}: not a block of {name}; its blocks are "
                             f"{', '.join(blocks)} (default {', '.join(spec.layers)}).")
    extractor = feature_extraction.create_feature_extractor(fold_batch_norms(model), return_nodes=list(layers))
    for param in extractor.parameters():
        param.requires_grad_(False)
    return extractor.eval(), tag


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Fold each batch norm that only rescales one convolution's output into that convolution, in place.

    In eval mode a batch norm is a fixed per-channel affine map: folded into the convolution's weights and
    bias it costs nothing, where on its own it is another pass over every activation (a fifth of
    MobileNetV2's forward on CPU, BENCHMARKS.md). The same function to float rounding (~1e-6).
    """
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if not (isinstance(modules.get(node.target), torch.nn.BatchNorm2d) and isinstance(source, fx.Node)
                and source.op == "call_module" and isinstance(modules.get(source.target), torch.nn.Conv2d)):
            continue
        # A module called twice, or a convolution whose raw output is read elsewhere, must stay as it is.
        if calls[node.target] == calls[source.target] == 1 and len(source.users) == 1:
            model.set_submodule(source.target, fuse_conv_bn_eval(modules[source.target], modules[node.target]))
            model.set_submodule(node.target, torch.nn.Identity())
    return model
