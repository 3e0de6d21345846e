"""Classical image codecs (JPEG, WebP, AVIF, JPEG XL, JPEG 2000) behind the learned codecs' interface.

Why this module exists: a learned codec's rate-distortion numbers only mean something next to classical codecs
measured *in the same run on the same images* (Kodak, where published numbers come from, is not available
here). Every codec below therefore has the same shape as ``model_store.codec.ImageCodec``::

    codec.compress(img: HxWx3 uint8 RGB) -> bytes        # the complete file a user would store
    codec.decompress(data: bytes) -> HxWx3 uint8 RGB

and counts *real* file bytes (headers included), not an entropy estimate.

``quality`` is each codec's own knob, so its meaning differs per codec (see ``quality_meaning``); a higher value
always means more bits. The default sweeps were chosen so that the mean bpp spans roughly 0.1-1.5 bpp on
768x512 photographs (measured on skimage/scikit-learn sample photos; smooth images land lower).

Settings that matter for fairness (all recorded in ``settings()`` so reports can quote them):

* JPEG: libjpeg-turbo through Pillow, 4:2:0 chroma subsampling, optimised Huffman tables, baseline.
* WebP: libwebp through Pillow, **lossy** (``lossless=False`` is passed explicitly: imagecodecs' encoder is
  lossless by default), ``method=6`` (slowest, best compression; still ~0.1 s per 768x512 image).
* AVIF: libavif + libaom through imagecodecs, 4:4:4 (avifenc's default for RGB input), **speed 6**. libaom's
  default speed 0-ish setting takes ~12 s per 512x512 image here (8-39 s per 768x512 in DATA.md) for about 3 %
  fewer bytes; speed 6 (avifenc's own default) takes ~0.2-0.3 s.
* JPEG XL: libjxl through imagecodecs, effort 7 (cjxl's default), quality mapped to a Butteraugli distance
  exactly as ``cjxl -q`` does (q90 = distance 1.0).
* JPEG 2000: OpenJPEG through imagecodecs, raw J2K codestream (no JP2 box), irreversible 9/7 wavelet with the
  RGB->YCbCr component transform; ``quality`` is OpenJPEG's fixed-quality target in dB PSNR.

AVIF and JPEG XL are pinned to one encoder thread: with several threads libaom's output bytes depend on the
thread count, which would make the evaluation irreproducible across machines.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Tuple, Type

import numpy as np
from PIL import Image

# Encoder settings (module constants so they are written down once and quoted in reports).
JPEG_SUBSAMPLING_420 = 2  # Pillow's code for 4:2:0
WEBP_METHOD = 6  # 0 = fastest .. 6 = best compression
AVIF_SPEED = 6  # 0 = slowest .. 10 = fastest; 6 is avifenc's default, libavif's own default is far slower
JXL_EFFORT = 7  # 1 = fastest .. 9 = slowest; 7 is cjxl's default
ENCODER_THREADS = 1  # deterministic bytes (libaom's output depends on the thread count)


class CodecUnavailableError(RuntimeError):
    """The library behind a classical codec is not installed (imagecodecs is an optional dependency)."""


def _check_image(img: np.ndarray) -> np.ndarray:
    """Reject anything but HxWx3 uint8 early: the C encoders would otherwise guess a layout (e.g. greyscale)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def _imagecodecs():
    """Import imagecodecs lazily so JPEG/WebP (Pillow only) work where imagecodecs is not installed."""
    try:
        import imagecodecs
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CodecUnavailableError("this codec needs the 'imagecodecs' package (pip install imagecodecs)") from exc
    return imagecodecs


