"""TIC / TIC+ (Lu et al., DCC 2022): shapes, parameter counts, the CAM's causal mask and its wavefront decoder."""

from __future__ import annotations

import copy
import dataclasses
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import natural_image

from model_store.architectures.base import count_parameters
from model_store.architectures.registry import create_model, get_preset
from model_store.architectures.tic import TIC, TIC_LAMBDAS, TIC_PAPER, TIC_PLUS_PAPER
from model_store.codec import ImageCodec, ModelIdentity
from model_store.entropy.causal_context import (
    crop_serial_decode,
    crop_serial_encode,
    raster_serial_decode,
    raster_serial_encode,
)
from model_store.entropy.coding import GaussianSymbolDecoder, GaussianSymbolEncoder
from model_store.errors import CoderMismatchError
from model_store.layers.cam import CAUSAL_OFFSETS, CausalAttentionModule, wavefront_schedule, wavefront_step_count

ARCHS = ("tic", "tic_plus")


@pytest.fixture(autouse=True)
def single_thread():
    """These tests are many tiny tensor ops: intra-op threads only add overhead (and oversubscribe shared CI
    runners). Thread-count invariance of the streams is tested by the codec core tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(arch: str, quality: int = 3, seed: int = 0) -> TIC:
    torch.manual_seed(seed)
    model = create_model(arch, "tiny", quality).eval()
    model.update(force=True)
    return model  # type: ignore[return-value]


def encoder_side(canon: TIC, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(y_hat the encoder produced, z_hat), by calling code_latent with a GaussianSymbolEncoder ourselves."""
    z = canon.hyper_analysis(y)
    z_hat = canon.entropy_bottleneck.decompress(canon.entropy_bottleneck.compress(z), z.shape[-2:])
    y_hat = canon.code_latent(y, z_hat, GaussianSymbolEncoder(canon.gaussian_conditional), tuple(y.shape[1:]))
    return y_hat, z_hat


