"""ERSTC (Wang et al. 2023): shapes, parameter counts, SwinV2 attention details and the CAM wavefront coding path."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_erstc

from model_store.architectures.base import count_parameters
from model_store.architectures.erstc import (
    ERSTC,
    ERSTC_LAMBDAS,
    ERSTC_MSSSIM_LAMBDAS,
    ERSTC_PAPER_HIGH,
    ERSTC_PAPER_LOW,
    ERSTC_SMALL_LAMBDAS,
    ERSTC_TINY,
    PAPER_PARAMETER_COUNTS,
    _paper_config,
)
from model_store.architectures.registry import get_preset
from model_store.entropy.coding import GaussianSymbolDecoder, GaussianSymbolEncoder
from model_store.layers.cam import raster_schedule, wavefront_schedule, wavefront_step_count
from model_store.layers.swin_v2 import (
    FeatureEnhancement,
    ResidualSwinV2Group,
    SwinV2Block,
    WindowAttentionV2,
    log_spaced_relative_coords,
)


@pytest.fixture(scope="module")
def tiny():
    """Tiny ERSTC in eval mode with CDF tables, its float64 canonical copy, an image and its latent."""
    model, canon = tiny_erstc()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = model.g_a(x)
    return model, canon, x, y


def _encode(canon: ERSTC, y: torch.Tensor, schedule=None):
    """The encoder's own y_hat, z_hat and rANS string (what compress_latent does, keeping y_hat)."""
    y = y.double()
    with torch.no_grad():
        z = canon.h_a(y)
        z_hat = canon.entropy_bottleneck.decompress(canon.entropy_bottleneck.compress(z), z.shape[-2:])
        encoder = GaussianSymbolEncoder(canon.gaussian_conditional)
        y_hat = canon.code_latent_in_order(
            y, z_hat.double(), encoder, tuple(y.shape[1:]), schedule or wavefront_schedule
        )
    return y_hat, z_hat.double(), encoder


class _RecordingEncoder(GaussianSymbolEncoder):
    """Keeps every group's scales and means (flat, in coding order) besides coding them."""

    def __init__(self, gaussian):
        super().__init__(gaussian)
        self.groups = []

    def code(self, scales, means, y):
        self.groups.append((scales.clone(), means.clone()))
        return super().code(scales, means, y)


# -- shapes and counts -----------------------------------------------------------------------------------------------
def test_forward_returns_reconstruction_and_likelihood_shapes(tiny):
    model, _, x, _ = tiny
    for training in (True, False):
        model.train(training)
        out = model(x)
        assert out["x_hat"].shape == x.shape
        assert out["likelihoods"]["y"].shape == (1, ERSTC_TINY.M, 4, 4)
        assert out["likelihoods"]["z"].shape == (1, ERSTC_TINY.N, 1, 1)
        assert all(torch.isfinite(v).all() and (v > 0).all() for v in out["likelihoods"].values())
    model.eval()


def test_paper_low_rate_parameter_count_is_pinned():
    # No public table could be read (module docstring): the number is this layout's, computed once and pinned.
    model = ERSTC(ERSTC_PAPER_LOW)
    reference = PAPER_PARAMETER_COUNTS["low (q1-3, N=128, M=192)"]
    assert abs(count_parameters(model) - reference) <= 0.01 * reference
    assert model.pad_multiple == 128 and model.latent_channels == 192 and model.hyper_channels == 128


@pytest.mark.slow
def test_paper_high_rate_parameter_count_is_pinned():
    model = ERSTC(ERSTC_PAPER_HIGH)
    reference = PAPER_PARAMETER_COUNTS["high (q4-7, N=192, M=320)"]
    assert abs(count_parameters(model) - reference) <= 0.01 * reference


def test_feature_enhancement_has_invcompress_enhblock_size():
    # Dense(3->64): convs 3,35,67,99 -> 32 and 131 -> 64; 1x1, 3x3, 1x1 at 64; Dense(64->3): 64,96,128,160 -> 32
    # and 192 -> 3 (all 3x3 with bias), i.e. InvCompress's EnhBlock(64) counted by hand.
    dense_in = sum(c * 32 * 9 + 32 for c in (3, 35, 67, 99)) + 131 * 64 * 9 + 64
    middle = 2 * (64 * 64 + 64) + 64 * 64 * 9 + 64
    dense_out = sum(c * 32 * 9 + 32 for c in (64, 96, 128, 160)) + 192 * 3 * 9 + 3
    assert count_parameters(FeatureEnhancement(3, 64, 32, 5)) == dense_in + middle + dense_out == 313_987


