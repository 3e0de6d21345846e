"""Streams cross devices: what a CUDA encoder writes a CPU decoder reads, and the other way round.

Skipped where no CUDA device is present (run them on a lent GPU: ``python -m pytest -m cuda``). The contract they
check: the entropy-parameter path runs on the CPU in float64 on both sides, so the decoded latent ŷ is bit-identical
whatever device ran the heavy transforms; only the synthesis g_s runs on the device, whose kernels round
differently from the CPU's, so pixels may differ by at most one level between a CPU and a CUDA decode (every device
is still bit-exact with itself across batch sizes). A model with an integer entropy path (issue #29) runs that path
on the device itself: exact integers, so its streams are the CPU's byte for byte.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import natural_image

from model_store import registry
from model_store.architectures.registry import create_model, get_preset
from model_store.codec import ImageCodec, ModelIdentity

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
ARCHS = ["erstc", "stf", "tic", "tic_plus", "wacnn", "zigzag"]


def codec_pair(arch: str):
    """The same random-initialised tiny model on the CPU and on CUDA."""
    torch.manual_seed(0)
    quality = get_preset(arch, "tiny").qualities[0]
    model = create_model(arch, "tiny", quality)
    model.update(force=True)
    identity = ModelIdentity(f"{arch}-tiny", quality, bytes(32))
    state = model.state_dict()
    twin = create_model(arch, "tiny", quality)
    twin.load_state_dict(state)
    return ImageCodec(model, identity, device="cpu"), ImageCodec(twin, identity, device="cuda")


def latent(codec: ImageCodec, stream: bytes) -> torch.Tensor:
    return codec.decode_latent(stream)[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_cuda_stream_decodes_on_the_cpu_to_the_same_latent(arch):
    cpu, gpu = codec_pair(arch)
    img = natural_image(77, 131)
    stream = gpu.compress(img)
    assert torch.equal(latent(cpu, stream), latent(gpu, stream))  # the coder CRC passed on both sides too
    a, b = cpu.decompress(stream), gpu.decompress(stream)
    assert a.shape == b.shape == img.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_a_cpu_stream_decodes_on_cuda_to_the_same_latent(arch):
    cpu, gpu = codec_pair(arch)
    stream = cpu.compress(natural_image(64, 96, seed=1))
    assert torch.equal(latent(gpu, stream), latent(cpu, stream))


@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_batches_give_the_bytes_and_pixels_of_one_by_one(arch):
    _, gpu = codec_pair(arch)
    images = [natural_image(70, 90, seed) for seed in range(3)]
    streams = gpu.compress_batch(images)
    assert streams == [gpu.compress(img) for img in images]
    for stream, img in zip(streams, gpu.decompress_batch(streams)):
        assert np.array_equal(gpu.decompress(stream), img)


def test_the_shipped_default_model_crosses_devices_on_a_photo_sized_image():
    if not registry.shipped_models():
        pytest.skip("no weights installed here (a device call after scripts/device_tree.sh slim)")
    entry = registry.resolve(None, registry.shipped_models()[registry.default_model()][0])
    cpu, gpu = ImageCodec.from_entry(entry, device="cpu"), ImageCodec.from_entry(entry, device="cuda")
    img = natural_image(512, 768, seed=3)
    for stream in (cpu.compress(img), gpu.compress(img)):
        assert torch.equal(latent(cpu, stream), latent(gpu, stream))
        diff = np.abs(cpu.decompress(stream).astype(int) - gpu.decompress(stream).astype(int))
        assert diff.max() <= 1


@pytest.mark.parametrize("arch", ["tic", "wacnn"])
def test_an_effort_1_stream_made_on_cuda_decodes_on_the_cpu_and_repeats_on_cuda(arch):
    """The latent search runs on the device (its noise from the device's seeded RNG); what it writes is an
    ordinary stream."""
    cpu, gpu = codec_pair(arch)
    cpu.lmbda = gpu.lmbda = 0.0067
    img = natural_image(64, 96, seed=2)
    stream = gpu.compress(img, effort=1)
    assert gpu.compress(img, effort=1) == stream
    assert torch.equal(latent(cpu, stream), latent(gpu, stream))


# -- the integer entropy path (issue #29): the same integers, hence the same streams, on any device ----------------------
def integer_codec_pair():
    """The tiny variable-rate ERSTC, exported with its integer path and loaded on the CPU and on CUDA."""
    from model_store.registry import export_state, load_state

    torch.manual_seed(0)
    state = export_state(create_model("erstc", "tiny-vr", 1).eval())
    codecs = []
    for device in ("cpu", "cuda"):
        model = create_model("erstc", "tiny-vr", 1).eval()
        load_state(model, state)
        codecs.append(ImageCodec(model, ModelIdentity("erstc-tiny-vr", 8, bytes(32)), device=device))
    return codecs


def test_the_integer_path_runs_on_cuda_and_codes_a_latent_to_the_cpus_bytes():
    cpu, cuda = integer_codec_pair()
    assert cuda.canonical.integer_entropy.device.type == "cuda"
    image = natural_image(128, 192, seed=3)
    y = cpu.analyse([image])  # one latent for both: g_a itself differs between devices
    for code in (1, 8, 16):
        stream = cpu.encode_latent(y[0], 128, 192, code)
        assert cuda.encode_latent(y[0], 128, 192, code) == stream
        assert torch.equal(latent(cuda, stream), latent(cpu, stream))


def test_integer_path_batches_on_cuda_give_the_streams_of_one_by_one():
    cpu, cuda = integer_codec_pair()
    images = [natural_image(128, 192, seed=s) for s in range(3)]
    ys = [cpu.analyse([image])[0] for image in images]
    alone = [cpu.encode_latent(y, 128, 192, code) for y, code in zip(ys, (2, 9, 16))]
    assert cuda.encode_latents(ys, 128, 192, [2, 9, 16]) == alone
    decoded = cuda.decode_latents(alone)
    for stream, (y_hat, _) in zip(alone, decoded):
        assert torch.equal(y_hat, latent(cpu, stream))
