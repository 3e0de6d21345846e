"""The bitstream container: a self-describing, versioned, CRC-checked envelope around the rANS payloads.

Format version 1 (all integers little-endian)::

    offset  size  field
    0       4     magic                 b"LICx"  (Learned Image Codec stream)
    4       1     format version        1
    5       1     flags                 0 (reserved; a decoder rejects unknown bits)
    6       2     header length         bytes from offset 0 up to and including the header CRC
    8       1     model-id length L     1..64
    9       L     model id              ASCII, e.g. "tic_plus-small"
    ..      32    weights digest        sha256 of the weights file the encoder used
    ..      1     quality               1..255
    ..      4     image height          original pixels, before padding
    ..      4     image width
    ..      2     pad bottom            rows added to reach the architecture's multiple
    ..      2     pad right             columns added
    ..      1     latent count K        2 in v1: the hyper-latent z, then the latent y
    ..      6·K   latent shapes         (C, H, W) as 3 x uint16 each
    ..      1     payload count S       2 in v1: z string, y string
    ..      4·S   payload lengths       uint32 each
    ..      4     coder CRC             CRC32 of every scale index the encoder used (see entropy.coding)
    ..      4     payload CRC           CRC32 of the concatenated payloads
    ..      4     header CRC            CRC32 of every header byte before this field
    then          payloads              concatenated, exactly sum(payload lengths) bytes; nothing may follow

Why this layout: a decoder can reject a stream (wrong magic, newer version, damaged header, unknown model, other
weights, too many pixels, inconsistent shapes) from the header alone, before it allocates a tensor or runs a
network. The weights digest makes a stream from other weights a clear error instead of a garbage image, and the
coder CRC turns any divergence between encoder and decoder arithmetic into an error as well.

Compatibility promise: a version-N decoder reads every version <= N (parsers are kept in ``_PARSERS``); a new
field means a new version, never a reinterpretation of an old one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

from model_store.errors import BitstreamError, TruncatedStreamError, UnsupportedVersionError

MAGIC = b"LICx"
FORMAT_VERSION = 1
DIGEST_SIZE = 32
MAX_MODEL_ID = 64
_FIXED_PREFIX = struct.Struct("<4sBBH")  # magic, version, flags, header length
MIN_HEADER = _FIXED_PREFIX.size + 1 + 1 + DIGEST_SIZE + 1 + 8 + 4 + 1 + 1 + 12
MAX_HEADER = 4096

Shape = Tuple[int, int, int]


@dataclass(frozen=True)
class StreamHeader:
    """Everything a decoder learns about a stream before touching its payload."""

    model_id: str
    weights_digest: bytes
    quality: int
    height: int
    width: int
    pad_bottom: int
    pad_right: int
    latent_shapes: Tuple[Shape, ...]
    payload_lengths: Tuple[int, ...]
    coder_crc: int
    payload_crc: int
    version: int = FORMAT_VERSION

    @property
    def padded_size(self) -> Tuple[int, int]:
        return self.height + self.pad_bottom, self.width + self.pad_right

    @property
    def pixels(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class Stream:
    header: StreamHeader
    payloads: Tuple[bytes, ...]


def pack(header: StreamHeader, payloads: List[bytes]) -> bytes:
    """Serialise a header and its payloads (the header's lengths and payload CRC are filled in here)."""
    model = header.model_id.encode("ascii")
    if not 1 <= len(model) <= MAX_MODEL_ID:
        raise ValueError(f"model id must be 1..{MAX_MODEL_ID} ASCII bytes")
    if len(header.weights_digest) != DIGEST_SIZE:
        raise ValueError("weights digest must be a 32-byte sha256")
    if len(header.latent_shapes) != len(payloads):
        raise ValueError("one latent shape per payload")
    body = bytearray()
    body += struct.pack("<B", len(model)) + model + header.weights_digest
    body += struct.pack("<BIIHH", header.quality, header.height, header.width, header.pad_bottom, header.pad_right)
    body += struct.pack("<B", len(header.latent_shapes))
    for shape in header.latent_shapes:
        body += struct.pack("<HHH", *shape)
    body += struct.pack("<B", len(payloads))
    for payload in payloads:
        body += struct.pack("<I", len(payload))
    payload_bytes = b"".join(payloads)
    body += struct.pack("<II", header.coder_crc & 0xFFFFFFFF, zlib.crc32(payload_bytes))
    header_len = _FIXED_PREFIX.size + len(body) + 4
    head = _FIXED_PREFIX.pack(MAGIC, FORMAT_VERSION, 0, header_len) + bytes(body)
    return head + struct.pack("<I", zlib.crc32(head)) + payload_bytes


class _Reader:
    """Bounds-checked cursor: every read past the header's end is a typed error, never an IndexError."""

    def __init__(self, data: bytes, start: int, end: int):
        self.data, self.pos, self.end = data, start, end

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > self.end:
            raise BitstreamError("header fields overrun the header length")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def raw(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise BitstreamError("header fields overrun the header length")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out


def _parse_v1(data: bytes, header_len: int) -> StreamHeader:
    r = _Reader(data, _FIXED_PREFIX.size, header_len - 4)
    (model_len,) = r.take("<B")
    if not 1 <= model_len <= MAX_MODEL_ID:
        raise BitstreamError(f"model id length {model_len} out of range")
    try:
        model_id = r.raw(model_len).decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("model id is not ASCII") from None
    digest = r.raw(DIGEST_SIZE)
    quality, height, width, pad_bottom, pad_right = r.take("<BIIHH")
    (n_latents,) = r.take("<B")
    if n_latents != 2:
        raise BitstreamError(f"version 1 streams carry 2 latents, header says {n_latents}")
    shapes = tuple(r.take("<HHH") for _ in range(n_latents))
    (n_payloads,) = r.take("<B")
    if n_payloads != n_latents:
        raise BitstreamError("payload count differs from latent count")
    lengths = tuple(r.take("<I")[0] for _ in range(n_payloads))
    coder_crc, payload_crc = r.take("<II")
    if r.pos != r.end:
        raise BitstreamError("header length does not match its fields")
    if height == 0 or width == 0:
        raise BitstreamError("image size is zero")
    return StreamHeader(
        model_id=model_id,
        weights_digest=digest,
        quality=quality,
        height=height,
        width=width,
        pad_bottom=pad_bottom,
        pad_right=pad_right,
        latent_shapes=shapes,  # type: ignore[arg-type]
        payload_lengths=lengths,
        coder_crc=coder_crc,
        payload_crc=payload_crc,
        version=1,
    )


_PARSERS: Dict[int, Callable[[bytes, int], StreamHeader]] = {1: _parse_v1}


def parse_header(data: bytes) -> StreamHeader:
    """Validate and decode the header only (cheap: no payload CRC, no allocation proportional to the image)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError("a bitstream must be bytes")
    data = bytes(data[:MAX_HEADER]) if len(data) > MAX_HEADER else bytes(data)
    if len(data) < _FIXED_PREFIX.size:
        raise TruncatedStreamError(f"{len(data)} bytes is shorter than any stream header")
    magic, version, flags, header_len = _FIXED_PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError("not a learned-image-codec stream (bad magic)")
    if version not in _PARSERS:
        raise UnsupportedVersionError(
            f"format version {version} is not supported (this decoder reads {sorted(_PARSERS)})"
        )
    if flags != 0:
        raise BitstreamError(f"unknown header flags 0x{flags:02x}")
    if not MIN_HEADER <= header_len <= MAX_HEADER:
        raise BitstreamError(f"header length {header_len} out of range")
    if len(data) < header_len:
        raise TruncatedStreamError("stream ends inside its header")
    (stored_crc,) = struct.unpack_from("<I", data, header_len - 4)
    if zlib.crc32(data[: header_len - 4]) != stored_crc:
        raise BitstreamError("header CRC mismatch: the header is damaged")
    return _PARSERS[version](data, header_len)


def header_length(data: bytes) -> int:
    return _FIXED_PREFIX.unpack_from(data, 0)[3]


def unpack(data: bytes) -> Stream:
    """Parse header and payloads, checking lengths and the payload CRC."""
    header = parse_header(data)
    start = header_length(data)
    expected = start + sum(header.payload_lengths)
    if len(data) < expected:
        raise TruncatedStreamError(f"stream is {len(data)} bytes, its header announces {expected}")
    if len(data) > expected:
        raise BitstreamError(f"{len(data) - expected} unexpected bytes after the payloads")
    body = bytes(data[start:expected])
    if zlib.crc32(body) != header.payload_crc:
        raise BitstreamError("payload CRC mismatch: the stream is damaged")
    payloads, pos = [], 0
    for length in header.payload_lengths:
        payloads.append(body[pos : pos + length])
        pos += length
    return Stream(header=header, payloads=tuple(payloads))
