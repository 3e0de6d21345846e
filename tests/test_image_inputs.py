"""Every kind of image file a client can send, and what becomes of it: the executable form of the policy in
``model_store/image_io.py``. ``docs/image-inputs.md`` lists the same cases; a test below fails when the doc and
this module's table disagree, in either direction. Every input is built here, a few hundred bytes each.
"""

from __future__ import annotations

import io
import random
import re
import struct
import time
import zlib
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional

import numpy as np
import pytest
from PIL import Image, ImageCms

pytest.register_assert_rewrite("service_fixtures")

from model_store.errors import ImageInputError, LimitExceededError  # noqa: E402
from model_store.image_io import DEFAULT_MAX_PIXELS, ImageLimits, open_image  # noqa: E402

pytest_plugins = ("service_fixtures",)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "image-inputs.md"
LIMITS = ImageLimits(max_pixels=64 * 64)  # the table's cases run under this limit


# -- pictures and containers -------------------------------------------------------------------------------------
def picture(h: int = 8, w: int = 12) -> np.ndarray:
    """Smooth and asymmetric: red grows to the right, green downwards, so a wrong flip or rotation shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    channels = [xx * 255 // (w - 1), yy * 255 // (h - 1), 255 - (xx + yy) * 255 // (h + w - 2)]
    return np.stack(channels, -1).astype(np.uint8)


def save(img: Image.Image, fmt: str, **options) -> bytes:
    if fmt in ("JPEG", "MPO"):
        options = {"quality": 95, "subsampling": 0, **options}
    if fmt == "WEBP":
        options = {"lossless": True, **options}
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def rgb_file(fmt: str, pixels: Optional[np.ndarray] = None, **options) -> bytes:
    return save(Image.fromarray(picture() if pixels is None else pixels), fmt, **options)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, depth: int, colour_type: int, rows: List[bytes], *chunks: bytes) -> bytes:
    """A PNG written byte by byte (Pillow cannot write 48-bit RGB, 2-bit grey or arbitrary tRNS/acTL)."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"".join(b"\0" + row for row in rows)))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(chunks) + idat + chunk(b"IEND", b"")


def png16(samples: np.ndarray, colour_type: int, *chunks: bytes) -> bytes:
    """A 16-bit PNG of ``samples`` (H x W x channels)."""
    h, w = samples.shape[:2]
    return raw_png(w, h, 16, colour_type, [row.astype(">u2").tobytes() for row in samples], *chunks)


def jpeg_header_only(width: int, height: int) -> bytes:
    """SOI, DQT, SOF0 announcing ``width`` x ``height``, SOS and 64 bytes of scan data."""
    segment = lambda marker, payload: b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))
    sos = b"\x03" + b"".join(bytes([c, 0]) for c in (1, 2, 3)) + b"\x00\x3f\x00"
    return b"\xff\xd8" + segment(0xDB, b"\0" + bytes([1] * 64)) + segment(0xC0, sof) + segment(0xDA, sos) + bytes(64)


def webp_claiming(width: int, height: int) -> bytes:
    """A 1x1 lossless WebP whose VP8L header is patched to announce ``width`` x ``height``."""
    data = bytearray(rgb_file("WEBP", picture()[:1, :1]))
    at = data.index(b"VP8L") + 9  # after the chunk header and the 0x2f signature byte
    bits = int.from_bytes(data[at : at + 4], "little") & ~((1 << 28) - 1)
    data[at : at + 4] = (bits | (width - 1) | (height - 1) << 14).to_bytes(4, "little")
    return bytes(data)


def exif_tiff(*entries) -> bytes:
    """A raw EXIF block: big-endian TIFF header and one IFD of (tag, type, count, 4-byte value) entries."""
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHI4s", *e) for e in entries) + bytes(4)
    return b"Exif\0\0MM\0*" + struct.pack(">I", 8) + ifd


def orientation_tag(value: int) -> tuple:
    return (0x0112, 3, 1, struct.pack(">HH", value, 0))


