"""Variable-rate coding: one set of weights for a fine quality knob, by per-channel latent gains (QVRF-style).

Tong, Wu, Zhou, Fu, Wu, Sheng, "QVRF: A Quantization-error-aware Variable Rate Framework for Learned Image
Compression", ICIP 2023: a model trained at one λ covers a range of rates if the latent is quantised on a finer or
coarser grid, ``round((y - μ)·a)``, with the entropy model's scale measured on the same grid (``σ·a``) and the
reconstruction divided back (``ŷ = symbol / a + μ``). A larger ``a`` means a finer step: more bits, less distortion.
Fine-tuning with λ drawn per crop teaches the transforms to work across the range. Here (the issue's design):

* the knob is an **integer code** ``1 .. levels`` (the stream header's quality byte, so a stream names its rate
  point exactly and decoding stays bit-exact); code ``k`` sits at position ``(k - 1) / (levels - 1)`` of a
  log-λ scale from ``lambda_low`` (position 0) to ``lambda_high`` (position 1) (:class:`RateKnob`), or, for
  weights that say so, evenly over another span of the positions training covered (:attr:`RateKnob.code_span`);
* ``a`` is **per latent channel** and a smooth function of the position: learned log-gains at ``anchors`` points
  spaced evenly over the training range, linearly interpolated between them (:class:`KnobTable`), initialised at
  ``sqrt(λ / λ_ref)`` (an MSE-optimal uniform quantiser's step scales as ``1 / sqrt(λ)``); learned, because
  channels that carry texture need their steps to shrink faster than flat ones as λ grows;
* the entropy-parameter net gets the knob as a learned bias on its first layer's output, interpolated the same
  way and **zero-initialised**, so a model fine-tuned from a per-λ file starts exactly where that file was;
* the hyper-latent z keeps its fixed step (no per-request CDF tables) and every other module is unchanged.

Data flow (CAM context models, :mod:`model_store.entropy.causal_context`)::

        knob k ──KnobTable──▶ gain a (M,), bias b (E1,)
        y ──h_a──▶ z ──▶ ẑ ──h_s──▶ ψ ─┐
        ŷ<t ──CAM──────────────────────┴─▶ params(+ b) ──▶ σ, μ
        y ──▶ symbol = round((y - μ)·a) ──rANS(σ·a)──▶ ŷ = symbol / a + μ ──▶ g_s

Training (``model_store.train`` on a preset with a ``rate_knob``) draws each crop's position uniformly on the
log-λ scale, ``train_margin`` of the span past both ends, so the served ends are not the edge of what the model saw
(a version may spread its codes into that margin: erstc-small-vr from v6 serves code 1 at the bottom edge, -0.1,
for ~0.1 bpp; training reports that point as ``served_bottom`` beside its usual codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["KnobPoint", "KnobTable", "RateKnob", "SynthesisModulation", "anchor_weights"]


@dataclass(frozen=True)
class RateKnob:
    """The quality scale of a variable-rate model: codes ``1 .. levels``, log-spaced in λ."""

    #: λ of ``λ·255²·MSE + bpp`` at code 1 and at the top code: the per-λ ladder's ends (erstc-small q1 and q10)
    lambda_low: float = 0.0016
    lambda_high: float = 0.36
    #: Distinct codes. 255 is what the header's quality byte holds; over a 225x λ range a step moves λ by ~2 %, the
    #: rate by ~1 %: fine enough for rate control to land within 3 % of a byte budget with one real encode.
    levels: int = 255
    #: Learned gain vectors (and parameter-net biases) spread evenly over the training range.
    anchors: int = 12
    #: How far past each end of the served range training draws λ, as a fraction of the log-λ span.
    train_margin: float = 0.1
    #: λ of the per-λ weights a fine-tune starts from: the gains start at ``sqrt(λ / reference_lambda)``.
    reference_lambda: float = 0.03
    #: Codes validation scores (low to high rate); ``model_store.train`` picks best.pt by their geometric mean loss.
    validation_codes: tuple = (1, 64, 128, 191, 255)
    #: λ of the code a caller who names no quality gets (:attr:`default_code`): the per-λ ladder's default
    #: quality's λ, so the variable-rate model's default makes about the stream its ladder's default made; None:
    #: the middle code.
    default_lambda: Optional[float] = None
    #: Positions of code 1 and of the top code on the scale; the codes in between are spread evenly. (0, 1) puts
    #: them on ``lambda_low .. lambda_high``, the scale training validates on. Why it can differ: training draws
    #: λ ``train_margin`` past both ends, and the anchors cover that whole range, so a weights version may serve
    #: part of the margin (erstc-small-vr from v6 puts code 1 at -0.1: ~0.1 bpp, where position 0 made 0.14). The
    #: span is a property of the weights file (``registry.export_state`` stores it, its sha256 covers it), so
    #: a stream's code always means what it meant to the encoder.
    code_span: Tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not (0 < self.lambda_low < self.lambda_high and 2 <= self.levels <= 255 and self.anchors >= 2):
            raise ValueError(f"invalid rate knob {self}")
        if any(not 1 <= c <= self.levels for c in self.validation_codes):
            raise ValueError(f"validation codes {self.validation_codes} outside 1..{self.levels}")
        low, high = self.code_span
        if not -self.train_margin <= low < high <= 1.0 + self.train_margin:
            raise ValueError(
                f"code span {self.code_span} is not an increasing span inside the trained positions "
                f"[{-self.train_margin}, {1.0 + self.train_margin}]"
            )

    def with_code_span(self, span) -> "RateKnob":
        """This scale with its codes over ``span`` (two positions; see :attr:`code_span`)."""
        return replace(self, code_span=(float(span[0]), float(span[1])))

    @property
    def codes(self) -> range:
        return range(1, self.levels + 1)

    def has_code(self, code) -> bool:
        """Whether ``code`` is one of this scale's codes (an integer in ``1..levels``)."""
        return not isinstance(code, bool) and int(code) == code and 1 <= int(code) <= self.levels

    def check_code(self, code: int) -> int:
        """``code`` as an int, or ValueError if it is not one of this scale's codes."""
        if not self.has_code(code):
            raise ValueError(f"quality knob {code!r} is not an integer in 1..{self.levels}")
        return int(code)

    def position(self, code: int) -> float:
        """Where ``code`` sits on the scale: :attr:`code_span` ``[0]`` at code 1 (0.0 by default), ``[1]`` at the
        top code (1.0)."""
        low, high = self.code_span
        return low + (self.check_code(code) - 1) / (self.levels - 1) * (high - low)

    def lambda_at(self, position):
        """λ at a position (a float or a tensor of them) on the log-λ scale."""
        log_span = math.log(self.lambda_high / self.lambda_low)
        if isinstance(position, Tensor):
            return self.lambda_low * torch.exp(position * log_span)
        return self.lambda_low * math.exp(position * log_span)

    def code_lambda(self, code: int) -> float:
        return self.lambda_at(self.position(code))

    def nearest_code(self, lmbda: float) -> int:
        """The code whose λ is closest to ``lmbda`` on the log scale (clamped to the scale's ends)."""
        position = math.log(lmbda / self.lambda_low) / math.log(self.lambda_high / self.lambda_low)
        low, high = self.code_span
        return min(self.levels, max(1, round(1 + (position - low) / (high - low) * (self.levels - 1))))

    @property
    def default_code(self) -> int:
        """The code used when a request names none (see :attr:`default_lambda`)."""
        if self.default_lambda is None:
            return (self.levels + 1) // 2
        return self.nearest_code(self.default_lambda)

    def anchor_positions(self) -> List[float]:
        """Positions of the learned anchors: evenly over ``[-train_margin, 1 + train_margin]``."""
        low, high = -self.train_margin, 1.0 + self.train_margin
        return [low + (high - low) * i / (self.anchors - 1) for i in range(self.anchors)]

    def balance_weights(self, lambdas: Tensor, exponent: float) -> Tensor:
        """Per-crop loss weights ``(reference_lambda / λ)^exponent`` (``TrainConfig.rate_balance``): 1 at the
        reference λ, larger below it, so low-rate crops are not drowned out by the larger high-rate losses."""
        return (self.reference_lambda / lambdas) ** exponent

    def sample_positions(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` training positions, uniform on the log-λ scale over the training range."""
        low, high = -self.train_margin, 1.0 + self.train_margin
        return low + (high - low) * torch.rand(n, generator=generator)


def anchor_weights(knob: RateKnob, positions: Tensor, like: Tensor) -> Tensor:
    """``(B, A)`` weights that interpolate per-anchor values piecewise linearly at knob positions ``(B,)`` (two
    non-zero per row, summing to 1; clamped at the ends), in ``like``'s dtype and device. One rule for every
    knob-conditioned table, so the latent gains and the synthesis modulation move together."""
    anchors = torch.tensor(knob.anchor_positions(), dtype=like.dtype, device=like.device)
    spacing = anchors[1] - anchors[0]
    u = ((positions.to(anchors) - anchors[0]) / spacing).clamp(0, knob.anchors - 1)
    low = u.floor().clamp(max=knob.anchors - 2)
    frac = (u - low).unsqueeze(1)
    columns = torch.arange(knob.anchors, device=u.device)
    low = low.long().unsqueeze(1)
    return (columns == low) * (1 - frac) + (columns == low + 1) * frac


class KnobPoint(NamedTuple):
    """What one knob position does to the model: per-channel latent gains and the parameter net's extra bias."""

    gain: Tensor  # (..., M), > 0
    bias: Tensor  # (..., E1)


class KnobTable(nn.Module):
    """Learned per-anchor log-gains ``(A, M)`` and parameter-net biases ``(A, E1)``, interpolated piecewise linearly
    in the knob position (module docstring). Everything is in the table's own dtype, so the canonical float64 copy
    computes a code's gains the same way on every machine."""

    def __init__(self, knob: RateKnob, latent_channels: int, bias_channels: int):
        super().__init__()
        self.knob = knob
        anchors = torch.tensor([knob.lambda_at(p) for p in knob.anchor_positions()], dtype=torch.float64)
        log_gain = 0.5 * torch.log(anchors / knob.reference_lambda)
        self.log_gain = nn.Parameter(log_gain[:, None].repeat(1, latent_channels).float())
        self.param_bias = nn.Parameter(torch.zeros(knob.anchors, bias_channels))

    def weights(self, positions: Tensor) -> Tensor:
        """``(B, A)`` interpolation weights (two non-zero per row, summing to 1; clamped at the ends)."""
        return anchor_weights(self.knob, positions, self.log_gain)

    def forward(self, positions: Tensor) -> KnobPoint:
        """Gains ``(B, M)`` and biases ``(B, E1)`` at knob positions ``(B,)``."""
        w = self.weights(positions)
        return KnobPoint(torch.exp(w @ self.log_gain), w @ self.param_bias)

    @torch.no_grad()
    def at_code(self, code: int) -> KnobPoint:
        """The gains ``(M,)`` and bias ``(E1,)`` of one header code (the coding path)."""
        position = torch.tensor([self.knob.position(code)], dtype=torch.float64)
        gain, bias = self(position)
        return KnobPoint(gain[0], bias[0])


class SynthesisModulation(nn.Module):
    """The decoder side of the knob: a per-channel scale and shift on g_s's features after chosen layers,
    interpolated over the knob's anchors like :class:`KnobTable`'s gains.

    Why: the gains put the latent on a finer or coarser grid and divide it back, so g_s gets ŷ on one scale at
    every rate, but with quantisation error whose size depends on the knob, and it cannot tell which: one synthesis
    has to reconstruct a code-1 latent (steps 4.3x the reference λ's, at the gains' initial values) and a code-255
    one (3.5x finer) alike. The per-λ files each have a g_s of their own. Conditioning g_s on the knob (as
    variable-rate codecs with conditional transforms do) lets its features adapt per rate for a few thousand
    parameters and three multiply-adds per pixel of a feature map; g_a stays knob-free, so rate control still
    analyses once per image.
    Both tables start at zero (scale 1, shift 0: exactly the unmodulated g_s), so a fine-tune from a file without
    them starts where that file was, and a file without them decodes as before (``registry.load_state``).
    """

    def __init__(self, knob: RateKnob, channels: Dict[int, int]):
        """``channels``: g_s layer index -> channels of that layer's output, the features modulated after it."""
        super().__init__()
        if not channels:
            raise ValueError("synthesis modulation needs at least one g_s layer")
        self.knob = knob
        self.layers = tuple(sorted(channels))
        self.widths = [channels[i] for i in self.layers]
        self.log_scale = nn.Parameter(torch.zeros(knob.anchors, sum(self.widths)))
        self.shift = nn.Parameter(torch.zeros(knob.anchors, sum(self.widths)))

    def forward(self, positions: Tensor) -> Dict[int, Tuple[Tensor, Tensor]]:
        """g_s layer index -> ``(scale, shift)``, each ``(B, C, 1, 1)``, at knob positions ``(B,)``."""
        w = anchor_weights(self.knob, positions, self.log_scale)
        scales = torch.exp(w @ self.log_scale).split(self.widths, dim=1)
        shifts = (w @ self.shift).split(self.widths, dim=1)
        return {i: (s[:, :, None, None], b[:, :, None, None]) for i, s, b in zip(self.layers, scales, shifts)}
