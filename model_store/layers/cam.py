"""Causal attention module (CAM): TIC's autoregressive context model, and the wavefront that decodes it in parallel.

Lu, Guo, Shi, Cao and Ma, "Transformer-based Image Compression", DCC 2022 (arXiv:2111.06707): the causal
attention module. Reference code github.com/lumingzzz/TIC, ``compressai/layers/layers.py: CausalAttentionModule``.

The mask
--------
Every latent position ``(i, j)`` looks at the 5x5 block centred on it. Of its 25 positions (numbered in raster
order inside the block, the centre is 12) only the first 12 are *causal*: the two rows above, columns ``j-2 .. j+2``,
and the two positions to the left in the current row::

        j-2 j-1  j  j+1 j+2
    i-2  1   1   1   1   1
    i-1  1   1   1   1   1        mask = [1]*12 + [0]*13   (the reference's literal mask tensor)
    i    1   1   0   0   0        (centre and everything after it in raster order are masked)
    i+1  0   0   0   0   0
    i+2  0   0   0   0   0

:data:`CAUSAL_OFFSETS` lists the 12 ``(di, dj)``. Positions outside the latent count as zero vectors (the
reference's ``F.unfold(padding=2)``), exactly like masked positions.

What the module computes for one position (reference semantics, masking the *input*)::

    tokens t_0..t_24 = y_hat over the 5x5 block, t_k := 0 for the 13 masked k and outside the image
    a_k  = MHSA(LN1(t))_k       (16 heads, all 25 tokens attend to all 25, relative position bias 9x9 table)
    s    = sum_k (a_k + t_k)    (sum over the 25 tokens of the attention output plus its residual)
    s    = s + MLP(LN2(s))      (ratio 4, GELU)
    ctx  = Linear(s)            (M -> 2M, fused with the hyperprior by the entropy-parameter 1x1 convs)

A masked token's input is the zero vector, so ``LN1`` maps it to the LayerNorm bias and its query/key/value are
constants of the weights. The output at ``(i, j)`` therefore depends on the 12 causal neighbours only, and on
nothing else: :func:`tests.test_arch_tic.test_cam_mask_is_causal` checks this. We exploit the same fact for speed:
LayerNorm and the qkv projection act token by token, so we compute ``[x, q, k, v]`` once per latent position
(:meth:`CausalAttentionModule.token_features`), and a context evaluation only *gathers* the 12 causal feature rows
and appends the 13 constant masked rows (:meth:`CausalAttentionModule.padding_features`). That is the reference's
computation reordered (same parameters, same function up to float rounding), at 1/25th of its qkv cost.

The wavefront
-------------
Every causal neighbour ``(i + di, j + dj)`` of ``(i, j)`` has a smaller ``t = 3 i + j`` (``(i-1, j+2)`` is the
tightest: ``t - 1``). So all positions with equal ``t`` can be coded in one batched step once every smaller ``t`` is
done: ``3 H + W - 3`` sequential steps instead of ``H * W`` (141 instead of 1536 for a 32x48 latent, i.e. a 512x768
image). :func:`wavefront_schedule` gives the steps; :class:`CausalContext` holds one image's decoded features and
evaluates the CAM on one front, touching only that front's ``P`` positions (gather ``P x 12`` rows, attention on
``P`` blocks), so a step costs ``O(P)``, not ``O(H W)``.

Batch invariance
----------------
Encoder and decoder run the same schedule, so their per-step batches are identical and bit-exactness needs no more.
The slow raster-serial reference decoder (one position per step) is bit-identical to the wavefront too, because the
coding path uses only per-row operations whose result does not depend on how many rows share the call: GEMMs with
``M`` rows give row results that depend on ``M`` in MKL (remainder kernels), so the coding path computes linear
layers as batched 1-row products (:func:`batch_invariant_linear`, ``bmm`` over rows), sums tokens with batched
products too, and applies GELU row by row (:func:`batch_invariant_rowwise`: element-wise kernels finish the
flattened tensor's tail with a differently-rounding scalar path). LayerNorm and softmax are row-wise kernels
already. The training forward uses ordinary (fast) GEMMs and GELU; it matches to float tolerance.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from model_store.layers.swin import Mlp

__all__ = [
    "CAUSAL_OFFSETS",
    "CausalAttentionModule",
    "CausalContext",
    "batch_invariant_linear",
    "batch_invariant_rowwise",
    "causal_offsets",
    "live_rows",
    "raster_schedule",
    "wavefront_schedule",
    "wavefront_slope",
    "wavefront_step_count",
]


def causal_offsets(block_len: int = 5) -> Tuple[Tuple[int, int], ...]:
    """``(di, dj)`` of the causal part of a ``block_len x block_len`` block, in raster order (TIC: 12 of 25).

    The first ``block_len**2 // 2`` positions of the block in raster order: ``p = block_len // 2`` full rows above
    (columns ``-p .. p``) and the ``p`` positions to the left in the current row.
    """
    if block_len % 2 != 1 or block_len < 3:
        raise ValueError(f"the CAM block must be odd and >= 3, got {block_len}")
    p = block_len // 2
    return tuple((di, dj) for di in range(-p, 1) for dj in range(-p, p + 1))[: block_len * block_len // 2]


#: The 12 causal neighbours of TIC's 5x5 CAM, ``(di, dj)`` in raster order (block positions 0..11).
CAUSAL_OFFSETS: Tuple[Tuple[int, int], ...] = causal_offsets(5)


def wavefront_slope(block_len: int = 5) -> int:
    """``a`` such that every causal neighbour of ``(i, j)`` has a smaller ``a i + j`` (3 for a 5x5 block)."""
    return block_len // 2 + 1


def wavefront_schedule(h: int, w: int, block_len: int = 5) -> List[Tensor]:
    """Flat indices (``i * w + j``) of each wavefront step, in coding order; within a step, rows ascending.

    Step ``t`` holds the positions with ``slope * i + j == t``; empty steps (only possible when ``w < slope``)
    are skipped, so for ``w >= slope`` there are exactly ``slope * (h - 1) + w`` steps (``3H + W - 3``).
    """
    a = wavefront_slope(block_len)
    i = torch.arange(h).repeat_interleave(w)
    j = torch.arange(w).repeat(h)
    t = a * i + j
    order = torch.argsort(t * (h * w) + i * w + j)  # by t, then raster order (= rows ascending)
    counts = torch.bincount(t, minlength=int(t.max()) + 1 if t.numel() else 0)
    return [s for s in torch.split(order, counts.tolist()) if s.numel()]


def wavefront_step_count(h: int, w: int, block_len: int = 5) -> int:
    """Number of sequential steps of :func:`wavefront_schedule` (``3H + W - 3`` for a 5x5 block and ``W >= 3``)."""
    return len(wavefront_schedule(h, w, block_len))


def raster_schedule(h: int, w: int) -> List[Tensor]:
    """One position per step in raster order: the classic serial decoder (for tests and benchmarks only)."""
    return list(torch.arange(h * w).split(1))


#: Positions per piece of the full-map forward. Its intermediates (the ``P x 25`` token blocks and ``P x heads x 25
#: x 25`` attention maps) are memory-bound: a 768x512 photo's 1536 positions in one piece made ~60 MB tensors, in
#: pieces of 256 they stay in cache and the pass took 0.12 s instead of 0.21 s (median of 15, erstc-small, one
#: thread, a busy 2-core CPU). Training keeps one piece: its backward needs every intermediate anyway, and 8 crops of
#: 128² (512 positions) ran forward + backward in 0.097 s whole vs 0.115 s in pieces.
FORWARD_CHUNK = 256


def batch_invariant_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``x @ weight.T + bias`` whose every row is bitwise independent of the other rows in the call.

    ``torch.nn.functional.linear`` runs one GEMM whose per-row rounding depends on the number of rows (MKL uses
    different kernels for row remainders). Here each row is its own 1-row product inside one ``bmm``.
    ``weight`` is ``(out, in)`` (a 1x1 conv weight is reshaped by the caller).
    """
    lead = x.shape[:-1]
    rows = x.reshape(-1, 1, x.shape[-1])
    n = rows.shape[0]
    w = weight.t().unsqueeze(0).expand(n, -1, -1)
    if bias is None:
        out = torch.bmm(rows, w)
    else:
        out = torch.baddbmm(bias.view(1, 1, -1).expand(n, 1, -1), rows, w)
    return out.reshape(*lead, weight.shape[0])


