"""Swin-Transformer V2 building blocks and the dense feature-enhancement block, for ERSTC.

* SwinV2: Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022, Sec. 3.2-3.3
  (reference: microsoft/Swin-Transformer ``models/swin_transformer_v2.py``; Swin2SR, Conde et al., ECCVW 2022,
  for the residual group with a trailing convolution).
* Feature enhancement: the dense ``EnhBlock`` of Xie et al., "Enhanced Invertible Encoding for Learned Image
  Compression", ACM MM 2021 (xyq7/InvCompress), which ERSTC (Wang et al. 2023) and its successor S2LIC
  (wyq2021/S2LIC, same first author) put in front of the analysis and behind the synthesis transform.

Window partitioning, the shifted-window mask, DropPath and the MLP come from :mod:`model_store.layers.swin`
(Swin v1); only what V2 changes lives here.

What V2 changes in a block (both on ``(B, L, C)`` tokens of an ``H x W`` map)::

    v1 (pre-norm):       x ─┬─ LN ─ (S)W-MSA ──────────(+)─┬─ LN ─ MLP ────(+)─▶
                            └──────────────────────────────┘└───────────────┘
    v2 (res-post-norm):  x ─┬─ (S)W-MSA_cos ─ LN ──────(+)─┬─ MLP ─ LN ────(+)─▶
                            └──────────────────────────────┘└───────────────┘

and in the attention (per head, inside a window of N = ws² tokens)::

    logits = cos(q_i, k_j) * exp(min(τ, log 100)) + 16·sigmoid(CPB(Δ_ij)) (+ shift mask)

* ``τ`` (``logit_scale``) is learned per head, initialised to log 10, clamped at log(1/0.01) = log 100 so the
  softmax temperature can never fall below 0.01 (the reference's clamp).
* ``CPB`` is a 2-layer MLP (2 -> 512 -> heads, ReLU, no bias on the output) applied to *log-spaced* relative
  coordinates ``Δ̂ = sign(Δ)·log2(1 + 8|Δ|/(ws-1)) / log2(8)``; its outputs are squashed by ``16·sigmoid``.
* q and v have learned biases, k has none (the reference's ``q_bias``/``v_bias``).

Windows: H and W that are not multiples of the window are zero-padded on the bottom/right before attention and
cropped after (as :class:`model_store.layers.swin.SwinTransformerBlock` does), so every size works; the codecs pad
images so that this does not happen at the paper's window sizes.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_store.layers.swin import DropPath, Mlp, drop_path_rates, map_to_tokens, tokens_to_map, windowed_attention

__all__ = [
    "DenseBlock",
    "FeatureEnhancement",
    "ResidualSwinV2Group",
    "SwinV2Block",
    "WindowAttentionV2",
    "log_spaced_relative_coords",
]

#: Upper bound of the learned log logit scale: the attention temperature stays >= 1/100 (SwinV2 reference).
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)


def log_spaced_relative_coords(
    window_size: Tuple[int, int], pretrained_window_size: Tuple[int, int] = (0, 0)
) -> Tensor:
    """``(2Wh-1, 2Ww-1, 2)`` table of log-spaced relative coordinates (SwinV2 Eq. 4).

    Offsets are normalised to [-8, 8] by the (pre-trained) window size, then mapped with
    ``sign(x) * log2(1 + |x|) / log2(8)`` into [-1, 1].
    """
    wh, ww = window_size
    rel_h = torch.arange(-(wh - 1), wh, dtype=torch.float32)
    rel_w = torch.arange(-(ww - 1), ww, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(rel_h, rel_w, indexing="ij"), dim=-1)  # 2Wh-1, 2Ww-1, 2
    ph, pw = pretrained_window_size
    norm_h, norm_w = (ph, pw) if ph > 0 and pw > 0 else (wh, ww)
    # A 1x1 window has only the zero offset; avoid dividing by zero.
    table[..., 0] /= max(norm_h - 1, 1)
    table[..., 1] /= max(norm_w - 1, 1)
    table = table * 8.0
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8.0)


def _relative_position_index(window_size: Tuple[int, int]) -> Tensor:
    """``(N, N)`` flat index into the ``(2Wh-1)(2Ww-1)`` coordinate table for every (query, key) pair."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 2
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


