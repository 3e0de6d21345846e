"""Cut photos out of the container files that some packages store them in, byte for byte and deterministically.

Two containers hold real photos in the Debian packages of the training pool (``shared/DATA.md``):

* **Enlightenment themes** (``.edj``, an Eet archive): the wallpaper images are plain JFIF streams, stored
  uncompressed between Eet's own records, usually at several sizes. :func:`largest_jpeg` finds every stream by
  its start (``FF D8 FF``) and its end (the ``FF D9`` end-of-image marker, found by walking the JPEG segment
  structure, so ``FF D9`` bytes inside an EXIF thumbnail do not end the stream early), and keeps the largest one
  that Pillow decodes completely.
* **Qt resource bundles** (``.rcc``, GCompris): a tree of named files. :func:`rcc_files` reads the tree and
  :func:`rcc_file` returns one file's bytes (GCompris stores its WebPs uncompressed: each is one
  ``RIFF<len32>WEBP`` stream of ``len + 8`` bytes, which is checked).

A catalog entry names the image inside its container with a *member* string (:func:`extract_member`):

    ``largest-jpeg``           the largest fully decodable JPEG stream in the file (``.edj``)
    ``:/path/in/bundle.webp``  a file of a Qt resource bundle, by its resource path (``.rcc``)

The builder records the sha256 of both the container file and the extracted stream, so a changed package is
noticed even when the container is re-packed around the same photo.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from PIL import Image

#: Member string of the largest decodable JPEG stream in a file (Enlightenment ``.edj`` wallpapers).
LARGEST_JPEG = "largest-jpeg"
#: Prefix of a Qt resource path, as Qt itself writes them (``:/images/a.png``).
QT_RESOURCE_PREFIX = ":/"

_SOI = b"\xff\xd8\xff"  # start of image + the first byte of the next marker
_EOI = 0xD9
_SOS = 0xDA
#: Markers without a length field: TEM and the restart markers RST0-7 (SOI/EOI are handled separately).
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


class EmbeddedImageError(ValueError):
    """The container does not hold the image that the catalog entry names."""


# ---------------------------------------------------------------------------------------------- JPEG streams


def jpeg_stream_end(blob: bytes, start: int) -> Optional[int]:
    """End (exclusive) of the JPEG stream that starts with SOI at ``start``, or None if it is not one.

    Walks the segments by their lengths; after each start-of-scan it skips the entropy-coded data, in which a
    0xFF byte is always followed by 0x00 (stuffing), a restart marker or fill bytes, so the first other marker is
    the next segment. The stream ends after the EOI marker (FF D9) reached this way; an EOI before any scan
    (``FF D8 FF D9`` in raw pixel data, say) is not a stream.
    """
    n = len(blob)
    if blob[start : start + 2] != b"\xff\xd8":
        return None
    pos = start + 2
    scanned = False
    while pos + 1 < n:
        if blob[pos] != 0xFF:
            return None  # not a marker where one must be: not a JPEG (or a corrupt one)
        marker = blob[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _EOI:
            return pos + 2 if scanned else None
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0x00, 0xD8) or pos + 4 > n:
            return None
        length = int.from_bytes(blob[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        pos += 2 + length
        if marker == _SOS:
            scanned = True
            pos = _skip_entropy_coded(blob, pos)
            if pos is None:
                return None
    return None


def _skip_entropy_coded(blob: bytes, pos: int) -> Optional[int]:
    """Position of the first real marker after entropy-coded data starting at ``pos`` (None: none before EOF)."""
    n = len(blob)
    while True:
        pos = blob.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            return None
        nxt = blob[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed 0xFF data byte, or a restart marker
            pos += 2
        elif nxt == 0xFF:  # fill byte: the marker starts at the last 0xFF
            pos += 1
        else:
            return pos


def jpeg_streams(blob: bytes) -> Iterator[Tuple[int, int]]:
    """``(start, end)`` of every structurally complete JPEG stream in ``blob``, in file order.

    Streams nested in another one (EXIF thumbnails) are listed too; they are smaller than their host.
    """
    start = blob.find(_SOI)
    while start >= 0:
        end = jpeg_stream_end(blob, start)
        if end is not None:
            yield start, end
        start = blob.find(_SOI, start + 1)


def decodes_fully(stream: bytes) -> bool:
    """True when Pillow decodes every pixel of the image (a truncated or damaged stream raises)."""
    try:
        with Image.open(io.BytesIO(stream)) as im:
            im.load()
        return True
    except Exception:  # any decoder error means: not a usable image
        return False


def largest_jpeg(blob: bytes) -> bytes:
    """The JPEG stream with the most pixels that decodes completely (ties: the first in the file).

    Raises :class:`EmbeddedImageError` when the blob holds no decodable JPEG.
    """
    candidates: List[Tuple[int, int, int]] = []  # (-pixels, start, end): sorts largest first, then file order
    for start, end in jpeg_streams(blob):
        try:
            with Image.open(io.BytesIO(blob[start:end])) as im:
                w, h = im.size
        except Exception:  # header Pillow cannot parse: not a candidate
            continue
        candidates.append((-w * h, start, end))
    for _, start, end in sorted(candidates):
        stream = blob[start:end]
        if decodes_fully(stream):
            return stream
    raise EmbeddedImageError(f"no decodable JPEG stream among {len(candidates)} candidate(s)")


# ---------------------------------------------------------------------------------------------- Qt resources

_RCC_MAGIC = b"qres"
_RCC_COMPRESSED = 0x01
_RCC_DIRECTORY = 0x02
_RCC_COMPRESSED_ZSTD = 0x04


@dataclass(frozen=True)
class RccEntry:
    """One file of a Qt resource bundle: where its payload starts (after the 4-byte size) and its flags."""

    offset: int
    size: int
    flags: int


def rcc_files(blob: bytes) -> Dict[str, RccEntry]:
    """Every file of a Qt resource bundle (format versions 1-3, as written by Qt's ``rcc``), by path.

    Layout (all integers big-endian): header ``qres``, version, then the offsets of the tree, the data and the
    names sections (version 3 adds a flags word). Tree nodes are fixed-size records (14 bytes, 22 from
    version 2 with the modification time): name offset, flags, then for directories the child count and the
    index of the first child node, for files the locale and the data offset. A name is a UTF-16 string after a
    16-bit length and a 32-bit hash; a payload is a 32-bit size followed by the (maybe compressed) bytes.
    """
    if blob[:4] != _RCC_MAGIC or len(blob) < 20:
        raise EmbeddedImageError("not a Qt resource bundle (no 'qres' header)")
    version, tree, data, names = struct.unpack_from(">IIII", blob, 4)
    if not 1 <= version <= 3:
        raise EmbeddedImageError(f"unsupported Qt resource bundle version {version}")
    node_size = 14 if version == 1 else 22

    def name(node: int) -> str:
        (name_offset,) = struct.unpack_from(">I", blob, tree + node * node_size)
        (length,) = struct.unpack_from(">H", blob, names + name_offset)
        start = names + name_offset + 6
        return blob[start : start + 2 * length].decode("utf-16-be")

    files: Dict[str, RccEntry] = {}
    stack = [(0, "")]  # (node index, its path); node 0 is the unnamed root directory
    while stack:
        node, path = stack.pop()
        base = tree + node * node_size
        (flags,) = struct.unpack_from(">H", blob, base + 4)
        if flags & _RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", blob, base + 6)
            stack.extend(
                (child, f"{path}/{name(child)}" if path else name(child)) for child in range(first, first + count)
            )
            continue
        (data_offset,) = struct.unpack_from(">I", blob, base + 10)
        (size,) = struct.unpack_from(">I", blob, data + data_offset)
        files[path] = RccEntry(data + data_offset + 4, size, flags)
    return dict(sorted(files.items()))


def rcc_file(blob: bytes, path: str) -> bytes:
    """The bytes of the file at ``path`` (``a/b.webp`` or ``:/a/b.webp``) in a Qt resource bundle."""
    path = path[len(QT_RESOURCE_PREFIX) :] if path.startswith(QT_RESOURCE_PREFIX) else path
    entry = rcc_files(blob).get(path.strip("/"))
    if entry is None:
        raise EmbeddedImageError(f"no file {path!r} in the Qt resource bundle")
    payload = blob[entry.offset : entry.offset + entry.size]
    if entry.flags & _RCC_COMPRESSED_ZSTD:
        raise EmbeddedImageError(f"{path}: zstd-compressed resources are not supported")
    if entry.flags & _RCC_COMPRESSED:
        payload = zlib.decompress(payload[4:])  # after the 32-bit uncompressed size
    if payload[:4] == b"RIFF" and payload[8:12] == b"WEBP":
        riff_size = int.from_bytes(payload[4:8], "little")
        if riff_size + 8 != len(payload):
            raise EmbeddedImageError(f"{path}: RIFF size {riff_size} + 8 != resource size {len(payload)}")
    return payload


# ---------------------------------------------------------------------------------------------- entry points

#: File suffixes of the containers above; the catalog audit looks inside them for unreviewed images.
CONTAINER_SUFFIXES = (".edj", ".rcc")


def embedded_image_members(suffix: str, blob: bytes, image_suffixes: Tuple[str, ...]) -> List[str]:
    """Member strings of the images a container of this file suffix holds (what an audit must decide on).

    An ``.edj`` counts as one image (its largest JPEG; the others are the same picture at smaller sizes);
    a Qt bundle lists its files whose names end in one of ``image_suffixes``.
    """
    if suffix == ".edj":
        return [LARGEST_JPEG] if next(jpeg_streams(blob), None) is not None else []
    if suffix == ".rcc":
        return [QT_RESOURCE_PREFIX + p for p in rcc_files(blob) if p.lower().endswith(image_suffixes)]
    return []


def extract_member(blob: bytes, member: str) -> bytes:
    """The image bytes that ``member`` names inside the container ``blob`` (see the module docstring)."""
    if member == LARGEST_JPEG:
        return largest_jpeg(blob)
    if member.startswith(QT_RESOURCE_PREFIX):
        return rcc_file(blob, member)
    raise EmbeddedImageError(f"unknown member {member!r}: want {LARGEST_JPEG!r} or a Qt resource path ':/...'")
