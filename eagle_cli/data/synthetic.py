"""A seeded, offline MVTec-AD-layout dataset with exact defect masks, in two variation modes.

``clean``: good images are random crops of a scikit-image texture (or a jittered drawn washer)
with small lighting and noise changes; defective ones add a strong scratch, stain, hole or pasted
patch of another texture. Easy on purpose: it proves the plumbing (image AUROC ≈ 1).

``realistic``: every image is a new capture of a part. Pose (rotation, scale, position), lighting
(gain, gamma, a gradient across the part, vignetting, colour balance), focus blur and sensor noise
vary between good parts, and the same four defect kinds are weak: low contrast, small and
semi-transparent. Training and test images come from the same distribution, so a threshold fitted
on good training images faces what it will meet on the line. Besides the clean categories it has a
colour tissue texture and a photographed object (coins).

``highres``: the realistic captures of every realistic category, meant for parts photographed at
1024 px and more, with tiny defects: each covers 0.005–0.1 % of the image (log-uniformly: at 1024 px
a pit of 4 px radius to a stain of 18, a scratch 1–3 px wide), its contrast anywhere from the
realistic set's weak to the clean set's clear. A third of them sit in the outer border strip that a
256 → 224 centre crop cuts away; the rest anywhere. It shows what a large frame's verdict loses.

Elsewhere defects are placed where the 256 → 224 centre crop sees them.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage
from skimage import data as skdata

from eagle_cli.errors import ParameterError

VARIATIONS = ("clean", "realistic", "highres")
TEXTURES = ("brick", "grass", "gravel")
CATEGORIES = (*TEXTURES, "washer")
REALISTIC_CATEGORIES = (*TEXTURES, "tissue", "coins", "washer")
HIGHRES_CATEGORIES = REALISTIC_CATEGORIES
#: Each category of each variation.
VARIATION_CATEGORIES = {"clean": CATEGORIES, "realistic": REALISTIC_CATEGORIES, "highres": HIGHRES_CATEGORIES}
#: The share of the image a tiny defect covers: log-uniform between these.
_TINY_AREA = (5e-5, 1e-3)
#: scikit-image pictures behind the photographed categories.
_PICTURES = {"tissue": "immunohistochemistry", "coins": "coins"}
DEFECTS = ("scratch", "stain", "hole", "patch")
#: Realistic defect strength per category: busy textures hide weak defects, a smooth washer shows
#: them, so each is scaled until the expert finds them often but not always (image AUROC ≈ 0.75–0.95).
_STRENGTH = {"grass": 1.8, "gravel": 1.8, "washer": 0.6}
_TINTS = {"brick": (1.0, 0.72, 0.58), "grass": (0.7, 1.0, 0.6), "gravel": (0.9, 0.9, 1.0), "washer": (1.0, 1.0, 1.0),
          "tissue": (0.85, 0.62, 0.45), "coins": (1.0, 1.0, 1.0)}


def _picture(name: str, min_side: int) -> np.ndarray:
    """A scikit-image picture resized so its shorter side is at least ``min_side``, float32 in [0, 255]."""
    image = Image.fromarray(getattr(skdata, _PICTURES.get(name, name))())
    if min(image.size) < min_side:
        scale = min_side / min(image.size)
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


def _clean_good(category: str, sources: dict, size: int, rng: np.random.Generator,
                position: int | None = None) -> np.ndarray:
    if category == "washer":
        image = _washer(size, rng)
    else:
        image = _tinted(_crop(sources[category], size, rng, position), _TINTS[category])
    return image * rng.uniform(0.95, 1.05) + rng.normal(0, 2.0, image.shape)


def _warp(picture: np.ndarray, size: int, centre: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """The ``size``² view of ``picture`` around ``centre`` (row, col), turned by ``angle`` rad, zoomed by ``scale``."""
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    matrix = np.array([[cos, -sin], [sin, cos]])
    offset = centre - matrix @ np.full(2, (size - 1) / 2)
    planes = picture[..., None] if picture.ndim == 2 else picture
    return np.stack([ndimage.affine_transform(planes[..., c], matrix, offset=offset, output_shape=(size, size),
                                              order=1, mode="reflect") for c in range(planes.shape[-1])], axis=-1)


def _turned_washer(size: int, rng: np.random.Generator) -> np.ndarray:
    """A washer with the fine concentric marks of turning, different on every part."""
    image = _washer(size, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(yy - size / 2, xx - size / 2)
    marks = 1 + rng.uniform(0.02, 0.05) * np.sin(2 * np.pi * r / rng.uniform(3, 6) + rng.uniform(0, 2 * np.pi))
    grain = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5).astype(np.float32)
    return image * (marks + 0.03 * grain / grain.std())[..., None]


def _realistic_scene(category: str, sources: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """The part as it lies this time: a texture anywhere and at any small angle, or an object slightly moved."""
    if category == "washer":
        return _turned_washer(size, rng)
    picture = sources[category]
    if category == "coins":
        # One part in a fixture: a few pixels and degrees off its nominal pose.
        centre = np.array(picture.shape[:2]) / 2 + rng.uniform(-0.04, 0.04, 2) * size
        view = _warp(picture, size, centre, math.radians(rng.uniform(-3, 3)), rng.uniform(0.97, 1.03))
    else:
        scale = rng.uniform(0.9, 1.1)
        margin = size / 2 * math.sqrt(2) / scale + 1
        free = np.array(picture.shape[:2]) - 2 * margin
        centre = margin + rng.uniform(0, 1, 2) * np.maximum(free, 0)
        view = _warp(picture, size, centre, math.radians(rng.uniform(-10, 10)), scale)
    return view * np.asarray(_TINTS[category], dtype=np.float32) if view.shape[-1] == 1 else view


def _capture(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light and photograph ``(H, W, 3)`` radiance: gain, gradient, vignetting, colour, gamma, blur and noise."""
    size = image.shape[0]
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size - 0.5
    direction = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.85, 1.15) * (1 + rng.uniform(0, 0.25) * (np.cos(direction) * xx + np.sin(direction) * yy))
    light *= 1 - rng.uniform(0, 0.3) * (xx ** 2 + yy ** 2)
    image = image * light[..., None] * rng.normal(1.0, 0.03, 3).astype(np.float32)
    image = 255 * (np.clip(image, 0, None) / 255) ** rng.uniform(0.85, 1.15)
    image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0, 1.2),) * 2 + (0,))
    return image + rng.normal(0, rng.uniform(2, 6), image.shape)


