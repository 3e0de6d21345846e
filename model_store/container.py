"""The bitstream container: a self-describing, versioned, CRC-checked envelope around the rANS payloads.

Format version 1 (all integers little-endian)::

    offset  size  field
    0       4     magic                 b"LICx"  (Learned Image Codec stream)
    4       1     format version        1
    5       1     flags                 bit 0: banded hyper synthesis, bit 1: latent CRC (see below); a decoder
                                        rejects unknown bits
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

Format version 2 (the default since it shipped: 58 header bytes for a tic-small photo where version 1 takes 97):
the same fields in the same order, sized for what they hold::

    offset  size  field
    0       8     magic, format version 2, flags, header length   as in version 1
    8       1+L   model id                                        as in version 1
    ..      8     weights digest        the first 8 bytes of the weights file's sha256
    ..      1     quality
    ..      v     image height, width   unsigned LEB128 varints (minimal encoding; a longer one is refused)
    ..      v     pad bottom, pad right varints
    ..      1     latent count K        2
    ..      v     latent shapes         (C, H, W) as 3 varints each
    ..      1     payload count S       2
    ..      v     payload lengths       varints
    ..      12    coder CRC, payload CRC, header CRC               as in version 1

The 32-byte digest of version 1 and the fixed-width integers were 39 of its 97 header bytes, which is 3 % of a
256x256 thumbnail's stream at quality 1. Eight bytes of sha256 still name one weights file among any number a
deployment will ever install (a chance collision between two files is ~2^-64 per pair, and the registry refuses an
ambiguous prefix rather than guess); the model id and quality are checked next to it.

Flags (both versions). Bit 0, ``FLAG_BANDED_HYPER``: the y payload was coded with the hyper synthesis computed band
by band (:mod:`model_store.entropy.hyper_bands`), which bounds the entropy path's memory on large photos. Encoders set
it only when the hyper-latent spans more than one band (for smaller images both ways compute the same numbers, and
leaving the bit clear keeps those streams readable by decoders that predate it); a decoder that does not know the
bit refuses the stream instead of decoding it with different coder inputs.

Bit 1, ``FLAG_LATENT_CRC``: the coder CRC covers every decoded latent value too, not only the scale indexes
(:mod:`model_store.entropy.coding`, point 3). Encoders set it on the integer entropy path, where ŷ is the same
integer on every machine; a decoder folds ŷ in exactly when the bit is set, so the streams written before it (bit
clear) decode as they always did, and a decoder that predates the bit refuses a stream that has it.

Why this layout: a decoder can reject a stream (wrong magic, newer version, damaged header, unknown model, other
weights, too many pixels, inconsistent shapes) from the header alone, before it allocates a tensor or runs a
network. The weights digest makes a stream from other weights a clear error instead of a garbage image, and the
coder CRC turns any divergence between encoder and decoder arithmetic into an error as well.

Compatibility promise: a version-N decoder reads every version <= N (``READABLE_VERSIONS``, one parser for all); a new
field means a new version, never a reinterpretation of an old one. Encoders can still write every version
(``pack(..., version=1)``), so a fleet can roll out a new decoder everywhere before any encoder writes its format.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from dataclasses import dataclass
from typing import List, Tuple

from model_store.errors import BitstreamError, TruncatedStreamError, UnsupportedVersionError

MAGIC = b"LICx"
FORMAT_VERSION = 2  # what encoders write unless told otherwise
DIGEST_SIZE = 32  # a full sha256 (version 1 stores it whole)
DIGEST_PREFIX_SIZE = 8  # what version 2 stores
MAX_MODEL_ID = 64
FLAG_BANDED_HYPER = 0x01
FLAG_LATENT_CRC = 0x02
KNOWN_FLAGS = FLAG_BANDED_HYPER | FLAG_LATENT_CRC
_FIXED_PREFIX = struct.Struct("<4sBBH")  # magic, version, flags, header length
#: the smallest header each version can have (1-byte model id, every varint one byte)
_MIN_HEADER = {
    1: _FIXED_PREFIX.size + 1 + 1 + DIGEST_SIZE + 1 + 8 + 4 + 1 + 1 + 12,
    2: _FIXED_PREFIX.size + 1 + 1 + DIGEST_PREFIX_SIZE + 1 + 2 + 2 + 1 + 6 + 1 + 2 + 12,
}
MAX_HEADER = 4096
_UINT16, _UINT32 = 0xFFFF, 0xFFFFFFFF

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
    flags: int = 0

    @property
    def banded_hyper(self) -> bool:
        return bool(self.flags & FLAG_BANDED_HYPER)

    @property
    def latent_crc(self) -> bool:
        return bool(self.flags & FLAG_LATENT_CRC)

    @property
    def padded_size(self) -> Tuple[int, int]:
        return self.height + self.pad_bottom, self.width + self.pad_right

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def names_weights(self, sha256: bytes) -> bool:
        """True if the stream was made with the weights whose full sha256 is ``sha256`` (version 1 stores the whole
        digest, version 2 its first 8 bytes)."""
        return len(self.weights_digest) in (DIGEST_SIZE, DIGEST_PREFIX_SIZE) and sha256.startswith(self.weights_digest)


@dataclass(frozen=True)
class Stream:
    header: StreamHeader
    payloads: Tuple[bytes, ...]


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit set on every byte but the last."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _check_ranges(header: StreamHeader, payloads: List[bytes]) -> None:
    """What a field can hold is one contract for every version, whatever width a version stores it in. (Whether
    a value makes sense, e.g. a zero height, is the decoder's check: a fuzzer must be able to write it.)"""
    fields = {"quality": (header.quality, 255), "height": (header.height, _UINT32), "width": (header.width, _UINT32)}
    fields.update(pad_bottom=(header.pad_bottom, _UINT16), pad_right=(header.pad_right, _UINT16))
    for name, (value, high) in fields.items():
        if not 0 <= value <= high:
            raise ValueError(f"{name} {value} is outside 0..{high}")
    if any(not 0 <= v <= _UINT16 for shape in header.latent_shapes for v in shape):
        raise ValueError(f"latent shapes {header.latent_shapes} do not fit 16 bits per dimension")
    if any(len(p) > _UINT32 for p in payloads):
        raise ValueError("a payload longer than 4 GiB cannot be framed")


def pack(header: StreamHeader, payloads: List[bytes], version: int = FORMAT_VERSION) -> bytes:
    """Serialise a header and its payloads as format ``version`` (the header's lengths and payload CRC are filled
    in here). ``weights_digest`` is the full sha256, or for version 2 also its 8-byte prefix."""
    if version not in WRITABLE_VERSIONS:
        raise ValueError(f"cannot write format version {version} (known: {WRITABLE_VERSIONS})")
    model = header.model_id.encode("ascii")
    if not 1 <= len(model) <= MAX_MODEL_ID:
        raise ValueError(f"model id must be 1..{MAX_MODEL_ID} ASCII bytes")
    digest = header.weights_digest
    if len(digest) != DIGEST_SIZE and not (version >= 2 and len(digest) == DIGEST_PREFIX_SIZE):
        raise ValueError(f"format version {version} needs the weights' 32-byte sha256, got {len(digest)} bytes")
    if len(header.latent_shapes) != len(payloads):
        raise ValueError("one latent shape per payload")
    _check_ranges(header, payloads)
    if header.flags & ~KNOWN_FLAGS:
        raise ValueError(f"unknown header flags 0x{header.flags:02x}")
    body = bytearray()
    if version == 1:
        body += struct.pack("<B", len(model)) + model + digest
        body += struct.pack("<BIIHH", header.quality, header.height, header.width, header.pad_bottom, header.pad_right)
        body += struct.pack("<B", len(header.latent_shapes))
        for shape in header.latent_shapes:
            body += struct.pack("<HHH", *shape)
        body += struct.pack("<B", len(payloads))
        for payload in payloads:
            body += struct.pack("<I", len(payload))
    else:
        body += struct.pack("<B", len(model)) + model + digest[:DIGEST_PREFIX_SIZE] + struct.pack("<B", header.quality)
        for value in (header.height, header.width, header.pad_bottom, header.pad_right):
            body += encode_varint(value)
        body += struct.pack("<B", len(header.latent_shapes))
        for shape in header.latent_shapes:
            body += b"".join(encode_varint(v) for v in shape)
        body += struct.pack("<B", len(payloads)) + b"".join(encode_varint(len(p)) for p in payloads)
    payload_bytes = b"".join(payloads)
    body += struct.pack("<II", header.coder_crc & 0xFFFFFFFF, zlib.crc32(payload_bytes))
    header_len = _FIXED_PREFIX.size + len(body) + 4
    head = _FIXED_PREFIX.pack(MAGIC, version, header.flags, header_len) + bytes(body)
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

    def varint(self, limit: int) -> int:
        """One minimal unsigned LEB128 value <= ``limit``; anything else is a corrupt header."""
        value, shift = 0, 0
        while True:
            (byte,) = self.take("<B")
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift >= 35:
                raise BitstreamError("header varint is too long")
        if value > limit:
            raise BitstreamError(f"header value {value} is out of range")
        if shift > 7 and byte == 0:  # a trailing zero group: a second spelling of a smaller varint
            raise BitstreamError("header varint is not minimally encoded")
        return value


def _model_id(r: _Reader) -> str:
    (model_len,) = r.take("<B")
    if not 1 <= model_len <= MAX_MODEL_ID:
        raise BitstreamError(f"model id length {model_len} out of range")
    try:
        return r.raw(model_len).decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("model id is not ASCII") from None


def _parse(data: bytes, header_len: int, version: int) -> StreamHeader:
    """One parser for every version: the fields and their order are the same, only their widths differ."""
    r = _Reader(data, _FIXED_PREFIX.size, header_len - 4)
    model_id = _model_id(r)
    if version == 1:
        digest = r.raw(DIGEST_SIZE)
        quality, height, width, pad_bottom, pad_right = r.take("<BIIHH")
    else:
        digest = r.raw(DIGEST_PREFIX_SIZE)
        (quality,) = r.take("<B")
        height, width = r.varint(_UINT32), r.varint(_UINT32)
        pad_bottom, pad_right = r.varint(_UINT16), r.varint(_UINT16)
    (n_latents,) = r.take("<B")
    if n_latents != 2:
        raise BitstreamError(f"version {version} streams carry 2 latents, header says {n_latents}")
    if version == 1:
        shapes = tuple(r.take("<HHH") for _ in range(n_latents))
    else:
        shapes = tuple(tuple(r.varint(_UINT16) for _ in range(3)) for _ in range(n_latents))
    (n_payloads,) = r.take("<B")
    if n_payloads != n_latents:
        raise BitstreamError("payload count differs from latent count")
    if version == 1:
        lengths = tuple(r.take("<I")[0] for _ in range(n_payloads))
    else:
        lengths = tuple(r.varint(_UINT32) for _ in range(n_payloads))
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
        version=version,
    )


#: every format version this decoder reads (the compatibility promise: never remove one); ``pack`` writes them all
WRITABLE_VERSIONS = READABLE_VERSIONS = (1, 2)


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
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f"format version {version} is not supported (this decoder reads {list(READABLE_VERSIONS)})"
        )
    if flags & ~KNOWN_FLAGS:
        raise BitstreamError(f"unknown header flags 0x{flags:02x} (this decoder knows 0x{KNOWN_FLAGS:02x})")
    if not _MIN_HEADER[version] <= header_len <= MAX_HEADER:
        raise BitstreamError(f"header length {header_len} out of range")
    if len(data) < header_len:
        raise TruncatedStreamError("stream ends inside its header")
    (stored_crc,) = struct.unpack_from("<I", data, header_len - 4)
    if zlib.crc32(data[: header_len - 4]) != stored_crc:
        raise BitstreamError("header CRC mismatch: the header is damaged")
    return dataclasses.replace(_parse(data, header_len, version), flags=flags)


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
