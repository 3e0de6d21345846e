"""Swin-Transformer building blocks (v1: window attention with a relative position bias table), without timm.

Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021, in the form
the learned-image-compression papers use them (STF, Zou et al. CVPR 2022; TIC, Lu et al. 2021/2022; WACNN's
window-attention module). Shared by every family that needs windowed attention: import from here, never copy.

Token layout conventions
------------------------
* ``(B, L, C)`` *tokens* with an explicit spatial size ``(H, W)``, ``L == H * W``, row-major
  (``x.view(B, H, W, C)``). Used by :class:`SwinTransformerBlock`, :class:`BasicLayer`, :class:`PatchMerging`,
  :class:`PatchSplit`. Convert with :func:`map_to_tokens` / :func:`tokens_to_map`.
* ``(B, C, H, W)`` *feature maps*: :class:`PatchEmbed` (output), :class:`WindowSelfAttention2d` and
  :class:`WindowAttentionModule` (the CNN-side window attention of WACNN).

One Swin block (pre-norm; W-MSA when ``shift_size == 0``, SW-MSA otherwise)::

    x ─┬─ LN ─ pad ─ roll(-s) ─ windows ─ MHSA(+bias, +mask) ─ merge ─ roll(+s) ─ crop ─(+)─┬─ LN ─ MLP ─(+)─▶
       └─────────────────────────────────── DropPath ────────────────────────────────────┘  └─ DropPath ──┘

A :class:`BasicLayer` stacks ``depth`` blocks with shifts alternating ``0, window // 2, 0, ...`` and then an optional
resampling module (:class:`PatchMerging` halves H and W and doubles C; :class:`PatchSplit`, STF's decoder inverse,
doubles H and W and halves C).

Details (as in the Swin / STF reference code):

* The shifted-window mask labels the 3 x 3 regions that a cyclic roll by ``-shift`` glues together and forbids
  attention across labels by adding ``-100`` (not ``-inf``, so fully-masked rows cannot produce NaN) to the logits.
  Masks are computed for any padded size and cached by ``(Hp, Wp, window, shift, device, dtype)``.
* Inputs whose H or W is not a multiple of the window are zero-padded *after* the first LayerNorm and cropped
  back after attention; padded tokens are not masked (same as the reference). Codecs here pad images so that this
  never happens, but the blocks stay correct for any size.
* ``qk_scale`` defaults to ``head_dim ** -0.5``; the relative position bias table is initialised with a
  truncated normal (std 0.02).
* Attention is computed explicitly, ``softmax(q k^T * scale + bias + mask) v``: with 16-64 tokens per window,
  :func:`~torch.nn.functional.scaled_dot_product_attention` with an additive mask was no faster on CPU (its math
  path adds -inf checks), and the explicit form matches the reference's rounding behaviour.
"""

from __future__ import annotations

import functools
from typing import Callable, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from compressai.layers import conv1x1, conv3x3
from torch import Tensor, nn

__all__ = [
    "BasicLayer",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "PatchSplit",
    "SwinTransformerBlock",
    "WindowAttention",
    "WindowAttentionModule",
    "WindowSelfAttention2d",
    "map_to_tokens",
    "shifted_window_mask",
    "tokens_to_map",
    "window_partition",
    "windowed_attention",
    "window_reverse",
]

#: Logit added between tokens of different shift regions (the Swin reference value).
MASK_VALUE = -100.0


# -- layout helpers -------------------------------------------------------------------------------------------------
def map_to_tokens(x: Tensor) -> Tuple[Tensor, int, int]:
    """``(B, C, H, W)`` -> ``((B, H*W, C), H, W)``."""
    _, _, h, w = x.shape
    return x.flatten(2).transpose(1, 2), h, w


