"""STF and WACNN: window-attention transforms with a channel-conditional (ChARM) entropy model.

Zou, Song and Zhang, "The Devil Is in the Details: Window-based Attention for Image Compression", CVPR 2022.
Reference code: github.com/Googolxx/STF (``compressai/models/stf.py``, ``cnn.py``, ``layers/``).

Two families share one entropy model:

* ``stf``, the Symmetrical TransFormer: a Swin encoder (patch embedding k2 s2, 4 stages with patch merging) and a
  mirrored Swin decoder (patch split instead of merging, then conv + pixel shuffle back to RGB).
* ``wacnn``: Ballé/Minnen-style conv + GDN transforms with a window-attention module (Cheng et al.'s simplified
  attention module whose mask branch starts with (shifted-)window self-attention) after the 2nd and 4th
  down-sampling, mirrored in the decoder.

Data flow (``M`` latent channels in ``S`` slices, ``N_z`` hyper channels)::

    x ──g_a──▶ y (M, H/16) ──h_a──▶ z (N_z, H/64) ──[EntropyBottleneck]──▶ z_hat
                                                                            ├──h_mean_s──▶ μ_z (M, H/16)
                                                                            └──h_scale_s─▶ σ_z (M, H/16)
    for slice i = 0 .. S-1 (channels [i*M/S, (i+1)*M/S) of y):
        support  = ŷ_0 .. ŷ_{min(i, K)-1}             (K = max_support_slices = S // 2)
        μ_i      = cc_mean_i ([μ_z, support])
        σ_i      = cc_scale_i([σ_z, support])
        ŷ_i      = coder.code(σ_i, μ_i, y_i)           (round(y_i - μ_i) + μ_i, rANS with scale index of σ_i)
        ŷ_i     += 0.5 * tanh(lrp_i([μ_z, support, ŷ_i]))     latent residual prediction
    ŷ = concat(ŷ_0 .. ŷ_{S-1}) ──g_s──▶ x_hat

Choices the paper leaves open, resolved as in the reference code
----------------------------------------------------------------
* Slice schedule: STF M=384 in 12 slices of 32, WACNN M=320 in 10 slices of 32; each slice sees at most
  ``S // 2`` previously decoded slices (6 and 5), the *first* ones (``ŷ[:K]``), not the most recent.
* Mean and scale are separate hyper synthesis branches (``h_mean_s``, ``h_scale_s``, same shape, no shared
  trunk), and separate per-slice nets of five 3x3 convs (in -> 224 -> 176 -> 128 -> 64 -> M/S, GELU between).
* Hyper analysis: five 3x3 convs (strides 1, 1, 2, 1, 2, GELU between), widths stepping linearly from M to N_z
  (STF 384-384-336-288-240-192, WACNN 320-320-288-256-224-192). Hyper synthesis: 3x3, sub-pixel x2, 3x3,
  sub-pixel x2, 3x3; STF 192-240-288-336-384-384 (last conv keeps M), WACNN 192-192-224-256-288-320 (first conv
  keeps N_z). N_z = 192 in both (STF: ``4 * embed_dim``).
* LRP: ``0.5 * tanh`` of a net that sees the mean support plus the just-decoded slice.
* Training quantisation: z_hat and ŷ_i are straight-through rounded around the EntropyBottleneck medians and the
  predicted mean (``round(v - m) + m`` with identity gradient); the rate terms use CompressAI's noisy
  likelihoods in training mode. This is the reference's choice and is what ``forward`` does here.
* STF: embed 48, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 4 at every stage, MLP ratio 4, qkv bias,
  LayerNorm after the patch embedding, stochastic depth linearly from 0 to 0.2 over the encoder blocks; the
  decoder (depths and heads reversed, PatchSplit between stages) reuses the same rate list indexed by its own
  reversed depths (so its deepest stage gets the lowest rates). Decoder head: conv5x5 48 -> 48*4, PixelShuffle(2),
  conv3x3 48 -> 3. The reference's attention mask value is -100 (we keep it).
* WACNN: N=192, M=320, conv5x5 stride 2 + GDN; attention modules with 8 heads, window 8 / shift 4 at N channels
  (H/4) and window 4 / shift 2 at M channels (H/16). The reference class is called ``Win_noShift_Attention`` but
  it does pass the shift on, so the attention is shifted; we do the same.
* Padding: every window and the hyperprior must tile exactly, so images are padded to a multiple of 64 for both
  (STF: latent stride 16 x window 4; the hyper-latent is at H/64). The Swin blocks never pad internally then.
* No batch-dependent layers anywhere in the entropy-parameter path (no BatchNorm, no dropout; plain convs and
  GELU), so it runs per image in float64 exactly as in training. DropPath / attention dropout exist only in the
  heavy transforms and are inactive in eval mode.

Cost of the float64 entropy-parameter path (h_a + hyper synthesis + slice nets) for a 768x512 image: about
108 GMAC for the STF paper preset and 80 GMAC for WACNN's (the per-slice nets dominate), 1.9 GMAC for the small
presets. The reference runs this path batched in float32 on the GPU; here it is the price of portable streams.

Parameter counts of the ``paper`` presets equal the reference's (99,855,639 = 99.86 M for STF, 75,235,779 =
75.24 M for WACNN; ``tests/test_arch_stf.py``). Parameter names follow the reference, so a reference checkpoint
converts by renaming keys: WACNN's are identical; STF's ``patch_embed.`` / ``layers.`` become ``g_a.patch_embed.`` /
``g_a.layers.``, ``syn_layers.`` / ``end_conv.`` become ``g_s.syn_layers.`` / ``g_s.end_conv.``, and ``downsample``
becomes ``resample``. The reference's ``relative_position_index`` buffers are recomputed here, not stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from compressai.layers import GDN, conv3x3, subpel_conv3x3
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor, nn

from model_store.architectures.base import LearnedImageCodec, Shape, likelihoods_dict, make_entropy_models
from model_store.architectures.registry import Preset, register
from model_store.entropy.coding import GaussianSymbolCoder
from model_store.layers.swin import (
    BasicLayer,
    PatchEmbed,
    PatchMerging,
    PatchSplit,
    WindowAttentionModule,
    map_to_tokens,
    tokens_to_map,
)

#: MSE λ of the six published operating points (quality 1 = lowest rate); loss = λ·255²·MSE + bpp.
STF_LAMBDAS: Dict[int, float] = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013, 5: 0.025, 6: 0.0483}
#: The small presets continue the ladder with the next four points of the same doubling λ series (TIC's 7 and 8,
#: ERSTC small's top point 0.36, then 0.72): a CPU-sized model spends fewer bits than the paper's at equal λ (0.34 bpp
#: at λ 0.025 where STF reaches ~0.6, 0.49-0.73 bpp at λ 0.18, and zigzag-small still only 0.63 at λ 0.36), so the six
#: published points stop well short of the ~1 bpp users of a high-quality setting expect.
STF_SMALL_LAMBDAS: Dict[int, float] = {**STF_LAMBDAS, 7: 0.0932, 8: 0.18, 9: 0.36, 10: 0.72}
_SMALL_EXTRA_QUALITIES = sorted(set(STF_SMALL_LAMBDAS) - set(STF_LAMBDAS))
#: The small presets' departure from the paper's ladder, in the words every STF-family card uses.
STF_SMALL_LADDER_DEPARTURE = (
    f"qualities {', '.join(map(str, _SMALL_EXTRA_QUALITIES[:-1]))} and {_SMALL_EXTRA_QUALITIES[-1]} "
    f"(λ {', '.join(str(STF_SMALL_LAMBDAS[q]) for q in _SMALL_EXTRA_QUALITIES)}) extend the paper's six; "
)


# -- configuration ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelConditionalConfig:
    """The hyperprior + channel-slice entropy model (Minnen & Singh 2020 ChARM, as STF/WACNN configure it)."""

    latent_channels: int = 384
    hyper_channels: int = 192
    num_slices: int = 12
    #: How many of the *first* decoded slices each slice may see (reference: num_slices // 2).
    max_support_slices: int = 6
    #: h_a channel widths: input (= latent_channels), then the output of each of its five 3x3 convs.
    hyper_analysis_widths: Tuple[int, ...] = (384, 384, 336, 288, 240, 192)
    #: h_mean_s / h_scale_s widths: input (= hyper_channels), then the output of each of the five layers.
    hyper_synthesis_widths: Tuple[int, ...] = (192, 240, 288, 336, 384, 384)
    #: Hidden widths of every per-slice mean / scale / LRP net (3x3 convs, GELU between).
    slice_hidden: Tuple[int, ...] = (224, 176, 128, 64)

    def __post_init__(self) -> None:
        m, n = self.latent_channels, self.hyper_channels
        if m % self.num_slices:
            raise ValueError(f"{m} latent channels do not split into {self.num_slices} equal slices")
        if (
            len(self.hyper_analysis_widths) != 6
            or self.hyper_analysis_widths[0] != m
            or self.hyper_analysis_widths[-1] != n
        ):
            raise ValueError(f"hyper_analysis_widths must be 6 widths from {m} to {n}")
        if (
            len(self.hyper_synthesis_widths) != 6
            or self.hyper_synthesis_widths[0] != n
            or self.hyper_synthesis_widths[-1] != m
        ):
            raise ValueError(f"hyper_synthesis_widths must be 6 widths from {n} to {m}")
        if not 0 <= self.max_support_slices < self.num_slices:
            raise ValueError("max_support_slices must be in [0, num_slices)")

    @property
    def slice_channels(self) -> int:
        return self.latent_channels // self.num_slices


@dataclass(frozen=True)
class STFConfig:
    """Symmetrical TransFormer transforms; the latent has ``embed_dim * 2**(len(depths)-1)`` channels."""

    patch_size: int = 2
    embed_dim: int = 48
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    #: Kernel of the first conv of the decoder head (embed -> embed * patch², before the pixel shuffle).
    head_kernel: int = 5
    entropy: ChannelConditionalConfig = field(default_factory=ChannelConditionalConfig)

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.num_heads):
            raise ValueError("depths and num_heads must have one entry per stage")
        if self.latent_channels != self.entropy.latent_channels:
            raise ValueError(
                f"STF latent has {self.latent_channels} channels, entropy model expects {self.entropy.latent_channels}"
            )

    @property
    def latent_channels(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def latent_stride(self) -> int:
        return self.patch_size * 2 ** (len(self.depths) - 1)


@dataclass(frozen=True)
class WACNNConfig:
    """WACNN transforms: four conv5x5 stride-2 stages with GDN and two window-attention modules per side."""

    N: int = 192
    M: int = 320
    num_heads: int = 8
    #: (window, shift) of the attention modules at N channels (H/4) and at M channels (H/16).
    window_n: Tuple[int, int] = (8, 4)
    window_m: Tuple[int, int] = (4, 2)
    entropy: ChannelConditionalConfig = field(
        default_factory=lambda: ChannelConditionalConfig(
            latent_channels=320,
            hyper_channels=192,
            num_slices=10,
            max_support_slices=5,
            hyper_analysis_widths=(320, 320, 288, 256, 224, 192),
            hyper_synthesis_widths=(192, 192, 224, 256, 288, 320),
        )
    )

    def __post_init__(self) -> None:
        if self.M != self.entropy.latent_channels:
            raise ValueError(f"WACNN M={self.M} but the entropy model expects {self.entropy.latent_channels}")


# -- the shared channel-conditional entropy model ----------------------------------------------------------------------
def hyper_analysis(widths: Sequence[int]) -> nn.Sequential:
    """h_a: five 3x3 convs, strides 1, 1, 2, 1, 2 (x4 down), GELU between; ``widths`` has 6 entries, M ... N_z."""
    strides = (1, 1, 2, 1, 2)
    layers: List[nn.Module] = []
    for i, s in enumerate(strides):
        layers.append(conv3x3(widths[i], widths[i + 1], stride=s))
        if i < len(strides) - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def hyper_synthesis(widths: Sequence[int]) -> nn.Sequential:
    """h_mean_s / h_scale_s: 3x3, sub-pixel x2, 3x3, sub-pixel x2, 3x3, GELU between; 6 widths, N_z ... M."""
    w = widths
    return nn.Sequential(
        conv3x3(w[0], w[1]),
        nn.GELU(),
        subpel_conv3x3(w[1], w[2], 2),
        nn.GELU(),
        conv3x3(w[2], w[3]),
        nn.GELU(),
        subpel_conv3x3(w[3], w[4], 2),
        nn.GELU(),
        conv3x3(w[4], w[5]),
    )


def slice_net(in_channels: int, hidden: Sequence[int], out_channels: int) -> nn.Sequential:
    """A per-slice mean / scale / LRP net: 3x3 convs through ``hidden`` widths, GELU between."""
    widths = [in_channels, *hidden, out_channels]
    layers: List[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(conv(widths[i], widths[i + 1], kernel_size=3, stride=1))
        if i < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


# Names other families imported before these helpers were public.
_hyper_analysis, _hyper_synthesis, _slice_net = hyper_analysis, hyper_synthesis, slice_net


class ChannelConditionalCodec(LearnedImageCodec):
    """Hyperprior with separate mean/scale synthesis + channel-slice conditioning + LRP (see module docstring).

    Subclasses set ``g_a`` and ``g_s`` (the heavy transforms) and the class attributes ``pad_multiple``,
    ``latent_stride``, ``hyper_stride``. Everything here is the entropy-parameter path the base class copies to
    float64 for ``code_latent``.
    """

    hyper_stride = 64

    def __init__(self, cfg: ChannelConditionalConfig):
        super().__init__()
        self.entropy_cfg = cfg
        self.latent_channels = cfg.latent_channels
        self.hyper_channels = cfg.hyper_channels
        self.num_slices = cfg.num_slices
        self.max_support_slices = cfg.max_support_slices
        m, c = cfg.latent_channels, cfg.slice_channels
        k = cfg.max_support_slices
        self.h_a = hyper_analysis(cfg.hyper_analysis_widths)
        self.h_mean_s = hyper_synthesis(cfg.hyper_synthesis_widths)
        self.h_scale_s = hyper_synthesis(cfg.hyper_synthesis_widths)
        self.cc_mean_transforms = nn.ModuleList(
            slice_net(m + c * min(i, k), cfg.slice_hidden, c) for i in range(cfg.num_slices)
        )
        self.cc_scale_transforms = nn.ModuleList(
            slice_net(m + c * min(i, k), cfg.slice_hidden, c) for i in range(cfg.num_slices)
        )
        self.lrp_transforms = nn.ModuleList(
            slice_net(m + c * min(i + 1, k + 1), cfg.slice_hidden, c) for i in range(cfg.num_slices)
        )
        self.entropy_bottleneck, self.gaussian_conditional = make_entropy_models(cfg.hyper_channels)

    # -- one slice step, shared by training and coding so both compute the same function -----------------------------
    def _hyper_params(self, z_hat: Tensor, h: int, w: int) -> Tuple[Tensor, Tensor]:
        return self.h_mean_s(z_hat)[..., :h, :w], self.h_scale_s(z_hat)[..., :h, :w]

    def _slice_params(
        self, i: int, latent_means: Tensor, latent_scales: Tensor, decoded: List[Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """(mean support, μ_i, σ_i) of slice ``i`` from the hyperprior and the first decoded slices."""
        support = decoded[: self.max_support_slices]
        mean_support = torch.cat([latent_means, *support], dim=1)
        mu = self.cc_mean_transforms[i](mean_support)
        scale = self.cc_scale_transforms[i](torch.cat([latent_scales, *support], dim=1))
        return mean_support, mu, scale

    def _residual_prediction(self, i: int, mean_support: Tensor, y_hat_slice: Tensor) -> Tensor:
        return 0.5 * torch.tanh(self.lrp_transforms[i](torch.cat([mean_support, y_hat_slice], dim=1)))

    # -- training -----------------------------------------------------------------------------------------------------
    def rate_forward(self, y: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Training/eval pass of the entropy model: ``(y_hat, {"y": y_likelihoods, "z": z_likelihoods})``.

        Straight-through rounding of z around the bottleneck medians and of each slice around its mean (as in the
        reference); in eval mode ``y_hat`` is what :meth:`code_latent` decodes, up to float32 vs float64.
        """
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians()
        z_hat = quantize_ste(z - medians) + medians
        latent_means, latent_scales = self._hyper_params(z_hat, y.shape[2], y.shape[3])
        decoded: List[Tensor] = []
        likelihoods: List[Tensor] = []
        for i, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            mean_support, mu, scale = self._slice_params(i, latent_means, latent_scales, decoded)
            _, slice_likelihoods = self.gaussian_conditional(y_slice, scale, mu)
            likelihoods.append(slice_likelihoods)
            y_hat_slice = quantize_ste(y_slice - mu) + mu
            decoded.append(y_hat_slice + self._residual_prediction(i, mean_support, y_hat_slice))
        return torch.cat(decoded, dim=1), likelihoods_dict(torch.cat(likelihoods, dim=1), z_likelihoods)

    # -- real coding --------------------------------------------------------------------------------------------------
    def code_latent(
        self, y: Optional[Tensor], z_hat: Tensor, coder: GaussianSymbolCoder, y_shape: Shape, banded: bool = False
    ) -> Tensor:
        """Code the slices in order 0 .. S-1, each over its full spatial extent at once (see module docstring)."""
        if banded:
            raise ValueError("this architecture has no banded hyper layout")
        _, h, w = y_shape
        latent_means, latent_scales = self._hyper_params(z_hat, h, w)
        y_slices = y.to(z_hat.dtype).chunk(self.num_slices, dim=1) if y is not None else (None,) * self.num_slices
        decoded: List[Tensor] = []
        for i, y_slice in enumerate(y_slices):
            mean_support, mu, scale = self._slice_params(i, latent_means, latent_scales, decoded)
            y_hat_slice = coder.code(scale, mu, y_slice)
            decoded.append(y_hat_slice + self._residual_prediction(i, mean_support, y_hat_slice))
        return torch.cat(decoded, dim=1)