# Orientation tag value -> the stored pixels S of the upright picture U (H x W), from the EXIF 2.3 table ("the 0th
# row is the visual ..., the 0th column is the visual ..."), as index maps; T is U transposed, T[i, j] = U[j, i].
STORED = {
    1: lambda u: u,  # row 0 top, column 0 left
    2: lambda u: u[:, ::-1],  # row 0 top, column 0 right: S[i, j] = U[i, W-1-j]
    3: lambda u: u[::-1, ::-1],  # row 0 bottom, column 0 right: S[i, j] = U[H-1-i, W-1-j]
    4: lambda u: u[::-1, :],  # row 0 bottom, column 0 left: S[i, j] = U[H-1-i, j]
    5: lambda u: u.transpose(1, 0, 2),  # row 0 left, column 0 top: S[i, j] = U[j, i]
    6: lambda u: u.transpose(1, 0, 2)[::-1, :],  # row 0 right, column 0 top: S[i, j] = U[j, W-1-i]
    7: lambda u: u.transpose(1, 0, 2)[::-1, ::-1],  # row 0 right, column 0 bottom: S[i, j] = U[H-1-j, W-1-i]
    8: lambda u: u.transpose(1, 0, 2)[:, ::-1],  # row 0 left, column 0 bottom: S[i, j] = U[H-1-j, i]
}


# -- ICC profiles --------------------------------------------------------------------------------------------------
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
SRGB_MATRIX = np.array([SRGB.profile.red_colorant[0], SRGB.profile.green_colorant[0], SRGB.profile.blue_colorant[0]]).T
# Apple's Display P3 profile: D50-adapted colorants (columns r, g, b); same D65 white and sRGB tone curve as sRGB
P3_MATRIX = np.array([[0.515121, 0.291977, 0.157104], [0.241196, 0.692245, 0.066574], [-0.001053, 0.041885, 0.784073]])


def s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(encoded * 255)


def srgb_decode(values: np.ndarray) -> np.ndarray:
    v = values / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_variant(matrix: np.ndarray, curve_points: Optional[int] = None) -> bytes:
    """littlecms's sRGB profile with the columns of ``matrix`` as its rXYZ, gXYZ and bXYZ colorants and, if asked, the
    sRGB tone curve sampled at ``curve_points`` (as HP's classic sRGB profile stores it, 1024 points) instead of
    littlecms's parametric curve."""
    data = bytearray(SRGB.tobytes())
    if curve_points:
        curve = np.round(srgb_decode(np.linspace(0, 255, curve_points)) * 65535).astype(int)
        curv = b"curv\0\0\0\0" + struct.pack(f">I{curve_points}H", curve_points, *curve)
    for i in range(struct.unpack(">I", data[128:132])[0]):
        entry = 132 + 12 * i
        sig, offset, _ = struct.unpack(">4sII", data[entry : entry + 12])
        if sig in (b"rXYZ", b"gXYZ", b"bXYZ"):
            data[offset + 8 : offset + 20] = b"".join(s15(v) for v in matrix[:, b"rgb".index(sig[:1])])
        if sig in (b"rTRC", b"gTRC", b"bTRC") and curve_points:
            data[entry + 4 : entry + 12] = struct.pack(">II", len(data), len(curv))  # the curve is appended below
    if curve_points:
        data += curv + bytes(-len(curv) % 4)
        data[0:4] = struct.pack(">I", len(data))
    return bytes(data)


def icc(space: bytes, device_class: bytes, tags: dict) -> bytes:
    """A minimal ICC v2 profile with XYZ PCS: header, tag table and tags (enough for littlecms)."""
    offset, table, data = 132 + 12 * len(tags), b"", b""
    for sig, payload in tags.items():
        payload += bytes(-len(payload) % 4)
        table += struct.pack(">4sII", sig, offset + len(data), len(payload))
        data += payload
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, device_class, space, b"XYZ ")  # v2.1, PCS XYZ
    header += bytes(12) + b"acsp"  # creation date, file signature
    header = header.ljust(68, b"\0") + s15(0.9642) + s15(1.0) + s15(0.8249)  # PCS illuminant D50
    return header.ljust(128, b"\0") + struct.pack(">I", len(tags)) + table + data


D50_WHITE = b"XYZ \0\0\0\0" + s15(0.9642) + s15(1.0) + s15(0.8249)
LINEAR_GREY = icc(b"GRAY", b"mntr", {b"wtpt": D50_WHITE, b"kTRC": b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x100)})


