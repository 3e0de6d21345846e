"""Zigzag spatial-channel context model on STF's Swin transforms.

Tianma Shen and Ying Liu, "Learned image compression with transformers", Proc. SPIE, 2023.
Reference code: github.com/stm233/image-compression-with-swin-transformer (``compressai/models/stf8.py``, class
``SymmetricalTransFormer5``: 417,843,543 parameters, a training ``forward`` only, no compress/decompress).

Data flow (paper preset: C = 384 latent channels at H/16; n x n = 2 x 2 quadrants x G = 6 channel groups of 64
= 24 chunks of 64 x H/32 x W/32)::

    x ──g_a (STF Swin)──▶ y ──h_a──▶ z ──[EntropyBottleneck]──▶ z_hat ──┬─h_mean_s──▶ μ_hyper ──cut into the 24 chunks,
                          │                                              └─h_scale_s─▶ σ_hyper   stack along channels:
                          │                                                                      (n²·C, H/32, W/32) each
                          ▼ chunk y_k = channel group g_k of quadrant q_k, k in zigzag order
    for k = 0 .. 23:
        ctx_k = ŷ_{k-12} .. ŷ_{k-1}     (at most 12 decoded chunks, quadrant-size, stacked along channels, oldest first)
        μ_k   = MeanNet_k ([μ_hyper stack, ctx_k])          each net:  x ──conv stack──▶ c ──┬────────────(+)──▶
        σ_k   = ScaleNet_k([σ_hyper stack, ctx_k])                                           └─Swin layers─┘
        ŷ_k   = coder.code(σ_k, μ_k, y_k)                   (= round(y_k − μ_k) + μ_k)
        ŷ_k  += 0.5·tanh(LRPNet_k([μ_hyper stack, ctx_k, ŷ_k]))     latent residual prediction
    ŷ = the chunks put back in place ──g_s (STF Swin)──▶ x̂

Chunks and the zigzag order
---------------------------
The latent ``(C, H, W)`` is cut into an ``n x n`` grid of quadrants (``n = 2`` in the paper) and ``G`` channel
groups (``G = 6``); a chunk is one group of one quadrant, ``(C/G, H/n, W/n)``. Chunks are coded channel-first within
a quadrant and the quadrants in the reference's 2-D zigzag order (:func:`zigzag_order`): square shells growing from
the top-left corner, each shell column by column, top to bottom. For ``n = 2`` that is top-left, bottom-left,
top-right, bottom-right (the reference's ``ZigzagSplits``: ``H_index`` is the row and moves first). The reference
loop is written for any ``number`` of quadrants per side and produces exactly these shells; ``order="diagonals"``
offers the JPEG-style anti-diagonal zigzag instead (it agrees with the shells for n = 2).

How previously decoded chunks are presented (reference ``forward``)
-------------------------------------------------------------------
Every net works at *quadrant* resolution: the hyperprior means (resp. scales) are cut into the same chunks and all of
them are stacked along channels in coding order (``n²·C`` channels: 1536 for the paper), then the previously decoded
chunks are appended along channels, oldest first, whatever quadrant they came from. So a chunk decoded in the
top-left quadrant is seen *pixel-aligned by position inside its quadrant* with the chunk being predicted (not by image
position), and zero padding of the convolutions stops at quadrant borders. The sliding window keeps only the last
``context_window`` = 12 decoded chunks (reference ``max_support_slices``), so MeanNet_k has
``n²·C + C/G·min(k, 12)`` input channels and LRPNet_k one chunk more.

Choices the paper leaves open, and how the reference resolves them (we follow it unless stated)
------------------------------------------------------------------------------------------------
* Main transforms: STF's symmetric Swin g_a/g_s (:mod:`model_store.architectures.stf`) with the reference's
  constructor defaults, which are STF's paper configuration (``embed_dim=48, depths=(2,2,6,2),
  heads=(3,6,12,24), patch_size=2, window_size=4``). Hyper transforms are STF's conv hyper-analysis/synthesis
  (192 hyper channels, separate mean and scale branches); their parameters and STF's are identical module by module.
* Hyperprior presented to the chunk nets: the reference slices ``support_num = 24`` hyperprior chunks from the
  current one on (clamped to the last 24); with 24 chunks that is always the whole hyperprior in coding order. We
  always give the whole hyperprior (also for finer grids, where the reference's window would be partial).
* Chunk nets: 5 conv3x3 layers (in → 224 → 176 → 128 → 64 → C/G, GELU between), then a residual refinement
  ``c + Swin(c)`` by Swin layers of dim C/G, 4 heads, window 8, MLP ratio 4: depths (2, 6) for means, (2, 2) for
  scales, (2, 6) for LRP. The Swin layers zero-pad a quadrant to their window internally (as the reference); the
  codec's padding only guarantees that the latent splits evenly into quadrants and fits the main transforms' windows.
* Scales are used as the nets output them (no exp/abs); :class:`~compressai.entropy_models.GaussianConditional`
  lower-bounds them at 0.11, exactly as in the reference.
* LRP: ``0.5 * tanh`` of the LRP net's output, added to ``ŷ_k`` (as STF / Minnen & Singh 2020).
* Training quantisation (``forward``): likelihoods of y and z from the entropy models' additive uniform noise; the
  ``ŷ_k`` fed to the context, LRP and g_s, and the ``ẑ`` fed to the hyper synthesis, are straight-through rounded
  around their means / medians (``round(v - μ) + μ`` forward, identity gradient), as the reference's ``ste_round``.
  That value is bit-identical to the coder's reconstruction, and training and coding run one shared chunk loop,
  so on the same float64 weights they give identical entropy parameters (tested).
* Stochastic depth in the chunk nets' Swin layers: the reference indexes the main transforms' drop-path list
  (0 .. 0.2 over 12 blocks) with the *reversed* main depths, so refinement layer l, block j gets
  ``dpr[sum((2, 6, 2, 2)[:l]) + j]``; we do the same. It only matters for training.
* λ: we could not check the paper's table here, and the reference repo only has ``train.py``'s default 0.0035
  (STF's quality 2), so we use STF's six λ {0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483} for
  ``λ·255²·MSE + bpp``.
* Cost: the paper preset has 24 x 3 chunk nets whose first conv sees up to 1536 + 768 channels, hence 380 M of its
  418 M parameters (355 M in their conv stacks); coding is 24 sequential steps (one rANS group per chunk, never per pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from compressai.ops import quantize_ste
from torch import Tensor, nn

from model_store.architectures.base import LearnedImageCodec, Shape, likelihoods_dict, make_entropy_models
from model_store.architectures.registry import Preset, register
from model_store.architectures.stf import (
    STF_LAMBDAS,
    STF_SMALL,
    STF_SMALL_LADDER_DEPARTURE,
    STF_SMALL_LAMBDAS,
    STF_TINY,
    STFConfig,
    SwinAnalysis,
    SwinSynthesis,
    hyper_analysis,
    hyper_synthesis,
)
from model_store.entropy.coding import GaussianSymbolCoder
from model_store.layers.swin import BasicLayer, map_to_tokens, tokens_to_map

Quadrant = Tuple[int, int]  # (row, col) in the quadrant grid


# -- the coding order ---------------------------------------------------------------------------------------------
def zigzag_order(n: int, order: str = "shells") -> List[Quadrant]:
    """The ``(row, col)`` cells of an ``n x n`` quadrant grid in coding order.

    ``"shells"`` (the reference's ``ZigzagSplits`` for any ``number``): square shells ``max(row, col) = 0, 1, ...``
    growing from the top-left, each shell column by column and top to bottom. ``"diagonals"``: the JPEG zigzag over
    anti-diagonals, starting downwards. Both give TL, BL, TR, BR for ``n = 2``.
    """
    if n < 1:
        raise ValueError(f"the quadrant grid needs n >= 1, got {n}")
    cells = [(r, c) for c in range(n) for r in range(n)]  # column-major
    if order == "shells":
        return sorted(cells, key=lambda rc: max(rc))  # stable: column-major inside each shell
    if order == "diagonals":
        # Anti-diagonal d = r + c; even diagonals run downwards (row increasing), odd ones upwards.
        return sorted(cells, key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 == 0 else -rc[0]))
    raise ValueError(f"unknown zigzag order {order!r}; use 'shells' or 'diagonals'")


@dataclass(frozen=True)
class ChunkLayout:
    """How a ``(B, C, H, W)`` latent is cut into ``grid² x groups`` chunks and in which order they are coded."""

    grid: int = 2
    groups: int = 6
    order: str = "shells"

    @property
    def num_chunks(self) -> int:
        return self.grid * self.grid * self.groups

    def chunks(self) -> List[Tuple[int, int, int]]:
        """``(row, col, group)`` of every chunk in coding order: channel-first inside each quadrant."""
        return [(r, c, g) for r, c in zigzag_order(self.grid, self.order) for g in range(self.groups)]

    def check(self, channels: int, h: int, w: int) -> None:
        if channels % self.groups or h % self.grid or w % self.grid:
            raise ValueError(
                f"a {channels}x{h}x{w} latent does not split into {self.groups} channel groups and a "
                f"{self.grid}x{self.grid} quadrant grid; pad the image to the model's pad_multiple"
            )

    def split(self, t: Tensor) -> List[Tensor]:
        """The chunks of ``t`` in coding order, each ``(B, C/groups, H/grid, W/grid)`` (views)."""
        _, c, h, w = t.shape
        self.check(c, h, w)
        cg, qh, qw = c // self.groups, h // self.grid, w // self.grid
        return [t[:, g * cg : (g + 1) * cg, r * qh : (r + 1) * qh, q * qw : (q + 1) * qw] for r, q, g in self.chunks()]

    def stack(self, t: Tensor) -> Tensor:
        """All chunks of ``t`` concatenated along channels in coding order: ``(B, grid²·C, H/grid, W/grid)``."""
        return torch.cat(self.split(t), dim=1)

    def merge(self, chunks: Sequence[Tensor]) -> Tensor:
        """Inverse of :meth:`split` (differentiable)."""
        if len(chunks) != self.num_chunks:
            raise ValueError(f"expected {self.num_chunks} chunks, got {len(chunks)}")
        cells: Dict[Quadrant, List[Tensor]] = {}
        for (r, c, _), chunk in zip(self.chunks(), chunks):
            cells.setdefault((r, c), []).append(chunk)  # groups arrive in order 0..G-1
        rows = [torch.cat([torch.cat(cells[(r, c)], dim=1) for c in range(self.grid)], dim=3) for r in range(self.grid)]
        return torch.cat(rows, dim=2)


# -- configuration ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZigzagConfig:
    """Every width of the model. Defaults are the reference's (``SymmetricalTransFormer5()``).

    ``transforms`` configures STF's Swin g_a/g_s and, through its ``entropy`` part, the hyper transforms
    (``hyper_channels``, ``hyper_analysis_widths``, ``hyper_synthesis_widths``); its slice settings are unused here.
    """

    transforms: STFConfig = field(default_factory=STFConfig)
    grid: int = 2
    groups: int = 6
    order: str = "shells"
    #: How many of the most recently decoded chunks each chunk's nets see (reference ``max_support_slices``).
    context_window: int = 12
    #: Hidden widths of every chunk net's conv stack (GELU between), its first and other kernels.
    chunk_hidden: Tuple[int, ...] = (224, 176, 128, 64)
    chunk_first_kernel: int = 3
    chunk_kernel: int = 3
    #: Residual Swin refinement after each conv stack: one BasicLayer of dim C/groups per depth entry.
    refine_heads: int = 4
    refine_window: int = 8
    refine_mlp_ratio: float = 4.0
    refine_depths_mean: Tuple[int, ...] = (2, 6)
    refine_depths_scale: Tuple[int, ...] = (2, 2)
    refine_depths_lrp: Tuple[int, ...] = (2, 6)

    def __post_init__(self) -> None:
        if self.latent_channels % self.groups:
            raise ValueError(f"{self.latent_channels} latent channels do not split into {self.groups} groups")
        if self.context_window < 0:
            raise ValueError("context_window must be >= 0")
        zigzag_order(self.grid, self.order)  # validates grid and order

    @property
    def latent_channels(self) -> int:
        return self.transforms.latent_channels

    @property
    def chunk_channels(self) -> int:
        return self.latent_channels // self.groups

    @property
    def layout(self) -> ChunkLayout:
        return ChunkLayout(self.grid, self.groups, self.order)

    @property
    def pad_multiple(self) -> int:
        """lcm of: latent stride x quadrant grid (even quadrants), latent stride x main window (the coarsest Swin
        stage is tiled by windows), and the hyper stride (z is the latent / 4)."""
        stride = self.transforms.latent_stride
        return math.lcm(stride * self.grid, stride * self.transforms.window_size, stride * 4)


# -- the per-chunk nets -------------------------------------------------------------------------------------------
class ChunkPredictor(nn.Module):
    """Conv stack then a residual Swin refinement: ``c = convs(x); out = c + Swin(c)`` (reference ``cc_*2`` +
    ``*_Swin2``). Works on one chunk at quadrant resolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int],
        kernel: int,
        first_kernel: int,
        refine_depths: Sequence[int],
        refine_heads: int,
        refine_window: int,
        refine_mlp_ratio: float,
        refine_drop_path: Sequence[Sequence[float]] = (),
    ):
        super().__init__()
        widths = [in_channels, *hidden, out_channels]
        layers: List[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(nn.GELU())
            k = first_kernel if i == 0 else kernel
            layers.append(nn.Conv2d(a, b, k, padding=k // 2))
        self.convs = nn.Sequential(*layers)
        rates = list(refine_drop_path) or [[0.0] * d for d in refine_depths]
        self.refine = nn.ModuleList(
            BasicLayer(
                dim=out_channels,
                depth=d,
                num_heads=refine_heads,
                window_size=refine_window,
                mlp_ratio=refine_mlp_ratio,
                drop_path=list(r),
            )
            for d, r in zip(refine_depths, rates)
        )

    def forward(self, x: Tensor) -> Tensor:
        c = self.convs(x)
        if len(self.refine) == 0:
            return c
        t, h, w = map_to_tokens(c)
        for layer in self.refine:
            t, h, w = layer(t, h, w)
        return c + tokens_to_map(t, h, w)


def _refine_drop_path(cfg: STFConfig, depths: Sequence[int]) -> List[List[float]]:
    """The reference's rates: layer l, block j gets ``dpr[sum(rev_depths[:l]) + j]`` of the main schedule."""
    total = sum(cfg.depths)
    dpr = torch.linspace(0, cfg.drop_path_rate, total).tolist() if total > 1 else [0.0] * max(total, 1)
    rev = list(cfg.depths[::-1])
    out = []
    for layer, depth in enumerate(depths):
        start = sum(rev[:layer])
        out.append([dpr[min(start + j, len(dpr) - 1)] for j in range(depth)])
    return out


def round_around(v: Tensor, centre: Tensor) -> Tensor:
    """``round(v - centre) + centre`` with a straight-through gradient (the reference's ``ste_round``).

    Bit-identical to the coder's reconstruction ``symbol + centre``: ``quantize_ste`` computes
    ``(round(d) - d) + d``, and ``round(d) - d`` is exact (Sterbenz), so the sum is exactly ``round(d)``.
    """
    return quantize_ste(v - centre) + centre


# -- the codec ----------------------------------------------------------------------------------------------------
class ZigzagCodec(LearnedImageCodec):
    """Shen & Liu (SPIE 2023): STF Swin transforms + zigzag spatial-channel chunk context (see module docstring)."""

    def __init__(self, cfg: ZigzagConfig = ZigzagConfig()):
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout
        self.context_window = cfg.context_window
        stf, hyper = cfg.transforms, cfg.transforms.entropy
        self.latent_channels = cfg.latent_channels
        self.hyper_channels = hyper.hyper_channels
        self.latent_stride = stf.latent_stride
        self.hyper_stride = stf.latent_stride * 4
        self.pad_multiple = cfg.pad_multiple
        # A quadrant (latent / grid) must fill the chunk nets' Swin window in training: on 128² crops (4x4 quadrants
        # in an 8x8 window) zigzag-small coded a 768x512 photo at 3x the rate STF's entropy model gives the same
        # transforms, while matching it on 128² crops.
        self.min_train_crop = stf.latent_stride * cfg.grid * cfg.refine_window

        self.g_a = SwinAnalysis(stf)
        self.g_s = SwinSynthesis(stf)
        self.h_a = hyper_analysis(hyper.hyper_analysis_widths)
        self.h_mean_s = hyper_synthesis(hyper.hyper_synthesis_widths)
        self.h_scale_s = hyper_synthesis(hyper.hyper_synthesis_widths)
        self.entropy_bottleneck, self.gaussian_conditional = make_entropy_models(hyper.hyper_channels)

        cg = cfg.chunk_channels
        hyper_in = cfg.grid * cfg.grid * cfg.latent_channels  # the whole hyperprior, stacked at quadrant size

        def predictor(in_channels: int, depths: Sequence[int]) -> ChunkPredictor:
            return ChunkPredictor(
                in_channels,
                cg,
                cfg.chunk_hidden,
                cfg.chunk_kernel,
                cfg.chunk_first_kernel,
                depths,
                cfg.refine_heads,
                cfg.refine_window,
                cfg.refine_mlp_ratio,
                _refine_drop_path(stf, depths),
            )

        n, w = self.layout.num_chunks, cfg.context_window
        self.mean_nets = nn.ModuleList(predictor(hyper_in + cg * min(k, w), cfg.refine_depths_mean) for k in range(n))
        self.scale_nets = nn.ModuleList(predictor(hyper_in + cg * min(k, w), cfg.refine_depths_scale) for k in range(n))
        self.lrp_nets = nn.ModuleList(
            predictor(hyper_in + cg * min(k + 1, w + 1), cfg.refine_depths_lrp) for k in range(n)
        )

    # -- the one chunk schedule, shared by training and coding --------------------------------------------------
    def _hyper_stacks(self, z_hat: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        h, w = hw
        means = self.h_mean_s(z_hat)[..., :h, :w]
        scales = self.h_scale_s(z_hat)[..., :h, :w]
        return self.layout.stack(means), self.layout.stack(scales)

    def _chunk_parameters(
        self, k: int, hyper_means: Tensor, hyper_scales: Tensor, previous: Sequence[Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """``(mean-net input, means, scales)`` of chunk k; ``previous`` are chunks 0 .. k-1 (or more) in order."""
        context = previous[max(0, k - self.context_window) : k]
        mean_in = torch.cat([hyper_means, *context], dim=1)
        means = self.mean_nets[k](mean_in)
        scales = self.scale_nets[k](torch.cat([hyper_scales, *context], dim=1))
        return mean_in, means, scales

    def _walk_chunks(
        self, z_hat: Tensor, hw: Tuple[int, int], quantise: Callable[[int, Tensor, Tensor], Tensor]
    ) -> List[Tensor]:
        """Visit the chunks in coding order; ``quantise(k, scales, means)`` returns chunk k's ``ŷ_k`` before LRP.

        Chunk k's parameters depend only on ``z_hat`` and the final (LRP-corrected) ``ŷ`` of chunks
        ``k - context_window .. k - 1``.
        """
        hyper_means, hyper_scales = self._hyper_stacks(z_hat, hw)
        decoded: List[Tensor] = []
        for k in range(self.layout.num_chunks):
            mean_in, means, scales = self._chunk_parameters(k, hyper_means, hyper_scales, decoded)
            y_hat = quantise(k, scales, means)
            lrp = self.lrp_nets[k](torch.cat([mean_in, y_hat], dim=1))
            decoded.append(y_hat + 0.5 * torch.tanh(lrp))
        return decoded

    def code_latent(
        self, y: Optional[Tensor], z_hat: Tensor, coder: GaussianSymbolCoder, y_shape: Shape, banded: bool = False
    ) -> Tensor:
        """Code the chunks in zigzag order; ``coder.code(scales, means, y_chunk)`` once per chunk."""
        if banded:
            raise ValueError("this architecture has no banded hyper layout")
        c, h, w = y_shape
        self.layout.check(c, h, w)
        y_chunks = None if y is None else self.layout.split(y.to(z_hat.dtype))

        def quantise(k: int, scales: Tensor, means: Tensor) -> Tensor:
            return coder.code(scales, means, None if y_chunks is None else y_chunks[k])

        return self.layout.merge(self._walk_chunks(z_hat, (h, w), quantise))

    def entropy_parameters(self, y_hat: Tensor, z_hat: Tensor) -> Tuple[Tensor, Tensor]:
        """``(means, scales)`` of every chunk when the decoded chunks are those of ``y_hat`` (teacher forcing).

        Each chunk's parameters see only ``z_hat`` and the ``context_window`` chunks before it in ``y_hat``; this is
        what the coding schedule computes when it has decoded exactly ``y_hat``.
        """
        hw = (y_hat.shape[-2], y_hat.shape[-1])
        hyper_means, hyper_scales = self._hyper_stacks(z_hat, hw)
        given = self.layout.split(y_hat)
        params = [self._chunk_parameters(k, hyper_means, hyper_scales, given)[1:] for k in range(len(given))]
        return self.layout.merge([m for m, _ in params]), self.layout.merge([s for _, s in params])

    # -- training ------------------------------------------------------------------------------------------------
    def latent_forward(self, y: Tensor) -> Dict[str, Tensor]:
        """The training pass from ``y`` on: ``y_hat``, likelihoods of y and z, and every chunk's means/scales.

        ``y_hat`` and ``z_hat`` are rounded around their means/medians with a straight-through gradient; the
        likelihoods use the entropy models' additive noise in training mode (rounding in eval mode).
        """
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        z_hat = round_around(z, self.entropy_bottleneck._get_medians())
        y_chunks = self.layout.split(y)
        likelihoods: List[Tensor] = []
        means_out: List[Tensor] = []
        scales_out: List[Tensor] = []

        def quantise(k: int, scales: Tensor, means: Tensor) -> Tensor:
            _, lik = self.gaussian_conditional(y_chunks[k], scales, means)
            likelihoods.append(lik)
            means_out.append(means)
            scales_out.append(scales)
            return round_around(y_chunks[k], means)

        y_hat = self.layout.merge(self._walk_chunks(z_hat, (y.shape[-2], y.shape[-1]), quantise))
        return {
            "y_hat": y_hat,
            "z_hat": z_hat,
            "y_likelihoods": self.layout.merge(likelihoods),
            "z_likelihoods": z_likelihoods,
            "means": self.layout.merge(means_out),
            "scales": self.layout.merge(scales_out),
        }

    def rate_forward(self, y: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """See :meth:`latent_forward`; likelihoods have the shapes of y and z."""
        out = self.latent_forward(y)
        return out["y_hat"], likelihoods_dict(out["y_likelihoods"], out["z_likelihoods"])


# -- presets ------------------------------------------------------------------------------------------------------
ZIGZAG_PAPER = ZigzagConfig()
ZIGZAG_SMALL = ZigzagConfig(
    transforms=STF_SMALL,
    groups=4,
    chunk_hidden=(32,),
    chunk_first_kernel=1,
    refine_heads=2,
    refine_depths_mean=(1,),
    refine_depths_scale=(1,),
    refine_depths_lrp=(1,),
)
ZIGZAG_TINY = ZigzagConfig(
    transforms=STF_TINY,
    groups=4,
    chunk_hidden=(8,),
    chunk_first_kernel=1,
    refine_heads=2,
    refine_window=2,
    refine_mlp_ratio=2.0,
    refine_depths_mean=(1,),
    refine_depths_scale=(1,),
    refine_depths_lrp=(1,),
)

register(
    Preset(
        arch="zigzag",
        name="paper",
        lambdas=STF_LAMBDAS,
        build=lambda q: ZigzagCodec(ZIGZAG_PAPER),
        description=(
            "Shen & Liu (SPIE 2023) as in the reference: STF Swin 48/(2,2,6,2) window 4, M=384, 2x2 quadrants x 6 "
            "channel groups = 24 chunks in zigzag order, context of the last 12 chunks"
        ),
        is_paper=True,
    )
)


def _transforms_summary(cfg: STFConfig) -> str:
    e = cfg.entropy
    return (
        f"embed_dim {cfg.embed_dim} so M = {cfg.latent_channels}, depths {cfg.depths}, heads {cfg.num_heads}, "
        f"window {cfg.window_size}, decoder head conv {cfg.head_kernel}x{cfg.head_kernel}, hyperprior "
        f"{e.hyper_channels} channels (h_a widths {e.hyper_analysis_widths}, h_s widths {e.hyper_synthesis_widths})"
    )


register(
    Preset(
        arch="zigzag",
        name="small",
        # The small transforms spend fewer bits at equal λ, so the small ladder continues to STF small's 7, 8 and 9.
        lambdas=STF_SMALL_LAMBDAS,
        build=lambda q: ZigzagCodec(ZIGZAG_SMALL),
        description=(
            f"CPU-sized zigzag: STF small transforms, {ZIGZAG_SMALL.grid}x{ZIGZAG_SMALL.grid} quadrants x "
            f"{ZIGZAG_SMALL.groups} groups = {ZIGZAG_SMALL.layout.num_chunks} chunks, window {ZIGZAG_SMALL.context_window}"
        ),
        departures=(
            STF_SMALL_LADDER_DEPARTURE
            + f"main and hyper transforms are STF's small preset ({_transforms_summary(STF_SMALL)}) instead of "
            f"the paper's (embed 48, M = 384, depths (2,2,6,2), hyperprior 192); {ZIGZAG_SMALL.groups} channel "
            f"groups of {ZIGZAG_SMALL.chunk_channels} instead of 6 of 64 ({ZIGZAG_SMALL.layout.num_chunks} chunks "
            "instead of 24; the 2x2 grid, the zigzag order and the 12-chunk sliding window are the paper's); chunk "
            "nets: a 1x1 conv to 32, GELU, a 3x3 conv instead of five 3x3 convs (224-176-128-64); one Swin block "
            "(2 heads, window 8) of residual refinement per net instead of (2, 6) / (2, 2) / (2, 6) blocks with 4 heads"
        ),
    )
)
register(
    Preset(
        arch="zigzag",
        name="tiny",
        lambdas=STF_LAMBDAS,
        build=lambda q: ZigzagCodec(ZIGZAG_TINY),
        description="structural-test zigzag (random init only): 2x2 quadrants x 4 groups = 16 chunks, window 12",
        departures=(
            f"STF tiny transforms ({_transforms_summary(STF_TINY)}), {ZIGZAG_TINY.groups} groups of "
            f"{ZIGZAG_TINY.chunk_channels} channels, chunk nets 1x1 conv to 8 + 3x3, one Swin block (2 heads, "
            "window 2, MLP ratio 2) per net"
        ),
    )
)
