"""The container format as a spec: layout, validation before allocation, typed errors, every version readable."""

from __future__ import annotations

import struct
import zlib

import pytest

from model_store import container
from model_store.errors import BitstreamError, TruncatedStreamError, UnsupportedVersionError

VERSIONS = container.WRITABLE_VERSIONS
SHA = bytes(range(32))


def header_fields(**overrides) -> container.StreamHeader:
    fields = dict(
        model_id="stf-small",
        weights_digest=SHA,
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
    return container.StreamHeader(**fields)


def make_stream(version: int = container.FORMAT_VERSION, payloads=(b"zzz", b"yyyyyy"), **overrides) -> bytes:
    return container.pack(header_fields(**overrides), list(payloads), version=version)


def reseal(data: bytearray) -> bytes:
    """Recompute the header CRC after a deliberate forgery, so only the check under test can catch it."""
    hl = container.header_length(bytes(data))
    struct.pack_into("<H", data, 6, hl)
    struct.pack_into("<I", data, hl - 4, zlib.crc32(bytes(data[: hl - 4])))
    return bytes(data)


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_preserves_every_header_field(version):
    stream = container.unpack(make_stream(version))
    h = stream.header
    assert (h.model_id, h.quality, h.height, h.width) == ("stf-small", 3, 77, 131)
    assert (h.pad_bottom, h.pad_right, h.padded_size) == (51, 61, (128, 192))
    assert h.latent_shapes == ((192, 2, 3), (320, 8, 12))
    assert h.payload_lengths == (3, 6) and stream.payloads == (b"zzz", b"yyyyyy")
    assert h.coder_crc == 0xDEADBEEF and h.version == version
    assert h.names_weights(SHA) and not h.names_weights(bytes(32))


def test_version_1_carries_the_whole_sha256_and_version_2_its_first_8_bytes():
    assert container.parse_header(make_stream(1)).weights_digest == SHA
    assert container.parse_header(make_stream(2)).weights_digest == SHA[:8]


def test_encoders_write_the_newest_version_by_default():
    data = make_stream()
    assert data[:4] == b"LICx" and data[4] == container.FORMAT_VERSION == max(VERSIONS) == 2


def test_version_2_header_is_39_bytes_shorter_for_the_default_model_on_a_photo():
    """The same tic-small 768x512 stream: 97 header bytes in version 1, 58 in version 2."""
    tic = dict(model_id="tic-small", height=512, width=768, pad_bottom=0, pad_right=0)
    tic.update(latent_shapes=((64, 8, 12), (128, 32, 48)))
    payloads = (b"z" * 300, b"y" * 12000)
    sizes = {v: container.header_length(make_stream(v, payloads, **tic)) for v in VERSIONS}
    assert sizes == {1: 97, 2: 58}


def test_a_digest_prefix_is_only_written_where_the_format_stores_a_prefix():
    with pytest.raises(ValueError, match="32-byte sha256"):
        make_stream(1, weights_digest=SHA[:8])
    assert container.parse_header(make_stream(2, weights_digest=SHA[:8])).weights_digest == SHA[:8]
    with pytest.raises(ValueError, match="cannot write format version 3"):
        make_stream(3)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "field, value",
    [
        ("quality", 256),
        ("height", -1),
        ("width", 2**32),
        ("pad_right", 2**16),
        ("latent_shapes", ((1, 1, 2**16), (1, 1, 1))),
    ],
)
def test_values_outside_the_contract_are_refused_by_every_version(version, field, value):
    with pytest.raises(ValueError):
        make_stream(version, **{field: value})


def test_bad_magic_is_rejected():
    with pytest.raises(BitstreamError, match="magic"):
        container.parse_header(b"PNG\x00" + make_stream()[4:])


def test_newer_version_is_a_typed_error():
    data = bytearray(make_stream())
    data[4] = 99
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        container.parse_header(bytes(data))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("cut", [0, 3, 7, 20, 44, 60])
def test_truncated_header_is_a_typed_error(version, cut):
    with pytest.raises(BitstreamError):
        container.unpack(make_stream(version)[:cut])


@pytest.mark.parametrize("version", VERSIONS)
def test_truncated_payload_is_a_typed_error(version):
    with pytest.raises(TruncatedStreamError):
        container.unpack(make_stream(version)[:-2])


@pytest.mark.parametrize("version", VERSIONS)
def test_trailing_garbage_is_rejected(version):
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        container.unpack(make_stream(version) + b"\x00")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_single_bit_flip_is_detected(version):
    data = make_stream(version)
    for pos in range(len(data)):
        for bit in (0, 3, 7):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            with pytest.raises(BitstreamError):
                container.unpack(bytes(flipped))


@pytest.mark.parametrize("version", VERSIONS)
def test_header_is_checked_without_reading_the_payload(version):
    data = make_stream(version)
    header_only = data[: container.header_length(data)]
    assert container.parse_header(header_only).model_id == "stf-small"


def tiny_header(version: int) -> bytes:
    one = dict(height=1, width=1, pad_bottom=0, pad_right=0, latent_shapes=((1, 1, 1), (1, 1, 1)), model_id="m")
    return make_stream(version, (b"", b""), **one)


def test_huge_announced_payload_is_rejected_without_allocating_v1():
    data = bytearray(tiny_header(1))
    hl = container.header_length(bytes(data))
    # forge a 4 GiB payload length and re-seal the header CRC: the length check must still refuse it
    struct.pack_into("<I", data, hl - 4 - 8 - 4, 0xFFFFFFFF)
    with pytest.raises(TruncatedStreamError):
        container.unpack(reseal(data))


def forge_v2_lengths(lengths: bytes) -> bytes:
    """A version-2 stream with empty payloads whose payload-length varints are replaced by ``lengths``."""
    data = tiny_header(2)
    hl = container.header_length(data)
    crcs = hl - 4 - 8  # the two one-byte zero lengths sit just before the coder and payload CRCs
    assert data[crcs - 2 : crcs] == b"\x00\x00"
    forged = bytearray(data[: crcs - 2] + lengths + data[crcs:])
    struct.pack_into("<H", forged, 6, hl - 2 + len(lengths))
    return reseal(forged)


def test_huge_announced_payload_is_rejected_without_allocating_v2():
    with pytest.raises(TruncatedStreamError):
        container.unpack(forge_v2_lengths(b"\xff\xff\xff\xff\x0f" + b"\x00"))  # 2**32 - 1, then 0


@pytest.mark.parametrize(
    "lengths, message",
    [
        (b"\x80\x00\x00", "not minimally encoded"),  # 0 spelt in two bytes
        (b"\xff\xff\xff\xff\x1f\x00", "out of range"),  # 2**33 - 1 > uint32
        (b"\x80\x80\x80\x80\x80\x01\x00", "too long"),
    ],
)
def test_a_malformed_varint_is_a_typed_error(lengths, message):
    with pytest.raises(BitstreamError, match=message):
        container.parse_header(forge_v2_lengths(lengths))


def test_non_bytes_input_is_a_typed_error():
    with pytest.raises(BitstreamError):
        container.parse_header("LICx")  # type: ignore[arg-type]