def _defect_centre(category: str, size: int, rng: np.random.Generator, *, small: bool = False
                   ) -> tuple[float, float]:
    if small:
        centre = rng.uniform(0.05, 0.95, 2)
        if rng.random() < 1 / 3:
            # Inside the outer 5 % of one side: a 256 → 224 centre crop cuts 6.25 % away.
            axis, edge = rng.integers(2), rng.uniform(0.015, 0.05)
            centre[axis] = edge if rng.random() < 0.5 else 1 - edge
        return tuple(centre * size)
    if category == "washer":
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.22, 0.32) * size
        return size / 2 + radius * np.cos(angle), size / 2 + radius * np.sin(angle)
    return tuple(rng.uniform(0.25, 0.75, 2) * size)


def _add_defect(image: np.ndarray, kind: str, category: str, sources: dict, rng: np.random.Generator, *,
                weak: bool = False, tiny: bool = False) -> np.ndarray:
    """Draw one defect into ``image`` (in place); return its boolean mask. ``weak``: the realistic strengths;
    ``tiny``: a defect of a given share of the image (:data:`_TINY_AREA`) whose contrast runs from weak to clear."""
    size = image.shape[0]
    strength = _STRENGTH.get(category, 1.0) if weak or tiny else 1.0
    cx, cy = _defect_centre(category, size, rng, small=tiny)
    if tiny:
        area = size * size * math.exp(rng.uniform(*np.log(_TINY_AREA)))
        clarity = rng.uniform(0, 1)  # 0: the realistic set's weak contrast, 1: the clean set's clear one

    def contrast(weak_value, clear_value) -> float:
        """The defect's contrast; the values are drawn only when used, so each variation keeps its pixels."""
        if tiny:
            return (1 - clarity) * weak_value() + clarity * clear_value()
        return weak_value() if weak else clear_value()

    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    if kind == "scratch":
        if tiny:
            width = int(rng.integers(1, 4))
            length, angle = area / width, rng.uniform(0, np.pi)
        else:
            length, angle = rng.uniform(0.15, 0.35) * size, rng.uniform(0, np.pi)
            width = int(rng.integers(2, 4) if weak else rng.integers(3, 6))
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=width)
        mask = np.asarray(mask_img) > 0
        sign = rng.choice([-1, 1])
        image[mask] += sign * contrast(lambda: strength * rng.uniform(25, 60), lambda: rng.uniform(80, 130))
    elif kind == "stain":
        if tiny:
            aspect = rng.uniform(1, 2)
            a = math.sqrt(area / (math.pi * aspect))
            b = a * aspect
        else:
            a, b = rng.uniform(0.03, 0.07, 2) * size if weak else rng.uniform(0.04, 0.09, 2) * size
        draw.ellipse([cx - a, cy - b, cx + a, cy + b], fill=255)
        soft = np.asarray(mask_img.filter(ImageFilter.GaussianBlur(1 if tiny else 2)),
                          dtype=np.float32)[..., None] / 255
        colour = np.array([120, 75, 35], dtype=np.float32)
        opacity = contrast(lambda: min(0.9, strength * rng.uniform(0.3, 0.55)), lambda: rng.uniform(0.6, 0.85)) * soft
        image[:] = image * (1 - opacity) + colour * opacity
        mask = soft[..., 0] > 0.5
    elif kind == "hole":
        if tiny:
            r = math.sqrt(area / math.pi)
        else:
            r = rng.uniform(0.02, 0.04) * size if weak else rng.uniform(0.025, 0.055) * size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        mask = np.asarray(mask_img) > 0
        if tiny or weak:
            opacity = contrast(lambda: min(0.95, strength * rng.uniform(0.45, 0.75)), lambda: 1.0)
            image[mask] = image[mask] * (1 - opacity) + opacity * rng.uniform(10, 35)
        else:
            image[mask] = rng.uniform(10, 35)
    else:
        if tiny:
            side = max(2, int(math.sqrt(area)))
        else:
            side = int((rng.uniform(0.08, 0.14) if weak else rng.uniform(0.1, 0.18)) * size)
        others = [t for t in TEXTURES if t != category]
        donor = _tinted(_crop(sources[others[rng.integers(len(others))]], side, rng), _TINTS[category])
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        if tiny:  # a tiny patch in the border strip must stay inside the image
            x0, y0 = min(max(x0, 0), size - side), min(max(y0, 0), size - side)
        opacity = contrast(lambda: min(1.0, strength * rng.uniform(0.5, 0.8)), lambda: 1.0)
        image[y0:y0 + side, x0:x0 + side] = (1 - opacity) * image[y0:y0 + side, x0:x0 + side] + opacity * donor
        mask = np.zeros((size, size), dtype=bool)
        mask[y0:y0 + side, x0:x0 + side] = True
    return mask


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8)).save(path)