# -- STF ---------------------------------------------------------------------------------------------------------------
def _drop_path_rates(depths: Sequence[int], rate: float) -> List[float]:
    """Stochastic-depth rate of every block, rising linearly from 0 to ``rate`` (Swin / STF reference)."""
    return torch.linspace(0, rate, sum(depths)).tolist()


class SwinAnalysis(nn.Module):
    """STF encoder: PatchEmbed (k = s = patch, LayerNorm), then Swin stages joined by PatchMerging.

    ``(B, 3, H, W)`` -> ``(B, M, H/16, W/16)``.
    """

    def __init__(self, cfg: STFConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, cfg.embed_dim, norm_layer=nn.LayerNorm)
        rates = _drop_path_rates(cfg.depths, cfg.drop_path_rate)
        stages = len(cfg.depths)
        self.layers = nn.ModuleList(
            BasicLayer(
                dim=cfg.embed_dim * 2**i,
                depth=cfg.depths[i],
                num_heads=cfg.num_heads[i],
                window_size=cfg.window_size,
                mlp_ratio=cfg.mlp_ratio,
                drop_path=rates[sum(cfg.depths[:i]) : sum(cfg.depths[: i + 1])],
                resample=PatchMerging if i < stages - 1 else None,
            )
            for i in range(stages)
        )

    def forward(self, x: Tensor) -> Tensor:
        tokens, h, w = map_to_tokens(self.patch_embed(x))
        for layer in self.layers:
            tokens, h, w = layer(tokens, h, w)
        return tokens_to_map(tokens, h, w)