class WindowAttentionV2(nn.Module):
    """Window multi-head self-attention with scaled cosine logits and a continuous, log-spaced position bias.

    ``forward(x, mask)``: ``x`` of shape ``(B * nW, N, C)`` with ``N = Wh * Ww`` (windows as
    :func:`model_store.layers.swin.window_partition` orders them), optional additive ``mask`` ``(nW, N, N)``.
    """

    def __init__(
        self,
        dim: int,
        window_size: Union[int, Tuple[int, int]],
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pretrained_window_size: Union[int, Tuple[int, int]] = 0,
        cpb_hidden: int = 512,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size: Tuple[int, int] = (
            (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)  # type: ignore[assignment]
        )
        pretrained = (
            (pretrained_window_size, pretrained_window_size)
            if isinstance(pretrained_window_size, int)
            else tuple(pretrained_window_size)
        )
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden, bias=True), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads, bias=False)
        )
        self.register_buffer(
            "relative_coords_table",
            log_spaced_relative_coords(self.window_size, pretrained),  # type: ignore[arg-type]
            persistent=False,
        )
        self.register_buffer("relative_position_index", _relative_position_index(self.window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias: Optional[nn.Parameter] = nn.Parameter(torch.zeros(dim))
            self.v_bias: Optional[nn.Parameter] = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def logit_scale_value(self) -> Tensor:
        """``(heads, 1, 1)`` multiplier of the cosine similarities: ``exp(min(logit_scale, log 100))``."""
        return torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()

    def relative_position_bias(self) -> Tensor:
        """``(heads, N, N)`` bias ``16 * sigmoid(CPB(log-spaced Δ))``."""
        n = self.window_size[0] * self.window_size[1]
        table = self.cpb_mlp(self.relative_coords_table.to(self.cpb_mlp[0].weight.dtype)).view(-1, self.num_heads)
        bias = table[self.relative_position_index.reshape(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        return 16.0 * torch.sigmoid(bias)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        bw, n, c = x.shape
        qkv_bias = None
        if self.q_bias is not None:
            qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))  # type: ignore[arg-type]
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        qkv = qkv.reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B*nW, heads, N, head_dim)
        # Cosine attention: unit-norm q and k, the per-head temperature folded into q so SDPA runs with scale 1.
        q = F.normalize(q, dim=-1) * self.logit_scale_value().to(x.dtype)
        k = F.normalize(k, dim=-1)
        bias = self.relative_position_bias().to(x.dtype)
        if mask is not None:
            nw = mask.shape[0]
            q, k, v = (t.reshape(bw // nw, nw, self.num_heads, n, -1) for t in (q, k, v))
            bias = bias.unsqueeze(0) + mask.to(x.dtype).unsqueeze(1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0, scale=1.0
        )
        out = out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


def padded_windowed_attention(attn, x: Tensor, h: int, w: int, window: int, shift: int) -> Tensor:
    """(S)W-MSA of ``(B, h·w, C)`` tokens whose map is padded at the bottom and right to whole windows (the padding
    is attended to and cropped, as SwinV2/Swin2SR do); ``attn`` as :func:`windowed_attention` calls it."""
    b, length, c = x.shape
    y = x.view(b, h, w, c)
    pad_b, pad_r = (-h) % window, (-w) % window
    if pad_b or pad_r:
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
    y = windowed_attention(attn, y, window, shift)
    if pad_b or pad_r:
        y = y[:, :h, :w, :]
    return y.reshape(b, length, c)


class SwinV2Block(nn.Module):
    """Res-post-norm Swin V2 block on ``(B, L, C)`` tokens: ``forward(x, h, w) -> (B, L, C)``.

    ``x = x + DropPath(LN(attn(x)))``, ``x = x + DropPath(LN(MLP(x)))``; ``shift_size > 0`` gives SW-MSA.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 8,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Type[nn.Module] = nn.GELU,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        pretrained_window_size: int = 0,
        cpb_hidden: int = 512,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, {window_size}), got {shift_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.attn = WindowAttentionV2(
            dim,
            window_size,
            num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            pretrained_window_size=pretrained_window_size,
            cpb_hidden=cpb_hidden,
        )
        self.norm1 = norm_layer(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.norm2 = norm_layer(dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, length, c = x.shape
        if length != h * w:
            raise ValueError(f"{length} tokens do not form a {h}x{w} map")
        y = padded_windowed_attention(self.attn, x, h, w, self.window_size, self.shift_size)
        x = x + self.drop_path(self.norm1(y))
        return x + self.drop_path(self.norm2(self.mlp(x)))

    def zero_init_post_norms(self) -> None:
        """SwinV2's ``_init_respostnorm``: both post-norms start at weight 0, bias 0 (the block starts as identity)."""
        for norm in (self.norm1, self.norm2):
            nn.init.zeros_(norm.weight)
            nn.init.zeros_(norm.bias)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
            f"shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}"
        )


class ResidualSwinV2Group(nn.Module):
    """Residual SwinV2 group on a ``(B, C, H, W)`` map: ``x + conv3x3(SwinV2Block^depth(x))`` (Swin2SR's RSTB).

    Shifts alternate ``0, ws//2, 0, ...``; ``drop_path`` is one rate or one per block. ``zero_init_post_norm``
    applies SwinV2's ``_init_respostnorm`` (each block starts as the identity, as in the reference).
    ``cpb_hidden`` is the width of the position-bias MLP (512 in the reference).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        pretrained_window_size: int = 0,
        zero_init_post_norm: bool = True,
        cpb_hidden: int = 512,
    ):
        super().__init__()
        rates = drop_path_rates(drop_path, depth)
        self.dim = dim
        self.depth = depth
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinV2Block(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=rates[i],
                norm_layer=norm_layer,
                pretrained_window_size=pretrained_window_size,
                cpb_hidden=cpb_hidden,
            )
            for i in range(depth)
        )
        if zero_init_post_norm:
            for block in self.blocks:
                block.zero_init_post_norms()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        tokens, h, w = map_to_tokens(x)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        return x + self.conv(tokens_to_map(tokens, h, w))


class DenseBlock(nn.Module):
    """Five 3x3 convolutions with dense connections (ESRGAN's RDB body, InvCompress's ``DenseBlock``).

    Layer i sees the input and all previous outputs; the first ``layers - 1`` produce ``growth`` channels each and
    end in LeakyReLU(0.2), the last maps everything to ``out_ch`` (linear). Initialisation as the reference:
    Xavier-normal x 0.1 for the inner layers, zeros for the last (``zero_init_last``), so the block starts as the
    zero map.
    """

    def __init__(self, in_ch: int, out_ch: int, growth: int = 32, layers: int = 5, zero_init_last: bool = True):
        super().__init__()
        if layers < 2:
            raise ValueError(f"a dense block needs at least 2 layers, got {layers}")
        self.inner = nn.ModuleList(
            nn.Conv2d(in_ch + i * growth, growth, kernel_size=3, padding=1) for i in range(layers - 1)
        )
        self.last = nn.Conv2d(in_ch + (layers - 1) * growth, out_ch, kernel_size=3, padding=1)
        self.act = nn.LeakyReLU(negative_slope=0.2)
        for conv in self.inner:
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)
        if zero_init_last:
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in self.inner:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return self.last(torch.cat(features, dim=1))


class FeatureEnhancement(nn.Module):
    """ERSTC's feature enhancement module: ``x + 0.2 * F(x)`` with the dense 1x1-3x3-1x1 body::

        x ─┬─ Dense(in->nf) ─ conv1x1 ─ conv3x3 ─ conv1x1 ─ Dense(nf->in) ─ x0.2 ─(+)─▶
           └───────────────────────────────────────────────────────────────────────┘

    (InvCompress's ``EnhBlock``; the three middle convolutions are linear, as in the reference.) ERSTC uses one
    instance on the image in front of g_a and a second, separately learned one behind g_s. With the reference
    initialisation (``zero_init=True``) the module starts as the identity.
    """

    def __init__(
        self,
        in_ch: int = 3,
        nf: int = 64,
        growth: int = 32,
        dense_layers: int = 5,
        res_scale: float = 0.2,
        zero_init: bool = True,
    ):
        super().__init__()
        self.res_scale = res_scale
        self.body = nn.Sequential(
            DenseBlock(in_ch, nf, growth, dense_layers, zero_init_last=zero_init),
            nn.Conv2d(nf, nf, kernel_size=1),
            nn.Conv2d(nf, nf, kernel_size=3, padding=1),
            nn.Conv2d(nf, nf, kernel_size=1),
            DenseBlock(nf, in_ch, growth, dense_layers, zero_init_last=zero_init),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale
