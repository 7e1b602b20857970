"""A seeded, offline MVTec-AD-layout dataset: scikit-image textures and a drawn object, with exact defect masks.

Good images are random crops of a texture (or a jittered drawn washer) with small lighting and
noise changes; defective ones add a scratch, a stain, a hole or a pasted patch of another texture,
of random size and contrast, placed where the 256 → 224 centre crop sees it.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from skimage import data as skdata

from eagle_cli.errors import ParameterError

TEXTURES = ("brick", "grass", "gravel")
CATEGORIES = (*TEXTURES, "washer")
DEFECTS = ("scratch", "stain", "hole", "patch")
_TINTS = {"brick": (1.0, 0.72, 0.58), "grass": (0.7, 1.0, 0.6), "gravel": (0.9, 0.9, 1.0), "washer": (1.0, 1.0, 1.0)}


def _texture(name: str, size: int) -> np.ndarray:
    """A grayscale texture at least ``size`` px on each side, float32 in [0, 255]."""
    image = Image.fromarray(getattr(skdata, name)())
    if min(image.size) < size + size // 4:
        scale = (size + size // 4) / min(image.size)
        image = image.resize((int(image.width * scale) + 1, int(image.height * scale) + 1), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _offsets(texture: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Crop corners: a window an eighth larger than the crop, in 8 px steps (a part shifting in its fixture)."""
    slack = min(size // 8, texture.shape[0] - size, texture.shape[1] - size)
    steps = range(0, slack + 1, 8)
    return [(y, x) for y in steps for x in steps]


def _crop(texture: np.ndarray, size: int, rng: np.random.Generator, position: int | None = None) -> np.ndarray:
    """A crop at offset ``position`` (cycled, so training images cover every offset) or a random one."""
    offsets = _offsets(texture, size)
    y, x = offsets[position % len(offsets)] if position is not None else offsets[rng.integers(len(offsets))]
    return texture[y:y + size, x:x + size]


def _tinted(gray: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    return gray[..., None] * np.asarray(tint, dtype=np.float32)


def _washer(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-4, 4, 2)
    r = np.hypot(yy - cy, xx - cx)
    ring = (r < 0.38 * size) & (r > 0.16 * size)
    image = np.full((size, size, 3), 70.0, dtype=np.float32)
    shade = 170 + 30 * np.cos((r - 0.27 * size) / (0.11 * size) * np.pi / 2)
    image[ring] = shade[ring, None] * np.array([1.0, 1.0, 1.05], dtype=np.float32)
    return image


def _good(category: str, textures: dict, size: int, rng: np.random.Generator, position: int | None = None) -> np.ndarray:
    if category == "washer":
        image = _washer(size, rng)
    else:
        image = _tinted(_crop(textures[category], size, rng, position), _TINTS[category])
    image = image * rng.uniform(0.95, 1.05) + rng.normal(0, 2.0, image.shape)
    return image


def _defect_centre(category: str, size: int, rng: np.random.Generator) -> tuple[float, float]:
    if category == "washer":
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.22, 0.32) * size
        return size / 2 + radius * np.cos(angle), size / 2 + radius * np.sin(angle)
    return tuple(rng.uniform(0.25, 0.75, 2) * size)


def _add_defect(image: np.ndarray, kind: str, category: str, textures: dict, rng: np.random.Generator):
    """Draw one defect into ``image`` (in place); return its boolean mask."""
    size = image.shape[0]
    cx, cy = _defect_centre(category, size, rng)
    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    if kind == "scratch":
        length, angle = rng.uniform(0.15, 0.35) * size, rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=int(rng.integers(3, 6)))
        mask = np.asarray(mask_img) > 0
        image[mask] += rng.choice([-1, 1]) * rng.uniform(80, 130)
    elif kind == "stain":
        a, b = rng.uniform(0.04, 0.09, 2) * size
        draw.ellipse([cx - a, cy - b, cx + a, cy + b], fill=255)
        soft = np.asarray(mask_img.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)[..., None] / 255
        colour = np.array([120, 75, 35], dtype=np.float32)
        opacity = rng.uniform(0.6, 0.85) * soft
        image[:] = image * (1 - opacity) + colour * opacity
        mask = soft[..., 0] > 0.5
    elif kind == "hole":
        r = rng.uniform(0.025, 0.055) * size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        mask = np.asarray(mask_img) > 0
        image[mask] = rng.uniform(10, 35)
    else:
        side = int(rng.uniform(0.1, 0.18) * size)
        others = [t for t in TEXTURES if t != category]
        donor = _tinted(_crop(textures[others[rng.integers(len(others))]], side, rng), _TINTS[category])
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        image[y0:y0 + side, x0:x0 + side] = donor
        mask = np.zeros((size, size), dtype=bool)
        mask[y0:y0 + side, x0:x0 + side] = True
    return mask


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8)).save(path)


def generate(
    out: Path,
    *,
    categories: tuple[str, ...] = CATEGORIES,
    n_train: int = 30,
    n_test_good: int = 10,
    n_test_per_defect: int = 4,
    size: int = 256,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write an MVTec-AD-layout dataset under ``out``; return the category folders."""
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ParameterError(f"Unknown synthetic categories {sorted(unknown)}; choose from {', '.join(CATEGORIES)}.")
    if size < 64:
        raise ParameterError(f"Synthetic images need at least 64 px, got {size}.")
    textures = {name: _texture(name, size) for name in TEXTURES}
    folders = []
    for category in categories:
        rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
        base = out / category
        for i in range(n_train):
            _save(_good(category, textures, size, rng, position=i), base / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            _save(_good(category, textures, size, rng), base / "test" / "good" / f"{i:03d}.png")
        for kind in DEFECTS:
            for i in range(n_test_per_defect):
                image = _good(category, textures, size, rng)
                mask = _add_defect(image, kind, category, textures, rng)
                _save(image, base / "test" / kind / f"{i:03d}.png")
                _save(mask.astype(np.float32) * 255, base / "ground_truth" / kind / f"{i:03d}_mask.png")
        folders.append(base)
        if progress is not None:
            progress(1)
    return folders