class SwinSynthesis(nn.Module):
    """STF decoder: mirrored Swin stages joined by PatchSplit, then conv, PixelShuffle(patch), conv3x3 to RGB."""

    def __init__(self, cfg: STFConfig):
        super().__init__()
        stages = len(cfg.depths)
        depths, heads = cfg.depths[::-1], cfg.num_heads[::-1]
        # Reference detail: the decoder indexes the encoder's stochastic-depth list with its reversed depths.
        rates = _drop_path_rates(cfg.depths, cfg.drop_path_rate)
        self.syn_layers = nn.ModuleList(
            BasicLayer(
                dim=cfg.embed_dim * 2 ** (stages - 1 - i),
                depth=depths[i],
                num_heads=heads[i],
                window_size=cfg.window_size,
                mlp_ratio=cfg.mlp_ratio,
                drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                resample=PatchSplit if i < stages - 1 else None,
            )
            for i in range(stages)
        )
        e, p, k = cfg.embed_dim, cfg.patch_size, cfg.head_kernel
        self.end_conv = nn.Sequential(
            nn.Conv2d(e, e * p**2, kernel_size=k, padding=k // 2),
            nn.PixelShuffle(p),
            nn.Conv2d(e, 3, kernel_size=3, padding=1),
        )

    def forward(self, y_hat: Tensor) -> Tensor:
        tokens, h, w = map_to_tokens(y_hat)
        for layer in self.syn_layers:
            tokens, h, w = layer(tokens, h, w)
        return self.end_conv(tokens_to_map(tokens, h, w))


class STF(ChannelConditionalCodec):
    """Symmetrical TransFormer (Zou et al., CVPR 2022, Sec. 3.3 / Fig. 4)."""

    def __init__(self, cfg: STFConfig = STFConfig()):
        super().__init__(cfg.entropy)
        self.cfg = cfg
        self.latent_stride = cfg.latent_stride
        self.hyper_stride = cfg.latent_stride * 4
        window_demand = cfg.latent_stride * cfg.window_size  # the coarsest stage is tiled by windows
        self.pad_multiple = math.lcm(window_demand, self.hyper_stride)
        self.g_a = SwinAnalysis(cfg)
        self.g_s = SwinSynthesis(cfg)


# -- WACNN -------------------------------------------------------------------------------------------------------------
class WACNN(ChannelConditionalCodec):
    """CNN with window-based attention modules (Zou et al., CVPR 2022, Sec. 3.2 / Fig. 3)."""

    latent_stride = 16

    def __init__(self, cfg: WACNNConfig = WACNNConfig()):
        super().__init__(cfg.entropy)
        self.cfg = cfg
        n, m, heads = cfg.N, cfg.M, cfg.num_heads
        (wn, sn), (wm, sm) = cfg.window_n, cfg.window_m
        self.hyper_stride = 64
        self.pad_multiple = math.lcm(4 * wn, 16 * wm, self.hyper_stride)
        self.g_a = nn.Sequential(
            conv(3, n, kernel_size=5, stride=2),
            GDN(n),
            conv(n, n, kernel_size=5, stride=2),
            GDN(n),
            WindowAttentionModule(n, heads, wn, sn),
            conv(n, n, kernel_size=5, stride=2),
            GDN(n),
            conv(n, m, kernel_size=5, stride=2),
            WindowAttentionModule(m, heads, wm, sm),
        )
        self.g_s = nn.Sequential(
            WindowAttentionModule(m, heads, wm, sm),
            deconv(m, n, kernel_size=5, stride=2),
            GDN(n, inverse=True),
            deconv(n, n, kernel_size=5, stride=2),
            GDN(n, inverse=True),
            WindowAttentionModule(n, heads, wn, sn),
            deconv(n, n, kernel_size=5, stride=2),
            GDN(n, inverse=True),
            deconv(n, 3, kernel_size=5, stride=2),
        )


# -- presets -----------------------------------------------------------------------------------------------------------
#: CPU-sized entropy model shared by the small presets: M=128 in 4 slices of 32 (support 2), N_z=64, hyper
#: transforms stepped linearly between 128 and 64 (as the paper steps 384 -> 192), per-slice nets with hidden
#: widths (48, 32). About 3 GMAC per 768x512 image in float64. The shipped wacnn-small weights were trained
#: with exactly this configuration: changing it means retraining.
SMALL_ENTROPY = ChannelConditionalConfig(
    latent_channels=128,
    hyper_channels=64,
    num_slices=4,
    max_support_slices=2,
    hyper_analysis_widths=(128, 128, 112, 96, 80, 64),
    hyper_synthesis_widths=(64, 80, 96, 112, 128, 128),
    slice_hidden=(48, 32),
)

STF_PAPER = STFConfig()
STF_SMALL = STFConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), head_kernel=3, entropy=SMALL_ENTROPY)
STF_TINY = STFConfig(
    embed_dim=4,
    depths=(2, 2, 2, 1),
    num_heads=(1, 1, 2, 2),
    head_kernel=3,
    drop_path_rate=0.0,
    entropy=ChannelConditionalConfig(
        latent_channels=32,
        hyper_channels=8,
        num_slices=2,
        max_support_slices=1,
        hyper_analysis_widths=(32, 16, 16, 8, 8, 8),
        hyper_synthesis_widths=(8, 8, 8, 16, 16, 32),
        slice_hidden=(8,),
    ),
)

