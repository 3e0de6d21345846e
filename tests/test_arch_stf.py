"""STF and WACNN (Zou et al., CVPR 2022) and the shared Swin layers they are built from.

Structural tests run the ``tiny`` presets with random weights; the ``paper`` presets are only built, to check
their parameter counts against the reference implementation (github.com/Googolxx/STF).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from model_store.architectures.base import count_parameters
from model_store.architectures.registry import get_preset
from model_store.architectures.stf import STF, STF_LAMBDAS, STF_TINY, WACNN, WACNN_TINY, STFConfig, WACNNConfig
from model_store.entropy.coding import GaussianSymbolEncoder
from model_store.layers.swin import (
    BasicLayer,
    PatchMerging,
    PatchSplit,
    SwinTransformerBlock,
    WindowAttention,
    WindowAttentionModule,
    map_to_tokens,
    shifted_window_mask,
    tokens_to_map,
    window_partition,
    window_reverse,
)

#: Parameter counts the reference code gives (``sum(p.numel() for p in net.parameters())``).
REFERENCE_PARAMETERS = {"stf": 99.86e6, "wacnn": 75.24e6}

TINY_BUILDERS = {"stf": lambda: STF(STF_TINY), "wacnn": lambda: WACNN(WACNN_TINY)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: on a busy 2-core box, OpenMP synchronisation costs far more than the second thread saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    model = TINY_BUILDERS[arch]().eval()
    model.update(force=True)
    return model


def _informative_latent(model, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """g_a of a random image, rescaled to std 3 so that random-init models still code non-zero symbols."""
    torch.manual_seed(seed)
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, h, w))
    return y / y.std() * 3.0


# -- Swin layers ------------------------------------------------------------------------------------------------------
def test_window_partition_and_reverse_are_inverse():
    x = torch.randn(2, 8, 12, 5)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 4, 4, 5)
    assert torch.equal(windows[1], x[0, 0:4, 4:8])  # row-major over the window grid
    assert torch.equal(window_reverse(windows, 4, 8, 12), x)


def test_shifted_window_mask_only_allows_pairs_that_were_neighbours_before_the_roll():
    h, w, ws, s = 8, 12, 4, 2
    mask = shifted_window_mask(h, w, ws, s)
    assert mask.shape == (h // ws * w // ws, ws * ws, ws * ws)
    # After rolling by -s, the last s rows/columns of the rolled map are the wrapped-around first ones: a token
    # may only attend to tokens of its window with the same wrap status along both axes.
    wrapped_row = (torch.arange(h) >= h - s)[:, None].expand(h, w)
    wrapped_col = (torch.arange(w) >= w - s)[None, :].expand(h, w)
    status = (wrapped_row.long() * 2 + wrapped_col.long()).float()
    status_windows = window_partition(status[None, :, :, None], ws).reshape(-1, ws * ws)
    same = status_windows[:, :, None] == status_windows[:, None, :]
    assert torch.equal(mask == 0, same)
    assert (mask[~same] == -100.0).all()
    assert shifted_window_mask(h, w, ws, s) is mask  # cached


def _global_masked_attention(attn: WindowAttention, x: torch.Tensor, ws: int, shift: int) -> torch.Tensor:
    """SW-MSA by its definition: full attention over the map, allowed only between tokens that share a shifted
    window and were contiguous before the cyclic roll; relative position bias from the table."""
    b, h, w, c = x.shape
    heads = attn.num_heads
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    ry, rx = (ys - shift) % h, (xs - shift) % w  # position in the rolled map
    window = (ry // ws) * (w // ws) + rx // ws
    # contiguous in the unrolled map <=> the roll did not wrap between them
    wrapped_y = (ys >= shift) if shift else torch.ones_like(ys, dtype=torch.bool)
    wrapped_x = (xs >= shift) if shift else torch.ones_like(xs, dtype=torch.bool)
    allowed = (window[:, None] == window[None, :]) & (wrapped_y[:, None] == wrapped_y[None, :])
    allowed &= wrapped_x[:, None] == wrapped_x[None, :]
    dy = (ry[:, None] % ws) - (ry[None, :] % ws) + ws - 1
    dx = (rx[:, None] % ws) - (rx[None, :] % ws) + ws - 1
    bias = attn.relative_position_bias_table[dy * (2 * ws - 1) + dx].permute(2, 0, 1)  # heads, L, L
    tokens = x.reshape(b, h * w, c)
    qkv = attn.qkv(tokens).reshape(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    logits = qkv[0] * attn.scale @ qkv[1].transpose(-2, -1) + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = (logits.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(b, h * w, c)
    return attn.proj(out).reshape(b, h, w, c)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_attention_equals_its_global_masked_definition(shift):
    torch.manual_seed(0)
    block = SwinTransformerBlock(dim=8, num_heads=2, window_size=4, shift_size=shift).eval()
    with torch.no_grad():
        block.norm1.weight.normal_()  # non-trivial LayerNorm so the test covers it
        x = torch.randn(2, 8 * 12, 8)
        expected_attn = _global_masked_attention(block.attn, block.norm1(x).view(2, 8, 12, 8), 4, shift)
        expected = x + expected_attn.reshape(2, 96, 8)
        expected = expected + block.mlp(block.norm2(expected))
        torch.testing.assert_close(block(x, 8, 12), expected, atol=1e-5, rtol=1e-5)


def test_swin_block_accepts_sizes_that_are_not_window_multiples():
    block = SwinTransformerBlock(dim=8, num_heads=2, window_size=4, shift_size=2)
    assert block(torch.randn(1, 10 * 7, 8), 10, 7).shape == (1, 70, 8)


def test_patch_merging_and_split_invert_the_spatial_size():
    x = torch.randn(2, 16 * 12, 8)
    layer = BasicLayer(dim=8, depth=2, num_heads=2, window_size=4, resample=PatchMerging)
    y, h, w = layer(x, 16, 12)
    assert (y.shape, h, w) == ((2, 8 * 6, 16), 8, 6)
    assert [b.shift_size for b in layer.blocks] == [0, 2]
    up = BasicLayer(dim=16, depth=1, num_heads=2, window_size=2, resample=PatchSplit)
    z, h, w = up(y, h, w)
    assert (z.shape, h, w) == ((2, 16 * 12, 8), 16, 12)
    fmap = torch.randn(2, 3, 4, 5)
    tokens, h, w = map_to_tokens(fmap)
    assert torch.equal(tokens_to_map(tokens, h, w), fmap)


def test_window_attention_module_keeps_the_feature_map_shape():
    module = WindowAttentionModule(dim=16, num_heads=4, window_size=4, shift_size=2)
    assert module(torch.randn(2, 16, 8, 12)).shape == (2, 16, 8, 12)


# -- the codecs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["stf", "wacnn"])
def test_forward_returns_reconstruction_and_likelihoods_of_the_latents(arch):
    model = _tiny(arch).train()
    x = torch.rand(2, 3, 128, 64)
    out = model(x)
    m, n = model.latent_channels, model.hyper_channels
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, m, 128 // 16, 64 // 16)
    assert out["likelihoods"]["z"].shape == (2, n, 128 // 64, 64 // 64)
    z_shape, y_shape = model.expected_shapes(128, 64)
    assert out["likelihoods"]["y"].shape[1:] == y_shape and out["likelihoods"]["z"].shape[1:] == z_shape
    loss = out["x_hat"].square().mean() + sum(-lik.log2().mean() for lik in out["likelihoods"].values())
    loss.backward()  # straight-through rounding keeps every transform trainable
    assert model.g_a.parameters().__next__().grad is not None


@pytest.mark.parametrize("arch", ["stf", "wacnn"])
def test_windows_and_hyperprior_tile_the_padded_input(arch):
    model = _tiny(arch)
    assert model.pad_multiple == 64 and model.latent_stride == 16 and model.hyper_stride == 64


@pytest.mark.parametrize("arch", ["stf", "wacnn"])
def test_paper_preset_parameter_count_matches_the_reference(arch):
    preset = get_preset(arch, "paper")
    assert preset.is_paper and dict(preset.lambdas) == STF_LAMBDAS
    params = count_parameters(preset.build(1))
    assert abs(params - REFERENCE_PARAMETERS[arch]) <= 0.01 * REFERENCE_PARAMETERS[arch], params


def test_paper_configs_are_the_published_ones():
    stf, wacnn = STFConfig(), WACNNConfig()
    assert (stf.embed_dim, stf.depths, stf.num_heads, stf.window_size, stf.patch_size) == (
        48,
        (2, 2, 6, 2),
        (3, 6, 12, 24),
        4,
        2,
    )
    assert (stf.entropy.latent_channels, stf.entropy.num_slices, stf.entropy.max_support_slices) == (384, 12, 6)
    assert (wacnn.N, wacnn.M, wacnn.entropy.num_slices, wacnn.entropy.max_support_slices) == (192, 320, 10, 5)


@pytest.mark.parametrize("arch", ["stf", "wacnn"])
@pytest.mark.parametrize("name", ["small", "tiny"])
def test_reduced_presets_say_how_they_depart_from_the_paper(arch, name):
    preset = get_preset(arch, name)
    assert not preset.is_paper and preset.departures
    assert {q: preset.lambdas[q] for q in range(1, 7)} == STF_LAMBDAS  # the paper's six points, unchanged


@pytest.mark.parametrize("arch", ["stf", "wacnn"])
def test_small_presets_extend_the_ladder_towards_one_bpp_and_say_so(arch):
    """CPU-sized models spend fewer bits per λ: the small presets continue the doubling series with λ 0.0932 and
    0.18 (TIC's next points), 0.36 (ERSTC small's top) and 0.72, where stf-small's q8 still stops at ~0.7 bpp and
    zigzag-small's q9 at ~0.6."""
    preset = get_preset(arch, "small")
    assert preset.qualities == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [preset.lambdas[q] for q in (7, 8, 9, 10)] == [0.0932, 0.18, 0.36, 0.72]
    assert "qualities 7, 8, 9 and 10 (λ 0.0932, 0.18, 0.36, 0.72)" in preset.departures
    assert get_preset(arch, "paper").qualities == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("arch", ["stf", "wacnn"])