class RecordingCoder:
    """Passes every group through to a real coder and keeps the (scales, means) it was given."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: List[Tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def is_encoder(self) -> bool:
        return self.inner.is_encoder

    def code(self, scales, means, y=None):
        self.calls.append((scales.clone(), means.clone()))
        return self.inner.code(scales, means, y)


# -- shapes, presets, parameter counts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_returns_reconstruction_and_likelihood_shapes(arch):
    model = tiny(arch)
    x = torch.rand(2, 3, 64, 128)
    for train in (True, False):
        model.train(train)
        out = model(x)
        assert out["x_hat"].shape == x.shape
        assert out["likelihoods"]["y"].shape == (2, 20, 4, 8)
        assert out["likelihoods"]["z"].shape == (2, 16, 1, 2)
        assert all(torch.isfinite(v).all() for v in out["likelihoods"].values())


def test_training_forward_backpropagates_through_the_cam():
    model = tiny("tic").train()
    out = model(torch.rand(1, 3, 64, 64))
    loss = sum(torch.log2(lik).sum() for lik in out["likelihoods"].values()) + out["x_hat"].pow(2).mean()
    loss.backward()
    assert model.context_prediction.qkv.weight.grad.abs().sum() > 0
    assert model.context_prediction.relative_position_bias_table.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_presets_have_the_paper_lambdas_and_widths(arch):
    for name in ("paper", "small", "tiny"):
        preset = get_preset(arch, name)
        assert dict(preset.lambdas) == TIC_LAMBDAS
        assert preset.is_paper == (name == "paper")
        assert name == "paper" or preset.departures
    assert TIC_LAMBDAS == {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013, 5: 0.025, 6: 0.0483, 7: 0.0932, 8: 0.18}
    with torch.device("meta"):
        configs = {q: create_model(arch, "paper", q).cfg for q in (1, 4, 5, 8)}
    widths = {q: (cfg.N, cfg.M) for q, cfg in configs.items()}
    assert widths == {1: (128, 192), 4: (128, 192), 5: (192, 320), 8: (192, 320)}
    assert all(cfg.window_size == 8 and cfg.hyper_window_size == 4 for cfg in configs.values())
    assert all(cfg.num_heads == (4, 8, 16) and cfg.hyper_heads == (16, 16) for cfg in configs.values())


def reference_parameter_count(n: int, m: int, depths: Sequence[int], hyper_depths: Sequence[int]) -> int:
    """Closed-form parameter count of the reference ``compressai/models/tic.py`` (layer by layer, as written there).

    conv/deconv(i, o, k) = i*o*k*k + o; a Swin block = LN, qkv, proj, LN, MLP(x4) + a (2w-1)^2 x heads bias table;
    EntropyBottleneck(N): 58 parameters + 3 quantiles per channel; CAM(M, 2M, 16 heads, 5x5); 1x1 convs 4M->..->2M.
    """

    def conv(i: int, o: int, k: int) -> int:
        return i * o * k * k + o

    def block(c: int, heads: int, w: int) -> int:
        return 12 * c * c + 13 * c + (2 * w - 1) ** 2 * heads

    transforms = (
        conv(3, n, 5)
        + 2 * conv(n, n, 3)
        + conv(n, m, 3)  # g_a
        + conv(m, n, 3)
        + 2 * conv(n, n, 3)  # h_a
        + 2 * conv(n, n, 3)
        + conv(n, 2 * m, 3)  # h_s
        + conv(m, n, 3)
        + 2 * conv(n, n, 3)
        + conv(n, 3, 5)  # g_s (transposed: same counts)
    )
    swin = 2 * sum(d * block(n, h, 8) for d, h in zip(depths, (4, 8, 16)))
    swin += 2 * sum(d * block(n, 16, 4) for d in hyper_depths)
    cam = 2 * m + (3 * m * m + 3 * m) + 81 * 16 + 2 * m + (m * 4 * m + 4 * m) + (4 * m * m + m) + (m * 2 * m + 2 * m)
    e1, e2, e3 = m * 10 // 3, m * 8 // 3, m * 6 // 3
    entropy_parameters = 4 * m * e1 + e1 + e1 * e2 + e2 + e2 * e3 + e3
    return transforms + swin + cam + entropy_parameters + 61 * n


@pytest.mark.parametrize(
    "arch, configs, depths, hyper_depths, published",
    [("tic", TIC_PAPER, (2, 2, 2), (2, 2), None), ("tic_plus", TIC_PLUS_PAPER, (2, 4, 6), (2, 2), (10.23e6, 23.92e6))],
)
def test_paper_parameter_count_matches_the_reference(arch, configs, depths, hyper_depths, published):
    with torch.device("meta"):  # shapes only: builds in milliseconds
        counts = [count_parameters(create_model(arch, "paper", q)) for q in (1, 5)]
    for count, cfg in zip(counts, configs):
        assert count == reference_parameter_count(cfg.N, cfg.M, depths, hyper_depths)
    if published is not None:
        for count, expected in zip(counts, published):
            assert abs(count - expected) / expected < 0.01


# -- the CAM: mask, reference formulation, wavefront -------------------------------------------------------------------
def reference_cam(cam: CausalAttentionModule, x: torch.Tensor) -> torch.Tensor:
    """The reference's literal computation: unfold 5x5, multiply by the 12-of-25 mask, attend over all 25 tokens."""
    b, c, h, w = x.shape
    blocks = F.unfold(x, kernel_size=5, padding=2).reshape(b, c, 25, h * w).permute(0, 3, 2, 1).reshape(-1, 25, c)
    mask = torch.tensor([1.0] * 12 + [0.0] * 13, dtype=x.dtype).view(1, 25, 1)
    masked = blocks * mask
    heads = cam.num_heads
    qkv = cam.qkv(cam.norm1(masked)).reshape(-1, 25, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * cam.scale, qkv[1], qkv[2]
    bias = cam.relative_position_bias_table[cam.relative_position_index.reshape(-1)].view(25, 25, -1).permute(2, 0, 1)
    attn = (q @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(-1, 25, c) + masked
    summed = out.sum(1)
    summed = summed + cam.mlp(cam.norm2(summed))
    return cam.proj(summed).reshape(b, h, w, -1).permute(0, 3, 1, 2)


def test_cam_equals_the_reference_masked_attention():
    torch.manual_seed(1)
    cam = CausalAttentionModule(24, 48, num_heads=4).double()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so masked tokens are not zero after LN1
        for p in (cam.norm1.weight, cam.norm1.bias, cam.norm2.weight, cam.norm2.bias):
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 24, 7, 9, dtype=torch.float64)
    assert torch.allclose(cam(x), reference_cam(cam, x), rtol=0, atol=1e-12)


def test_cam_mask_is_the_documented_12_of_25():
    assert CAUSAL_OFFSETS == tuple((di, dj) for di in (-2, -1) for dj in range(-2, 3)) + ((0, -2), (0, -1))


def test_cam_mask_is_causal():
    """Changing y_hat at or after (i, j) in raster order never changes the entropy parameters at (i, j); exactly
    the 12 documented neighbours do change them (so the mask is neither leaky nor narrower than the paper's)."""
    model = tiny("tic").double()
    torch.manual_seed(2)
    c, h, w = model.latent_channels, 6, 7
    y_hat = torch.round(torch.randn(1, c, h, w, dtype=torch.float64) * 3)
    hyper = torch.randn(1, 2 * c, h, w, dtype=torch.float64)
    with torch.no_grad():
        base = torch.cat(model.entropy_params_map(hyper, y_hat), dim=1)
        for i in range(h):
            for j in range(w):
                later = torch.zeros(h * w, dtype=torch.bool)
                later[i * w + j :] = True
                changed = y_hat + 5.0 * later.view(1, 1, h, w) * torch.randn_like(y_hat)
                after = torch.cat(model.entropy_params_map(hyper, changed), dim=1)
                assert torch.equal(after[..., i, j], base[..., i, j]), (i, j)
        i, j = 3, 3  # interior: which single positions influence (i, j)?
        influencing = set()
        for a in range(h):
            for b in range(w):
                changed = y_hat.clone()
                changed[..., a, b] += 7.0
                after = torch.cat(model.entropy_params_map(hyper, changed), dim=1)
                if not torch.equal(after[..., i, j], base[..., i, j]):
                    influencing.add((a - i, b - j))
    assert influencing == set(CAUSAL_OFFSETS)


@pytest.mark.parametrize("h, w", [(32, 48), (1, 1), (4, 3), (5, 9), (8, 8), (3, 20)])
def test_wavefront_step_count(h, w):
    steps = wavefront_schedule(h, w)
    assert len(steps) == wavefront_step_count(h, w) == 3 * h + w - 3
    step_of = torch.full((h * w,), -1)
    for t, positions in enumerate(steps):
        step_of[positions] = t
    assert sorted(torch.cat(steps).tolist()) == list(range(h * w))  # every position exactly once
    for pos in range(h * w):  # every causal neighbour is decoded in an earlier step
        i, j = divmod(pos, w)
        for di, dj in CAUSAL_OFFSETS:
            if 0 <= i + di < h and 0 <= j + dj < w:
                assert step_of[(i + di) * w + j + dj] < step_of[pos]


def test_wavefront_has_141_steps_for_a_512x768_image():
    assert wavefront_step_count(512 // 16, 768 // 16) == 141


# -- coding ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(64, 64), (64, 192)])
def test_decoder_reproduces_encoder_latent_exactly(arch, size):
    model = tiny(arch)
    canon = copy.deepcopy(model).double()
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, *size)).double()
        y_hat_encoder, _ = encoder_side(canon, y)
        payload = canon.compress_latent(y)
        y_hat_decoder = canon.decompress_latent(payload)
    assert torch.equal(y_hat_decoder, y_hat_encoder)
    assert (y_hat_decoder - y).abs().max() <= 0.5 + 1e-9


