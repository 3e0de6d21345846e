"""Image files <-> RGB uint8 arrays, with the checks that must happen before any pixel is decoded.

Policy (documented in the README): EXIF orientation is applied; greyscale, palette, CMYK and 16-bit inputs
are converted to 8-bit RGB; an alpha channel that is fully opaque is dropped, a non-opaque one is rejected (the
codecs code RGB only, and silently dropping transparency would lose data); multi-frame images are rejected;
the pixel limit is checked from the file header, before decoding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from model_store.errors import ImageInputError, LimitExceededError

DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = 65_535  # the container stores sizes as uint32 but latent shapes as uint16


def check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise ImageInputError(f"image has no pixels ({width}x{height})")
    if width > limits.max_side or height > limits.max_side:
        raise LimitExceededError(f"image side {max(width, height)} exceeds the limit {limits.max_side}")
    if width * height > limits.max_pixels:
        raise LimitExceededError(f"image has {width * height} pixels, the limit is {limits.max_pixels}")


def open_image(source: Union[bytes, str, Path], limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array, enforcing the policy in the module docstring."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    try:
        try:
            img = Image.open(stream)
        except Exception as exc:  # Pillow raises several types for undecodable data
            raise ImageInputError(f"cannot identify the image: {type(exc).__name__}") from None
        check_dimensions(img.width, img.height, limits)
        if getattr(img, "n_frames", 1) > 1:
            raise ImageInputError("animated / multi-frame images are not supported; send a single frame")
        try:
            with _pixel_limit(limits.max_pixels):
                img.load()
                img = ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageInputError(f"the image data is damaged or truncated: {exc}") from None
        return to_rgb_array(img)
    finally:
        stream.close()


class _pixel_limit:
    """Pillow's own decompression-bomb guard, set to our limit for the duration of a decode."""

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels

    def __enter__(self):
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        return self

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self.saved
        return False


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any single-frame Pillow image to RGB uint8 following the module's alpha policy."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGBa"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            raise ImageInputError("images with transparency are not supported; flatten the alpha channel first")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def encode_image(array: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """Encode an RGB uint8 array as PNG, WebP (lossless unless quality < 100) or JPEG."""
    img = Image.fromarray(array, "RGB")
    out = io.BytesIO()
    fmt = fmt.upper()
    if fmt == "PNG":
        img.save(out, format="PNG", compress_level=6)
    elif fmt == "WEBP":
        img.save(out, format="WEBP", lossless=quality >= 100, quality=min(quality, 100))
    elif fmt == "JPEG":
        img.save(out, format="JPEG", quality=quality, subsampling=0)
    else:
        raise ValueError(f"unsupported output format {fmt}")
    return out.getvalue()