def _pillow_encode(img: np.ndarray, **options) -> bytes:
    """Encode an RGB array with Pillow (``options`` go to ``Image.save``)."""
    out = io.BytesIO()
    Image.fromarray(_check_image(img), "RGB").save(out, **options)
    return out.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class ClassicalCodec(ABC):
    """One classical codec at one quality setting; subclasses fill in the class-level description."""

    quality: float

    name: ClassVar[str]
    quality_meaning: ClassVar[str]
    default_qualities: ClassVar[Tuple[float, ...]]

    @abstractmethod
    def compress(self, img: np.ndarray) -> bytes:
        """Encode an HxWx3 uint8 RGB image into a complete, standalone file."""

    @abstractmethod
    def decompress(self, data: bytes) -> np.ndarray:
        """Decode a file made by ``compress`` back into an HxWx3 uint8 RGB image."""

    @classmethod
    def settings(cls) -> Dict[str, object]:
        """Encoder settings worth quoting next to the numbers (library, subsampling, speed...)."""
        return {"quality_meaning": cls.quality_meaning}

    @classmethod
    def is_available(cls) -> bool:
        """Whether the library behind this codec can be used here."""
        return True


@dataclass(frozen=True)
class JpegCodec(ClassicalCodec):
    """Baseline JPEG: the anchor everyone knows, and what the other classical codecs are compared with."""

    name: ClassVar[str] = "jpeg"
    quality_meaning: ClassVar[str] = "libjpeg quality 1-95"
    default_qualities: ClassVar[Tuple[float, ...]] = (3, 6, 10, 20, 35, 55, 75, 88)

    def compress(self, img: np.ndarray) -> bytes:
        return _pillow_encode(
            img, format="JPEG", quality=int(self.quality), subsampling=JPEG_SUBSAMPLING_420, optimize=True
        )

    def decompress(self, data: bytes) -> np.ndarray:
        return _pillow_decode(data)

    @classmethod
    def settings(cls) -> Dict[str, object]:
        from PIL import features

        return {
            **super().settings(),
            "library": f"Pillow {Image.__version__} / libjpeg-turbo {features.version('jpg')}",
            "subsampling": "4:2:0",
            "optimize": True,
        }


@dataclass(frozen=True)
class WebpCodec(ClassicalCodec):
    """Lossy WebP (VP8 intra, 4:2:0)."""

    name: ClassVar[str] = "webp"
    quality_meaning: ClassVar[str] = "libwebp quality 0-100 (lossy)"
    default_qualities: ClassVar[Tuple[float, ...]] = (0, 10, 25, 45, 65, 80, 90)

    def compress(self, img: np.ndarray) -> bytes:
        return _pillow_encode(img, format="WEBP", quality=int(self.quality), method=WEBP_METHOD, lossless=False)

    def decompress(self, data: bytes) -> np.ndarray:
        return _pillow_decode(data)

    @classmethod
    def settings(cls) -> Dict[str, object]:
        from PIL import features

        return {
            **super().settings(),
            "library": f"Pillow {Image.__version__} / libwebp {features.version('webp')}",
            "lossless": False,
            "method": WEBP_METHOD,
        }

    @classmethod
    def is_available(cls) -> bool:
        from PIL import features

        return bool(features.check("webp"))


@dataclass(frozen=True)
class AvifCodec(ClassicalCodec):
    """AVIF (AV1 intra) at 4:4:4; the strongest widely deployed classical still-image codec here."""

    name: ClassVar[str] = "avif"
    quality_meaning: ClassVar[str] = "libavif quality 0-100"
    default_qualities: ClassVar[Tuple[float, ...]] = (10, 20, 30, 40, 50, 60, 70, 76)

    def compress(self, img: np.ndarray) -> bytes:
        ic = _imagecodecs()
        return bytes(
            ic.avif_encode(
                _check_image(img),
                level=int(self.quality),
                speed=AVIF_SPEED,
                pixelformat=ic.AVIF.PIXEL_FORMAT.YUV444,
                numthreads=ENCODER_THREADS,
            )
        )

    def decompress(self, data: bytes) -> np.ndarray:
        return np.asarray(_imagecodecs().avif_decode(data), dtype=np.uint8)

    @classmethod
    def settings(cls) -> Dict[str, object]:
        return {
            **super().settings(),
            "library": _imagecodecs().avif_version(),
            "speed": AVIF_SPEED,
            "pixel_format": "yuv444",
            "threads": ENCODER_THREADS,
        }

    @classmethod
    def is_available(cls) -> bool:
        return _imagecodecs_has("AVIF")


