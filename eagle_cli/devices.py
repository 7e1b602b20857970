"""Which torch device a setting names (torch is imported only when one is resolved)."""

from __future__ import annotations

from eagle_cli.errors import ParameterError


def resolve_device(name: str):
    """``auto`` picks the first GPU when there is one; ``cuda[:N]`` must exist. Returns a ``torch.device``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ParameterError(f"Unknown device {name!r}; use auto, cpu or cuda[:N].") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"Device {name!r} was asked for but no CUDA GPU is visible; use --device cpu.")
    return device