def test_presets_carry_the_paper_lambda_tables_and_rate_dependent_widths():
    paper = get_preset("erstc", "paper")
    assert paper.is_paper and paper.qualities == [1, 2, 3, 4, 5, 6, 7]
    assert (
        dict(paper.lambdas) == ERSTC_LAMBDAS == {1: 0.0016, 2: 0.0032, 3: 0.0075, 4: 0.015, 5: 0.023, 6: 0.03, 7: 0.045}
    )
    assert dict(get_preset("erstc", "tiny").lambdas) == ERSTC_LAMBDAS
    for name in ("paper", "small", "tiny"):
        preset = get_preset("erstc", name)
        assert {q: preset.lambdas[q] for q in range(1, 8)} == ERSTC_LAMBDAS  # the paper's seven points, unchanged
        assert dict(preset.extra["lambdas_msssim"]) == ERSTC_MSSSIM_LAMBDAS == {1: 6, 2: 12, 3: 40, 4: 80, 5: 120}
    assert get_preset("erstc", "small").departures
    assert [_paper_config(q).N for q in range(1, 8)] == [128, 128, 128, 192, 192, 192, 192]


def test_small_preset_extends_the_ladder_towards_one_bpp_and_says_so():
    """A CPU-sized ERSTC reaches ~0.6 bpp at the paper's top λ: the small preset adds TIC's λ 0.0932 and 0.18, and
    0.36 because doubling λ past 0.0932 buys only ~0.1 bpp."""
    small = get_preset("erstc", "small")
    assert small.qualities == list(range(1, 11))
    assert dict(small.lambdas) == ERSTC_SMALL_LAMBDAS
    assert [small.lambdas[q] for q in (8, 9, 10)] == [0.0932, 0.18, 0.36]
    assert "qualities 8, 9 and 10" in small.departures


# -- SwinV2 -----------------------------------------------------------------------------------------------------------
def test_cosine_attention_logit_scale_is_clamped():
    torch.manual_seed(0)
    attn = WindowAttentionV2(dim=16, window_size=4, num_heads=2)
    with torch.no_grad():
        attn.logit_scale.copy_(torch.tensor([math.log(1000.0), math.log(5.0)]).view(2, 1, 1))
    assert torch.allclose(attn.logit_scale_value().flatten(), torch.tensor([100.0, 5.0]))

    # The whole attention equals softmax(cos(q, k) * min(e^τ, 100) + 16 sigmoid(CPB)) v, computed by hand.
    x = torch.randn(3, 16, 16)
    bias = torch.cat((attn.q_bias, torch.zeros(16), attn.v_bias))
    q, k, v = F.linear(x, attn.qkv.weight, bias).reshape(3, 16, 3, 2, 8).permute(2, 0, 3, 1, 4)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    logits = logits * torch.tensor([100.0, 5.0]).view(1, 2, 1, 1) + attn.relative_position_bias()
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(3, 16, 16))
    assert torch.allclose(attn(x), expected, atol=1e-5)

    # Above the clamp the scale gets no gradient (it cannot grow the temperature further); below it does.
    attn(x).sum().backward()
    assert attn.logit_scale.grad[0].item() == 0.0 and attn.logit_scale.grad[1].item() != 0.0


def test_position_bias_coordinates_are_log_spaced():
    table = log_spaced_relative_coords((8, 8))
    assert table.shape == (15, 15, 2)
    # Offset 7 (the largest in a window of 8) maps to 8 before the log: log2(9) / log2(8).
    assert torch.isclose(table[14, 7, 0], torch.tensor(math.log2(9) / 3))
    assert torch.isclose(table[0, 7, 0], torch.tensor(-math.log2(9) / 3))
    assert table[7, 7].abs().sum() == 0
    bias = WindowAttentionV2(32, 8, 4).relative_position_bias()
    assert bias.shape == (4, 64, 64) and (bias > 0).all() and (bias < 16).all()


