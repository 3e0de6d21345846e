"""The contract every architecture implements, and the parts of compress/decompress they all share.

A learned codec here is four transforms plus one entropy-coding loop (CompressAI's ``CompressionModel`` shape)::

        x ──g_a──▶ y ──h_a──▶ z ──[EntropyBottleneck, rANS]──▶ z_hat
                    │                                             │
                    │           code_latent(y, z_hat, coder)  ◀───┘   hyper synthesis + context + parameter
                    └──────────▶ [GaussianConditional, rANS] ──▶ y_hat ──g_s──▶ x_hat

* ``analysis`` (g_a) and ``synthesis`` (g_s) are the heavy transforms. They run batched, in float32, on any
  device; their float noise never reaches the entropy coder.
* ``hyper_analysis`` (h_a) only runs on the encoder, so its float noise does not matter either.
* ``code_latent`` is the architecture's entropy-parameter schedule (STF's channel slices, TIC's causal-attention
  wavefront, the zigzag chunk order). It is written once and driven by an encoder or a decoder
  (:mod:`model_store.entropy.coding`), on the CPU in float64, one image at a time, which makes the coder inputs
  identical on both sides whatever the batch size, thread count or device of the transforms.

``forward`` is the training pass: ``g_a``, then the architecture's :meth:`~LearnedImageCodec.rate_forward`
(additive-noise proxies or straight-through rounding, and the likelihoods of the rate term), then ``g_s``. Under
mixed precision (``torch.autocast``, bf16) only the two heavy transforms run in low precision: the rate path always
runs in float32, because a bf16 latent has a step of 0.125-0.25 at the magnitudes y takes, coarser than the
uniform noise the rate proxy adds, and bf16 scales would bend the likelihoods the model learns to minimise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.base import CompressionModel, get_scale_table
from torch import Tensor

from model_store import heap
from model_store.architectures.variable_rate import RateKnob, SynthesisModulation
from model_store.entropy import hyper_bands
from model_store.entropy.coding import (
    CANONICAL_DTYPE,
    GaussianSymbolCoder,
    GaussianSymbolDecoder,
    GaussianSymbolEncoder,
    check_codable,
)
from model_store.tiling import apply_tiled, tiles

Shape = Tuple[int, int, int]


@dataclass(frozen=True)
class LatentPayload:
    """One image's entropy-coded latents: what the container stores besides its header fields."""

    z_string: bytes
    y_string: bytes
    z_shape: Shape  # (C, H, W) of the hyper-latent
    y_shape: Shape  # (C, H, W) of the latent
    index_crc: int  # CRC32 of every scale index in coding order (see entropy.coding)
    banded_hyper: bool = False  # the hyperprior was computed in bands (container.FLAG_BANDED_HYPER)
    knob: Optional[int] = None  # a variable-rate model's knob code (the header's quality); None for per-λ models
    latent_crc: bool = False  # index_crc covers the decoded latents too (container.FLAG_LATENT_CRC)


