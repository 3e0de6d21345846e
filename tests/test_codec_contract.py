"""The codec contract, for every architecture (tiny random-initialised presets, real rANS streams).

Each architecture family must give: any input size, identical streams and pixels whatever the batch size or
thread count, the same pixels in a fresh process, and typed errors for damaged streams.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import natural_image

from model_store import container
from model_store.architectures.base import total_bpp
from model_store.architectures.registry import architectures, create_model, get_preset
from model_store.codec import ImageCodec, ModelIdentity
from model_store.errors import BitstreamError

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["erstc", "stf", "tic", "tic_plus", "wacnn", "zigzag"]


def tiny_codec(arch: str) -> ImageCodec:
    torch.manual_seed(0)
    quality = get_preset(arch, "tiny").qualities[0]
    model = create_model(arch, "tiny", quality)
    model.update(force=True)
    return ImageCodec(model, ModelIdentity(f"{arch}-tiny", quality, bytes(32)))


@pytest.fixture(scope="module", params=ARCHS)
def codec(request) -> ImageCodec:
    return tiny_codec(request.param)


def test_every_seed_architecture_is_registered_with_paper_small_and_tiny_presets():
    assert set(ARCHS) <= set(architectures())
    for arch in ARCHS:
        assert get_preset(arch, "paper").is_paper
        assert get_preset(arch, "small").departures and get_preset(arch, "tiny").departures


@pytest.mark.parametrize("size", [(77, 131), (1, 1), (64, 64)])
def test_any_size_round_trips_to_the_original_size(codec, size):
    img = natural_image(*size)
    out = codec.decompress(codec.compress(img))
    assert out.shape == img.shape and out.dtype == np.uint8


def test_batch_of_three_gives_the_same_streams_and_pixels_as_one_by_one(codec):
    images = [natural_image(70, 90, seed) for seed in range(3)]
    streams = codec.compress_batch(images)
    assert streams == [codec.compress(img) for img in images]
    decoded = codec.decompress_batch(streams)
    for stream, img in zip(streams, decoded):
        assert np.array_equal(codec.decompress(stream), img)


def test_thread_count_changes_neither_stream_nor_pixels(codec):
    img = natural_image(70, 90, seed=5)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, pixels_one = codec.compress(img), None
        pixels_one = codec.decompress(one)
        torch.set_num_threads(2)
        two = codec.compress(img)
        assert one == two and np.array_equal(codec.decompress(two), pixels_one)
    finally:
        torch.set_num_threads(saved)


def test_truncated_and_bit_flipped_streams_raise_typed_errors(codec):
    stream = codec.compress(natural_image(64, 64))
    with pytest.raises(BitstreamError):
        codec.decompress(stream[:-1])
    flipped = bytearray(stream)
    flipped[len(flipped) // 2] ^= 0x04
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(flipped))


def test_a_fresh_process_decodes_every_architecture_to_the_same_pixels(tmp_path):
    expected = {}
    for arch in ARCHS:
        codec = tiny_codec(arch)
        stream = codec.compress(natural_image(70, 90, seed=7))
        (tmp_path / f"{arch}.bin").write_bytes(stream)
        expected[arch] = codec.decompress(stream)
    script = (
        "import json, sys, numpy as np, torch; sys.path.insert(0, 'tests'); torch.set_num_threads(1)\n"
        "from test_codec_contract import tiny_codec\n"
        f"for arch in {ARCHS!r}:\n"
        f"    out = tiny_codec(arch).decompress(open(r'{tmp_path}/' + arch + '.bin', 'rb').read())\n"
        f"    np.save(r'{tmp_path}/' + arch + '.npy', out)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True)
    for arch in ARCHS:
        assert np.array_equal(np.load(tmp_path / f"{arch}.npy"), expected[arch]), arch


def test_cli_lists_every_architecture_as_json():
    out = subprocess.run(
        [sys.executable, "-m", "model_store", "list", "--json"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    listed = {row["arch"] for row in json.loads(out.stdout)["models"]}
    assert set(ARCHS) <= listed


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_precision_training_runs_only_the_transforms_in_bf16(arch):
    """Under bf16 autocast g_a/g_s run in bf16 but everything the rate term depends on sees float32: a bf16 latent's
    step (0.125 at |y| ~ 16) is coarser than the noise of the rate proxy."""
    torch.manual_seed(0)
    model = create_model(arch, "tiny", get_preset(arch, "tiny").qualities[0]).train()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            outputs = output if isinstance(output, tuple) else (output,)
            tensors = [t for t in (*inputs, *outputs) if isinstance(t, torch.Tensor) and t.is_floating_point()]
            seen[name] = {t.dtype for t in tensors}

        return hook

    for name in ("h_a", "entropy_bottleneck", "gaussian_conditional"):
        getattr(model, name).register_forward_hook(record(name))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 3, 64, 64))
    assert out["x_hat"].dtype == torch.bfloat16  # autocast did reach the transforms
    assert seen == {name: {torch.float32} for name in ("h_a", "entropy_bottleneck", "gaussian_conditional")}
    assert {p.dtype for p in out["likelihoods"].values()} == {torch.float32}
    total_bpp(out["likelihoods"], 2 * 64 * 64).backward()  # and the rate gradient reaches g_a through the cast
    assert all(p.grad is not None for p in model.g_a.parameters() if p.requires_grad)


def test_cli_compresses_with_the_default_model_in_either_format_and_decompresses_from_the_header(tmp_path, capsys):
    from model_store.__main__ import main
    from model_store.image_io import encode_image, open_image

    source = tmp_path / "in.png"
    source.write_bytes(encode_image(natural_image(48, 64, seed=5), "PNG"))
    for version in (1, 2):
        stream = tmp_path / f"v{version}.bin"
        assert main(["compress", str(source), str(stream), "--quality", "1", "--format-version", str(version)]) == 0
        assert container.parse_header(stream.read_bytes()).version == version
        assert main(["decompress", str(stream), str(tmp_path / f"v{version}.png")]) == 0
    assert main(["compress", str(source), str(tmp_path / "default.bin"), "--quality", "1"]) == 0
    assert (tmp_path / "default.bin").read_bytes() == (tmp_path / "v2.bin").read_bytes()
    assert np.array_equal(open_image(tmp_path / "v1.png"), open_image(tmp_path / "v2.png"))
    assert "-> " in capsys.readouterr().out


def test_cli_compress_without_quality_uses_the_registrys_default_quality(tmp_path):
    from model_store import registry
    from model_store.__main__ import main
    from model_store.image_io import encode_image

    source, stream = tmp_path / "in.png", tmp_path / "out.bin"
    source.write_bytes(encode_image(natural_image(48, 64, seed=5), "PNG"))
    assert main(["compress", str(source), str(stream)]) == 0
    quality = container.parse_header(stream.read_bytes()).quality
    assert quality == registry.model_default_quality()  # what POST /compress without a quality uses too
    knob = registry.resolve(None, quality).rate_knob
    if knob is None:
        assert quality == registry.DEFAULT_QUALITY
    else:  # a variable-rate default: the knob's code at the λ of the ladder's default quality, to one code's step
        step = math.log(knob.code_lambda(2) / knob.code_lambda(1))  # one code's step, whatever its span
        assert abs(math.log(knob.code_lambda(quality) / knob.default_lambda)) <= step / 2