def test_swinv2_block_is_res_post_norm():
    torch.manual_seed(0)
    block = SwinV2Block(dim=16, num_heads=2, window_size=4, shift_size=2)
    x = torch.randn(2, 8 * 12, 16)
    block.zero_init_post_norms()  # both branches end in a LayerNorm: zero post-norms make the block the identity
    assert torch.equal(block(x, 8, 12), x)
    # A residual group with identity blocks reduces to x + conv(x); sizes that are not window multiples work.
    group = ResidualSwinV2Group(dim=16, depth=2, num_heads=2, window_size=4)
    fmap = torch.randn(1, 16, 6, 10)
    assert torch.allclose(group(fmap), fmap + group.conv(fmap))


# -- entropy coding ---------------------------------------------------------------------------------------------------
def test_decoder_reproduces_encoder_latent_exactly(tiny):
    _, canon, _, y = tiny
    y_hat_encoder, _, _ = _encode(canon, y)
    payload = canon.compress_latent(y.double())
    y_hat_decoder = canon.decompress_latent(payload)
    assert payload.y_shape == (ERSTC_TINY.M, 4, 4) and payload.z_shape == (ERSTC_TINY.N, 1, 1)
    assert y_hat_decoder.dtype == torch.float64
    assert torch.equal(y_hat_decoder, y_hat_encoder)


def test_decoded_latent_is_close_to_the_eval_forward_quantisation(tiny):
    model, canon, _, y = tiny
    y_hat = canon.decompress_latent(canon.compress_latent(y.double()))
    # The coder rounds around the predicted mean (round(y - μ) + μ); eval-mode forward rounds y itself (TIC).
    assert (y_hat - y.double()).abs().max() <= 0.5 + 1e-6
    forward_y_hat = model.gaussian_conditional.quantize(y, "dequantize").double()
    assert (y_hat - forward_y_hat).abs().max() <= 1.0 + 1e-6


def test_wavefront_parameters_match_the_parallel_masked_forward(tiny):
    # The coding path evaluates the CAM one front at a time; fed the finished y_hat, the parallel (masked) training
    # path must predict the same scales and means at every position, up to float32-vs-float64 rounding.
    _, canon, _, y = tiny
    y64 = y.double()
    with torch.no_grad():
        z = canon.h_a(y64)
        z_hat = canon.entropy_bottleneck.decompress(canon.entropy_bottleneck.compress(z), z.shape[-2:]).double()
        recorder = _RecordingEncoder(canon.gaussian_conditional)
        y_hat = canon.code_latent(y64, z_hat, recorder, tuple(y.shape[1:]))
        scales, means = canon.entropy_params_map(canon.h_s(z_hat), y_hat)
    m, h, w = y.shape[1:]
    coded_scales = torch.zeros(h * w, m, dtype=torch.float64)
    coded_means = torch.zeros(h * w, m, dtype=torch.float64)
    for positions, (s, mu) in zip(wavefront_schedule(h, w), recorder.groups):
        coded_scales[positions], coded_means[positions] = s, mu
    assert torch.allclose(coded_scales.t().reshape(1, m, h, w), scales, atol=1e-10)
    assert torch.allclose(coded_means.t().reshape(1, m, h, w), means, atol=1e-10)


def test_wavefront_matches_raster_serial_decoding(tiny):
    _, canon, _, y = tiny
    m, h, w = y.shape[1:]
    assert wavefront_step_count(h, w) == 3 * h + w - 3
    y_hat_wavefront, z_hat, _ = _encode(canon, y)
    y_hat_raster, _, raster_encoder = _encode(canon, y, schedule=raster_schedule)
    assert torch.equal(y_hat_raster, y_hat_wavefront)
    # The serial decoder reads the serial encoder's stream back exactly as well.
    decoder = GaussianSymbolDecoder(canon.gaussian_conditional, raster_encoder.finish())
    with torch.no_grad():
        y_hat_decoded = canon.code_latent_in_order(None, z_hat, decoder, (m, h, w), raster_schedule)
    decoder.verify(raster_encoder.index_crc)
    assert torch.equal(y_hat_decoded, y_hat_wavefront)


def test_code_latent_follows_the_dtype_of_z_hat(tiny):
    model, _, _, y = tiny
    y_hat, _, _ = _encode(copy.deepcopy(model).double(), y)
    assert y_hat.dtype == torch.float64
    with torch.no_grad():
        z = model.h_a(y)
        z_hat = model.entropy_bottleneck.decompress(model.entropy_bottleneck.compress(z), z.shape[-2:])
        out = model.code_latent(y, z_hat, GaussianSymbolEncoder(model.gaussian_conditional), tuple(y.shape[1:]))
    assert out.dtype == torch.float32
