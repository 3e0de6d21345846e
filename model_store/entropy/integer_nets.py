"""The entropy path's networks as integer networks (issue #29): the CAM context model and the parameter net.

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
    integer_softmax,
    quantize_weight,
    round_shift,
)

__all__ = ["IntegerCAM", "IntegerParameterNet", "to_fixed"]

#: GELU's table covers [-GELU_RANGE, GELU_RANGE] (0 below, the identity above).
GELU_RANGE = 8
#: exp's table covers [-EXP_RANGE, 0] (e^-16 ≈ 1e-7: below one step of a 15-bit output, so 0 there is exact).
EXP_RANGE = 16
EXP_BITS = 15
#: Attention weights per row sum to about 2^ATTENTION_BITS.
ATTENTION_BITS = 15
#: The largest activation magnitude (in units, i.e. ``|value| · 2^frac``) a layer is built to accept.
ACTIVATION_BOUND = 2.0**24


def to_fixed(x: Tensor, frac: int) -> Tensor:
    """A float tensor on the integer path's scale: ``round(x · 2^frac)`` in float64."""
    return torch.round(x.double() * 2.0**frac)


def integer_linear(layer: nn.Module, frac: int, weight_bits: int, scale_rows: Optional[Tensor] = None):
    """An :class:`IntegerLinear` from a Linear or 1x1 Conv2d, output on the input's scale; ``scale_rows``
    multiplies output rows first (the attention's ``d^-1/2`` folded into q)."""
    weight = layer.weight.detach().double().flatten(1)
    bias = layer.bias.detach().double()
    if scale_rows is not None:
        weight, bias = weight * scale_rows[:, None], bias * scale_rows
    w_int, shift = quantize_weight(weight, weight_bits)
    return IntegerLinear(w_int, torch.round(bias * 2.0 ** (frac + shift)), shift, ACTIVATION_BOUND)


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

    def token_features(self, x: Tensor) -> Tensor:
        """``(..., M)`` -> ``(..., 4M)`` = ``[x, q, k, v]``."""
        return torch.cat([x, self.qkv(self.norm1(x))], dim=-1)

    def attend(self, causal: Tensor, padding: Tensor) -> Tensor:
        """``(P, 12, 4M)`` causal token features -> ``(P, out_dim)``."""
        cam = self.cam
        p, n_causal, _ = causal.shape
        c, heads = cam.dim, cam.num_heads
        tokens = torch.cat([causal, padding.expand(p, cam.block_size - n_causal, 4 * c)], dim=1)
        q, k, v = (
            tokens[..., (1 + i) * c : (2 + i) * c].reshape(p, cam.block_size, heads, c // heads).transpose(1, 2)
            for i in range(3)
        )
        logits = round_shift(q @ k.transpose(-2, -1) + self.position_bias, self.frac)  # (P, heads, 25, 25)
        weights = integer_softmax(logits, self.exp, ATTENTION_BITS).sum(-2, keepdim=True)  # Σ over queries
        mixed = round_shift(weights @ v, ATTENTION_BITS).reshape(p, c)
        summed = mixed + causal[..., :c].sum(1)
        hidden = self.gelu(self.fc1(self.norm2(summed)))
        summed = summed + self.fc2(hidden)
        return check_integral(self.proj(summed), EXACT_LIMIT / 4, "IntegerCAM output")

    def __call__(self, y_hat: Tensor) -> Tensor:
        cam = self.cam
        b, c, h, w = y_hat.shape
        check_integral(y_hat, ACTIVATION_BOUND, "IntegerCAM input")
        feats = self.token_features(y_hat.permute(0, 2, 3, 1))
        padding = self.token_features(torch.zeros(1, c, dtype=INTEGER_DTYPE))[0]
        flat = cam.pad_features(feats, padding)
        idx = cam.neighbour_index(h, w)
        causal = flat[:, idx.reshape(-1)].reshape(b * h * w, cam.num_causal, 4 * c)
        out = self.attend(causal, padding)
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