def tokens_to_map(x: Tensor, h: int, w: int) -> Tensor:
    """``(B, H*W, C)`` -> ``(B, C, H, W)`` (contiguous)."""
    b, n, c = x.shape
    if n != h * w:
        raise ValueError(f"{n} tokens cannot be a {h}x{w} map")
    return x.transpose(1, 2).reshape(b, c, h, w).contiguous()


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, window_size, window_size, C)``; H and W must be multiples of the window.

    Windows are ordered image-major, then row-major over the window grid (``nW = H/ws * W/ws``).
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(windows: Tensor, window_size: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, ws, ws, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.reshape(b, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


@functools.lru_cache(maxsize=64)
def _shifted_window_mask_cached(
    h: int, w: int, window_size: int, shift_size: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    labels = torch.zeros((1, h, w, 1), device=device, dtype=dtype)
    bands = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in bands:
        for ws in bands:
            labels[:, hs, ws, :] = label
            label += 1
    label_windows = window_partition(labels, window_size).reshape(-1, window_size * window_size)
    different = label_windows.unsqueeze(1) != label_windows.unsqueeze(2)
    mask = torch.zeros(different.shape, device=device, dtype=dtype).masked_fill(different, MASK_VALUE)
    mask.requires_grad_(False)
    return mask


def shifted_window_mask(
    h: int,
    w: int,
    window_size: int,
    shift_size: int,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Additive SW-MSA mask of shape ``(nW, ws*ws, ws*ws)`` for an (already padded) ``h x w`` map.

    Entry ``[n, i, j]`` is 0 when tokens i and j of window n came from the same region before the cyclic roll by
    ``-shift_size`` and :data:`MASK_VALUE` otherwise. ``h`` and ``w`` must be multiples of ``window_size`` and
    ``0 < shift_size < window_size``. Cached; the returned tensor is shared, do not modify it in place.
    """
    if h % window_size or w % window_size:
        raise ValueError(f"mask size {h}x{w} is not a multiple of the window {window_size}")
    if not 0 < shift_size < window_size:
        raise ValueError(f"shift_size must be in (0, {window_size}), got {shift_size}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return _shifted_window_mask_cached(h, w, window_size, shift_size, device, dtype)


# -- small modules --------------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout (the transformer feed-forward)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# -- attention --------------------------------------------------------------------------------------------------------
def _relative_position_index(window_size: Tuple[int, int]) -> Tensor:
    """``(Wh*Ww, Wh*Ww)`` index into the ``(2Wh-1)(2Ww-1)`` bias table for every (query, key) pair in a window."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 2
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias (Swin v1, Sec. 3.2).

    ``forward(x, mask)`` takes ``x`` of shape ``(B * nW, N, C)`` with ``N = Wh * Ww`` tokens per window (windows
    ordered as :func:`window_partition` makes them) and an optional additive ``mask`` of shape ``(nW, N, N)``.
    """

    def __init__(
        self,
        dim: int,
        window_size: Union[int, Tuple[int, int]],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size: Tuple[int, int] = (
            (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)  # type: ignore[assignment]
        )
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(self.window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """``(num_heads, N, N)`` bias added to the attention logits."""
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B*nW, heads, N, head_dim)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias().to(x.dtype)
        if mask is None:
            logits = logits + bias
        else:
            nw = mask.shape[0]  # broadcast the (nW, N, N) mask over the images of the batch
            logits = logits.view(bw // nw, nw, self.num_heads, n, n) + (
                bias.unsqueeze(0) + mask.to(x.dtype).unsqueeze(1)
            )
            logits = logits.view(bw, self.num_heads, n, n)
        attn = F.dropout(logits.softmax(dim=-1), p=self.attn_drop, training=self.training)
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


def windowed_attention(attn: nn.Module, x: Tensor, window_size: int, shift_size: int) -> Tensor:
    """(S)W-MSA on a ``(B, H, W, C)`` map whose H and W are multiples of the window; returns the same layout.

    ``attn`` is any module called as ``attn(windows, mask=mask)`` on ``(B * nW, ws * ws, C)`` windows with an
    optional ``(nW, ws * ws, ws * ws)`` additive mask (:class:`WindowAttention`, or a Swin-v2 attention).
    """
    b, h, w, c = x.shape
    if shift_size > 0:
        x = torch.roll(x, shifts=(-shift_size, -shift_size), dims=(1, 2))
        mask = shifted_window_mask(h, w, window_size, shift_size, x.device, x.dtype)
    else:
        mask = None
    windows = window_partition(x, window_size).reshape(-1, window_size * window_size, c)
    windows = attn(windows, mask=mask).reshape(-1, window_size, window_size, c)
    x = window_reverse(windows, window_size, h, w)
    if shift_size > 0:
        x = torch.roll(x, shifts=(shift_size, shift_size), dims=(1, 2))
    return x


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block on ``(B, L, C)`` tokens of an ``H x W`` map: ``forward(x, h, w) -> (B, L, C)``.

    ``shift_size == 0`` gives W-MSA, ``0 < shift_size < window_size`` SW-MSA (see the module docstring).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Type[nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, {window_size}), got {shift_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        if n != h * w:
            raise ValueError(f"{n} tokens do not form a {h}x{w} map")
        ws = self.window_size
        y = self.norm1(x).reshape(b, h, w, c)
        pad_b, pad_r = (-h) % ws, (-w) % ws
        if pad_b or pad_r:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        y = windowed_attention(self.attn, y, ws, self.shift_size)
        if pad_b or pad_r:
            y = y[:, :h, :w, :]
        x = x + self.drop_path(y.reshape(b, n, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    @torch.no_grad()
    def start_as_identity(self) -> None:
        """Zero the output projections of both residual branches, so the block passes its input through unchanged.

        Why: growing a trained model deeper (``tic`` -> ``tic_plus``: more blocks per stage, everything else equal)
        keeps the trained function only if the new blocks start as identity; random ones would wreck it. Pre-norm
        makes this exact: each branch's output is ``proj(...)``/``fc2(...)``, so zero weights and biases give
        ``x + 0 + 0``. Gradients still reach the zeroed layers (their inputs are not zero), so the blocks learn.
        """
        for layer in (self.attn.proj, self.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
            f"shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}"
        )


# -- patch embedding and resampling ---------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Image to patch embedding: ``Conv(k=p, s=p)`` then an optional LayerNorm over channels.

    ``(B, in_chans, H, W)`` -> ``(B, embed_dim, ceil(H/p), ceil(W/p))`` (right/bottom zero padding when H or W is
    not a multiple of ``patch_size``).
    """

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        _, _, h, w = x.shape
        if h % p or w % p:
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        x = self.proj(x)
        if self.norm is not None:
            tokens, hh, ww = map_to_tokens(x)
            x = tokens_to_map(self.norm(tokens), hh, ww)
        return x


class PatchMerging(nn.Module):
    """Swin downsampling: concatenate each 2x2 neighbourhood (order (0,0), (1,0), (0,1), (1,1) as (row, col)),
    LayerNorm over the 4C features, then a bias-free Linear to 2C. ``forward(x, h, w)``: ``(B, h*w, C)`` ->
    ``(B, ceil(h/2)*ceil(w/2), 2C)`` (odd sizes are zero-padded)."""

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    @staticmethod
    def output_size(h: int, w: int) -> Tuple[int, int]:
        return (h + 1) // 2, (w + 1) // 2

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        if n != h * w:
            raise ValueError(f"{n} tokens do not form a {h}x{w} map")
        x = x.reshape(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class PatchSplit(nn.Module):
    """STF's inverse of :class:`PatchMerging` (Zou et al. 2022): LayerNorm, bias-free Linear C -> 2C, then
    PixelShuffle(2). ``forward(x, h, w)``: ``(B, h*w, C)`` -> ``(B, 4*h*w, C/2)`` on a ``2h x 2w`` map."""

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        if dim % 2:
            raise ValueError(f"PatchSplit needs an even dim, got {dim}")
        self.dim = dim
        self.norm = norm_layer(dim)
        self.reduction = nn.Linear(dim, 2 * dim, bias=False)
        self.shuffle = nn.PixelShuffle(2)

    @staticmethod
    def output_size(h: int, w: int) -> Tuple[int, int]:
        return 2 * h, 2 * w

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = self.reduction(self.norm(x))
        x = self.shuffle(tokens_to_map(x, h, w))  # (B, C/2, 2h, 2w)
        return map_to_tokens(x)[0]


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks with shifts ``0, ws//2, 0, ...`` then an optional resampling module.

    ``resample`` is a class such as :class:`PatchMerging` (encoder) or :class:`PatchSplit` (STF decoder), built as
    ``resample(dim=dim, norm_layer=norm_layer)`` and exposing ``output_size(h, w)``.
    ``forward(x, h, w) -> (x, h', w')`` on ``(B, h*w, C)`` tokens. ``drop_path`` is one rate or one per block.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        resample: Optional[Callable[..., nn.Module]] = None,
    ):
        super().__init__()
        self.dim = dim
        self.depth = depth
        self.window_size = window_size
        rates = drop_path_rates(drop_path, depth)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=rates[i],
                norm_layer=norm_layer,
            )
            for i in range(depth)
        )
        self.resample = resample(dim=dim, norm_layer=norm_layer) if resample is not None else None

    def forward(self, x: Tensor, h: int, w: int) -> Tuple[Tensor, int, int]:
        for block in self.blocks:
            x = block(x, h, w)
        if self.resample is None:
            return x, h, w
        h2, w2 = self.resample.output_size(h, w)  # type: ignore[operator]
        return self.resample(x, h, w), h2, w2


# -- window attention on feature maps (WACNN) -----------------------------------------------------------------------
class WindowSelfAttention2d(nn.Module):
    """Residual (shifted-)window self-attention on a ``(B, C, H, W)`` map, with no norm and no MLP.

    ``x + DropPath(SW-MSA(x))``: the reference's ``WinBasedAttention`` (STF repo, ``layers/win_attention.py``).
    H and W must be multiples of ``window_size`` (the codec's padding guarantees it).
    """

    def __init__(
        self,
        dim: int = 192,
        num_heads: int = 8,
        window_size: int = 8,
        shift_size: int = 0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, {window_size}), got {shift_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        if h % self.window_size or w % self.window_size:
            raise ValueError(f"a {h}x{w} map is not a multiple of the window {self.window_size}; pad the input")
        y = windowed_attention(self.attn, x.permute(0, 2, 3, 1), self.window_size, self.shift_size)
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class _ResidualUnit(nn.Module):
    """1x1 (C -> C/2), GELU, 3x3, GELU, 1x1 (C/2 -> C), plus identity, then GELU (Cheng et al. 2020 style)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.conv = nn.Sequential(conv1x1(dim, half), nn.GELU(), conv3x3(half, half), nn.GELU(), conv1x1(half, dim))
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.conv(x))


class WindowAttentionModule(nn.Module):
    """WACNN's window-based attention module (Zou et al., CVPR 2022, Fig. 3; reference ``Win_noShift_Attention``).

    Cheng et al.'s (2020) simplified attention module with window self-attention at the head of the mask branch::

        x ─┬─ RU ─ RU ─ RU ─────────────────────────────────────── a ─┐
           ├─ WSA(window, shift) ─ RU ─ RU ─ RU ─ conv1x1 ─ sigmoid ─ (*) ─(+)─▶
           └──────────────────────────────────────────────────────────────┘

    Despite the reference class name, the reference passes ``shift_size`` through (g_a/g_s use window 8 shift 4
    at N channels and window 4 shift 2 at M channels), so the attention *is* shifted; we do the same.
    """

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 8, shift_size: int = 0):
        super().__init__()
        self.conv_a = nn.Sequential(_ResidualUnit(dim), _ResidualUnit(dim), _ResidualUnit(dim))
        self.conv_b = nn.Sequential(
            WindowSelfAttention2d(dim=dim, num_heads=num_heads, window_size=window_size, shift_size=shift_size),
            _ResidualUnit(dim),
            _ResidualUnit(dim),
            _ResidualUnit(dim),
            conv1x1(dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_a(x) * torch.sigmoid(self.conv_b(x))


def init_transformer_weights(module: nn.Module) -> None:
    """The Swin/TIC ``_init_weights`` (apply with ``model.apply``): Linear ~ trunc-normal(0.02) with zero bias,
    LayerNorm (1, 0). Shared by every family whose reference initialises its transformer layers this way."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def drop_path_rates(drop_path, depth: int) -> List[float]:
    """One stochastic-depth rate per block: a list is taken as is (checked), a number is repeated."""
    rates: List[float] = list(drop_path) if isinstance(drop_path, Sequence) else [float(drop_path)] * depth
    if len(rates) != depth:
        raise ValueError(f"{len(rates)} drop-path rates for {depth} blocks")
    return rates
