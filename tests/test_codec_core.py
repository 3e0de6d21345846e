"""The codec contract on a tiny real model: round trips, bit-exactness, typed errors for bad streams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_codec, natural_image

from model_store import container
from model_store.codec import ImageCodec, ModelIdentity, pad_amounts
from model_store.errors import BitstreamError, CoderMismatchError, LimitExceededError, WeightsMismatchError
from model_store.image_io import ImageLimits

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_keeps_the_original_size(tiny_codec):
    img = natural_image(77, 131)
    out = tiny_codec.decompress(tiny_codec.compress(img))
    assert out.shape == img.shape and out.dtype == np.uint8


def test_one_pixel_image_round_trips(tiny_codec):
    img = natural_image(1, 1)
    assert tiny_codec.decompress(tiny_codec.compress(img)).shape == (1, 1, 3)


def test_decoder_reconstruction_equals_synthesis_of_the_encoders_latent(tiny_codec):
    img = natural_image(64, 64)
    y = tiny_codec.analyse([img])
    from model_store.entropy.coding import GaussianSymbolEncoder

    canon = tiny_codec.canonical
    z = canon.hyper_analysis(y.double())
    z_hat = canon.entropy_bottleneck.decompress(canon.entropy_bottleneck.compress(z), z.shape[-2:])
    y_hat_enc = canon.code_latent(
        y.double(), z_hat, GaussianSymbolEncoder(canon.gaussian_conditional), tuple(y.shape[1:])
    )
    y_hat_dec, _ = tiny_codec.decode_latent(tiny_codec.compress(img))
    assert torch.equal(y_hat_dec, y_hat_enc.float())


def test_streams_are_identical_whatever_the_batch_size(tiny_codec):
    images = [natural_image(96, 80, seed) for seed in range(3)]
    batched = tiny_codec.compress_batch(images)
    alone = [tiny_codec.compress(img) for img in images]
    assert batched == alone


def test_decoded_pixels_are_identical_whatever_the_batch_size(tiny_codec):
    streams = [tiny_codec.compress(natural_image(96, 80, seed)) for seed in range(3)]
    batched = tiny_codec.decompress_batch(streams)
    for stream, img in zip(streams, batched):
        assert np.array_equal(tiny_codec.decompress(stream), img)


def test_streams_are_identical_whatever_the_thread_count(tiny_codec):
    img = natural_image(128, 96)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = tiny_codec.compress(img)
        torch.set_num_threads(2)
        two = tiny_codec.compress(img)
        assert one == two
        assert np.array_equal(tiny_codec.decompress(one), tiny_codec.decompress(two))
    finally:
        torch.set_num_threads(saved)


def test_a_fresh_process_decodes_the_same_pixels(tiny_codec, tmp_path):
    img = natural_image(70, 90)
    stream = tiny_codec.compress(img)
    (tmp_path / "s.bin").write_bytes(stream)
    script = (
        "import sys, numpy as np, torch; sys.path.insert(0, 'tests'); torch.set_num_threads(1)\n"
        "from conftest import make_tiny_codec\n"
        f"out = make_tiny_codec().decompress(open(r'{tmp_path / 's.bin'}', 'rb').read())\n"
        f"np.save(r'{tmp_path / 'out.npy'}', out)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True)
    assert np.array_equal(np.load(tmp_path / "out.npy"), tiny_codec.decompress(stream))


def test_header_describes_the_image(tiny_codec):
    img = natural_image(77, 131)
    header = container.parse_header(tiny_codec.compress(img))
    assert (header.height, header.width) == (77, 131)
    assert (header.pad_bottom, header.pad_right) == pad_amounts(77, 131, tiny_codec.pad_multiple)
    assert header.model_id == "tiny-test" and header.names_weights(bytes(range(32)))
    assert header.latent_shapes == ((4, 2, 3), (8, 8, 12))


def test_stream_from_other_weights_is_refused_by_digest(tiny_codec):
    stream = tiny_codec.compress(natural_image(64, 64))
    other = ImageCodec(tiny_codec.model, ModelIdentity("tiny-test", 1, bytes(32)))
    with pytest.raises(WeightsMismatchError, match="weights"):
        other.decompress(stream)


def test_damaged_payload_is_a_typed_error_never_an_image(tiny_codec):
    stream = bytearray(tiny_codec.compress(natural_image(64, 64)))
    stream[-3] ^= 0x10
    with pytest.raises(BitstreamError):
        tiny_codec.decompress(bytes(stream))


def test_diverging_coder_inputs_are_detected():
    """Different entropy-path weights with the same digest: the coder CRC must refuse to return garbage."""
    encoder = make_tiny_codec(seed=0)
    stream = encoder.compress(natural_image(64, 64))
    decoder = make_tiny_codec(seed=1)  # same identity, different hyper-synthesis weights
    with pytest.raises(CoderMismatchError):
        decoder.decompress(stream)


def test_pixel_limit_is_checked_from_the_header_before_decoding(tiny_codec):
    stream = tiny_codec.compress(natural_image(64, 64))
    strict = ImageCodec(tiny_codec.model, tiny_codec.identity, limits=ImageLimits(max_pixels=1000))
    with pytest.raises(LimitExceededError):
        strict.decompress(stream)


def test_images_of_different_sizes_cannot_share_an_analysis_batch(tiny_codec):
    with pytest.raises(ValueError, match="one size"):
        tiny_codec.compress_batch([natural_image(64, 64), natural_image(64, 80)])


def test_an_encoder_pinned_to_the_older_format_writes_it_and_both_decode_alike(tiny_codec):
    """A fleet upgrades its decoders first, with encoders pinned to version 1; the payloads do not change."""
    img = natural_image(77, 131)
    old = ImageCodec(tiny_codec.model, tiny_codec.identity, format_version=1)
    v1, v2 = old.compress(img), tiny_codec.compress(img)
    h1, h2 = container.parse_header(v1), container.parse_header(v2)
    assert (h1.version, h2.version) == (1, container.FORMAT_VERSION) == (1, 2)
    assert container.unpack(v1).payloads == container.unpack(v2).payloads
    assert len(v1) - len(v2) == container.header_length(v1) - container.header_length(v2) > 30
    assert np.array_equal(tiny_codec.decompress(v1), tiny_codec.decompress(v2))
    with pytest.raises(ValueError, match="format version 3"):
        ImageCodec(tiny_codec.model, tiny_codec.identity, format_version=3)