@dataclass(frozen=True)
class JpegXlCodec(ClassicalCodec):
    """JPEG XL (VarDCT)."""

    name: ClassVar[str] = "jxl"
    quality_meaning: ClassVar[str] = "cjxl-style quality 0-99 (90 = Butteraugli distance 1.0)"
    default_qualities: ClassVar[Tuple[float, ...]] = (5, 15, 30, 50, 65, 78, 87, 92)

    def compress(self, img: np.ndarray) -> bytes:
        return bytes(
            _imagecodecs().jpegxl_encode(
                _check_image(img), level=int(self.quality), effort=JXL_EFFORT, numthreads=ENCODER_THREADS
            )
        )

    def decompress(self, data: bytes) -> np.ndarray:
        return np.asarray(_imagecodecs().jpegxl_decode(data), dtype=np.uint8)

    @classmethod
    def settings(cls) -> Dict[str, object]:
        return {
            **super().settings(),
            "library": _imagecodecs().jpegxl_version(),
            "effort": JXL_EFFORT,
            "threads": ENCODER_THREADS,
        }

    @classmethod
    def is_available(cls) -> bool:
        return _imagecodecs_has("JPEGXL")


@dataclass(frozen=True)
class Jpeg2000Codec(ClassicalCodec):
    """JPEG 2000 (optional context: the wavelet codec learned codecs are often compared with)."""

    name: ClassVar[str] = "jpeg2000"
    quality_meaning: ClassVar[str] = "OpenJPEG fixed-quality target, dB PSNR"
    default_qualities: ClassVar[Tuple[float, ...]] = (24, 26, 28, 30, 32, 34, 36, 38, 40)

    def compress(self, img: np.ndarray) -> bytes:
        ic = _imagecodecs()
        return bytes(
            ic.jpeg2k_encode(
                _check_image(img),
                level=float(self.quality),
                codecformat=ic.JPEG2K.CODEC.J2K,
                reversible=False,
                mct=True,
                numthreads=ENCODER_THREADS,
            )
        )

    def decompress(self, data: bytes) -> np.ndarray:
        return np.asarray(_imagecodecs().jpeg2k_decode(data), dtype=np.uint8)

    @classmethod
    def settings(cls) -> Dict[str, object]:
        return {
            **super().settings(),
            "library": _imagecodecs().jpeg2k_version(),
            "format": "j2k codestream",
            "wavelet": "irreversible 9/7",
            "mct": True,
        }

    @classmethod
    def is_available(cls) -> bool:
        return _imagecodecs_has("JPEG2K")


def _imagecodecs_has(codec: str) -> bool:
    """True when imagecodecs is installed and was built with ``codec`` (wheels may omit some libraries)."""
    try:
        ic = _imagecodecs()
    except CodecUnavailableError:
        return False
    return bool(getattr(getattr(ic, codec, None), "available", False))


CLASSICAL_CODECS: Dict[str, Type[ClassicalCodec]] = {
    cls.name: cls for cls in (JpegCodec, WebpCodec, AvifCodec, JpegXlCodec, Jpeg2000Codec)
}
DEFAULT_CLASSICAL: Tuple[str, ...] = ("jpeg", "webp", "avif", "jxl")  # JPEG 2000 on request only


def classical_codec(name: str, quality: float) -> ClassicalCodec:
    """Build one codec by name; unknown or unavailable names fail with the list of what would work."""
    try:
        cls = CLASSICAL_CODECS[name]
    except KeyError:
        raise ValueError(f"unknown classical codec {name!r}; known: {sorted(CLASSICAL_CODECS)}") from None
    if not cls.is_available():
        raise CodecUnavailableError(f"classical codec {name!r} is not available here (install imagecodecs)")
    return cls(quality)


def sweep(name: str) -> List[ClassicalCodec]:
    """The default quality sweep of one codec, lowest rate first."""
    return [classical_codec(name, q) for q in CLASSICAL_CODECS[name].default_qualities]