@pytest.mark.parametrize("arch", ARCHS)
def test_decoded_latent_is_close_to_the_eval_forward_quantisation(arch):
    """The eval forward rounds y itself (round(y)); the coder rounds around the mean (round(y - μ) + μ), so the
    two differ by less than 1 per element. Fed the decoded latent, the forward's masked CAM and parameter convs give
    the wavefront's (σ, μ) to float tolerance, and reproduce the decoded latent from y."""
    model = tiny(arch)
    canon = copy.deepcopy(model).double()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        y = model.g_a(x).double()
        payload = canon.compress_latent(y)
        z_hat = canon.entropy_bottleneck.decompress([payload.z_string], payload.z_shape[1:])
        recorder = RecordingCoder(GaussianSymbolDecoder(canon.gaussian_conditional, payload.y_string))
        y_hat = canon.code_latent(None, z_hat, recorder, payload.y_shape)
        c, h, w = payload.y_shape
        order = torch.cat(wavefront_schedule(h, w))
        used = torch.zeros(2, h * w, c, dtype=torch.float64)
        used[:, order] = torch.stack([torch.cat(part) for part in zip(*recorder.calls)])
        scales, means = canon.entropy_params_map(canon.h_s(z_hat), y_hat)
        forward_eval_y_hat = model.gaussian_conditional.quantize(y, "dequantize")
    assert torch.allclose(scales[0].flatten(1).t(), used[0], rtol=0, atol=1e-10)
    assert torch.allclose(means[0].flatten(1).t(), used[1], rtol=0, atol=1e-10)
    assert torch.allclose(torch.round(y - means) + means, y_hat, rtol=0, atol=1e-9)
    assert (y_hat - forward_eval_y_hat).abs().max() < 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_wavefront_matches_raster_serial_decoding(arch):
    """3H+W-3 batched steps give bit for bit the latent of the classic one-position-at-a-time decoder."""
    model = tiny(arch)
    canon = copy.deepcopy(model).double()
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, 128, 128)).double()
        wavefront = canon.decompress_latent(canon.compress_latent(y))
        raster = raster_serial_decode(canon, raster_serial_encode(canon, y))
    assert torch.equal(wavefront, raster)


