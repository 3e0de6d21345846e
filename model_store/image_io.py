"""Image files <-> RGB uint8 arrays, with the checks that must happen before any pixel is decoded.

Input policy (docs/image-inputs.md lists every case; tests/test_image_inputs.py runs each and keeps that table in
step with the code):

* Formats: PNG, JPEG and WebP only, recognised by content; anything else (GIF, TIFF, BMP, ...) is rejected, so
  the decoder's attack surface is three formats whatever calls this module.
* Size: width and height are read from the header and checked against :class:`ImageLimits` before a pixel is
  decoded, so a few hundred bytes announcing 100000 x 100000 are refused in microseconds. Pillow's own
  decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, left at its default because it is process-global and
  decoding runs in threads) is an outer ceiling (about 179 M pixels): sizes it refuses are reported as the same
  limit error, naming our limit and the setting that changes it rather than Pillow's, which no caller can change.
* Frames: animated PNG and WebP are rejected. A JPEG with a Multi-Picture (MPO) index is accepted and its first
  (primary) image used: phones store HDR gain maps, depth maps and previews as secondary images after the photo,
  and stereo cameras store the left view first. The secondary images are never decoded.
* Truncated or damaged data is rejected, never returned half grey. What libpng/libjpeg treat as complete (a PNG
  without IEND, an MPO whose secondary image is cut) is accepted.
* Modes: greyscale (1, 8 or 16 bits), palette and CMYK become RGB. 16-bit samples keep their high byte (what
  Pillow already does for 48/64-bit RGB(A) PNGs, and libpng's ``strip_16``). Alpha (an alpha channel, a palette
  or colour-key ``tRNS``) is dropped when every pixel is fully opaque, else rejected: the codecs code RGB only,
  and silently flattening transparency would change the picture. A 16-bit RGB PNG with a ``tRNS`` colour is
  rejected: Pillow cuts it to 8 bits before the key could be matched. CMYK JPEGs are read with Adobe's inverted
  polarity (Pillow assumes it for all of them).
* Colour: the codecs and the decoded output are sRGB. An embedded ICC profile that is not sRGB (Display P3 phone
  photos, Adobe RGB, a CMYK press profile, a grey gamma profile) is converted to sRGB with littlecms, once, with
  the relative colorimetric intent and black-point compensation (Photoshop's default for conversions): colours
  inside sRGB keep their exact appearance and out-of-gamut colours are clipped to the sRGB gamut.
  Matrix/TRC profiles, which is what phones write, have no perceptual tables, so perceptual would mean the same
  thing for them; for table-based profiles it would shift in-gamut colours as well. A profile counts as sRGB,
  and the pixels are passed through byte for byte, when it moves no value of a probe (a 9x9x9 colour cube and a
  grey ramp) by more than 1. Untagged images are taken as sRGB, and so are images whose profile is unreadable
  or does not match their colour space (what browsers do): metadata damage does not cost the picture. PNG
  ``gAMA``/``cHRM`` chunks without an ICC profile are not interpreted. CMYK without a profile uses Pillow's
  naive formula (R = (255 - C)(255 - K) / 255).
* Orientation: the EXIF Orientation tag (1-8) is applied, so the array is upright as a viewer shows it; other
  values, and EXIF that cannot be parsed, count as 1.

Errors: :class:`~model_store.errors.ImageInputError` (HTTP 422 ``bad_image``) and
:class:`~model_store.errors.LimitExceededError` (HTTP 422 ``too_many_pixels``); byte limits are the caller's
(the service's ``LIC_MAX_BODY_BYTES``, 413).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import ExifTags, Image, ImageCms

from model_store.errors import ImageInputError, LimitExceededError

DEFAULT_MAX_PIXELS = 50_000_000
FORMATS = ("PNG", "JPEG", "WEBP")  # Pillow opens a JPEG with a Multi-Picture index as format "MPO"

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC
_LEVELS = np.arange(256, dtype=np.uint8)
_CUBE = np.stack(np.meshgrid(*[np.linspace(0, 255, 9).round().astype(np.uint8)] * 3, indexing="ij"), -1)
_PROBES = {  # the sRGB test: pixels a profile must leave (within 1) where they are
    "L": Image.fromarray(_LEVELS[None, :]),
    "RGB": Image.fromarray(np.concatenate([_CUBE.reshape(1, -1, 3), np.repeat(_LEVELS[None, :, None], 3, 2)], 1)),
}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class ImageLimits:
    #: images are refused above it; values above Pillow's own ceiling (about 179 M) do not let bigger images in
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = 65_535  # the container stores sizes as uint32 but latent shapes as uint16
    #: what sets max_pixels, named in the error so that whoever reads it knows which knob turns it (LIC_MAX_PIXELS)
    max_pixels_setting: str = "ImageLimits.max_pixels"

    def too_many_pixels(self, announced: str) -> LimitExceededError:
        return LimitExceededError(f"{announced}; the limit is {self.max_pixels} pixels ({self.max_pixels_setting})")


def check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise ImageInputError(f"image has no pixels ({width}x{height})")
    if width > limits.max_side or height > limits.max_side:
        raise LimitExceededError(f"image side {max(width, height)} exceeds the limit {limits.max_side}")
    if width * height > limits.max_pixels:
        raise limits.too_many_pixels(f"image has {width * height} pixels")


def _open_header(stream, limits: ImageLimits) -> Image.Image:
    """Pillow's lazy open (the header only, no pixels decoded), refused above the limits."""
    try:
        img = Image.open(stream, formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise limits.too_many_pixels("the image header announces too many pixels for the decoder to open") from None
    except Exception as exc:  # Pillow raises several types for data it cannot identify
        raise ImageInputError(f"not a PNG, JPEG or WebP image, or damaged ({type(exc).__name__})") from None
    check_dimensions(img.width, img.height, limits)
    return img


def image_size(data: bytes, limits: ImageLimits = ImageLimits()) -> Tuple[int, int]:
    """``(width, height)`` an image file announces, read from its header without decoding a pixel (what the
    service needs to price a request before it spends anything on it), checked against the limits."""
    with io.BytesIO(data) as stream:
        img = _open_header(stream, limits)
        return img.width, img.height


def open_image(source: Union[bytes, str, Path], limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode an image file to an upright HxWx3 uint8 sRGB array, enforcing the policy in the module docstring."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    try:
        img = _open_header(stream, limits)
        if img.format != "MPO" and getattr(img, "n_frames", 1) > 1:
            raise ImageInputError("animated / multi-frame images are not supported; send a single frame")
        key = _colour_key(img)  # before load(), which drops the tile that says how Pillow scaled the samples
        try:
            img.load()  # an MPO loads its first (primary) image only
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageInputError(f"the image data is damaged or truncated: {exc}") from None
        turn = _TRANSPOSE.get(_orientation(img))
        rgb = _to_srgb(_opaque(img, key), img.info.get("icc_profile"))
        return np.ascontiguousarray(np.asarray(rgb if turn is None else rgb.transpose(turn), dtype=np.uint8))
    finally:
        stream.close()


def _orientation(img: Image.Image) -> int:
    # Only the tag is read: ImageOps.exif_transpose re-serialises the EXIF, which raises on some damaged blocks.
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # damaged EXIF: as if there were none
        return 1
    return value if isinstance(value, int) else 1


def _colour_key(img: Image.Image):
    """The tRNS transparency (palette alphas or colour key) in the units of the samples Pillow will decode."""
    key = img.info.get("transparency")
    rawmode = img.tile[0].args if img.format == "PNG" and img.tile and key is not None else None
    if rawmode in ("L;2", "L;4"):  # Pillow scales 2- and 4-bit grey samples to 0-255, but not their key
        return key * (85 if rawmode == "L;2" else 17)
    if rawmode == "RGB;16B":  # Pillow keeps 8 of the 16 bits: pixels matching the key can no longer be found
        raise ImageInputError("16-bit PNGs with a transparent colour (tRNS) are not supported")
    return key


def _opaque(img: Image.Image, key) -> Image.Image:
    """The image as 8-bit L, RGB or CMYK; ImageInputError if any pixel is not fully opaque."""
    if img.mode == "1":  # 1-bit greyscale PNG: Pillow gives its key as 0 or 255 already
        img = img.convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if key is not None else "RGB")
    elif key is not None and img.mode in ("L", "RGB", "I;16"):  # a colour key: pixels of that value are transparent
        if bool((np.asarray(img).reshape(img.height, img.width, -1) == key).all(-1).any()):
            raise _transparent()
    if img.mode == "I;16":  # 16-bit greyscale PNG
        img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    if "A" in img.mode:
        if img.getchannel("A").getextrema()[0] < 255:
            raise _transparent()
        img = img.convert("L" if img.mode == "LA" else "RGB")
    return img if img.mode in ("L", "RGB", "CMYK") else img.convert("RGB")


def _transparent() -> ImageInputError:
    return ImageInputError("images with transparency are not supported; flatten the alpha channel first")


def _to_srgb(img: Image.Image, icc: Optional[bytes]) -> Image.Image:
    """RGB in sRGB: convert through the embedded ICC profile unless it is sRGB-equivalent or unusable."""
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            flags = ImageCms.Flags.BLACKPOINTCOMPENSATION
            transform = ImageCms.buildTransform(profile, _SRGB, img.mode, "RGB", _INTENT, flags)
        except (OSError, ImageCms.PyCMSError):  # unreadable, or made for another colour space: taken as sRGB
            transform = None
        if transform is not None and not _is_srgb(transform, img.mode):
            return transform.apply(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def _is_srgb(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    probe = _PROBES.get(mode)  # CMYK has no identity to probe for: always converted
    if probe is None:
        return False
    moved = np.asarray(transform.apply(probe), np.int16) - np.asarray(probe.convert("RGB"), np.int16)
    return int(np.abs(moved).max()) <= 1


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