WACNN_PAPER = WACNNConfig()
WACNN_SMALL = WACNNConfig(N=64, M=128, num_heads=4, entropy=SMALL_ENTROPY)
WACNN_TINY = WACNNConfig(
    N=8,
    M=16,
    num_heads=2,
    entropy=ChannelConditionalConfig(
        latent_channels=16,
        hyper_channels=8,
        num_slices=2,
        max_support_slices=1,
        hyper_analysis_widths=(16, 16, 12, 12, 8, 8),
        hyper_synthesis_widths=(8, 8, 12, 12, 16, 16),
        slice_hidden=(8,),
    ),
)

_SMALL_ENTROPY_DEPARTURES = (
    "entropy model: M=128 in 4 slices of 32 channels, each seeing at most the first 2 decoded slices (paper: "
    "{paper_slices}); hyperprior N_z=64 instead of 192 with hyper analysis widths 128-128-112-96-80-64 and "
    "hyper synthesis 64-80-96-112-128-128 (paper: {paper_hyper}); per-slice mean/scale/LRP nets of three 3x3 convs "
    "with hidden widths (48, 32) instead of five with (224, 176, 128, 64)"
)

register(
    Preset(
        arch="stf",
        name="paper",
        lambdas=STF_LAMBDAS,
        build=lambda q: STF(STF_PAPER),
        description="STF as published (Zou et al. CVPR 2022): Swin 48/(2,2,6,2), window 4, M=384 in 12 slices",
        is_paper=True,
    )
)
register(
    Preset(
        arch="stf",
        name="small",
        lambdas=STF_SMALL_LAMBDAS,
        build=lambda q: STF(STF_SMALL),
        description="CPU-sized STF",
        departures=(
            STF_SMALL_LADDER_DEPARTURE
            + "Swin transforms: embed_dim 16 instead of 48 (stage widths 16-32-64-128, so M = 128 instead of 384), "
            "depths (2,2,2,2) instead of (2,2,6,2), heads (1,2,4,8) instead of (3,6,12,24) (head dim 16 as in the "
            "paper), decoder head conv 3x3 instead of 5x5; "
            + _SMALL_ENTROPY_DEPARTURES.format(
                paper_slices="12 slices of 32, support 6",
                paper_hyper="384-384-336-288-240-192 / 192-240-288-336-384-384",
            )
        ),
    )
)
register(
    Preset(
        arch="stf",
        name="tiny",
        lambdas=STF_LAMBDAS,
        build=lambda q: STF(STF_TINY),
        description="structural-test STF (random init only)",
        departures=(
            "random-init structural tests only: embed_dim 4, depths (2,2,2,1), heads (1,1,2,2), M=32 in 2 slices, "
            "N_z=8, slice nets with one hidden layer of 8"
        ),
    )
)
register(
    Preset(
        arch="wacnn",
        name="paper",
        lambdas=STF_LAMBDAS,
        build=lambda q: WACNN(WACNN_PAPER),
        description="WACNN as published (Zou et al. CVPR 2022): N=192, M=320 in 10 slices, window attention",
        is_paper=True,
    )
)
register(
    Preset(
        arch="wacnn",
        name="small",
        lambdas=STF_SMALL_LAMBDAS,
        build=lambda q: WACNN(WACNN_SMALL),
        description="CPU-sized WACNN",
        departures=(
            "transforms: N=64, M=128 instead of 192/320, 4 attention heads instead of 8 (windows and shifts as in "
            "the paper); "
            + STF_SMALL_LADDER_DEPARTURE
            + _SMALL_ENTROPY_DEPARTURES.format(
                paper_slices="10 slices of 32, support 5",
                paper_hyper="320-320-288-256-224-192 / 192-192-224-256-288-320",
            )
        ),
    )
)
register(
    Preset(
        arch="wacnn",
        name="tiny",
        lambdas=STF_LAMBDAS,
        build=lambda q: WACNN(WACNN_TINY),
        description="structural-test WACNN (random init only)",
        departures=(
            "random-init structural tests only: N=8, M=16 in 2 slices, 2 heads, N_z=8, slice nets with one hidden "
            "layer of 8"
        ),
    )
)
