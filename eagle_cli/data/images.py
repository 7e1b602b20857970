"""Decode image and mask files (or uploaded bytes) into predictable arrays, with one clear error per bad file.

Every entry point decodes here — the stages from files, the service from request bodies, the
Python ``Expert`` through :func:`decode` — so an image kind is judged alike everywhere: 16-bit data
is scaled by its range, the camera's orientation tag is applied, alpha is dropped; a floating-point
image, one smaller than the expert's frame, one claiming too many pixels, a truncated file and a
file that is no image are refused, each with its own :attr:`ImageError.kind`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from eagle_cli.data.sample import IMAGE_SUFFIXES
from eagle_cli.errors import ImageError

#: The most pixels an image may claim, read from its header before anything is decoded: a
#: 20-megapixel plant camera fits five times; a header claiming more is a decompression bomb (a
#: small file that would expand to gigabytes) or a mistake, and is skipped like any bad image.
MAX_PIXELS = 100_000_000
#: What an uploaded image is called in messages.
UPLOAD = "the uploaded image"


def _open(source: Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    name = source if isinstance(source, Path) else UPLOAD
    if isinstance(source, Path):
        _check_file(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the explicit limit below decides
            image = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
            if image.width * image.height > max_pixels:
                raise ImageError(name, f"claims {image.width}x{image.height} pixels "
                                       f"({image.width * image.height / 1e6:.1f} megapixels), over the "
                                       f"{max_pixels / 1e6:.1f}-megapixel limit checked before decoding: a "
                                       "decompression bomb or a mistake; remove or downsize it", kind="too_large")
            image.load()
            # A camera's orientation tag says how the picture is meant to be seen; masks get the same turn.
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ImageError(name, "file not found; it may have been moved since the dataset was listed",
                         kind="missing") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"claims more pixels than Pillow will decode ({exc}), over the "
                               f"{max_pixels / 1e6:.1f}-megapixel limit checked before decoding: a decompression "
                               "bomb or a mistake; remove or downsize it", kind="too_large") from None
    except UnidentifiedImageError:
        raise ImageError(name, "is not an image format Pillow reads (PNG, JPEG, TIFF, BMP, …); replace or remove it",
                         kind="not_image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(name, f"cannot be decoded ({exc}); the file is truncated or damaged, replace or remove it",
                         kind="damaged") from None
    return image


def decode(source: Path | bytes, *, min_side: int = 0, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An 8-bit RGB image from a file or its bytes, from any common mode (grayscale, 16-bit, RGBA, CMYK, palette).

    16-bit data is scaled to 8 bits by its full range (not clipped); alpha is dropped. An image whose
    shorter side is below ``min_side`` (the expert's frame) is refused: upsampling would invent detail.
    """
    return as_rgb(_open(source, max_pixels), min_side=min_side, name=source if isinstance(source, Path) else UPLOAD)


def _check_file(path: Path) -> None:
    """Refuse a file that is not one of the image kinds listed, or a link to nothing, before opening it."""
    if path.is_symlink() and not path.exists():
        raise ImageError(path, f"is a broken link (to {os.readlink(path)}, which does not exist); fix or remove it",
                         kind="missing")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageError(path, f"is not an image kind eagle reads ({path.suffix or 'no extension'}; it reads "
                               f"{', '.join(IMAGE_SUFFIXES)}); convert it or move it out of the image folder",
                         kind="unsupported")


def as_rgb(image: Image.Image, *, min_side: int = 0, name: str | Path = "the image") -> Image.Image:
    """An opened image as :func:`decode` makes it: turned by its orientation tag, 8-bit RGB, at least ``min_side``."""
    if image.getexif().get(0x0112, 1) != 1:  # files are turned as they are opened; an image handed in may not be
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        raise ImageError(name, "is a floating-point image; save it as 8- or 16-bit PNG", kind="unsupported")
    rgb = image.convert("RGB")
    if min(rgb.size) < min_side:
        raise ImageError(name, f"is {rgb.width}x{rgb.height}, smaller than the {min_side}-pixel frame the expert "
                               "sees; upsampling would invent detail. Remove it or choose a smaller --crop/--resize.",
                         kind="too_small")
    return rgb


def shorter_side(paths: list[Path]) -> int | None:
    """The median shorter side of the images at ``paths``, read from their headers (files that cannot be opened
    are skipped: decoding lists them); None when none opens."""
    sides = []
    for path in paths:
        try:
            _check_file(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
                with Image.open(path) as image:
                    sides.append(min(image.size))
        except (ImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue
    return int(np.median(sides)) if sides else None


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Return a boolean mask; ``size`` is the (width, height) of its image, which it must match."""
    mask = _open(path)
    if mask.size != size:
        raise ImageError(
            path,
            f"mask is {mask.width}x{mask.height} but its image is {size[0]}x{size[1]}; "
            "masks must have the image's size; the image is scored but left out of pixel metrics (fix the mask)",
        )
    # Any non-zero pixel is defect: MVTec-AD masks are 0/255, other datasets store 0/1 or class ids.
    return np.asarray(mask.convert("L")) > 0
