"""Zigzag spatial-channel context model (Shen & Liu, SPIE 2023) on STF's Swin transforms.

Structural tests use the ``tiny`` preset (16 chunks, 12-chunk sliding window) with random weights; the ``paper``
preset is only built to check its parameter count against the reference (github.com/stm233/image-compression-with-
swin-transformer, ``SymmetricalTransFormer5()``: 417,843,543 parameters).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import pytest
import torch

from model_store.architectures.base import count_parameters, total_bpp
from model_store.architectures.registry import get_preset
from model_store.architectures.stf import STF_LAMBDAS, STF_SMALL_LAMBDAS
from model_store.architectures.zigzag import (
    ZIGZAG_PAPER,
    ZIGZAG_SMALL,
    ZIGZAG_TINY,
    ChunkLayout,
    ZigzagCodec,
    ZigzagConfig,
    zigzag_order,
)
from model_store.entropy.coding import GaussianSymbolEncoder

#: ``sum(p.numel() for p in SymmetricalTransFormer5().parameters())`` of the reference code.
REFERENCE_PARAMETERS = 417_843_543

TL, BL, TR, BR = (0, 0), (1, 0), (0, 1), (1, 1)


def _tiny(seed: int = 0, cfg: ZigzagConfig = ZIGZAG_TINY) -> ZigzagCodec:
    torch.manual_seed(seed)
    model = ZigzagCodec(cfg).eval()
    model.update(force=True)
    return model


@pytest.fixture(scope="module")
def tiny() -> ZigzagCodec:
    return _tiny()


def _informative_latent(model: ZigzagCodec, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """g_a of a random image, rescaled to std 3 so that a random-init model codes non-zero symbols."""
    torch.manual_seed(seed)
    with torch.no_grad():
        y = model.g_a(torch.rand(1, 3, h, w))
    return y / y.std() * 3.0


class RecordingEncoder(GaussianSymbolEncoder):
    """An encoder that also keeps the (scales, means) of every group it codes, in coding order."""

    def __init__(self, gaussian):
        super().__init__(gaussian)
        self.params = []

    def code(self, scales, means, y):
        self.params.append((scales.clone(), means.clone()))
        return super().code(scales, means, y)


def _encoder_latent(canon: ZigzagCodec, y: torch.Tensor, coder=None):
    """``(y_hat, z_hat, coder)`` as the encoder computes them in ``compress_latent``."""
    y = y.double()
    z = canon.hyper_analysis(y)
    z_hat = canon.entropy_bottleneck.decompress(canon.entropy_bottleneck.compress(z), z.shape[-2:])
    coder = coder or GaussianSymbolEncoder(canon.gaussian_conditional)
    return canon.code_latent(y, z_hat, coder, tuple(y.shape[1:])), z_hat, coder


# -- shapes and presets ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (128, 64)])
def test_forward_returns_image_and_likelihoods_of_y_and_z(tiny, size):
    h, w = size
    with torch.no_grad():
        out = tiny(torch.rand(2, 3, h, w))
    c, s = tiny.latent_channels, tiny.latent_stride
    assert out["x_hat"].shape == (2, 3, h, w)
    assert out["likelihoods"]["y"].shape == (2, c, h // s, w // s)
    assert out["likelihoods"]["z"].shape == (2, tiny.hyper_channels, h // tiny.hyper_stride, w // tiny.hyper_stride)
    assert ((out["likelihoods"]["y"] > 0) & (out["likelihoods"]["y"] <= 1)).all()


def test_training_forward_backpropagates_through_the_rounded_latents():
    model = _tiny().train()
    out = model(torch.rand(1, 3, 64, 64))
    bpp = total_bpp(out["likelihoods"], 64 * 64)
    (bpp + ((out["x_hat"] - 0.5) ** 2).mean()).backward()
    assert model.g_a.patch_embed.proj.weight.grad.abs().sum() > 0  # through the straight-through ŷ and g_s
    assert model.mean_nets[5].convs[0].weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_paper_preset_has_the_reference_parameter_count():
    start = time.perf_counter()
    model = get_preset("zigzag", "paper").build(1)
    built_in = time.perf_counter() - start
    count = count_parameters(model)
    assert abs(count - REFERENCE_PARAMETERS) <= 0.01 * REFERENCE_PARAMETERS
    assert count == REFERENCE_PARAMETERS  # every module mirrors the reference
    assert model.layout.num_chunks == 24 and model.pad_multiple == 64
    print(f"zigzag paper: {count} parameters, built in {built_in:.1f} s")


def test_presets_are_registered_with_the_stf_lambdas():
    for name in ("paper", "small", "tiny"):
        preset = get_preset("zigzag", name)
        # Like STF's own small preset, the small one continues the λ series to 10 (fewer bits at equal λ).
        expected = STF_SMALL_LAMBDAS if name == "small" else STF_LAMBDAS
        assert dict(preset.lambdas) == expected == dict(get_preset("stf", name).lambdas)
        assert preset.qualities == sorted(expected)
        assert preset.is_paper == (name == "paper")
        assert name == "paper" or preset.departures
    assert "qualities 7, 8, 9 and 10" in get_preset("zigzag", "small").departures
    assert ZIGZAG_PAPER.latent_channels == 384 and ZIGZAG_PAPER.chunk_channels == 64
    assert (ZIGZAG_PAPER.grid, ZIGZAG_PAPER.groups, ZIGZAG_PAPER.context_window) == (2, 6, 12)
    # The small preset keeps the paper's grid, order and sliding window.
    assert (ZIGZAG_SMALL.grid, ZIGZAG_SMALL.order, ZIGZAG_SMALL.context_window) == (2, "shells", 12)
    assert 2e6 <= count_parameters(ZigzagCodec(ZIGZAG_SMALL)) <= 6.5e6
    assert count_parameters(ZigzagCodec(ZIGZAG_TINY)) < 400_000


def test_chunk_nets_see_the_whole_hyperprior_and_the_last_window_chunks(tiny):
    cfg = ZIGZAG_TINY
    hyper = cfg.grid**2 * cfg.latent_channels
    cg, window = cfg.chunk_channels, cfg.context_window
    for k in range(tiny.layout.num_chunks):
        assert tiny.mean_nets[k].convs[0].in_channels == hyper + cg * min(k, window)
        assert tiny.scale_nets[k].convs[0].in_channels == hyper + cg * min(k, window)
        assert tiny.lrp_nets[k].convs[0].in_channels == hyper + cg * min(k + 1, window + 1)


# -- the zigzag order -------------------------------------------------------------------------------------------------
def test_zigzag_order_2x2_is_tl_bl_tr_br():
    assert zigzag_order(2) == [TL, BL, TR, BR]
    assert zigzag_order(2, "diagonals") == [TL, BL, TR, BR]
    # Chunks: channel-first inside a quadrant (6 groups of TL, then BL, TR, BR), as the reference's ZigzagSplits.
    layout = ZIGZAG_PAPER.layout
    assert layout.chunks() == [(r, c, g) for r, c in (TL, BL, TR, BR) for g in range(6)]
    # And the tensors: chunk k holds channel group g of quadrant (r, c).
    canvas = torch.zeros(1, 12, 4, 6)
    for ch in range(12):
        for row in range(4):
            for col in range(6):
                canvas[0, ch, row, col] = (ch // 2) * 100 + (row // 2) * 10 + col // 3  # group, quadrant row, col
    for k, chunk in enumerate(layout.split(canvas)):
        r, c, g = layout.chunks()[k]
        assert chunk.shape == (1, 2, 2, 3)
        assert (chunk == g * 100 + r * 10 + c).all()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_zigzag_order_of_an_n_by_n_grid_grows_from_the_top_left(n):
    shells = zigzag_order(n)
    assert sorted(shells) == [(r, c) for r in range(n) for c in range(n)]
    assert [max(rc) for rc in shells] == sorted(max(rc) for rc in shells)  # square shells, inner first
    for r, c in shells:  # every cell comes after the cells above it and to its left
        assert all(shells.index(prev) < shells.index((r, c)) for prev in [(r - 1, c), (r, c - 1)] if min(prev) >= 0)
    diagonals = zigzag_order(n, "diagonals")
    assert [sum(rc) for rc in diagonals] == sorted(sum(rc) for rc in diagonals)
    if n == 3:
        assert shells == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (0, 2), (1, 2), (2, 2)]
        assert diagonals == [(0, 0), (1, 0), (0, 1), (0, 2), (1, 1), (2, 0), (2, 1), (1, 2), (2, 2)]


@pytest.mark.parametrize("grid,groups", [(2, 6), (4, 2), (3, 1)])
def test_chunk_layout_split_and_merge_are_inverse(grid, groups):
    layout = ChunkLayout(grid, groups)
    y = torch.randn(2, 6 * groups, 6 * grid, 4 * grid)
    chunks = layout.split(y)
    assert len(chunks) == layout.num_chunks == grid * grid * groups
    assert torch.equal(layout.merge(chunks), y)
    assert torch.equal(layout.stack(y), torch.cat(chunks, dim=1))


def test_pad_multiple_makes_the_latent_split_into_quadrants_and_windows():
    for cfg in (ZIGZAG_PAPER, ZIGZAG_SMALL, ZIGZAG_TINY, replace(ZIGZAG_TINY, grid=4), replace(ZIGZAG_TINY, grid=3)):
        stride, window = cfg.transforms.latent_stride, cfg.transforms.window_size
        p = cfg.pad_multiple
        assert p % (stride * cfg.grid) == 0 and p % (stride * window) == 0 and p % (stride * 4) == 0
    assert ZIGZAG_PAPER.pad_multiple == 64 and replace(ZIGZAG_TINY, grid=3).pad_multiple == 192


# -- the coding schedule ----------------------------------------------------------------------------------------------
def test_sliding_window_limits_context_to_last_12_chunks(tiny):
    canon = copy.deepcopy(tiny).double()
    layout = canon.layout
    assert canon.context_window == 12 and layout.num_chunks == 16
    torch.manual_seed(1)
    y_hat = torch.randn(1, canon.latent_channels, 4, 4, dtype=torch.float64) * 3
    z_hat = torch.randn(1, canon.hyper_channels, 1, 1, dtype=torch.float64).round()
    changed = 2
    chunks = layout.split(y_hat.clone())
    chunks[changed] = chunks[changed] + 5.0
    y_hat_changed = layout.merge(chunks)
    with torch.no_grad():
        before = [layout.split(t) for t in canon.entropy_parameters(y_hat, z_hat)]
        after = [layout.split(t) for t in canon.entropy_parameters(y_hat_changed, z_hat)]
    for k in range(layout.num_chunks):
        same = all(torch.equal(b[k], a[k]) for b, a in zip(before, after))
        # Chunk k sees chunks k-12 .. k-1: a change 13 or more positions back (or at/after k) is invisible.
        assert same == (not changed < k <= changed + 12), f"chunk {k}"
    assert all(torch.equal(b[changed + 13], a[changed + 13]) for b, a in zip(before, after))


def test_coding_schedule_matches_training_forward_params(tiny):
    canon = copy.deepcopy(tiny).double()
    y = _informative_latent(tiny).double()
    with torch.no_grad():
        training = canon.latent_forward(y)  # the training pass, in eval mode, on the float64 copy
        y_hat, z_hat, recorder = _encoder_latent(canon, y, RecordingEncoder(canon.gaussian_conditional))
        teacher_means, teacher_scales = canon.entropy_parameters(y_hat, z_hat)
    assert len(recorder.params) == canon.layout.num_chunks  # one coder call per chunk
    coded_scales = canon.layout.merge([s for s, _ in recorder.params])
    coded_means = canon.layout.merge([m for _, m in recorder.params])
    assert torch.equal(training["z_hat"], z_hat)
    assert torch.equal(training["y_hat"], y_hat)
    assert torch.equal(training["means"], coded_means) and torch.equal(training["scales"], coded_scales)
    assert torch.equal(teacher_means, coded_means) and torch.equal(teacher_scales, coded_scales)
    assert y_hat.abs().max() > 1  # the test coded real symbols, not only zeros


def test_decoder_reproduces_encoder_latent_exactly(tiny):
    canon = copy.deepcopy(tiny).double()
    y = _informative_latent(tiny)
    with torch.no_grad():
        y_hat_encoder, _, _ = _encoder_latent(canon, y)
        payload = canon.compress_latent(y)
        y_hat_decoder = canon.decompress_latent(payload)
    assert y_hat_decoder.dtype == torch.float64 and y_hat_decoder.shape == (1, *payload.y_shape)
    assert torch.equal(y_hat_decoder, y_hat_encoder)


def test_finer_grid_is_one_setting_and_still_round_trips():
    model = _tiny(cfg=replace(ZIGZAG_TINY, grid=4, groups=1, context_window=3))
    assert model.layout.num_chunks == 16
    assert [chunk[:2] for chunk in model.layout.chunks()][:5] == [TL, BL, TR, BR, (2, 0)]
    canon = copy.deepcopy(model).double()
    y = _informative_latent(model)
    with torch.no_grad():
        y_hat_encoder, _, _ = _encoder_latent(canon, y)
        assert torch.equal(canon.decompress_latent(canon.compress_latent(y)), y_hat_encoder)


def test_decoded_latent_is_close_to_the_training_forward_quantisation(tiny):
    """Float32 training pass vs float64 coding: equal up to float32 rounding (|Δ| < 1e-4) except where a
    value lands on the other side of a rounding boundary (then |Δ| ≈ 1); we allow at most 1 % of such values."""
    canon = copy.deepcopy(tiny).double()
    y = _informative_latent(tiny)
    with torch.no_grad():
        training = tiny.latent_forward(y)["y_hat"].double()
        decoded = canon.decompress_latent(canon.compress_latent(y))
    diff = (training - decoded).abs()
    assert (diff > 1e-4).float().mean() <= 0.01
    assert diff.max() < 2.0
