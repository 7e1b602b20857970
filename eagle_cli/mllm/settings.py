"""CAAS and model settings that the CLI can parse without importing transformers."""

from __future__ import annotations

from dataclasses import dataclass

from eagle_cli.errors import ParameterError

MODES = ("renorm", "scale")
IMAGES = ("query", "all")
#: Short names for the models people ask for most; anything else is a hub id or a local folder.
PRESETS = {
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen2.5-vl-32b": "Qwen/Qwen2.5-VL-32B-Instruct",
    "llava-onevision-7b": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "internvl3-8b": "OpenGVLab/InternVL3-8B-hf",
}


@dataclass(frozen=True)
class CaasSettings:
    """α, the 0-based decoder layers it acts in, the mode, and which images' tokens count."""

    alpha: float = 0.6
    layers: tuple[int, ...] = tuple(range(9, 15))
    mode: str = "renorm"
    images: str = "query"

    def __post_init__(self):
        if self.alpha < 0:
            raise ParameterError(f"--caas-alpha must be ≥ 0, got {self.alpha}.")
        if self.mode not in MODES:
            raise ParameterError(f"--caas-mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.images not in IMAGES:
            raise ParameterError(f"--caas-images must be one of {', '.join(IMAGES)}, got {self.images!r}.")

    def check_layers(self, n_layers: int) -> None:
        bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
        if bad:
            raise ParameterError(f"--caas-layers {bad} are outside this model's decoder layers 0–{n_layers - 1}.")


def parse_layers(spec: str) -> tuple[int, ...]:
    """'9-14' or '9,10,12' → a sorted tuple of layer indices."""
    layers: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ParameterError(f"--caas-layers takes ranges like 9-14 or lists like 9,10,12, got {spec!r}.") from None
    return tuple(sorted(layers))