def cmyk_profile() -> bytes:
    """A CMYK printer profile (lut16 A2B0, 2-point grid) whose cyan and yellow inks trade places: cyan ink prints
    yellow. Naive CMYK->RGB makes pure cyan (0, 255, 255); through this profile it becomes (255, 255, 0)."""
    corners = []
    for c, m, y, k in np.ndindex(2, 2, 2, 2):  # first input channel varies slowest, as the CLUT is laid out
        rgb = np.array([(1 - y) * (1 - k), (1 - m) * (1 - k), (1 - c) * (1 - k)], float)  # 0/1: linear = encoded
        corners += [round(v * 32768) for v in SRGB_MATRIX @ rgb]  # PCS XYZ as u1Fixed15
    identity = b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft2\0\0\0\0" + bytes([4, 3, 2, 0]) + identity + struct.pack(">HH", 2, 2)
    lut += struct.pack(">8H", *[0, 65535] * 4) + struct.pack(f">{len(corners)}H", *corners)
    lut += struct.pack(">6H", *[0, 65535] * 3)
    return icc(b"CMYK", b"prtr", {b"wtpt": D50_WHITE, b"A2B0": lut})


def p3_to_srgb(pixels: np.ndarray) -> np.ndarray:
    """Display P3 -> sRGB by the colorimetric formula (clipping), independently of littlecms."""
    linear = srgb_decode(pixels.astype(float)) @ (np.linalg.inv(SRGB_MATRIX) @ P3_MATRIX).T
    return srgb_encode(linear)


# Ink blocks for CMYK files: 8x8 flat squares (exact in JPEG): cyan, magenta, yellow, black, paper
INKS = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)]


def ink_blocks(colours) -> np.ndarray:
    return np.concatenate([np.tile(np.array(c, np.uint8), (8, 8, 1)) for c in colours], axis=1)


def cmyk_jpeg(**options) -> bytes:
    inks = ink_blocks(INKS)
    data = save(Image.frombytes("CMYK", inks.shape[1::-1], inks.tobytes()), "JPEG", **options)
    assert data[2:4] == b"\xff\xee" and data[6:11] == b"Adobe"  # Adobe's APP14 and inverted inks, as Photoshop

    return data


# -- the table ---------------------------------------------------------------------------------------------------
class Input(NamedTuple):
    data: bytes
    expected: Optional[np.ndarray] = None  # the decoded array, for the "decoded" outcome
    atol: int = 0  # largest allowed difference per sample (lossy formats, colour management)


DECODED, BAD, TOO_BIG = "decoded", "422 bad_image", "422 too_many_pixels"
ERRORS = {BAD: ImageInputError, TOO_BIG: LimitExceededError}


def same(fmt: str, atol: int = 0, **options) -> Callable[[], Input]:
    return lambda: Input(rgb_file(fmt, **options), picture(), atol)


def grey(values) -> np.ndarray:
    """Grey levels (a row, or rows) as the RGB array they decode to."""
    return np.repeat(np.atleast_2d(np.asarray(values, np.uint8))[..., None], 3, axis=2)


def with_alpha(pixels: np.ndarray, alpha: int) -> np.ndarray:
    return np.dstack([pixels, np.full(pixels.shape[:2], alpha, np.uint8)])


def png_grey_16bit() -> Input:
    samples = np.array([[0, 255, 256, 32767, 32768, 65535]])  # 0-255 is near black in 16 bits, not mid grey
    return Input(png16(samples[..., None], 0), grey([0, 0, 1, 127, 128, 255]))


def png_rgb_48bit() -> Input:
    samples = np.array([[[65535, 0, 32896], [257, 514, 65280]]])
    return Input(png16(samples, 2), np.array([[[255, 0, 128], [1, 2, 255]]], np.uint8))


def palette(transparency=None) -> Input:
    img = Image.fromarray(picture()).quantize(4)
    data = save(img, "PNG", **({} if transparency is None else {"transparency": transparency}))
    return Input(data, np.asarray(img.convert("RGB")))


def rgb_colour_key(key) -> Input:
    data = raw_png(2, 1, 8, 2, [bytes([10, 20, 30, 40, 50, 60])], chunk(b"tRNS", struct.pack(">3H", *key)))
    return Input(data, np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8))


def apng_one_frame() -> Input:
    still, (h, w) = rgb_file("PNG"), picture().shape[:2]
    actl = chunk(b"acTL", struct.pack(">II", 1, 0))
    fctl = chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, w, h, 0, 0, 1, 1, 0, 0))
    return Input(still[:33] + actl + fctl + still[33:], picture())  # inserted after the signature and IHDR


def two_frames(fmt: str) -> bytes:
    first, second = Image.fromarray(picture()), Image.fromarray(255 - picture())
    return save(first, fmt, save_all=True, append_images=[second])