def generate(
    out: Path,
    *,
    categories: tuple[str, ...] | None = None,
    variation: str = "clean",
    n_train: int = 30,
    n_test_good: int = 10,
    n_test_per_defect: int = 4,
    size: int = 256,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write an MVTec-AD-layout dataset under ``out``; return the category folders.

    ``categories`` defaults to every category of ``variation``.
    """
    if variation not in VARIATIONS:
        raise ParameterError(f"Unknown variation {variation!r}; choose one of {', '.join(VARIATIONS)}.")
    known = VARIATION_CATEGORIES[variation]
    categories = known if categories is None else categories
    unknown = set(categories) - set(known)
    if unknown:
        raise ParameterError(f"Unknown {variation} synthetic categories {sorted(unknown)}; "
                             f"choose from {', '.join(known)}.")
    if size < 64:
        raise ParameterError(f"Synthetic images need at least 64 px, got {size}.")
    realistic, tiny = variation != "clean", variation == "highres"
    # Realistic views rotate and zoom, so the source must cover the view's diagonal with room to move.
    min_side = int(size * 1.8) if realistic else size + size // 4
    sources = {name: _picture(name, min_side) for name in TEXTURES}
    sources.update({name: _picture(name, min_side if name != "coins" else int(size * 1.15))
                    for name in _PICTURES if name in categories})

    def image(rng, position=None, defect=None):
        if realistic:
            picture = _realistic_scene(category, sources, size, rng)
        else:
            picture = _clean_good(category, sources, size, rng, position)
        mask = (_add_defect(picture, defect, category, sources, rng, weak=realistic and not tiny, tiny=tiny)
                if defect else None)
        return (_capture(picture, rng) if realistic else picture), mask

    folders = []
    for category in categories:
        rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
        base = out / category
        for i in range(n_train):
            _save(image(rng, position=i)[0], base / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            _save(image(rng)[0], base / "test" / "good" / f"{i:03d}.png")
        for kind in DEFECTS:
            for i in range(n_test_per_defect):
                picture, mask = image(rng, defect=kind)
                _save(picture, base / "test" / kind / f"{i:03d}.png")
                _save(mask.astype(np.float32) * 255, base / "ground_truth" / kind / f"{i:03d}_mask.png")
        folders.append(base)
        if progress is not None:
            progress(1)
    return folders
