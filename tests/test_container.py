"""The container format v1 as a spec: layout, validation before allocation, typed errors."""

from __future__ import annotations

import struct
import zlib

import pytest

from model_store import container
from model_store.errors import BitstreamError, TruncatedStreamError, UnsupportedVersionError


def make_stream(**overrides) -> bytes:
    fields = dict(
        model_id="stf-small",
        weights_digest=bytes(range(32)),
        quality=3,
        height=77,
        width=131,
        pad_bottom=51,
        pad_right=61,
        latent_shapes=((192, 2, 3), (320, 8, 12)),
        payload_lengths=(0, 0),
        coder_crc=0xDEADBEEF,
        payload_crc=0,
    )
    fields.update(overrides)
    return container.pack(container.StreamHeader(**fields), [b"zzz", b"yyyyyy"])


def test_round_trip_preserves_every_header_field():
    stream = container.unpack(make_stream())
    h = stream.header
    assert (h.model_id, h.quality, h.height, h.width) == ("stf-small", 3, 77, 131)
    assert (h.pad_bottom, h.pad_right, h.padded_size) == (51, 61, (128, 192))
    assert h.latent_shapes == ((192, 2, 3), (320, 8, 12))
    assert h.payload_lengths == (3, 6) and stream.payloads == (b"zzz", b"yyyyyy")
    assert h.weights_digest == bytes(range(32)) and h.coder_crc == 0xDEADBEEF and h.version == 1


def test_stream_starts_with_magic_and_version():
    data = make_stream()
    assert data[:4] == b"LICx" and data[4] == container.FORMAT_VERSION


def test_bad_magic_is_rejected():
    with pytest.raises(BitstreamError, match="magic"):
        container.parse_header(b"PNG\x00" + make_stream()[4:])


def test_newer_version_is_a_typed_error():
    data = bytearray(make_stream())
    data[4] = 99
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        container.parse_header(bytes(data))


@pytest.mark.parametrize("cut", [0, 3, 7, 20, 60])
def test_truncated_header_is_a_typed_error(cut):
    with pytest.raises(BitstreamError):
        container.unpack(make_stream()[:cut])


def test_truncated_payload_is_a_typed_error():
    with pytest.raises(TruncatedStreamError):
        container.unpack(make_stream()[:-2])


def test_trailing_garbage_is_rejected():
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        container.unpack(make_stream() + b"\x00")


def test_every_single_bit_flip_is_detected():
    data = make_stream()
    for pos in range(len(data)):
        for bit in (0, 3, 7):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            with pytest.raises(BitstreamError):
                container.unpack(bytes(flipped))


def test_header_is_checked_without_reading_the_payload():
    data = make_stream()
    header_only = data[: container.header_length(data)]
    assert container.parse_header(header_only).model_id == "stf-small"


def test_huge_announced_payload_is_rejected_without_allocating():
    header = container.StreamHeader(
        model_id="m",
        weights_digest=bytes(32),
        quality=1,
        height=1,
        width=1,
        pad_bottom=0,
        pad_right=0,
        latent_shapes=((1, 1, 1), (1, 1, 1)),
        payload_lengths=(0, 0),
        coder_crc=0,
        payload_crc=0,
    )
    data = bytearray(container.pack(header, [b"", b""]))
    hl = container.header_length(bytes(data))
    # forge a 4 GiB payload length and re-seal the header CRC: the length check must still refuse it
    length_pos = hl - 4 - 8 - 4
    struct.pack_into("<I", data, length_pos, 0xFFFFFFFF)
    struct.pack_into("<I", data, hl - 4, zlib.crc32(bytes(data[: hl - 4])))
    with pytest.raises(TruncatedStreamError):
        container.unpack(bytes(data))


def test_non_bytes_input_is_a_typed_error():
    with pytest.raises(BitstreamError):
        container.parse_header("LICx")  # type: ignore[arg-type]