def batch_invariant_rowwise(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn`` (element-wise, e.g. GELU) applied to each row of ``x`` ``(P, L)`` in its own call.

    Element-wise kernels vectorise over the flattened tensor and finish its tail with a scalar path whose
    transcendental functions round differently; where a row's elements fall relative to that tail (and to the
    thread split) depends on ``P``. One call per row makes every row's treatment identical.
    """
    return torch.stack([fn(row) for row in x.unbind(0)]) if x.shape[0] else fn(x)


def _linear(layer: nn.Linear, x: Tensor, batch_invariant: bool) -> Tensor:
    return batch_invariant_linear(x, layer.weight, layer.bias) if batch_invariant else layer(x)


def _relative_position_index(block_len: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(block_len), torch.arange(block_len), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + block_len - 1) * (2 * block_len - 1) + (rel[..., 1] + block_len - 1)


class CausalAttentionModule(nn.Module):
    """TIC's causal attention context model: ``(B, dim, H, W)`` decoded latent -> ``(B, out_dim, H, W)``.

    See the module docstring for the mask and the computation. Parameters (names as in the reference):
    ``norm1``, ``qkv``, ``relative_position_bias_table`` ((2b-1)^2 x heads), ``norm2``, ``mlp`` (``fc1``, ``fc2``),
    ``proj``. Attention dropout and MLP dropout (``attn_drop``) default to 0 as in the reference TIC.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        block_len: int = 5,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CAM dim {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.out_dim = out_dim
        self.block_len = block_len
        self.num_heads = num_heads
        self.block_size = block_len * block_len
        self.offsets = causal_offsets(block_len)
        self.num_causal = len(self.offsets)
        self.scale = qk_scale or (dim // num_heads) ** -0.5

        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * block_len - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(block_len), persistent=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=attn_drop)
        self.proj = nn.Linear(dim, out_dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    # -- the per-token part (LayerNorm + qkv) ----------------------------------------------------------------------
    def token_features(self, x: Tensor, batch_invariant: bool = False) -> Tensor:
        """``(..., dim)`` latent vectors -> ``(..., 4 dim)`` = ``[x, q, k, v]`` (q not yet scaled)."""
        return torch.cat([x, _linear(self.qkv, self.norm1(x), batch_invariant)], dim=-1)

    def padding_features(self, batch_invariant: bool = False) -> Tensor:
        """``(4 dim,)`` features of a zero token: every masked or out-of-image block position."""
        zero = self.relative_position_bias_table.new_zeros(1, self.dim)
        return self.token_features(zero, batch_invariant)[0]

    # -- the per-block part ----------------------------------------------------------------------------------------
    def attend(
        self, causal: Tensor, batch_invariant: bool = False, padding: Optional[Tensor] = None, project: bool = True
    ) -> Tensor:
        """Context parameters ``(P, out_dim)`` from the features ``(P, 12, 4 dim)`` of each block's causal tokens.

        ``padding`` is :meth:`padding_features` (recomputed when not given). With ``project=False`` the result is
        the ``(P, dim)`` summary before the final ``proj`` Linear (a caller may fold ``proj`` into its next layer).
        """
        p, n_causal, _ = causal.shape
        c, heads = self.dim, self.num_heads
        if padding is None:
            padding = self.padding_features(batch_invariant)
        masked = padding.expand(p, self.block_size - n_causal, 4 * c)
        tokens = torch.cat([causal, masked], dim=1)  # (P, 25, 4C), block raster order
        q, k, v = (
            tokens[..., (1 + i) * c : (2 + i) * c].reshape(p, self.block_size, heads, c // heads).transpose(1, 2)
            for i in range(3)
        )
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)  # (P, heads, 25, 25)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.view(self.block_size, self.block_size, heads).permute(2, 0, 1)
        attn = self.attn_drop((attn + bias.unsqueeze(0)).softmax(dim=-1))
        # The reference sums (attn @ v + x) over the 25 query tokens. We compute the same sum as (1ᵀ attn) @ v plus
        # 1ᵀ x over the 12 causal tokens (masked inputs are exactly 0), as batched matrix products: bmm works item
        # by item, so a block's result cannot depend on how many blocks share the call (see the module docstring).
        ones = attn.new_ones(p, heads, 1, self.block_size)
        mixed = ((ones @ attn) @ v).reshape(p, c)  # (P, heads, 1, head_dim) -> channels head-major
        summed = mixed + (ones[:, 0, :, :n_causal] @ causal[..., :c]).reshape(p, c)
        hidden = _linear(self.mlp.fc1, self.norm2(summed), batch_invariant)
        hidden = batch_invariant_rowwise(self.mlp.act, hidden) if batch_invariant else self.mlp.act(hidden)
        summed = summed + self.mlp.drop(_linear(self.mlp.fc2, self.mlp.drop(hidden), batch_invariant))
        return _linear(self.proj, summed, batch_invariant) if project else summed

    def neighbour_index(self, h: int, w: int) -> Tensor:
        """``(h*w, 12)`` flat indices of each position's causal neighbours in a feature map padded by
        :meth:`pad_features` (2 rows on top, 2 columns left and right; nothing below, nothing is ever read there)."""
        p = self.block_len // 2
        wp = w + 2 * p
        i = torch.arange(h).repeat_interleave(w)
        j = torch.arange(w).repeat(h)
        cols = [(i + p + di) * wp + (j + p + dj) for di, dj in self.offsets]
        return torch.stack(cols, dim=1)

    def pad_features(self, feats: Tensor, padding: Tensor) -> Tensor:
        """``(B, H, W, F)`` -> ``(B, (H + p) * (W + 2p), F)`` flat map, border rows/columns set to ``padding``."""
        b, h, w, f = feats.shape
        p = self.block_len // 2
        top = padding.expand(b, p, w, f)
        feats = torch.cat([top, feats], dim=1)
        side = padding.expand(b, h + p, p, f)
        return torch.cat([side, feats, side], dim=2).reshape(b, -1, f)

    def forward(self, y_hat: Tensor) -> Tensor:
        """Training / full-map evaluation: every position's context at once (masked, so fully parallel); without
        autograd in pieces of :data:`FORWARD_CHUNK` positions (each block's result is its own: no value changes)."""
        b, c, h, w = y_hat.shape
        feats = self.token_features(y_hat.permute(0, 2, 3, 1))
        padding = self.padding_features()
        flat = self.pad_features(feats, padding)
        idx = self.neighbour_index(h, w).to(y_hat.device)
        # with autograd every piece's intermediates stay alive for the backward pass: one piece (measured faster)
        chunk = h * w if torch.is_grad_enabled() else max(1, FORWARD_CHUNK // b)
        outs = []
        for start in range(0, h * w, chunk):
            part = idx[start : start + chunk]
            causal = flat[:, part.reshape(-1)].reshape(b * part.shape[0], self.num_causal, 4 * c)
            outs.append(self.attend(causal, padding=padding).reshape(b, part.shape[0], self.out_dim))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return out.reshape(b, h, w, self.out_dim).permute(0, 3, 1, 2)


class CausalContext:
    """One image's decoding state for the CAM: the padded ``[x, q, k, v]`` rows of what has been decoded so far.

    ``context(positions)`` evaluates the CAM at a set of positions whose causal neighbours are all decoded (one
    wavefront); ``write(positions, y_hat)`` stores the just-decoded values. Everything here is batch-invariant,
    so the result at a position does not depend on which other positions share the step.

    Memory: ``[x, q, k, v]`` is 4·M float64 per position (3 KB for erstc-small, 600 MB for a 50 MP photo), but a
    wavefront only ever reads the two rows above the rows it is decoding. So latent rows live in a ring of
    ``live_rows`` rows (:func:`live_rows` of the schedule; all ``h`` rows when not given) under ``p`` rows of
    padding: latent row ``r`` sits in ring row ``r mod live_rows``, written when it is decoded, overwritten only
    once no later step can read it. Same values read, same results: only where they are stored changes.

    ``images``: several same-sized images decoded in lockstep (the integer path's batches) share one state of
    shape ``(images, slots, 4·M)``: a step's neighbour slots are the same for every image, so they are computed
    once and one ``index_select`` / ``index_copy_`` serves the whole batch (one image at a time, that was two
    small ops and a slot computation per image per step: ~1000 kernel launches a step at batch 64 on a GPU).
    Rows come out and go in image-major, ``(images·P, ...)``, which is how the batched CAM call lays them out.
    """

    def __init__(
        self,
        cam: CausalAttentionModule,
        h: int,
        w: int,
        dtype: torch.dtype,
        live_rows: Optional[int] = None,
        images: int = 1,
    ):
        self.cam = cam
        self.h, self.w = h, w
        self.images = images
        self.ring = h if live_rows is None else max(1, min(h, live_rows))
        p = cam.block_len // 2
        self.padding = cam.padding_features(batch_invariant=True).to(dtype)
        self.features = self.padding.expand(images, (self.ring + p) * (w + 2 * p), -1).clone()
        offsets = torch.tensor(cam.offsets, device=self.padding.device)  # the state lives where its features do
        self.d_row, self.d_col = offsets[:, 0], offsets[:, 1]

    def _slots(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Flat index into ``features`` of latent ``(rows, cols)``; rows above the image and columns beside it
        are padding (never written), rows ``>= 0`` live in the ring."""
        p = self.cam.block_len // 2
        ring_rows = torch.where(rows < 0, rows + p, p + torch.remainder(rows, self.ring))
        return ring_rows * (self.w + 2 * p) + cols + p

    def context(self, positions: Tensor, project: bool = True) -> Tensor:
        """``(P, out_dim)`` context parameters at flat positions ``positions`` (only their 12·P rows are read);
        ``project=False``: the ``(P, dim)`` summary before ``proj`` (see :meth:`CausalAttentionModule.attend`)."""
        return self.cam.attend(self.gather(positions), batch_invariant=True, padding=self.padding, project=project)

    def gather(self, positions: Tensor) -> Tensor:
        """``(images·P, 12, 4 dim)``: the stored features of each position's causal neighbours, image by image
        (what one ``attend`` call over the whole batch reads)."""
        i, j = (positions // self.w).unsqueeze(1), (positions % self.w).unsqueeze(1)
        neighbours = self._slots(i + self.d_row, j + self.d_col)
        rows = self.features.index_select(1, neighbours.reshape(-1))
        return rows.reshape(self.images * positions.numel(), self.cam.num_causal, -1)

    def write(self, positions: Tensor, y_hat: Tensor) -> None:
        """Store decoded latent vectors ``(P, dim)`` at flat ``positions``."""
        self.write_features(positions, self.cam.token_features(y_hat, True))

    def write_features(self, positions: Tensor, features: Tensor) -> None:
        """Store the ``[x, q, k, v]`` features ``(images·P, 4 dim)`` of decoded latents at flat ``positions``."""
        slots = self._slots(positions // self.w, positions % self.w)
        self.features.index_copy_(1, slots, features.reshape(self.images, positions.numel(), -1))


def live_rows(schedule: Sequence[Tensor], w: int, block_len: int = 5) -> int:
    """Ring size :class:`CausalContext` needs for ``schedule``: a row written at step ``t`` may only replace one
    that no step from ``t`` on still reads (reads reach ``block_len // 2`` rows above a step's lowest row)."""
    if not schedule:
        return 1
    lows = torch.stack([s.min() for s in schedule]) // w
    highs = torch.stack([s.max() for s in schedule]) // w
    written_so_far = torch.cummax(highs, 0).values
    read_from_now = torch.flip(torch.cummin(torch.flip(lows, [0]), 0).values, [0])
    return int((written_so_far - read_from_now).max()) + block_len // 2 + 1
