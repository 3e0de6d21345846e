"""Streams cross devices: what a CUDA encoder writes a CPU decoder reads, and the other way round.

Skipped where no CUDA device is present (run them on a lent GPU: ``python -m pytest -m cuda``). The contract they
check: the entropy-parameter path runs on the CPU in float64 on both sides, so the decoded latent ŷ is bit-identical
whatever device ran the heavy transforms; only the synthesis g_s runs on the device, whose kernels round
differently from the CPU's, so pixels may differ by at most one level between a CPU and a CUDA decode (every device
is still bit-exact with itself across batch sizes).
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