def test_decoder_reproduces_encoder_latent_exactly(arch):
    model = _tiny(arch)
    canon = copy.deepcopy(model).double()
    y = _informative_latent(model, 64, 128)
    with torch.no_grad():
        y64 = y.double()
        z = canon.hyper_analysis(y64)
        z_hat = canon.entropy_bottleneck.decompress(canon.entropy_bottleneck.compress(z), z.shape[-2:])
        encoder = GaussianSymbolEncoder(canon.gaussian_conditional)
        y_hat_encoder = canon.code_latent(y64, z_hat, encoder, tuple(y.shape[1:]))

        payload = canon.compress_latent(y)
        y_hat_decoder = canon.decompress_latent(payload)
    assert payload.y_string == encoder.finish() and len(payload.y_string) > 64  # real symbols were coded
    assert y_hat_decoder.dtype == torch.float64 and y_hat_decoder.shape == (1, *payload.y_shape)
    assert torch.equal(y_hat_decoder, y_hat_encoder)


@pytest.mark.parametrize("arch", ["stf", "wacnn"])
def test_decoded_latent_matches_what_training_forward_quantises_in_eval_mode(arch):
    """The float32 eval pass and the float64 coding path compute the same y_hat up to float32 rounding (observed
    max |diff| ~2e-7); a mean that lands within float error of a .5 boundary could flip one symbol, so allow 0.1 %
    of the values to differ by more than 1e-4."""
    model = _tiny(arch)
    canon = copy.deepcopy(model).double()
    y = _informative_latent(model, 128, 64, seed=1)
    with torch.no_grad():
        y_hat_forward, _ = model.rate_forward(y)
        y_hat_decoded = canon.decompress_latent(canon.compress_latent(y))
    diff = (y_hat_decoded.float() - y_hat_forward).abs()
    assert (diff > 1e-4).float().mean() <= 1e-3
    assert diff.median() < 1e-6


