"""The entropy path's networks as integer networks (issue #29): h_s, the CAM context model and the parameter net.

Each is built from its float module by post-training quantisation (``of``): per-tensor power-of-two weights of
``weight_bits``, activations with ``frac`` fractional bits, GELU and exp as stored tables, LayerNorm and softmax in
exact integer form (:mod:`model_store.entropy.integer`). Every step is exact in float64 (the guard checks it), so
the result is the same integers for any batch, blocking, thread count or device. The float modules' structure is
kept step for step (TIC's CAM as :class:`~model_store.layers.cam.CausalAttentionModule` computes it: the sum over
the 25 query tokens of attention output plus residual, then an MLP and the projection), so a quantisation-aware
fine-tune can later train the float weights these are made from.

What is measured so far (``benchmarks/integer_path.py``): the rate the coder would spend with these nets' (σ, μ)
against the float64 nets', on the validation photos.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_store.entropy.integer import (
    EXACT_LIMIT,
    INTEGER_DTYPE,
    IntegerLayerNorm,
    IntegerLinear,
    IntegerTable,
    check_integral,
    check_range,
    derived,
    exact_product,
    floor_div,
    half_step,
    integer_softmax,
    isqrt,
    quantize_weight,
    round_shift,
    shift_down_,
)
from model_store.layers.swin import map_to_tokens, tokens_to_map
from model_store.layers.swin_v2 import ResidualSwinV2Group, SwinV2Block, WindowAttentionV2, padded_windowed_attention

__all__ = ["IntegerCAM", "IntegerConv2d", "IntegerHyperSynthesis", "IntegerParameterNet", "to_fixed"]

#: GELU's table covers [-GELU_RANGE, GELU_RANGE] (0 below, the identity above).
GELU_RANGE = 8
#: exp's table covers [-EXP_RANGE, 0] (e^-16 ≈ 1e-7: below one step of a 15-bit output, so 0 there is exact).
EXP_RANGE = 16
EXP_BITS = 15
#: Attention weights per row sum to about 2^ATTENTION_BITS.
ATTENTION_BITS = 15
#: The largest activation magnitude (in units, i.e. ``|value| · 2^frac``) a layer is built to accept.
ACTIVATION_BOUND = 2.0**24
#: Extra fractional bits of a SwinV2 branch (attention, MLP) up to its post-norm: the branch can be a few output
#: steps in all (a random tiny h_s: 0.014 at steps of 2^-8), and normalising it amplified the rounding to the size of
#: the signal (h_s off by 100 %); with 8 more bits, as the CAM's pre-norms, it follows the float model.
POST_NORM_EXTRA = 8


def to_fixed(x: Tensor, frac: int) -> Tensor:
    """A float tensor on the integer path's scale: ``round(x · 2^frac)`` in float64."""
    return torch.round(x.double() * 2.0**frac)


def integer_linear(
    layer: nn.Module, frac: int, weight_bits: int, scale_rows: Optional[Tensor] = None, out_extra: int = 0
):
    """An :class:`IntegerLinear` from a Linear or 1x1 Conv2d, output on the input's scale with ``out_extra`` more
    fractional bits; ``scale_rows`` multiplies output rows first (the attention's ``d^-1/2`` folded into q)."""
    weight = layer.weight.detach().double().flatten(1)
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros(weight.shape[0])
    if scale_rows is not None:
        weight, bias = weight * scale_rows[:, None], bias * scale_rows
    w_int, shift = quantize_weight(weight, weight_bits)
    if shift < out_extra:
        raise ValueError(f"weights this large (scale 2^-{shift}) leave no room for {out_extra} extra output bits")
    return IntegerLinear(w_int, torch.round(bias * 2.0 ** (frac + shift)), shift - out_extra, ACTIVATION_BOUND)


def gelu_table(frac: int) -> IntegerTable:
    return IntegerTable.of(F.gelu, -GELU_RANGE << frac, GELU_RANGE << frac, frac, frac, identity_above=True)


class IntegerParameterNet:
    """The entropy-parameter 1x1 convs with GELU between them: ``(P, E0)`` features -> ``(P, 2M)`` (σ, μ)."""

    def __init__(self, layers: List[IntegerLinear], gelu: IntegerTable):
        self.layers, self.gelu = layers, gelu

    @classmethod
    def of(cls, entropy_parameters: nn.Sequential, frac: int, weight_bits: int) -> "IntegerParameterNet":
        convs = [m for m in entropy_parameters if isinstance(m, nn.Conv2d)]
        return cls([integer_linear(c, frac, weight_bits) for c in convs], gelu_table(frac))

    def __call__(self, features: Tensor) -> Tensor:
        x = features
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.gelu(x)
        return x