def test_reference_crop_loop_decodes_the_same_latent_as_the_wavefront():
    """The benchmark's baseline (the published decoder's 5x5-crop loop) is a working codec computing the same
    context: its latent equals the wavefront's up to float rounding (its full-crop forward sums differently)."""
    model = tiny("tic")
    canon = copy.deepcopy(model).double()
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, 128, 128)).double()
        wavefront = canon.decompress_latent(canon.compress_latent(y))
        payload = crop_serial_encode(canon, y)
        crop = crop_serial_decode(canon, payload)
    assert crop.shape == wavefront.shape
    assert torch.allclose(crop, wavefront, rtol=0, atol=1e-9)
    with pytest.raises(CoderMismatchError):
        crop_serial_decode(canon, dataclasses.replace(payload, index_crc=payload.index_crc ^ 1))


def test_coding_runs_in_float64_even_for_a_float32_latent():
    model = tiny("tic")
    canon = copy.deepcopy(model).double()
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, 64, 64))
        y_hat = canon.decompress_latent(canon.compress_latent(y))
    assert y_hat.dtype == torch.float64


@pytest.mark.parametrize("arch", ARCHS)
def test_small_preset_round_trips_a_latent(arch):
    torch.manual_seed(0)
    model = create_model(arch, "small", 8).eval()
    model.update(force=True)
    canon = copy.deepcopy(model).double()
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, 64, 128)).double()
        y_hat_encoder, _ = encoder_side(canon, y)
        assert torch.equal(canon.decompress_latent(canon.compress_latent(y)), y_hat_encoder)
        assert model.g_s(y_hat_encoder.float()).shape == (1, 3, 64, 128)


@pytest.mark.parametrize("arch", ARCHS)
def test_image_codec_round_trips_odd_sizes(arch):
    codec = ImageCodec(tiny(arch), ModelIdentity(f"{arch}-tiny", 3, bytes(32)))
    for h, w in ((77, 131), (1, 1)):
        img = natural_image(h, w)
        stream = codec.compress(img)
        out = codec.decompress(stream)
        assert out.shape == img.shape and out.dtype == np.uint8
