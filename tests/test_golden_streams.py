"""The compatibility promise, checked against streams made by earlier releases (tests/assets/golden): every
format version and every shipped weights version keeps decoding, to the same latent and the same pixels."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from model_store import container, registry
from model_store.codec import codec_for_stream
from model_store.image_io import open_image

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "assets" / "golden"
CASES = json.loads((GOLDEN / "golden.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["stream"])
def test_a_stream_from_an_earlier_release_decodes_to_the_same_latent_and_pixels(case):
    stream = (GOLDEN / case["stream"]).read_bytes()
    header = container.parse_header(stream)
    assert header.version == case["format_version"] and header.names_weights(bytes.fromhex(case["weights_sha256"]))
    assert registry.find_by_digest(header.weights_digest).version == case["weights_version"]
    codec = codec_for_stream(stream)
    y_hat, _ = codec.decode_latent(stream)
    assert hashlib.sha256(y_hat.numpy().astype(np.float32).tobytes()).hexdigest() == case["latent_sha256"]
    decoded = codec.decompress(stream).astype(np.int16)
    expected = open_image(GOLDEN / case["decoded"]).astype(np.int16)
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).max() <= 1 and np.mean(decoded != expected) < 1e-3


def test_every_golden_stream_names_installed_weights():
    for case in CASES:
        assert registry.find_by_digest(bytes.fromhex(case["weights_sha256"])) is not None, case["stream"]


def test_the_golden_stream_script_reproduces_the_newest_committed_entry():
    """scripts/golden_stream.py is how a release freezes its streams: run today on the same weights it must give
    the committed stream byte for byte (else the entries could not be trusted to come from it)."""
    spec = importlib.util.spec_from_file_location("golden_stream", ROOT / "scripts" / "golden_stream.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    newest = CASES[-1]
    entry = registry.find_by_digest(bytes.fromhex(newest["weights_sha256"]))
    case, stream, _ = script.make_case(entry, newest["format_version"])
    assert case == newest
    assert stream == (GOLDEN / newest["stream"]).read_bytes()
