"""TIC and TIC+: Swin-Transformer transforms with a causal-attention (CAM) context model.

Lu, Guo, Shi, Cao and Ma, "Transformer-based Image Compression", Data Compression Conference (DCC) 2022,
arXiv:2111.06707. Reference code: github.com/lumingzzz/TIC (``compressai/models/tic.py``,
``compressai/layers/layers.py``: ``RSTB``, ``CausalAttentionModule``). ``tic`` is the paper's layout, one Swin
Transformer Block (a W-MSA + SW-MSA pair, Fig. 3a) per NTU (Swin depths 2, 2, 2 / 2, 2); ``tic_plus`` is the reference's current layout (depths 2, 4, 6 / 2, 2,
changed in July 2024), i.e. twice the transformer depth with everything else equal.

Data flow (``N`` transform channels, ``M`` latent channels; NTU = Swin stage + conv; every Swin stage is a
*residual* group of blocks alternating W-MSA and SW-MSA, ``x + Blocks(x)``, the reference's RSTB without a conv)::

    x ─conv5x5↓2─ Swin(N,d1) ─conv3x3↓2─ Swin(N,d2) ─conv3x3↓2─ Swin(N,d3) ─conv3x3↓2─▶ y (M, H/16)       g_a
    y ─conv3x3─ Swin(N,h1) ─conv3x3↓2─ Swin(N,h2) ─conv3x3↓2─▶ z (N, H/64)                              h_a
    z ──[EntropyBottleneck, rANS]──▶ ẑ
    ẑ ─deconv3x3↑2─ Swin(N,h2) ─deconv3x3↑2─ Swin(N,h1) ─conv3x3─▶ ψ (2M, H/16)                          h_s
    ŷ ─deconv3x3↑2─ Swin(N,d3) ─deconv3x3↑2─ Swin(N,d2) ─deconv3x3↑2─ Swin(N,d1) ─deconv5x5↑2─▶ x̂        g_s

    entropy parameters at latent position (i, j):
        φ(i,j)  = CAM(ŷ over the 12 causal positions of the 5x5 block around (i, j))        (2M)
        (σ, μ)  = 1x1 convs [4M → 10M/3 → 8M/3 → 2M, GELU between] (concat(ψ(i,j), φ(i,j)))
        ŷ(i,j)  = coder.code(σ, μ, y(i,j))          round(y - μ) + μ, rANS with the scale index of σ

    code_latent walks the wavefront t = 3i + j (3H + W - 3 steps, every position of a step at once; see
    :mod:`model_store.layers.cam` for the mask and the proof that the order is causal).

Choices the paper leaves open, and how the reference code resolves them (followed here)
--------------------------------------------------------------------------------------
* Swin depths per NTU: ``tic`` (2, 2, 2) main / (2, 2) hyper: the paper's Fig. 3a, where one Swin Transformer
  Block is a W-MSA + SW-MSA pair and each NTU holds one (7.81 M / 18.55 M parameters). The code released with
  the paper (April 2022 - July 2024) used depths (1, 2, 3) / (1, 1) instead (7.02 M / 16.77 M; a depth-1 stage
  is a lone W-MSA block without a shifted window); that layout is one setting away:
  ``TICConfig(depths=(1, 2, 3), hyper_depths=(1, 1))``. ``tic_plus`` is (2, 4, 6) / (2, 2).
  Decoders use the reversed lists.
  Heads 4, 8, 16 (main, encoder order) and 16 (hyper); window 8 (main) and 4 (hyper), shift = window / 2;
  MLP ratio 4; qkv bias; stochastic depth linearly 0 → 0.2 over the 5 encoder-side stages, the decoder stages
  indexing the same rate list with the reversed depths (the reference's slicing).
* No GDN / nonlinearity between convs and Swin stages (the reference README: "we remove the activation
  functions after the convolutions"). The transpose convs are ``ConvTranspose2d(k, stride 2, padding k//2,
  output_padding 1)`` (CompressAI ``deconv``), the last hyper-synthesis layer a stride-1 3x3 conv N → 2M.
* The hyper-latent has N channels (``EntropyBottleneck(N)``). (N, M) = (128, 192) for qualities 1-4 and
  (192, 320) for 5-8.
* CAM (reference README: "slightly different from the paper by directly masking the input of context model"):
  zero the non-causal inputs of the 5x5 block, pre-norm MHSA over all 25 tokens with a relative position bias, sum
  of the 25 outputs (plus their inputs), then a residual MLP and a projection to 2M. 16 heads, MLP ratio 4.
  Exact mask and computation: :mod:`model_store.layers.cam`.
* Entropy parameters: three 1x1 convs 4M → 10M/3 → 8M/3 → 2M with GELU (integer division, ``M*10//3``); scales
  are the first M channels, means the last M.
* Training quantisation (``forward``): as the reference (and CompressAI's joint autoregressive model), the
  latent fed to the context model and to g_s is ``y + U(-0.5, 0.5)`` in training and ``round(y)`` in eval; the
  likelihood term uses ``GaussianConditional(y, σ, μ)`` (its own noise in training). Real coding quantises
  ``round(y - μ) + μ`` instead, so an eval forward's latent differs from the decoded one by less than 1 per
  element; fed the decoded latent, the forward's CAM gives the coder's (σ, μ) to float tolerance (tests).
  That is the default; ``model_store.train --quantizer mixed`` trains g_s on ``round(y - μ) + μ`` instead
  (straight-through; :class:`~model_store.entropy.causal_context.CausalContextCoding` says how).
* Padding: images are padded to a multiple of 64 (latent stride 16 x the 4x hyper stride). The latent need not be a
  multiple of the window 8: like the original Swin code, each block zero-pads its input (after LayerNorm) to a
  window multiple and crops back (:mod:`model_store.layers.swin`). The reference instead requires exact tiling
  (multiples of 128) and would fail on other sizes; 64 keeps the padding overhead lower (e.g. 1080 → 1088, not
  1152). At training crop sizes (256) every window tiles exactly, so the two agree where the weights are trained.
* Coding (``code_latent``, CPU float64 on both sides): ψ = h_s(ẑ) is computed once for the whole map; then per
  wavefront step the CAM runs on that step's positions only (gathered causal neighbourhoods, cached per-token
  LayerNorm + qkv), and the parameter convs run row by row. Two exact rewrites (:class:`PositionParams`) and
  batch-invariant row products make a position's (σ, μ) independent of which positions share its step, so the
  wavefront equals the one-position-at-a-time raster decoder bit for bit (``raster_serial_decode``, tests only).
* Initialisation: truncated-normal (std 0.02) Linear weights with zero bias, LayerNorm (1, 0), as the reference.

Module names follow the reference with its numbered attributes turned into ``nn.Sequential`` indices
(``g_a0`` → ``g_a.0``, ``h_s4`` → ``h_s.4``; Swin stages keep ``residual_group.blocks.k``; the CAM is
``context_prediction``), so a reference checkpoint converts by renaming keys and dropping its
``relative_position_index`` / ``attn_mask`` buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from model_store.architectures.base import LearnedImageCodec, make_entropy_models
from model_store.architectures.registry import Preset, register
from model_store.entropy.causal_context import CausalContextCoding
from model_store.layers.cam import CausalAttentionModule
from model_store.layers.swin import BasicLayer, init_transformer_weights, map_to_tokens, tokens_to_map

#: λ of the loss ``λ·255²·MSE + bpp`` for qualities 1..8 (the paper's MSE models).
TIC_LAMBDAS: Dict[int, float] = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013, 5: 0.025, 6: 0.0483, 7: 0.0932, 8: 0.18}

#: Qualities up to this one use the low-rate widths.
LOW_RATE_QUALITIES = 4


@dataclass(frozen=True)
class TICConfig:
    """Widths, Swin layout and CAM size of one TIC model (defaults: the paper's low-rate ``tic``)."""

    N: int = 128
    M: int = 192
    depths: Tuple[int, int, int] = (2, 2, 2)  # main encoder NTUs (0: conv only); g_s uses them reversed
    hyper_depths: Tuple[int, int] = (2, 2)  # h_a NTUs; h_s reversed
    num_heads: Tuple[int, int, int] = (4, 8, 16)
    hyper_heads: Tuple[int, int] = (16, 16)
    window_size: int = 8
    hyper_window_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    cam_heads: int = 16
    cam_mlp_ratio: float = 4.0
    cam_block: int = 5

    def __post_init__(self) -> None:
        for heads in (*self.num_heads, *self.hyper_heads):
            if self.N % heads:
                raise ValueError(f"N={self.N} is not divisible by {heads} heads")
        if self.M % self.cam_heads:
            raise ValueError(f"M={self.M} is not divisible by {self.cam_heads} CAM heads")


class ResidualSwinStage(nn.Module):
    """``x + SwinBlocks(x)`` on a ``(B, C, H, W)`` map (the reference's RSTB: SwinIR's group without its conv)."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, drop_path: Sequence[float]
    ):
        super().__init__()
        if depth < 1:
            raise ValueError("a Swin stage needs at least one block")
        self.residual_group = BasicLayer(
            dim=dim,
            depth=depth,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_path=list(drop_path),
        )

    def forward(self, x: Tensor) -> Tensor:
        tokens, h, w = map_to_tokens(x)
        tokens, _, _ = self.residual_group(tokens, h, w)
        return tokens_to_map(tokens, h, w) + x


def _drop_path_slices(depths: Sequence[int], rate: float) -> List[List[float]]:
    """The reference's stochastic-depth slicing: one linspace over all stages, consecutive slices per stage."""
    total = sum(depths)
    rates = [rate * k / (total - 1) if total > 1 else 0.0 for k in range(total)]  # torch.linspace(0, rate, total)
    starts = [sum(depths[:k]) for k in range(len(depths))]
    return [rates[s : s + d] for s, d in zip(starts, depths)]


class TIC(CausalContextCoding, LearnedImageCodec):
    """TIC / TIC+ (see the module docstring); the layout comes from :class:`TICConfig`."""

    pad_multiple = 64
    latent_stride = 16
    hyper_stride = 64

    def __init__(self, cfg: TICConfig = TICConfig()):
        super().__init__()
        self.cfg = cfg
        n, m = cfg.N, cfg.M
        self.latent_channels = m
        self.hyper_channels = n
        d1, d2, d3 = cfg.depths
        e1, e2 = cfg.hyper_depths
        enc_rates = _drop_path_slices([d1, d2, d3, e1, e2], cfg.drop_path_rate)
        dec_rates = _drop_path_slices([e2, e1, d3, d2, d1], cfg.drop_path_rate)

        def stage(depth: int, heads: int, window: int, rates: Sequence[float]) -> nn.Module:
            if depth == 0:  # a conv-only NTU (CPU presets); keeps the reference's layer indices
                return nn.Identity()
            return ResidualSwinStage(n, depth, heads, window, cfg.mlp_ratio, rates)

        h1, h2, h3 = cfg.num_heads
        k1, k2 = cfg.hyper_heads
        ws, hws = cfg.window_size, cfg.hyper_window_size
        self.g_a = nn.Sequential(
            conv(3, n, kernel_size=5, stride=2),
            stage(d1, h1, ws, enc_rates[0]),
            conv(n, n, kernel_size=3, stride=2),
            stage(d2, h2, ws, enc_rates[1]),
            conv(n, n, kernel_size=3, stride=2),
            stage(d3, h3, ws, enc_rates[2]),
            conv(n, m, kernel_size=3, stride=2),
        )
        self.h_a = nn.Sequential(
            conv(m, n, kernel_size=3, stride=1),
            stage(e1, k1, hws, enc_rates[3]),
            conv(n, n, kernel_size=3, stride=2),
            stage(e2, k2, hws, enc_rates[4]),
            conv(n, n, kernel_size=3, stride=2),
        )
        self.h_s = nn.Sequential(
            deconv(n, n, kernel_size=3, stride=2),
            stage(e2, k2, hws, dec_rates[0]),
            deconv(n, n, kernel_size=3, stride=2),
            stage(e1, k1, hws, dec_rates[1]),
            conv(n, 2 * m, kernel_size=3, stride=1),
        )
        self.g_s = nn.Sequential(
            deconv(m, n, kernel_size=3, stride=2),
            stage(d3, h3, ws, dec_rates[2]),
            deconv(n, n, kernel_size=3, stride=2),
            stage(d2, h2, ws, dec_rates[3]),
            deconv(n, n, kernel_size=3, stride=2),
            stage(d1, h1, ws, dec_rates[4]),
            deconv(n, 3, kernel_size=5, stride=2),
        )
        self.entropy_bottleneck, self.gaussian_conditional = make_entropy_models(n)
        self.context_prediction = CausalAttentionModule(
            m, 2 * m, block_len=cfg.cam_block, num_heads=cfg.cam_heads, mlp_ratio=cfg.cam_mlp_ratio
        )
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(m * 12 // 3, m * 10 // 3, 1),
            nn.GELU(),
            nn.Conv2d(m * 10 // 3, m * 8 // 3, 1),
            nn.GELU(),
            nn.Conv2d(m * 8 // 3, m * 6 // 3, 1),
        )
        self.apply(init_transformer_weights)


# -- presets -----------------------------------------------------------------------------------------------------------


def _builder(low: TICConfig, high: TICConfig) -> Callable[[int], TIC]:
    return lambda q: TIC(low if q <= LOW_RATE_QUALITIES else high)


def _paper(depths: Tuple[int, int, int], hyper_depths: Tuple[int, int]) -> Tuple[TICConfig, TICConfig]:
    return (
        TICConfig(N=128, M=192, depths=depths, hyper_depths=hyper_depths),
        TICConfig(N=192, M=320, depths=depths, hyper_depths=hyper_depths),
    )


TIC_PAPER = _paper((2, 2, 2), (2, 2))
TIC_PLUS_PAPER = _paper((2, 4, 6), (2, 2))

#: CPU presets: one width at every quality, no Swin stage at H/2 (it costs ~80 % of g_a / g_s on a CPU).
_SMALL = dict(N=64, M=128, num_heads=(2, 4, 4), hyper_heads=(4, 4), cam_heads=8, drop_path_rate=0.1)
TIC_SMALL = TICConfig(depths=(0, 1, 2), hyper_depths=(1, 1), **_SMALL)  # type: ignore[arg-type]
TIC_PLUS_SMALL = TICConfig(depths=(0, 2, 4), hyper_depths=(2, 2), **_SMALL)  # type: ignore[arg-type]
_TINY = dict(N=16, M=20, num_heads=(2, 2, 2), hyper_heads=(2, 2), cam_heads=2, drop_path_rate=0.0)
TIC_TINY = TICConfig(depths=(1, 1, 2), hyper_depths=(1, 1), **_TINY)  # type: ignore[arg-type]
TIC_PLUS_TINY = TICConfig(depths=(2, 2, 2), hyper_depths=(2, 2), **_TINY)  # type: ignore[arg-type]

register(
    Preset(
        arch="tic",
        name="paper",
        lambdas=TIC_LAMBDAS,
        build=_builder(*TIC_PAPER),
        description="TIC as released with the DCC 2022 paper: Swin depths (1,2,3)/(1,1), (N,M)=(128,192) for "
        "q1-4 and (192,320) for q5-8, CAM context model",
        is_paper=True,
    )
)
register(
    Preset(
        arch="tic_plus",
        name="paper",
        lambdas=TIC_LAMBDAS,
        build=_builder(*TIC_PLUS_PAPER),
        description="TIC+ (the reference's current layout): Swin depths (2,4,6)/(2,2), (N,M)=(128,192) for q1-4 "
        "and (192,320) for q5-8, CAM context model",
        is_paper=True,
    )
)
_SMALL_DEPARTURES = (
    "(N, M) = (64, 128) at every quality instead of (128, 192) for q1-4 and (192, 320) for q5-8; the first NTU "
    "(at H/2) has no Swin stage, only its conv (the H/2 stage alone costs ~80 % of g_a / g_s on a CPU); heads "
    "(2,4,4) main and 4 hyper instead of (4,8,16) and 16 (head dims 32/16/16); CAM with 8 heads instead of 16 "
    "(head dim 16); stochastic depth 0.1 instead of 0.2; "
)
register(
    Preset(
        arch="tic",
        name="small",
        lambdas=TIC_LAMBDAS,
        build=lambda q: TIC(TIC_SMALL),
        description="CPU-sized TIC",
        departures=_SMALL_DEPARTURES + "Swin depths (0,1,2)/(1,1) instead of (1,2,3)/(1,1)",
    )
)
register(
    Preset(
        arch="tic_plus",
        name="small",
        lambdas=TIC_LAMBDAS,
        build=lambda q: TIC(TIC_PLUS_SMALL),
        description="CPU-sized TIC+",
        departures=_SMALL_DEPARTURES + "Swin depths (0,2,4)/(2,2) instead of (2,4,6)/(2,2)",
    )
)
register(
    Preset(
        arch="tic",
        name="tiny",
        lambdas=TIC_LAMBDAS,
        build=lambda q: TIC(TIC_TINY),
        description="structural-test TIC (random init only)",
        departures="N=16, M=20 at every quality, heads 2 everywhere (CAM too), depths (1,1,2)/(1,1), no drop path",
    )
)
register(
    Preset(
        arch="tic_plus",
        name="tiny",
        lambdas=TIC_LAMBDAS,
        build=lambda q: TIC(TIC_PLUS_TINY),
        description="structural-test TIC+ (random init only)",
        departures="N=16, M=20 at every quality, heads 2 everywhere (CAM too), depths (2,2,2)/(2,2), no drop path",
    )
)
