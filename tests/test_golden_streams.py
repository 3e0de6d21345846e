"""The compatibility promise, checked against streams made by earlier releases (tests/assets/golden): every
format version and every shipped weights version keeps decoding, to the same latent and the same pixels. Weights
retired from the tree (superseded; model_store/retirement.py) are restored from git history for that, as an
operator would, and before the restore their streams are refused by name (410 ``weights_retired``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from model_store import container, registry, retirement
from model_store.codec import codec_for_stream
from model_store.errors import WeightsFileError, WeightsRetiredError
from model_store.image_io import open_image

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "assets" / "golden"
CASES = json.loads((GOLDEN / "golden.json").read_text())


def is_retired(case) -> bool:
    entry = registry.find_by_digest(bytes.fromhex(case["weights_sha256"]))
    return bool(entry.retired) and not entry.path.is_file()


@pytest.fixture(scope="module")
def restored_root(tmp_path_factory) -> Path:
    """The shipped weights tree plus every retired file restored from the repository's git history."""
    if not any(is_retired(case) for case in CASES):
        return registry.WEIGHTS_ROOT
    root = tmp_path_factory.mktemp("weights")
    shutil.copytree(registry.WEIGHTS_ROOT, root, dirs_exist_ok=True, copy_function=os.symlink)
    try:
        retirement.restore(root, log=lambda _line: None)
    except WeightsFileError as exc:  # a source tarball or shallow clone has no history to restore from
        pytest.skip(f"retired weights need the repository's git history: {exc}")
    registry.refresh()
    return root


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["stream"])
def test_a_stream_from_an_earlier_release_decodes_to_the_same_latent_and_pixels(case, restored_root):
    stream = (GOLDEN / case["stream"]).read_bytes()
    header = container.parse_header(stream)
    assert header.version == case["format_version"] and header.names_weights(bytes.fromhex(case["weights_sha256"]))
    assert registry.find_by_digest(header.weights_digest, root=restored_root).version == case["weights_version"]
    codec = codec_for_stream(stream, root=restored_root)
    y_hat, _ = codec.decode_latent(stream)
    assert hashlib.sha256(y_hat.numpy().astype(np.float32).tobytes()).hexdigest() == case["latent_sha256"]
    decoded = codec.decompress(stream).astype(np.int16)
    expected = open_image(GOLDEN / case["decoded"]).astype(np.int16)
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).max() <= 1 and np.mean(decoded != expected) < 1e-3


def test_every_golden_stream_names_weights_the_manifests_know():
    for case in CASES:
        assert registry.find_by_digest(bytes.fromhex(case["weights_sha256"])) is not None, case["stream"]


def test_a_stream_of_retired_weights_is_refused_by_name_with_the_restore_command():
    retired = [case for case in CASES if is_retired(case)]
    if not retired:
        pytest.skip("no golden stream names retired weights")
    case = retired[0]
    with pytest.raises(WeightsRetiredError, match=f"retirement restore {case['model']} {case['weights_version']}"):
        codec_for_stream((GOLDEN / case["stream"]).read_bytes())


def test_the_golden_stream_script_reproduces_the_newest_committed_entry():
    """scripts/golden_stream.py is how a release freezes its streams: run today on the same weights it must give
    the committed stream byte for byte (else the entries could not be trusted to come from it)."""
    script = load_script("golden_stream")
    newest = [case for case in CASES if "layout" not in case][-1]  # "layout" entries freeze a path, not a release
    entry = registry.find_by_digest(bytes.fromhex(newest["weights_sha256"]))
    if entry.rate_knob is not None:  # a variable-rate file serves every code: the one the entry froze
        entry = dataclasses.replace(entry, quality=newest["quality"])
    case, stream, _ = script.make_case(entry, newest["format_version"])
    assert case == newest
    assert stream == (GOLDEN / newest["stream"]).read_bytes()


def test_integer_path_streams_are_frozen_with_and_without_the_latent_crc():
    """Streams written before ``FLAG_LATENT_CRC`` (the coder CRC over scale indexes only) and after it (over the
    decoded latents too) must both keep decoding: one golden stream of each kind names an integer-path file."""
    kinds = {
        container.parse_header((GOLDEN / case["stream"]).read_bytes()).latent_crc
        for case in CASES
        if case["model"] == "erstc-small-vr"
    }
    assert kinds == {False, True}