@pytest.mark.parametrize("arch", ["stf", "wacnn"])
def test_entropy_parameters_use_only_the_hyperprior_and_earlier_slices(arch):
    """Changing slice k of y must leave the decoded slices before k untouched."""
    model = _tiny(arch)
    canon = copy.deepcopy(model).double()
    y = _informative_latent(model).double()
    c = model.latent_channels // model.num_slices
    k = model.num_slices - 1
    y2 = y.clone()
    y2[:, k * c :] += 5.0
    with torch.no_grad():
        z = canon.h_a(y)
        z_hat = canon.entropy_bottleneck.decompress(canon.entropy_bottleneck.compress(z), z.shape[-2:])
        a = canon.code_latent(y, z_hat, GaussianSymbolEncoder(canon.gaussian_conditional), tuple(y.shape[1:]))
        b = canon.code_latent(y2, z_hat, GaussianSymbolEncoder(canon.gaussian_conditional), tuple(y.shape[1:]))
    assert torch.equal(a[:, : k * c], b[:, : k * c])
    assert not torch.equal(a[:, k * c :], b[:, k * c :])


def test_tiny_presets_are_small():
    for arch, build in TINY_BUILDERS.items():
        assert count_parameters(build()) < 150_000, arch


def test_swin_attention_is_batch_independent_in_eval_mode():
    model = _tiny("stf")
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        batched = model.g_a(x)
        single = torch.cat([model.g_a(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert F.mse_loss(batched, single) < 1e-10