class LearnedImageCodec(CompressionModel):
    """Base class of every architecture (see the module docstring for the data flow).

    Subclasses set ``g_a``, ``g_s``, ``h_a``, ``entropy_bottleneck`` and ``gaussian_conditional`` and implement
    :meth:`code_latent`, :meth:`rate_forward`, and the class attributes below.
    """

    #: Spatial size multiple the input must be padded to (latent stride x the coarsest window/patch demand).
    pad_multiple: int = 64
    #: Downsampling factor of g_a (the latent is H / latent_stride).
    latent_stride: int = 16
    #: Downsampling factor of g_a then h_a.
    hyper_stride: int = 64
    #: Sub-module names the encoder/decoder need besides the heavy transforms; the canonical float64 copy keeps
    #: everything except these heavy ones.
    heavy_modules: Tuple[str, ...] = ("g_a", "g_s", "synthesis_modulation")
    #: How training mode stands in for rounding. Only ``rate_forward`` reads it; an architecture lists the modes
    #: it implements in ``training_quantizers`` ("noise" is each reference's own proxy). Not part of the weights:
    #: ``model_store.train --quantizer`` sets it on the model it trains.
    training_quantizer: str = "noise"
    training_quantizers: Tuple[str, ...] = ("noise",)
    #: Smallest training crop (pixels per side) at which the entropy model's layers see the latent as they will on a
    #: photo (0: any crop). ``model_store.train`` warns below it: a net trained only on padded fragments of its
    #: window codes a full-size image badly (zigzag, whose chunk nets work per quadrant).
    min_train_crop: int = 0
    #: Precision of the integer entropy path a file exported from this model carries (its preset's
    #: ``integer_entropy``; set by ``create_model``), and the loaded path itself
    #: (:class:`~model_store.entropy.integer_coding.IntegerEntropyPath`, set by ``registry.load_state`` from a file
    #: that has one). With a path, ``code_latent`` codes on it; without, on the float64 path.
    integer_precision = None
    integer_entropy = None

    latent_channels: int
    hyper_channels: int

    def __init__(self) -> None:
        super().__init__()

    # -- transforms ---------------------------------------------------------------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def synthesis(self, y_hat: Tensor, knob=None) -> Tensor:
        """g_s; ``knob`` (a variable-rate model's code, codes per image, or positions ``(B,)``) conditions it where
        the model has a :class:`~model_store.architectures.variable_rate.SynthesisModulation` and is ignored where
        not, so every caller passes what it knows."""
        modulation = self._modules.get("synthesis_modulation")
        if modulation is None:
            return self.g_s(y_hat)
        at = modulation(self.knob_positions(knob, y_hat))
        x = y_hat
        for i, layer in enumerate(self.g_s):
            x = layer(x)
            if i in at:
                scale, shift = at[i]
                x = torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
        return x

    def hyper_analysis(self, y: Tensor) -> Tensor:
        return self.h_a(y)

    # -- training pass --------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, knob: Optional[Tensor] = None) -> Dict[str, object]:
        """``{"x_hat", "likelihoods": {"y", "z"}, "y"}``: the transforms in the caller's precision, the rate path
        in at least float32 whatever autocast says (see the module docstring). ``y`` is the analysis output, for
        losses on the latent itself (distillation: ``model_store.train``). ``knob``: a variable-rate model's knob
        position per image, ``(B,)`` (:mod:`model_store.architectures.variable_rate`)."""
        self.check_knob(knob)
        y = self.analysis(x)
        with torch.autocast(device_type=y.device.type, enabled=False):
            y32 = y.to(torch.promote_types(y.dtype, torch.float32))
            y_hat, likelihoods = self.rate_forward(y32) if knob is None else self.rate_forward(y32, knob=knob)
        return {"x_hat": self.synthesis(y_hat, knob), "likelihoods": likelihoods, "y": y}

    # -- variable rate ----------------------------------------------------------------------------------------------
    @property
    def rate_knob(self) -> Optional[RateKnob]:
        """The quality scale of a variable-rate model (its ``knob_table``); None for a per-λ model."""
        table = self._modules.get("knob_table")
        return None if table is None else table.knob

    def use_code_span(self, span) -> None:
        """Spread the knob's codes over ``span`` (:attr:`RateKnob.code_span`): what a weights file that stores a
        span needs before it codes (``registry.load_state``), and what an export to such a span sets first. The
        learned tables are anchored on positions, not codes, so only the code -> position map changes."""
        knob = self.rate_knob
        if knob is None:
            raise ValueError(f"{type(self).__name__} is a per-λ model: it has no knob codes to spread")
        knob = knob.with_code_span(span)
        for name in ("knob_table", "synthesis_modulation"):
            module = self._modules.get(name)
            if module is not None:
                module.knob = knob

    def check_knob(self, knob):
        """``knob`` as this model takes it: None for a per-λ model; for a variable-rate one a code of its scale (an
        int) or positions (a tensor, training). Anything else is a ValueError, never a silently ignored knob."""
        scale = self.rate_knob
        if scale is None:
            if knob is not None:
                raise ValueError(f"{type(self).__name__} is a per-λ model: it takes no quality knob")
            return None
        if knob is None:
            raise ValueError(f"{type(self).__name__} is variable-rate: it needs a quality knob code 1..{scale.levels}")
        return knob if isinstance(knob, Tensor) else scale.check_code(knob)

    def knob_positions(self, knob, like: Tensor) -> Tensor:
        """``(B,)`` positions on the knob's scale from what callers hold: positions (training), one code, or a code
        per image of ``like``'s batch (a decoder's headers)."""
        scale = self.rate_knob
        if scale is None or knob is None:
            raise ValueError(f"{type(self).__name__}'s synthesis is conditioned on the knob: pass the code(s)")
        if isinstance(knob, Tensor):
            return knob
        codes = [knob] * like.shape[0] if isinstance(knob, int) else list(knob)
        if len(codes) != like.shape[0]:
            raise ValueError(f"{len(codes)} knob codes for a batch of {like.shape[0]}")
        return torch.tensor([scale.position(c) for c in codes], dtype=torch.float32, device=like.device)

    def synthesis_modulation_points(self) -> Optional[Dict[int, int]]:
        """g_s layer index -> output channels, for the layers a knob-conditioned modulation follows (None: this
        architecture has none)."""
        return None

    def add_synthesis_modulation(self):
        """Condition g_s on the knob (:class:`~model_store.architectures.variable_rate.SynthesisModulation`,
        identity until trained). Returns the model."""
        points = self.synthesis_modulation_points()
        if self.rate_knob is None or not points:
            raise ValueError(f"{type(self).__name__} has no knob-conditioned synthesis (variable-rate ERSTC has)")
        self.synthesis_modulation = SynthesisModulation(self.rate_knob, points).to(next(self.g_s.parameters()))
        return self

    def rate_forward(self, y: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """From the latent on: ``(y_hat, {"y": y_likelihoods, "z": z_likelihoods})``, noise proxies or
        straight-through rounding in training mode as the architecture's reference does."""
        raise NotImplementedError

    # -- the architecture's entropy schedule ---------------------------------------------------------------------
    def code_latent(
        self,
        y: Optional[Tensor],
        z_hat: Tensor,
        coder: GaussianSymbolCoder,
        y_shape: Shape,
        banded: bool = False,
        knob: Optional[int] = None,
    ) -> Tensor:
        """Run the entropy-parameter schedule for one image and return ``y_hat`` of shape ``(1, *y_shape)``.

        ``y`` is the latent on the encoder side (any float dtype; the schedule reads it in the canonical one) and
        ``None`` on the decoder side; every group of values must go through ``coder.code(scales, means, y_group)``
        in the same order on both sides. ``banded``: the hyperprior in bands (``container.FLAG_BANDED_HYPER``),
        only for architectures whose :meth:`hyper_bands_needed` can say yes. ``knob``: a variable-rate model's
        code (checked by the caller, :meth:`check_knob`; only variable-rate models are passed one).
        """
        raise NotImplementedError

    def hyper_bands_needed(self, z_height: int, z_width: int) -> bool:
        """Whether this hyper-latent size is coded in the banded layout (:mod:`model_store.entropy.hyper_bands`);
        architectures without it code every size whole, so a stream flagged banded is not theirs."""
        return False

    @property
    def exact_latents(self) -> bool:
        """Whether ŷ comes out as the same integers (on a fixed-point grid) on every machine: then its streams'
        coder CRC covers the latents too (``container.FLAG_LATENT_CRC``). Only the integer entropy path does."""
        return False

    def hyper_analysis_tiled(self, y: Tensor) -> Tensor:
        """h_a over tiles of the latent, in the canonical dtype, for the encoder.

        Why tiles: on the whole map h_a's float64 intermediates grow with the photo (~1.6 GB at 50 MP). Why they
        may differ from the whole map in the last bits: only the encoder runs h_a, and the decoder reads ẑ from the
        stream, so its rounding never has to be reproduced. Tiles sit on h_a's window grid with
        ``hyper_bands.HYPER_ANALYSIS_GRID.halo`` hyper-latents of context, so z matches the whole map to rounding; a latent
        that fits one tile is computed whole, exactly as before.
        """
        per_z = self.hyper_stride // self.latent_stride
        z_size = (y.shape[-2] // per_z, y.shape[-1] // per_z)
        grid = hyper_bands.hyper_grid(self, hyper_bands.HYPER_ANALYSIS_GRID)
        if len(tiles(*z_size, grid)) == 1:
            return self.hyper_analysis(y.to(CANONICAL_DTYPE))
        z = torch.empty(y.shape[0], self.hyper_channels, *z_size, dtype=CANONICAL_DTYPE)

        def read(rows: slice, cols: slice) -> Tensor:
            return y[..., rows, cols].to(CANONICAL_DTYPE)

        def write(rows: slice, cols: slice, piece: Tensor) -> None:
            z[..., rows, cols] = piece

        # only photos above ~2560 px get here: trim the tile workers' arenas as the codec's transforms do (at 50 MP
        # they kept 0.9 GiB, on top of which the entropy path then peaked at 2.2 GiB)
        apply_tiled(self.hyper_analysis, read, write, z_size, grid, per_z, 1, torch.get_num_threads(), heap.trim_heap)
        return z

    # -- real bitstreams (called on the canonical CPU float64 copy) -----------------------------------------------
    def code_latents(
        self,
        ys: Optional[Sequence[Tensor]],
        z_hats: Sequence[Tensor],
        coders: Sequence[GaussianSymbolCoder],
        y_shape: Shape,
        banded: bool = False,
        knobs: Optional[Sequence[Optional[int]]] = None,
    ) -> List[Tensor]:
        """:meth:`code_latent` for several same-shaped images (``coders[i]`` codes image ``i``). Here one after the
        other; an architecture whose coder inputs do not depend on the batch (an integer entropy path) overrides
        it to share each coding step between the images."""
        knobs = list(knobs) if knobs is not None else [None] * len(coders)
        return [
            self.code_latent(
                None if ys is None else ys[i], z_hats[i], coders[i], y_shape, banded=banded, **_knob_argument(knobs[i])
            )
            for i in range(len(coders))
        ]

    @property
    def batches_entropy_coding(self) -> bool:
        """Whether :meth:`code_latents` codes a batch faster than one by one (callers batch only then)."""
        return False

    def compress_latent(self, y: Tensor, allow_banded: bool = True, knob: Optional[int] = None) -> LatentPayload:
        """Entropy-code one image's latent ``y`` of shape ``(1, C, H, W)``; ``allow_banded=False`` keeps large
        images in the whole-map layout that decoders predating ``FLAG_BANDED_HYPER`` read (at its memory cost).
        ``knob``: the quality code of a variable-rate model (required there, refused by a per-λ model)."""
        return self.compress_latent_and_reconstruct(y, allow_banded, knob)[0]

    def compress_latent_and_reconstruct(
        self, y: Tensor, allow_banded: bool = True, knob: Optional[int] = None
    ) -> Tuple[LatentPayload, Tensor]:
        """``compress_latent`` plus the ``y_hat`` every decoder of the payload will reconstruct (the coding loop
        gives both sides the same values, so the encoder knows it without decoding; training validates on it)."""
        if y.dim() != 4 or y.size(0) != 1:
            raise ValueError(f"compress_latent codes one image at a time, got shape {tuple(y.shape)}")
        return self.compress_latents_and_reconstruct([y], allow_banded, [knob])[0]

    def compress_latents_and_reconstruct(
        self,
        ys: Sequence[Tensor],
        allow_banded: bool = True,
        knobs: Optional[Sequence[Optional[int]]] = None,
        latent_crc: bool = True,
    ) -> List[Tuple[LatentPayload, Tensor]]:
        """:meth:`compress_latent_and_reconstruct` of several same-shaped latents ``(1, C, H, W)`` in one coding
        loop (:meth:`code_latents`); each payload is the one that image alone gets. ``latent_crc=False`` leaves the
        decoded latents out of the coder CRC even where they are exact (streams that decoders predating
        ``FLAG_LATENT_CRC`` read)."""
        if not ys:
            return []
        shapes = {tuple(y.shape) for y in ys}
        if len(shapes) != 1 or ys[0].dim() != 4 or ys[0].size(0) != 1:
            raise ValueError(f"compress_latents codes same-shaped (1, C, H, W) latents, got {sorted(shapes)}")
        knobs = [self.check_knob(k) for k in (knobs if knobs is not None else [None] * len(ys))]
        z_strings, z_hats = [], []
        for y in ys:
            z = self.hyper_analysis_tiled(y)
            check_codable(z, "the hyper-latent z")  # y itself is checked, centred, by the symbol encoder
            z_strings.append(self.entropy_bottleneck.compress(z)[0])
            z_hats.append(self.entropy_bottleneck.decompress([z_strings[-1]], z.shape[-2:]))
            del z
        exact = latent_crc and self.exact_latents
        encoders = [GaussianSymbolEncoder(self.gaussian_conditional, cover_latents=exact) for _ in ys]
        y_shape: Shape = tuple(ys[0].shape[1:])  # type: ignore[assignment]
        banded = allow_banded and self.hyper_bands_needed(*z_hats[0].shape[-2:])
        y_hats = self.code_latents(ys, z_hats, encoders, y_shape, banded=banded, knobs=knobs)
        return [
            (
                LatentPayload(
                    z_string=z_string,
                    y_string=encoder.finish(),
                    z_shape=tuple(z_hat.shape[1:]),  # type: ignore[arg-type]
                    y_shape=y_shape,
                    index_crc=encoder.index_crc,
                    banded_hyper=banded,
                    knob=knob,
                    latent_crc=exact,
                ),
                y_hat,
            )
            for z_string, z_hat, encoder, y_hat, knob in zip(z_strings, z_hats, encoders, y_hats, knobs)
        ]

    def decompress_latent(self, payload: LatentPayload) -> Tensor:
        """Decode ``y_hat`` of shape ``(1, *y_shape)``; raises CoderMismatchError if coder inputs diverged."""
        return self.decompress_latents([payload])[0]

    def decompress_latents(self, payloads: Sequence[LatentPayload]) -> List[Tensor]:
        """:meth:`decompress_latent` of several payloads of one latent shape and layout in one coding loop. A
        payload that fails fails the call (the caller decodes one by one to tell which)."""
        if not payloads:
            return []
        layouts = {(p.y_shape, p.z_shape, p.banded_hyper) for p in payloads}
        if len(layouts) != 1:
            raise ValueError("decompress_latents decodes payloads of one latent shape and layout")
        first = payloads[0]
        knobs = [self.check_knob(p.knob) for p in payloads]
        if first.banded_hyper and not self.hyper_bands_needed(*first.z_shape[1:]):
            raise ValueError("the stream is flagged banded-hyper, which this model does not use at this size")
        if any(p.latent_crc for p in payloads) and not self.exact_latents:
            raise ValueError(
                "the stream's coder CRC covers the integer entropy path's latents, and this model codes without it"
            )
        z_hats, decoders = [], []
        for payload in payloads:
            z_string = guard_padded(payload.z_string, payload.z_shape)
            z_hat = self.entropy_bottleneck.decompress([z_string], payload.z_shape[1:])
            z_hats.append(z_hat.to(CANONICAL_DTYPE))
            y_string = guard_padded(payload.y_string, payload.y_shape)
            decoders.append(GaussianSymbolDecoder(self.gaussian_conditional, y_string, payload.latent_crc))
        y_hats = self.code_latents(None, z_hats, decoders, first.y_shape, banded=first.banded_hyper, knobs=knobs)
        for decoder, payload in zip(decoders, payloads):
            decoder.verify(payload.index_crc)
        return y_hats

    def expected_shapes(self, padded_h: int, padded_w: int) -> Tuple[Shape, Shape]:
        """(z_shape, y_shape) for a padded input size; the container checks headers against this."""
        y = (self.latent_channels, padded_h // self.latent_stride, padded_w // self.latent_stride)
        z = (self.hyper_channels, padded_h // self.hyper_stride, padded_w // self.hyper_stride)
        return z, y

    # -- entropy model tables ------------------------------------------------------------------------------------
    def update(self, scale_table=None, force: bool = False, update_quantiles: bool = False) -> bool:
        """Compute CDF tables (once, at export time; shipped weights carry them and are never recomputed)."""
        if scale_table is None:
            scale_table = get_scale_table()
        return super().update(scale_table=scale_table, force=force, update_quantiles=update_quantiles)


#: bytes a forged payload can make compressai's rANS decoder read per symbol, at most: one 32-bit renormalisation
#: for the symbol and two for an escape's bypass bits once the reads have run into zeros
_MAX_READ_PER_SYMBOL = 12


def _knob_argument(knob: Optional[int]) -> Dict[str, int]:
    """``code_latent``'s knob keyword, passed only to variable-rate models: a per-λ architecture's ``code_latent``
    (STF's, the zigzag's, a test's) need not know the keyword exists."""
    return {} if knob is None else {"knob": knob}


def guard_padded(payload: bytes, shape: Shape) -> bytes:
    """``payload`` followed by enough zero bytes that decoding ``shape`` symbols can never read past the buffer.

    compressai's C++ rANS decoder trusts its input: it reads 32-bit words without checking the end of the string.
    A genuine stream is consumed exactly, so trailing zeros are never read and change nothing; a forged one (the
    container CRCs are integrity checks, not signatures, so anyone can re-seal a stream) would otherwise make it
    read heap memory past the payload, up to ~12 bytes per symbol, and crash on an unmapped page. The padding
    costs about as much memory as the float64 parameters the decoder allocates per symbol anyway.
    """
    symbols = 1
    for n in shape:
        symbols *= int(n)
    return bytes(payload) + bytes(_MAX_READ_PER_SYMBOL * symbols + 16)


def make_entropy_models(hyper_channels: int) -> Tuple[EntropyBottleneck, GaussianConditional]:
    """The two entropy models every architecture here uses (factorized prior for z, Gaussian for y)."""
    return EntropyBottleneck(hyper_channels), GaussianConditional(None)


def likelihoods_dict(y_likelihoods: Tensor, z_likelihoods: Tensor) -> Dict[str, Tensor]:
    return {"y": y_likelihoods, "z": z_likelihoods}


def total_bpp(likelihoods: Dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel of a training forward pass (sum of -log2 likelihoods / pixels)."""
    return sum(torch.log2(p).sum() for p in likelihoods.values()) / (-num_pixels)  # type: ignore[return-value]


def count_parameters(module: torch.nn.Module, exclude: Sequence[str] = ()) -> int:
    """Trainable parameter count, the number the papers report."""
    return sum(p.numel() for n, p in module.named_parameters() if not any(n.startswith(e) for e in exclude))