def mpo(cut_bytes: int = 0) -> Input:
    data = two_frames("MPO")
    assert Image.open(io.BytesIO(data)).format == "MPO"
    return Input(data[: len(data) - cut_bytes], picture(), 6)  # the first (primary) image, not 255 - picture


def jpeg_cmyk() -> Input:
    naive = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255)]
    return Input(cmyk_jpeg(), ink_blocks(naive), 3)


def jpeg_cmyk_icc() -> Input:
    profiled = [(255, 255, 0), (255, 0, 255), (0, 255, 255), (0, 0, 0), (255, 255, 255)]
    return Input(cmyk_jpeg(icc_profile=cmyk_profile()), ink_blocks(profiled), 3)


def tagged(fmt: str, profile: bytes, expected: np.ndarray, atol: int = 0) -> Input:
    return Input(rgb_file(fmt, icc_profile=profile), expected, atol)


def jpeg_display_p3() -> Input:
    data = rgb_file("JPEG", icc_profile=srgb_variant(P3_MATRIX))
    samples = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # the JPEG's own (lossy) P3 values
    return Input(data, p3_to_srgb(samples), 2)


def png_grey_linear_profile() -> Input:
    values = np.array([[0, 32, 64, 128, 192, 255]], np.uint8)
    data = save(Image.fromarray(values), "PNG", icc_profile=LINEAR_GREY)
    return Input(data, grey(srgb_encode(values[0] / 255.0)), 1)


def oriented(fmt: str, orientation: int, exif: Optional[bytes] = None) -> Input:
    """The upright picture stored as a camera would for ``orientation`` (1 for other values), tagged with it."""
    upright = picture(8, 16)
    stored = np.ascontiguousarray(STORED.get(orientation, STORED[1])(upright))
    exif = exif_tiff(orientation_tag(orientation)) if exif is None else exif
    return Input(rgb_file(fmt, stored, exif=exif), upright, 6 if fmt == "JPEG" else 0)


# Orientation 6 next to a SampleFormat tag stored as ASCII: Pillow's ImageOps.exif_transpose raises struct.error
# on it (it re-serialises the EXIF after rotating); open_image reads the Orientation tag only.
DAMAGED_EXIF = exif_tiff(orientation_tag(6), (0x0153, 2, 2, b"x\0\0\0"))


