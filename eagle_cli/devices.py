"""Which torch device a setting names (torch is imported only when one is resolved)."""

from __future__ import annotations

import re

from eagle_cli.errors import ParameterError


def check_device(name: str) -> None:
    """Refuse a name that is none of auto, cpu, cuda[:N] (without torch: settings check it before any work)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ParameterError(f"Unknown device {name!r}; use auto, cpu or cuda[:N].")


def resolve_device(name: str):
    """``auto`` picks the first GPU when there is one; ``cuda[:N]`` must exist. Returns a ``torch.device``."""
    check_device(name)
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"Device {name!r} was asked for but no CUDA GPU is visible; use --device cpu.")
    return device
