"""Coding a latent under a causal-attention (CAM) context: the loop shared by TIC, TIC+ and ERSTC.

Both families predict (σ, μ) at latent position (i, j) as ``entropy_parameters(concat(ψ(i, j), CAM(ŷ causal)))``
with ``ψ`` the hyper synthesis and ``entropy_parameters`` a stack of 1x1 convs. This mixin turns that into a
coding loop over any causal schedule (the wavefront ``t = 3i + j`` by default; raster order for the slow
reference used by tests and benchmarks). It needs ``self.h_s``, ``self.context_prediction``
(:class:`~model_store.layers.cam.CausalAttentionModule`) and ``self.entropy_parameters`` (1x1 convs and
activations).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from compressai.ops import quantize_ste
from torch import Tensor, nn

from model_store.architectures.base import LatentPayload, Shape, likelihoods_dict
from model_store.architectures.variable_rate import KnobTable, RateKnob
from model_store.entropy.coding import (
    CANONICAL_DTYPE,
    GaussianSymbolCoder,
    GaussianSymbolDecoder,
    GaussianSymbolEncoder,
)
from model_store.entropy.hyper_bands import HyperTerm, band_grid, needs_bands
from model_store.entropy.integer_coding import code_latents_integer
from model_store.layers.cam import (
    CausalContext,
    batch_invariant_linear,
    batch_invariant_rowwise,
    live_rows,
    raster_schedule,
    wavefront_schedule,
)

Schedule = Callable[[int, int], Sequence[Tensor]]

__all__ = [
    "CausalContextCoding",
    "crop_serial_decode",
    "crop_serial_encode",
    "raster_serial_decode",
    "raster_serial_encode",
    "wavefront_schedule",
]


class CausalContextCoding:
    """Mixin: the training rate path and ``code_latent`` for hyperprior + CAM context models (module docstring).

    Training quantisation (``training_quantizer``, set by ``model_store.train --quantizer``):

    * ``"noise"`` (the reference code's, and the default): the latent fed to the context model and to g_s is
      ``y + U(-½, ½)`` in training and ``round(y)`` in eval.
    * ``"mixed"`` (Minnen & Singh 2020, as ELIC and later codecs train): the rate term keeps the noise proxy, but
      g_s gets ``round(y - μ) + μ`` with a straight-through gradient, which is exactly what the decoder hands it,
      and the context model gets ``round(y)`` (straight-through; μ is not known before the context runs). The
      synthesis then trains on the values it will see instead of noisy ones.

    Either way the likelihood term is ``GaussianConditional(y, σ, μ)`` with its own noise in training.
    """

    training_quantizers: Tuple[str, ...] = ("noise", "mixed")

    def add_rate_knob(self, knob: RateKnob):
        """Make this model variable-rate (:mod:`model_store.architectures.variable_rate`): a :class:`KnobTable`
        whose biases join the first entropy-parameter conv's output. Returns the model."""
        self.knob_table = KnobTable(knob, self.latent_channels, self.entropy_parameters[0].out_channels)
        return self

    def entropy_params_map(
        self, hyper: Tensor, y_hat: Tensor, knob_bias: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor]:
        """(scales, means) of every latent position at once from ``h_s(ẑ)`` and a decoded latent (masked CAM);
        ``knob_bias`` ``(B, E1)``: a variable-rate model's bias on the first parameter conv's output."""
        features = torch.cat([hyper, self.context_prediction(y_hat)], dim=1)
        if knob_bias is None:
            params = self.entropy_parameters(features)
        else:
            first, *rest = self.entropy_parameters
            params = first(features) + knob_bias[:, :, None, None]
            for layer in rest:
                params = layer(params)
        scales, means = params.chunk(2, dim=1)
        return scales, means

    def rate_forward(self, y: Tensor, knob: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The training rate path; ``knob`` ``(B,)``: a variable-rate model's knob positions, one per image, whose
        gains ``a`` put the latent on the grid it is coded on (``round((y - μ)·a)``, ``σ·a``; module docstring of
        :mod:`~model_store.architectures.variable_rate`)."""
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        hyper = self.h_s(z_hat)
        mixed = self.training and self.training_quantizer == "mixed"
        gain, knob_bias = (None, None) if knob is None else self.knob_table(knob)
        if gain is not None:
            gain = gain[:, :, None, None]

        def to_grid(t: Tensor) -> Tensor:
            return t if gain is None else t * gain

        def from_grid(t: Tensor) -> Tensor:
            return t if gain is None else t / gain

        if mixed:
            context_input = from_grid(quantize_ste(to_grid(y)))
        else:
            mode = "noise" if self.training else "dequantize"
            context_input = from_grid(self.gaussian_conditional.quantize(to_grid(y), mode))
        scales, means = self.entropy_params_map(hyper, context_input, knob_bias)
        _, y_likelihoods = self.gaussian_conditional(to_grid(y), to_grid(scales), means=to_grid(means))
        y_hat = from_grid(quantize_ste(to_grid(y - means))) + means if mixed else context_input
        return y_hat, likelihoods_dict(y_likelihoods, z_likelihoods)

    @torch.no_grad()
    def knob_probe(self, y: Tensor) -> "KnobProbe":
        """A variable-rate model's cheap per-code estimates for one latent (rate control, ``model_store.rate_control``)."""
        if self.rate_knob is None:
            raise ValueError(f"{type(self).__name__} is a per-λ model: it has no knob to probe")
        return KnobProbe(self, y)

    @property
    def batches_entropy_coding(self) -> bool:
        """With an integer entropy path a batch shares every wavefront step (:func:`code_latents_integer`)."""
        return self.integer_entropy is not None

    def code_latents(
        self,
        ys: Optional[Sequence[Tensor]],
        z_hats: Sequence[Tensor],
        coders: Sequence[GaussianSymbolCoder],
        y_shape: Shape,
        banded: bool = False,
        knobs: Optional[Sequence[Optional[int]]] = None,
    ) -> List[Tensor]:
        if self.integer_entropy is None:
            return super().code_latents(ys, z_hats, coders, y_shape, banded, knobs)
        return code_latents_integer(self.integer_entropy, self, ys, z_hats, coders, y_shape, banded, knobs)

    def code_latent(
        self,
        y: Optional[Tensor],
        z_hat: Tensor,
        coder: GaussianSymbolCoder,
        y_shape: Shape,
        banded: bool = False,
        knob: Optional[int] = None,
    ) -> Tensor:
        """Code ŷ one wavefront (all positions with equal ``3i + j``) at a time: ``3H + W - 3`` coder calls (on
        the integer path when the model has one: :meth:`code_latents` with one image)."""
        if self.integer_entropy is not None:
            knobs = None if knob is None else [knob]
            return self.code_latents(None if y is None else [y], [z_hat], [coder], y_shape, banded, knobs)[0]
        return self.code_latent_in_order(y, z_hat, coder, y_shape, wavefront_schedule, banded=banded, knob=knob)

    def hyper_bands_needed(self, z_height: int, z_width: int) -> bool:
        """Whether a hyper-latent of this size codes differently in the banded layout (:mod:`..hyper_bands`)."""
        return needs_bands(self, z_height, z_width)

    @property
    def exact_latents(self) -> bool:
        return self.integer_entropy is not None

    @torch.no_grad()
    def code_latent_in_order(
        self,
        y: Optional[Tensor],
        z_hat: Tensor,
        coder: GaussianSymbolCoder,
        y_shape: Shape,
        schedule: Schedule,
        banded: bool = False,
        knob: Optional[int] = None,
    ) -> Tensor:
        """The autoregressive loop for any causal ``schedule(h, w)`` (a list of flat-position groups).

        Each group's positions must have all their causal neighbours in earlier groups. Symbols go to the coder
        group by group, position-major then channel, so encoder and decoder must use the same schedule.
        Memory is bounded by the rows a step can reach, not by the image: the hyperprior comes in bands
        (``banded``, :mod:`model_store.entropy.hyper_bands`), the CAM's features live in a ring of rows
        (:class:`~model_store.layers.cam.CausalContext`), ``y`` is read a step at a time in its own dtype and
        the reconstruction is written channel-major, so nothing of the whole latent is copied.
        ``knob``: a variable-rate model's code; its gains scale what the coder sees (``σ·a``, ``(y - μ)·a``) and
        divide what it returns, its bias joins the parameter net.
        """
        if self.integer_entropy is not None:  # this is the float64 loop; the integer one is code_latents'
            raise ValueError("the integer entropy path codes in wavefront order only")
        c, h, w = y_shape
        dtype = z_hat.dtype
        steps = schedule(h, w)
        hyper = HyperTerm(self.h_s, hyper_weight(self), z_hat, y_shape, band_grid(self) if banded else None)
        point = None if knob is None else self.knob_table.at_code(knob)
        params = PositionParams(self, hyper, None if point is None else point.bias)
        y_cols = None if y is None else y[0].flatten(1)  # (M, H*W) view, raster order
        y_hat = torch.zeros(c, h * w, dtype=dtype)
        context = CausalContext(
            self.context_prediction, h, w, dtype, live_rows(steps, w, self.context_prediction.block_len)
        )
        for positions in steps:
            scales, means = params(positions, context.context(positions, project=False))
            exact = None if y_cols is None else y_cols.index_select(1, positions).t().to(dtype)
            if point is None:
                part = coder.code(scales, means, exact)
            else:
                a = point.gain
                part = coder.code(scales * a, means * a, None if exact is None else exact * a) / a
            context.write(positions, part)
            y_hat.index_copy_(1, positions, part.t())
            hyper.release_above(int(positions.min()) // w)
        return y_hat.reshape(1, c, h, w)


#: Extra passes of the parallel context model on the previous pass's ``round((y - μ)·a) / a + μ``. The training-style
#: context ``round(y·a) / a`` put the estimates 3-12 % under the real streams at low codes on a smooth photo (where
#: the grid is coarse and μ moves the rounding); one pass: within ~2 % (8 % at code 1), two: ~0.5 % (5 %), each pass
#: one more CAM forward per probe. One keeps a probe well under a real encode (erstc-small-vr, 768x512).
PROBE_CONTEXT_PASSES = 1
#: Means of this many earlier probes are kept to warm-start the next one (memory: one latent-sized map each).
PROBE_WARM_STARTS = 4


class KnobProbe:
    """What one latent costs and looks like at any knob code, estimated without coding it.

    The hyperprior does not depend on the knob (z keeps its step), so h_a, the bottleneck and h_s run once; a probe
    only puts y on the code's grid, runs the masked CAM and the parameter net over the whole latent in parallel (the
    training path in eval mode) and sums the likelihoods: one batched pass instead of the ``3H + W`` serial float64
    wavefront steps of a real encode. The estimate differs from the coded size in the CAM's input (the real loop's
    context is causal, the probe's a fixed point of :data:`PROBE_CONTEXT_PASSES` parallel passes) and in rANS
    overhead; rate control checks the real stream anyway.

    A search probes neighbouring codes, and μ moves little from one to the next: every probe after the first starts
    from the means of the nearest code probed before (``round((y - μ')·a) / a + μ'``) and makes one CAM pass instead
    of ``1 + PROBE_CONTEXT_PASSES``. Measured on two validation photos (erstc-small-vr, codes 10-250, started from
    12 codes below): as close to the real size as two cold passes, or closer (cloud at code 10: 0.870 vs 0.843 of
    the real size; flowers: within 0.3 % either way).
    """

    def __init__(self, model, y: Tensor):
        self.model = model
        self.y = y.float()
        z = model.h_a(self.y)
        z_hat, _ = model.entropy_bottleneck(z)
        self.hyper = model.h_s(z_hat)
        # z's step does not depend on the knob: its real string, once (the encoder's h_a runs in float64 and may
        # round a value differently; the length is what matters here)
        self.z_bits = 8.0 * len(model.entropy_bottleneck.compress(z)[0])
        table = model.gaussian_conditional.scale_table
        self._table_edges = table[:-1].to(self.y)  # what the coder's index search compares against
        self._table = table.to(self.y)
        self.probes = 0
        self._means: "OrderedDict[int, Tensor]" = OrderedDict()  # code -> μ of a recent probe (warm starts)

    def _params(self, code: int) -> Tuple[Tensor, Tensor, Tensor]:
        self.probes += 1
        knob = self.model.rate_knob
        position = torch.tensor([knob.position(code)], device=self.y.device)
        gain, bias = self.model.knob_table(position)
        a = gain[:, :, None, None]
        if self._means:  # warm: the nearest probed code's μ, one pass (class docstring)
            start = self._means[min(self._means, key=lambda c: abs(c - code))]
            context_input, passes = torch.round((self.y - start) * a) / a + start, 0
        else:
            context_input, passes = torch.round(self.y * a) / a, PROBE_CONTEXT_PASSES
        scales, means = self.model.entropy_params_map(self.hyper, context_input, bias)
        for _ in range(passes):  # the context the real loop sees: ŷ = round((y - μ)·a) / a + μ
            context_input = torch.round((self.y - means) * a) / a + means
            scales, means = self.model.entropy_params_map(self.hyper, context_input, bias)
        self._means[code] = means
        while len(self._means) > PROBE_WARM_STARTS:
            self._means.popitem(last=False)
        return a, scales, means

    @torch.no_grad()
    def bits(self, code: int) -> float:
        """Estimated bits of both payloads at ``code``."""
        a, scales, means = self._params(code)
        # the coder's CDF is the scale table's entry at the index it picks (the next one up from σ·a), not σ·a:
        # that rounding alone costs real streams ~3 % over the likelihood of the exact σ
        gaussian = self.model.gaussian_conditional
        bounded = gaussian.lower_bound_scale(scales * a)
        coded_scales = self._table[torch.searchsorted(self._table_edges, bounded.contiguous(), side="left")]
        _, likelihoods = gaussian(self.y * a, coded_scales, means=means * a)
        return self.z_bits + float(-torch.log2(likelihoods).sum())

    @torch.no_grad()
    def reconstruction(self, code: int) -> Tensor:
        """Estimated ŷ at ``code`` (what g_s would see), for distortion targets."""
        a, _, means = self._params(code)
        return torch.round((self.y - means) * a) / a + means


def hyper_weight(model) -> Tensor:
    """The hyperprior (ψ) half of the first entropy-parameter conv, ``(E1, 2M)``."""
    weight = model.entropy_parameters[0].weight.flatten(1)
    return weight[:, : weight.shape[1] - model.context_prediction.proj.out_features]


class PositionParams:
    """The entropy-parameter 1x1 convs for a set of latent positions, evaluated row by row during coding.

    Two exact algebraic rewrites save per-step work (results equal the training path's to float rounding):

    * the first conv sees ``concat(ψ, φ)``; its ``ψ`` (hyperprior) half is applied up front to whole rows
      (:class:`~model_store.entropy.hyper_bands.HyperTerm`: one GEMM per map or per band, whatever the schedule),
      leaving only the context half per step;
    * the CAM's output Linear ``φ = P s + b`` is folded into that context half: ``W_φ (P s + b) = (W_φ P) s + W_φ b``.

    The per-step products are :func:`~model_store.layers.cam.batch_invariant_linear`, so a position's (σ, μ) do not
    depend on which other positions share its step.
    """

    def __init__(self, model, hyper: HyperTerm, knob_bias: Optional[Tensor] = None):
        first = model.entropy_parameters[0]
        proj = model.context_prediction.proj
        weight = first.weight.flatten(1)
        w_context = weight[:, weight.shape[1] - proj.out_features :]
        self.hyper = hyper
        self.weight = w_context @ proj.weight  # (E1, M): context half composed with the CAM projection
        self.bias = w_context @ proj.bias + first.bias
        if knob_bias is not None:  # a variable-rate model's knob joins the first conv's output
            self.bias = self.bias + knob_bias
        self.rest = list(model.entropy_parameters)[1:]

    def __call__(self, positions: Tensor, summary: Tensor) -> Tuple[Tensor, Tensor]:
        """(scales, means), each ``(P, M)``, from the CAM summaries ``(P, M)`` (before its projection)."""
        h = self.hyper.rows(positions) + batch_invariant_linear(summary, self.weight, self.bias)
        for layer in self.rest:
            if isinstance(layer, nn.Conv2d):
                h = batch_invariant_linear(h, layer.weight.flatten(1), layer.bias)
            else:
                h = batch_invariant_rowwise(layer, h)
        scales, means = h.chunk(2, dim=-1)
        return scales, means


# -- the slow serial reference (tests and benchmarks only) -------------------------------------------------------------
def raster_serial_code_latent(
    model, y: Optional[Tensor], z_hat: Tensor, coder: GaussianSymbolCoder, y_shape: Shape
) -> Tensor:
    """``code_latent`` one position at a time in raster order (the reference's compress/decompress loop)."""
    return model.code_latent_in_order(y, z_hat, coder, y_shape, lambda h, w: raster_schedule(h, w))


def raster_serial_encode(model, y: Tensor) -> LatentPayload:
    """Like ``compress_latent`` but in raster order (a different, incompatible stream; for comparisons only)."""
    return _encode_with(model, y, raster_serial_code_latent)


def raster_serial_decode(model, payload: LatentPayload) -> Tensor:
    """Decode a :func:`raster_serial_encode` payload with H·W sequential CAM evaluations."""
    return _decode_with(model, payload, raster_serial_code_latent)


def _encode_with(model, y: Tensor, code_latent) -> LatentPayload:
    y = y.to(CANONICAL_DTYPE)
    z = model.hyper_analysis(y)
    z_string = model.entropy_bottleneck.compress(z)[0]
    z_hat = model.entropy_bottleneck.decompress([z_string], z.shape[-2:])
    encoder = GaussianSymbolEncoder(model.gaussian_conditional)
    y_shape: Shape = tuple(y.shape[1:])  # type: ignore[assignment]
    code_latent(model, y, z_hat, encoder, y_shape)
    return LatentPayload(z_string, encoder.finish(), tuple(z.shape[1:]), y_shape, encoder.index_crc)  # type: ignore[arg-type]


def _decode_with(model, payload: LatentPayload, code_latent) -> Tensor:
    z_hat = model.entropy_bottleneck.decompress([payload.z_string], payload.z_shape[1:])
    decoder = GaussianSymbolDecoder(model.gaussian_conditional, payload.y_string)
    y_hat = code_latent(model, None, z_hat.to(CANONICAL_DTYPE), decoder, payload.y_shape)
    decoder.verify(payload.index_crc)
    return y_hat


# -- the reference implementation's loop (benchmarks only) ------------------------------------------------------------
@torch.no_grad()
def crop_serial_code_latent(
    model, y: Optional[Tensor], z_hat: Tensor, coder: GaussianSymbolCoder, y_shape: Shape
) -> Tensor:
    """The published TIC decoder's loop (lumingzzz/TIC ``TIC.decompress``), rewritten against our modules.

    For every latent position in raster order it runs the context model's full forward on the 5x5 crop of
    ``y_hat`` centred there, keeps the centre output, applies the entropy-parameter convs to it and the hyperprior
    at that position, and codes that one position. Nothing is cached between positions: this is the
    "raster-serial CAM loop" the wavefront is measured against (``benchmarks/cam_decode.py``). Only its coder
    calls are ours (one position per call, same rANS tables), so the comparison is about the context schedule.
    """
    c, h, w = y_shape
    block = model.context_prediction.block_len
    pad = block // 2
    hyper = model.h_s(z_hat)
    y_hat = torch.zeros(1, c, h + 2 * pad, w + 2 * pad, dtype=z_hat.dtype)
    for i in range(h):
        for j in range(w):
            crop = y_hat[:, :, i : i + block, j : j + block]
            ctx = model.context_prediction(crop)[:, :, pad : pad + 1, pad : pad + 1]
            params = model.entropy_parameters(torch.cat((hyper[:, :, i : i + 1, j : j + 1], ctx), dim=1))
            scales, means = params.reshape(2, c)
            y_ij = None if y is None else y[0, :, i, j]
            y_hat[0, :, i + pad, j + pad] = coder.code(scales, means, y_ij)
    return y_hat[:, :, pad : pad + h, pad : pad + w]


def crop_serial_encode(model, y: Tensor) -> LatentPayload:
    """Encode for :func:`crop_serial_decode` (its own stream: the reference's loop, not our wavefront)."""
    return _encode_with(model, y, crop_serial_code_latent)


def crop_serial_decode(model, payload: LatentPayload) -> Tensor:
    """Decode a :func:`crop_serial_encode` payload the way the reference implementation does."""
    return _decode_with(model, payload, crop_serial_code_latent)
