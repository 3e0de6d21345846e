"""Hostile bitstreams: whatever bytes arrive, the parser and the decoder answer with a typed error (or, for a
stream re-sealed with valid CRCs, an image of exactly the announced size), quickly and in bounded memory.

Property-based (hypothesis, derandomised so CI is repeatable) over raw bytes, truncations, bit flips and
re-sealed edits of header fields and payloads; every committed corpus and crasher input replays; and a short
coverage-guided atheris run proves the fuzz target itself still works (tests/fuzz/, benchmarks/fuzz.py)."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import harness  # noqa: E402

from model_store import container  # noqa: E402
from model_store.errors import BitstreamError, ModelStoreError  # noqa: E402

FAST = settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECONDS_PER_INPUT = 5.0


def decode_outcome(stream: bytes) -> str:
    """'rejected' or 'decoded', timed; anything else propagates and fails the test."""
    t0 = time.monotonic()
    outcome = harness.check(b"\x00" + stream)
    assert time.monotonic() - t0 < SECONDS_PER_INPUT
    return outcome


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_a_typed_error_in_bounded_memory(data):
    tracemalloc.start()
    try:
        with pytest.raises(ModelStoreError):
            container.unpack(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the parser allocates nothing in proportion to what a header claims
    assert decode_outcome(data) == "rejected"


@FAST
@given(st.sampled_from(range(len(harness.SEED_SIZES))), st.data())
def test_every_truncation_of_a_valid_stream_is_a_typed_error(seed, data):
    stream = harness.seed_streams()[seed]
    cut = data.draw(st.integers(0, len(stream) - 1))
    assert decode_outcome(stream[:cut]) == "rejected"


@FAST
@given(st.sampled_from(range(len(harness.SEED_SIZES))), st.data())
def test_bit_flips_anywhere_are_detected(seed, data):
    stream = bytearray(harness.seed_streams()[seed])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(stream) * 8 - 1))
        stream[position // 8] ^= 1 << (position % 8)
    if bytes(stream) != harness.seed_streams()[seed]:
        assert decode_outcome(bytes(stream)) == "rejected"


_U16, _U32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)


@FAST
@given(
    st.sampled_from(range(len(harness.SEED_SIZES))),
    st.fixed_dictionaries(
        {},
        optional={
            "height": _U32,
            "width": _U32,
            "pad_bottom": _U16,
            "pad_right": _U16,
            "quality": st.integers(0, 255),
            "coder_crc": _U32,
            "latent_shapes": st.tuples(st.tuples(_U16, _U16, _U16), st.tuples(_U16, _U16, _U16)),
        },
    ),
    st.tuples(st.integers(0, 4096), st.integers(0, 4096)),
)
def test_resealed_headers_with_huge_or_inconsistent_fields_never_get_past_the_checks_wrongly(seed, edits, cuts):
    stream = container.unpack(harness.seed_streams()[seed])
    header = dataclasses.replace(stream.header, **edits)
    payloads = [p[: cuts[i]] for i, p in enumerate(stream.payloads)]
    forged = container.pack(header, payloads)
    tracemalloc.start()
    try:
        outcome = decode_outcome(forged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome in ("rejected", "decoded")
    assert peak < 256 << 20  # bounded by the pixel limit, whatever the header claims


def announcing_gigabytes(version: int) -> bytes:
    """A real stream whose two payload lengths are rewritten to ~4 GiB each, header CRC resealed."""
    stream = container.unpack(harness.seed_streams()[2])
    header = dataclasses.replace(stream.header, weights_digest=harness.codec().identity.digest)  # v1 needs it whole
    data = container.pack(header, list(stream.payloads), version=version)
    hl = container.header_length(data)
    crcs = hl - 12  # the payload lengths sit just before the coder and payload CRCs
    if version == 1:
        old, new = 8, struct.pack("<II", 0xFFFFFFF0, 0xFFFFFFF0)
    else:
        varint = container.encode_varint
        old, new = sum(len(varint(n)) for n in stream.header.payload_lengths), varint(0xFFFFFFF0) * 2
    forged = bytearray(data[: crcs - old] + new + data[crcs:hl])
    struct.pack_into("<H", forged, 6, len(forged))
    struct.pack_into("<I", forged, len(forged) - 4, zlib.crc32(bytes(forged[:-4])))
    return bytes(forged) + b"".join(stream.payloads)


@pytest.mark.parametrize("version", container.WRITABLE_VERSIONS)
def test_a_header_announcing_gigabytes_is_refused_before_any_allocation(version):
    forged = announcing_gigabytes(version)
    assert container.parse_header(forged).payload_lengths == (0xFFFFFFF0, 0xFFFFFFF0)  # the forgery parses
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError):
            harness.codec().decompress(bytes(forged))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "path",
    sorted(p for d in (harness.CORPUS, harness.CRASHERS) for p in d.iterdir() if p.name != "README.md"),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_committed_corpus_and_crasher_input_replays_within_the_invariant(path):
    t0 = time.monotonic()
    assert harness.check(path.read_bytes()) in ("rejected", "decoded", "unpackable")
    assert time.monotonic() - t0 < SECONDS_PER_INPUT


def test_a_short_coverage_guided_fuzz_run_finds_nothing(tmp_path):
    """A fixed-length atheris run (1500 inputs, about 30 s here) on a scratch copy of the corpus."""
    corpus = tmp_path / "corpus"
    shutil.copytree(harness.CORPUS, corpus)
    target = Path(harness.__file__).with_name("bitstream_target.py")
    args = [sys.executable, str(target), "-runs=1500", "-timeout=10", "-rss_limit_mb=3072", "-seed=1", str(corpus)]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 1500 runs" in done.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