def cut(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


SWAPPED = srgb_variant(SRGB_MATRIX[:, ::-1])  # red and blue primaries trade places

#: case -> (outcome, builder of the file: bytes, or an Input with the expected array); LIMITS apply
CASES = {
    # formats
    "png_rgb": (DECODED, same("PNG")),
    "jpeg_rgb": (DECODED, same("JPEG", 6)),
    "webp_lossless": (DECODED, same("WEBP")),
    "webp_lossy": (DECODED, same("WEBP", 40, lossless=False, quality=90)),  # 4:2:0 on a tiny picture
    "gif": (BAD, lambda: rgb_file("GIF")),
    "tiff": (BAD, lambda: rgb_file("TIFF")),
    "bmp": (BAD, lambda: rgb_file("BMP")),
    "zero_bytes": (BAD, lambda: b""),
    "garbage": (BAD, lambda: random.Random(0).randbytes(300)),
    # sizes
    "png_at_the_pixel_limit": (DECODED, lambda: Input(rgb_file("PNG", picture(64, 64)), picture(64, 64))),
    "png_over_the_pixel_limit": (TOO_BIG, lambda: rgb_file("PNG", picture(64, 65))),
    "png_header_100000x100000": (TOO_BIG, lambda: raw_png(100_000, 100_000, 8, 2, [])),
    "jpeg_header_65000x65000": (TOO_BIG, lambda: jpeg_header_only(65_000, 65_000)),
    "webp_header_16383x16383": (TOO_BIG, lambda: webp_claiming(16_383, 16_383)),
    "webp_1000x1000_in_86_bytes": (TOO_BIG, lambda: save(Image.new("RGB", (1000, 1000), (9, 99, 199)), "WEBP")),
    "png_zero_width": (BAD, lambda: raw_png(0, 8, 8, 2, [])),
    # frames
    "apng_animated": (BAD, lambda: two_frames("PNG")),
    "apng_single_frame": (DECODED, apng_one_frame),
    "webp_animated": (BAD, lambda: two_frames("WEBP")),
    "mpo_primary_and_secondary_image": (DECODED, mpo),
    "mpo_secondary_image_truncated": (DECODED, lambda: mpo(cut_bytes=40)),
    # modes and transparency
    "png_grey_1bit": (DECODED, lambda: Input(raw_png(2, 1, 1, 0, [b"\x40"]), grey([0, 255]))),
    "png_grey_8bit": (DECODED, lambda: Input(save(Image.fromarray(picture()[..., 0]), "PNG"), grey(picture()[..., 0]))),
    "png_grey_16bit": (DECODED, png_grey_16bit),
    "png_rgb_48bit": (DECODED, png_rgb_48bit),
    "png_rgba_64bit_opaque": (DECODED, lambda: Input(png16(with_alpha(picture(), 255) * 257, 6), picture())),
    "png_grey_alpha_16bit_transparent": (BAD, lambda: png16(np.array([[[1000, 65535], [2000, 0]]]), 4)),
    "png_palette": (DECODED, palette),
    "png_palette_unused_transparent_entry": (DECODED, lambda: palette(transparency=bytes([255] * 10 + [0]))),
    "png_palette_transparent": (BAD, lambda: palette(transparency=0).data),
    "png_grey_alpha_opaque": (DECODED, lambda: Input(save(Image.new("LA", (3, 1), (77, 255)), "PNG"), grey([77] * 3))),
    "png_rgba_opaque": (DECODED, lambda: Input(rgb_file("PNG", with_alpha(picture(), 255)), picture())),
    "png_rgba_transparent": (BAD, lambda: rgb_file("PNG", with_alpha(picture(), 254))),
    "png_rgb_colour_key_unused": (DECODED, lambda: rgb_colour_key((1, 2, 3))),
    "png_rgb_colour_key_used": (BAD, lambda: rgb_colour_key((40, 50, 60)).data),
    "png_rgb_48bit_colour_key": (BAD, lambda: png16(np.ones((1, 2, 3)), 2, chunk(b"tRNS", bytes(6)))),
    "png_grey_colour_key_used": (BAD, lambda: raw_png(2, 1, 8, 0, [b"\1\2"], chunk(b"tRNS", b"\0\2"))),
    "png_grey_2bit_colour_key_used": (BAD, lambda: raw_png(4, 1, 2, 0, [b"\x1b"], chunk(b"tRNS", b"\0\2"))),
    "png_grey_16bit_colour_key_used": (BAD, lambda: png16(np.array([[[5], [6]]]), 0, chunk(b"tRNS", b"\0\6"))),
    "webp_alpha_transparent": (BAD, lambda: rgb_file("WEBP", with_alpha(picture(), 128))),
    "jpeg_grey": (DECODED, lambda: Input(save(Image.fromarray(picture()[..., 1]), "JPEG"), grey(picture()[..., 1]), 6)),
    "jpeg_cmyk_adobe_inverted": (DECODED, jpeg_cmyk),
    # colour (ICC profiles)
    "png_icc_srgb": (DECODED, lambda: tagged("PNG", SRGB.tobytes(), picture())),
    "png_icc_srgb_other_bytes": (
        DECODED,
        lambda: tagged("PNG", srgb_variant(np.round(SRGB_MATRIX, 4), 1024), picture()),
    ),
    "jpeg_icc_display_p3": (DECODED, jpeg_display_p3),
    "png_icc_swapped_primaries": (DECODED, lambda: tagged("PNG", SWAPPED, picture()[..., ::-1], 1)),
    "webp_icc_swapped_primaries": (DECODED, lambda: tagged("WEBP", SWAPPED, picture()[..., ::-1], 1)),
    "png_grey_icc_linear": (DECODED, png_grey_linear_profile),
    "jpeg_cmyk_icc": (DECODED, jpeg_cmyk_icc),
    "png_icc_corrupt": (DECODED, lambda: tagged("PNG", b"not an ICC profile", picture())),
    "png_icc_for_another_colour_space": (DECODED, lambda: tagged("PNG", LINEAR_GREY, picture())),
    # orientation (EXIF)
    **{f"jpeg_exif_orientation_{o}": (DECODED, lambda o=o: oriented("JPEG", o)) for o in range(1, 9)},
    "png_exif_orientation_6": (DECODED, lambda: oriented("PNG", 6)),
    "webp_exif_orientation_6": (DECODED, lambda: oriented("WEBP", 6)),
    "jpeg_exif_orientation_9": (DECODED, lambda: oriented("JPEG", 9)),
    "jpeg_exif_damaged": (DECODED, lambda: oriented("JPEG", 6, exif=DAMAGED_EXIF)),
    "jpeg_exif_garbage": (DECODED, lambda: oriented("JPEG", 1, exif=b"Exif\0\0XX\0*garbage")),
    # truncated
    "png_truncated": (BAD, lambda: cut(rgb_file("PNG"), 0.6)),
    "png_without_iend": (DECODED, lambda: Input(rgb_file("PNG")[:-12], picture())),
    "jpeg_truncated": (BAD, lambda: cut(rgb_file("JPEG"), 0.6)),
    "webp_truncated": (BAD, lambda: cut(rgb_file("WEBP", lossless=False), 0.6)),
    "webp_lossless_truncated": (BAD, lambda: cut(rgb_file("WEBP"), 0.6)),
}


def build(name: str) -> Input:
    made = CASES[name][1]()
    return made if isinstance(made, Input) else Input(made)


@pytest.mark.parametrize("name", list(CASES))
def test_input_case(name):
    outcome, case = CASES[name][0], build(name)
    if outcome == DECODED:
        out = open_image(case.data, LIMITS)
        assert out.dtype == np.uint8 and out.shape == case.expected.shape, (out.shape, case.expected.shape)
        worst = int(np.abs(out.astype(int) - case.expected.astype(int)).max())
        assert worst <= case.atol, f"{name}: off by up to {worst} (allowed {case.atol})"
    else:
        with pytest.raises(ERRORS[outcome]):
            open_image(case.data, LIMITS)


# -- the doc -----------------------------------------------------------------------------------------------------
CASE_ROW = re.compile(
    r"^\| `(?P<case>[a-z0-9_]+)` \| [^|]+ \| (?P<outcome>decoded|422 bad_image|422 too_many_pixels) \|"
)
TEST_REF = re.compile(r"`(?P<path>tests/[a-z_]+\.py)::(?P<test>test_[a-z0-9_]+)`")


def test_the_doc_lists_every_case_with_the_tested_outcome():
    documented = {m["case"]: m["outcome"] for m in map(CASE_ROW.match, DOC.read_text().splitlines()) if m}
    tested = {name: outcome for name, (outcome, _) in CASES.items()}
    missing = [f"| `{n}` | ... | {o} | |" for n, o in tested.items() if n not in documented]
    assert not missing, "cases tested but not in docs/image-inputs.md:\n" + "\n".join(missing)
    assert not documented.keys() - tested.keys(), f"documented but not tested: {documented.keys() - tested.keys()}"
    wrong = {n: (documented[n], o) for n, o in tested.items() if documented[n] != o}
    assert not wrong, f"(doc, test) outcomes differ: {wrong}"


def test_the_doc_names_existing_tests_for_the_service_checks():
    refs = [m.groupdict() for m in TEST_REF.finditer(DOC.read_text())]
    assert len(refs) >= 10
    for ref in refs:
        assert f"def {ref['test']}(" in (ROOT / ref["path"]).read_text(), f"{ref['path']}::{ref['test']} not found"


# -- properties beyond single cases ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in CASES if "_header_" in n])
def test_huge_dimensions_in_a_tiny_file_are_refused_from_the_header_fast(name):
    data = build(name).data
    assert len(data) < 200
    elapsed = []
    for _ in range(3):  # the best of three: a busy machine must not fail the test
        start = time.perf_counter()
        with pytest.raises(LimitExceededError):
            open_image(data)  # default limits: Pillow's own guard or ours, never a decode
        elapsed.append(time.perf_counter() - start)
    assert min(elapsed) < 0.1


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damaged EXIF and MPO indexes it skips
def test_damaged_files_raise_only_the_documented_errors():
    """Cut and bit-flipped PNG, APNG, JPEG, MPO and WebP files: an array or one of the two typed errors."""
    rng = random.Random(1)
    sources = [rgb_file(f) for f in ("PNG", "JPEG", "WEBP")] + [two_frames(f) for f in ("PNG", "MPO")]
    sources += [rgb_file("WEBP", lossless=False), cmyk_jpeg(icc_profile=cmyk_profile())]
    sources += [rgb_file("PNG", icc_profile=SWAPPED), rgb_file("JPEG", exif=DAMAGED_EXIF)]
    for data in sources:
        variants = [data[:n] for n in range(0, len(data), max(1, len(data) // 60))]
        for _ in range(60):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            variants.append(bytes(flipped))
        for variant in variants:
            try:
                out = open_image(variant, LIMITS)
            except (ImageInputError, LimitExceededError):
                continue
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@pytest.mark.parametrize("profile,full_size_passes", [(SWAPPED, 1), (SRGB.tobytes(), 0), (LINEAR_GREY, 0)])
def test_a_profile_costs_at_most_one_pass_over_the_image(monkeypatch, profile, full_size_passes):
    """Colour management converts the whole image once, or not at all (sRGB, unusable profile): the sRGB test runs
    on a small probe, not on the image."""
    sizes = []
    apply = ImageCms.ImageCmsTransform.apply
    monkeypatch.setattr(
        ImageCms.ImageCmsTransform, "apply", lambda self, im, *a: sizes.append(im.size) or apply(self, im, *a)
    )
    open_image(rgb_file("PNG", picture(60, 60), icc_profile=profile), LIMITS)
    assert sizes.count((60, 60)) == full_size_passes and len(sizes) <= 2


def test_pillows_global_limit_is_left_alone():
    before = Image.MAX_IMAGE_PIXELS
    open_image(rgb_file("PNG"), ImageLimits(max_pixels=1000))
    with pytest.raises(LimitExceededError):
        open_image(rgb_file("PNG", picture(40, 40)), ImageLimits(max_pixels=1000))
    assert Image.MAX_IMAGE_PIXELS == before


# -- through HTTP (the cases whose status code matters) ---------------------------------------------------------
def compress(http, body: bytes, content_type: str = "image/png"):
    return http.post("/compress", params={"quality": 1}, content=body, headers={"Content-Type": content_type})


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


@pytest.mark.parametrize("name", [n for n in CASES if "_header_" in n])
def test_huge_dimensions_in_a_tiny_file_get_422_over_http(http, name):
    start = time.perf_counter()
    assert_error(compress(http, build(name).data), 422, "too_many_pixels")
    assert time.perf_counter() - start < 5  # generous for a loaded CI machine; the library test times the check


@pytest.mark.parametrize("name", [n for n in CASES if "_header_" in n])
def test_a_decompression_bomb_is_refused_naming_our_pixel_limit_and_its_setting_not_pillows(http, server, name):
    """Every one of these is above Pillow's own ceiling (~179 M pixels), which refuses it before our check runs;
    the caller must still read the limit that applies to them and the knob that changes it."""
    pillows_ceiling = str(2 * Image.MAX_IMAGE_PIXELS)
    r = compress(http, build(name).data)
    assert_error(r, 422, "too_many_pixels")
    error = r.json()["error"]
    assert f"{server.settings.max_pixels} pixels (LIC_MAX_PIXELS)" in error and pillows_ceiling not in error
    with pytest.raises(LimitExceededError) as library:
        open_image(build(name).data)
    assert f"{DEFAULT_MAX_PIXELS} pixels (ImageLimits.max_pixels)" in str(library.value)
    assert pillows_ceiling not in str(library.value)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_get_422_over_http(http, fmt):
    assert_error(compress(http, two_frames(fmt), f"image/{fmt.lower()}"), 422, "bad_image")


@pytest.mark.parametrize("name", ["jpeg_truncated", "webp_truncated", "webp_lossless_truncated"])
def test_truncated_images_get_422_over_http(http, name):
    assert_error(compress(http, build(name).data, "image/jpeg" if "jpeg" in name else "image/webp"), 422, "bad_image")


@pytest.mark.parametrize("name", ["jpeg_cmyk_adobe_inverted", "jpeg_cmyk_icc", "mpo_primary_and_secondary_image"])
def test_cmyk_and_mpo_jpegs_are_compressed_over_http(http, name):
    case = build(name)
    r = compress(http, case.data, "image/jpeg")
    assert r.status_code == 200, r.text
    h, w = case.expected.shape[:2]
    assert (r.headers["x-image-width"], r.headers["x-image-height"]) == (str(w), str(h))


@pytest.mark.parametrize("label", ["image/png", "image/jpeg", "image/webp"])
def test_png_jpeg_and_webp_are_decoded_by_content_whatever_their_label(http, label):
    for fmt in ("PNG", "JPEG", "WEBP"):
        r = compress(http, rgb_file(fmt), label)
        assert r.status_code == 200 and r.headers["x-image-width"] == "12", (fmt, label, r.text)