class IntegerCAM:
    """TIC's causal attention context model on integer activations: ``ŷ`` ``(B, M, H, W)`` at ``2^-frac`` ->
    ``(B, out_dim, H, W)`` at ``2^-frac``, every position at once (the full-map evaluation a probe or a batched
    wavefront step makes: each block's result is its own)."""

    def __init__(self, cam, frac: int, weight_bits: int):
        self.cam, self.frac = cam, frac
        c = cam.dim
        self.norm1 = IntegerLayerNorm.of(cam.norm1, frac)
        scale = torch.ones(3 * c, dtype=torch.float64)
        scale[:c] = cam.scale  # q · d^-1/2 folded into q's weights
        self.qkv = integer_linear(cam.qkv, frac, weight_bits, scale)
        bias = cam.relative_position_bias_table.detach()[cam.relative_position_index.reshape(-1)]
        bias = bias.view(cam.block_size, cam.block_size, cam.num_heads).permute(2, 0, 1)
        self.position_bias = to_fixed(bias, 2 * frac)  # logits are products of two activations: 2^-2frac
        self.exp = IntegerTable.of(torch.exp, -EXP_RANGE << frac, 0, frac, EXP_BITS)
        self.norm2 = IntegerLayerNorm.of(cam.norm2, frac)
        self.fc1 = integer_linear(cam.mlp.fc1, frac, weight_bits)
        self.fc2 = integer_linear(cam.mlp.fc2, frac, weight_bits)
        self.proj = integer_linear(cam.proj, frac, weight_bits)
        self.gelu = gelu_table(frac)

    @classmethod
    def of(cls, cam, frac: int, weight_bits: int) -> "IntegerCAM":
        return cls(cam, frac, weight_bits)

    def position_bias_half(self) -> Tensor:
        """The position bias plus the logits' rounding half (:func:`half_step`), derived once per stored bias."""
        return derived(self, "_bias_half", (self.position_bias,), lambda bias: bias + half_step(self.frac))

    def token_features(self, x: Tensor, groups: int = 1) -> Tensor:
        """``(..., M)`` -> ``(..., 4M)`` = ``[x, q, k, v]``; ``groups``: images in ``x``'s leading dimension, each
        normalised on its own (:class:`IntegerLayerNorm`)."""
        return torch.cat([x, self.qkv(self.norm1(x, groups))], dim=-1)

    def attend(self, causal: Tensor, padding: Tensor, groups: int = 1) -> Tensor:
        """``(P, 12, 4M)`` causal token features -> ``(P, out_dim)``; the ``P`` rows are ``groups`` images' equal
        shares, each normalised on its own."""
        cam = self.cam
        p, n_causal, _ = causal.shape
        c, heads = cam.dim, cam.num_heads
        tokens = torch.cat([causal, padding.expand(p, cam.block_size - n_causal, 4 * c)], dim=1)
        q, k, v = (
            tokens[..., (1 + i) * c : (2 + i) * c].reshape(p, cam.block_size, heads, c // heads).transpose(1, 2)
            for i in range(3)
        )
        logits = exact_product(q @ k.transpose(-2, -1), "CAM logits").add_(self.position_bias_half())
        logits = shift_down_(logits, self.frac)  # round_shift(q·k + bias, frac): (P, heads, 25, 25)
        weights = integer_softmax(logits, self.exp, ATTENTION_BITS).sum(-2, keepdim=True)  # Σ over queries
        mixed = round_shift(exact_product(weights @ v, "CAM attention"), ATTENTION_BITS).reshape(p, c)
        summed = mixed + causal[..., :c].sum(1)
        hidden = self.gelu(self.fc1(self.norm2(summed, groups)))
        summed = summed + self.fc2(hidden)
        return check_range(self.proj(summed), EXACT_LIMIT / 4, "IntegerCAM output")

    def __call__(self, y_hat: Tensor) -> Tensor:
        cam = self.cam
        b, c, h, w = y_hat.shape
        check_integral(y_hat, ACTIVATION_BOUND, "IntegerCAM input")
        feats = self.token_features(y_hat.permute(0, 2, 3, 1), b)
        padding = self.token_features(torch.zeros(1, c, dtype=INTEGER_DTYPE))[0]
        flat = cam.pad_features(feats, padding)
        idx = cam.neighbour_index(h, w)
        causal = flat[:, idx.reshape(-1)].reshape(b * h * w, cam.num_causal, 4 * c)
        out = self.attend(causal, padding, b)
        return out.reshape(b, h, w, cam.out_dim).permute(0, 3, 1, 2)


def integer_entropy_params(
    cam: IntegerCAM, net: IntegerParameterNet, hyper: Tensor, y_hat: Tensor, frac: int
) -> Tuple[Tensor, Tensor]:
    """(σ, μ) as floats from the integer context model and parameter net, given ``h_s``'s ψ and a decoded latent
    (floats, put on the ``2^-frac`` grid here): what the integer path would hand the coder."""
    context = cam(to_fixed(y_hat, frac))
    features = torch.cat([to_fixed(hyper, frac), context], dim=1)
    b, e, h, w = features.shape
    out = net(features.permute(0, 2, 3, 1).reshape(-1, e)) * 0.5**frac
    return out.reshape(b, h, w, -1).permute(0, 3, 1, 2).chunk(2, dim=1)


# -- h_s: convolutions and SwinV2 groups ----------------------------------------------------------------------------------
class IntegerConv2d:
    """A Conv2d or ConvTranspose2d as im2col (``F.unfold``, a copy) and one :class:`IntegerLinear`: no backend
    convolution algorithm (Winograd and FFT convolutions are not exact even on integers) is ever asked for.

    A transposed convolution is the convolution of the input with ``stride - 1`` zeros between its pixels, padded
    ``k - 1 - p`` (plus ``output_padding`` at the bottom and right), by the kernel flipped and with its in/out
    channels swapped: every output is still one sum of integer products.
    """

    def __init__(self, conv: nn.Module, frac: int, weight_bits: int):
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        weight = conv.weight.detach()
        if self.transposed:
            weight = weight.flip(-1, -2).transpose(0, 1)
            self.output_padding = conv.output_padding[0]
        self.kernel = weight.shape[-1]
        self.stride, self.padding = conv.stride[0], conv.padding[0]
        self.out_channels = weight.shape[0]
        flat = nn.Linear(1, 1)  # a carrier for integer_linear: (out, in·k·k) weight and the conv's bias
        flat.weight = nn.Parameter(weight.reshape(self.out_channels, -1), requires_grad=False)
        flat.bias = nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.linear = integer_linear(flat, frac, weight_bits)

    def __call__(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if self.transposed:
            s, k, p = self.stride, self.kernel, self.padding
            spread = x.new_zeros(b, c, (h - 1) * s + 1, (w - 1) * s + 1)
            spread[:, :, ::s, ::s] = x
            low, high = k - 1 - p, k - 1 - p + self.output_padding
            x = F.pad(spread, (low, high, low, high))
            stride, padding = 1, 0
        else:
            stride, padding = self.stride, self.padding
        out_h = (x.shape[2] + 2 * padding - self.kernel) // stride + 1
        out_w = (x.shape[3] + 2 * padding - self.kernel) // stride + 1
        cols = F.unfold(x, self.kernel, padding=padding, stride=stride)  # (B, C·k·k, L)
        out = self.linear(cols.transpose(1, 2))  # (B, L, O)
        return out.transpose(1, 2).reshape(b, self.out_channels, out_h, out_w)


def unit_vectors(x: Tensor, frac: int) -> Tensor:
    """``x / |x|`` over the last dimension, at ``2^-frac`` (a zero vector stays zero, as ``F.normalize`` keeps it)."""
    norm = isqrt((x * x).sum(-1, keepdim=True)).clamp(min=1.0)
    return floor_div(2.0 * x * 2.0**frac + norm, 2.0 * norm)


class IntegerWindowAttentionV2:
    """SwinV2's scaled-cosine window attention: unit q and k, a per-head temperature, the continuous position
    bias (a constant of the weights, evaluated once in float and stored as integers), the shift mask, softmax."""

    def __init__(self, attn: WindowAttentionV2, frac: int, weight_bits: int):
        self.frac, self.heads = frac, attn.num_heads
        qkv = nn.Linear(1, 1)
        qkv.weight = nn.Parameter(attn.qkv.weight.detach(), requires_grad=False)
        zeros = torch.zeros_like(attn.q_bias) if attn.q_bias is not None else torch.zeros(attn.dim)
        bias = torch.cat((attn.q_bias, zeros, attn.v_bias)) if attn.q_bias is not None else torch.zeros(3 * attn.dim)
        qkv.bias = nn.Parameter(bias.detach(), requires_grad=False)
        self.qkv = integer_linear(qkv, frac, weight_bits)
        self.proj = integer_linear(attn.proj, frac, weight_bits, out_extra=POST_NORM_EXTRA)
        with torch.no_grad():
            self.temperature = to_fixed(attn.logit_scale_value(), frac)  # (heads, 1, 1)
            self.position_bias = to_fixed(attn.relative_position_bias(), frac)  # (heads, N, N)
        self.exp = IntegerTable.of(torch.exp, -EXP_RANGE << frac, 0, frac, EXP_BITS)

    def __call__(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q = round_shift(unit_vectors(qkv[0], self.frac) * self.temperature, self.frac)
        k = unit_vectors(qkv[1], self.frac)
        logits = round_shift(exact_product(q @ k.transpose(-2, -1), "SwinV2 logits"), self.frac) + self.position_bias
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.reshape(bw // nw, nw, self.heads, n, n) + to_fixed(mask, self.frac).unsqueeze(1)
            logits = logits.reshape(bw, self.heads, n, n)
        weights = integer_softmax(logits, self.exp, ATTENTION_BITS)
        out = round_shift(exact_product(weights @ qkv[2], "SwinV2 attention"), ATTENTION_BITS)
        out = out.transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class IntegerSwinV2Block:
    """Res-post-norm: ``x + LN(attn(x))``, then ``x + LN(MLP(x))`` (:class:`SwinV2Block`, windows padded alike)."""

    def __init__(self, block: SwinV2Block, frac: int, weight_bits: int):
        self.window, self.shift = block.window_size, block.shift_size
        self.attn = IntegerWindowAttentionV2(block.attn, frac, weight_bits)
        branch = frac + POST_NORM_EXTRA  # what the post-norms see (attn.proj and fc2 keep the extra bits)
        self.norm1 = IntegerLayerNorm.of(block.norm1, frac, input_frac=branch)
        self.norm2 = IntegerLayerNorm.of(block.norm2, frac, input_frac=branch)
        self.fc1 = integer_linear(block.mlp.fc1, frac, weight_bits)
        self.fc2 = integer_linear(block.mlp.fc2, frac, weight_bits, out_extra=POST_NORM_EXTRA)
        self.gelu = gelu_table(frac)

    def __call__(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.norm1(padded_windowed_attention(self.attn, x, h, w, self.window, self.shift))
        return x + self.norm2(self.fc2(self.gelu(self.fc1(x))))


class IntegerResidualSwinV2Group:
    """``x + conv3x3(blocks(x))`` (:class:`ResidualSwinV2Group`)."""

    def __init__(self, group: ResidualSwinV2Group, frac: int, weight_bits: int):
        self.blocks = [IntegerSwinV2Block(b, frac, weight_bits) for b in group.blocks]
        self.conv = IntegerConv2d(group.conv, frac, weight_bits)

    def __call__(self, x: Tensor) -> Tensor:
        tokens, h, w = map_to_tokens(x)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        return x + self.conv(tokens_to_map(tokens, h, w))


class IntegerHyperSynthesis:
    """h_s (convolutions, transposed convolutions, residual SwinV2 groups): ẑ at ``2^-frac`` -> ψ at ``2^-frac``."""

    def __init__(self, h_s: nn.Sequential, frac: int, weight_bits: int):
        self.layers = []
        for module in h_s:
            if isinstance(module, ResidualSwinV2Group):
                self.layers.append(IntegerResidualSwinV2Group(module, frac, weight_bits))
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                self.layers.append(IntegerConv2d(module, frac, weight_bits))
            else:
                raise TypeError(f"h_s layer {type(module).__name__} has no integer form")

    @classmethod
    def of(cls, h_s: nn.Sequential, frac: int, weight_bits: int) -> "IntegerHyperSynthesis":
        return cls(h_s, frac, weight_bits)

    def __call__(self, z_hat: Tensor) -> Tensor:
        x = check_integral(z_hat, ACTIVATION_BOUND, "IntegerHyperSynthesis input")
        for layer in self.layers:
            x = layer(x)
        return check_integral(x, EXACT_LIMIT / 4, "IntegerHyperSynthesis output")
