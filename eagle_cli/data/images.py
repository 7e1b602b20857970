"""Decode image and mask files into predictable arrays, with one clear error per bad file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from eagle_cli.errors import ImageError

#: The most pixels an image may claim, read from its header before anything is decoded: a
#: 20-megapixel plant camera fits five times; a header claiming more is a decompression bomb (a
#: small file that would expand to gigabytes) or a mistake, and is skipped like any bad image.
MAX_PIXELS = 100_000_000


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the explicit limit below decides
            image = Image.open(path)
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(path, f"claims {image.width}x{image.height} pixels "
                                       f"({image.width * image.height / 1e6:.0f} megapixels), over the "
                                       f"{MAX_PIXELS / 1e6:.0f}-megapixel limit checked before decoding: a "
                                       "decompression bomb or a mistake; remove or downsize it")
            image.load()
            # A camera's orientation tag says how the picture is meant to be seen; masks get the same turn.
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ImageError(path, "file not found; it may have been moved since the dataset was listed") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"claims more pixels than Pillow will decode ({exc}), over the "
                               f"{MAX_PIXELS / 1e6:.0f}-megapixel limit checked before decoding: a decompression "
                               "bomb or a mistake; remove or downsize it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"cannot be decoded ({exc}); the file is truncated or not an image, "
                               "replace or remove it") from None
    return image


def load_rgb(path: Path, *, min_side: int = 0) -> Image.Image:
    """Return an 8-bit RGB image from any common mode (grayscale, 16-bit, RGBA, CMYK, palette).

    16-bit data is scaled to 8 bits by its full range (not clipped); alpha is dropped.
    """
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        raise ImageError(path, "is a floating-point image; save it as 8- or 16-bit PNG")
    rgb = image.convert("RGB")
    if min(rgb.size) < min_side:
        raise ImageError(
            path,
            f"is {rgb.width}x{rgb.height}, smaller than the {min_side}-pixel crop; upsampling would invent "
            "detail. Remove it or choose a smaller --crop/--resize.",
        )
    return rgb


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
