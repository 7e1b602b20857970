"""Which torch device a setting names (torch is imported only when one is resolved)."""

from __future__ import annotations

import re

from eagle_cli.errors import ParameterError


def device_rule(name: str) -> str | None:
    """Why ``name`` is none of auto, cpu, cuda, cuda:N, or None (checked without torch, before any work)."""
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", name) else "must be auto, cpu, cuda or cuda:N"


def resolve_device(name: str):
    """``auto`` picks the first GPU when there is one; ``cuda[:N]`` must exist. Returns a ``torch.device``."""
    if (problem := device_rule(name)) is not None:
        raise ParameterError(f"--device {problem}, got {name!r}.")
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"Device {name!r} was asked for but no CUDA GPU is visible; use --device cpu.")
    return device
