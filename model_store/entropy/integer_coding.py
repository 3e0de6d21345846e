"""Coding a CAM-context latent on the integer entropy path, several images at once (issue #29).

Why: the float64 path (:mod:`~model_store.entropy.causal_context`) gives encoder and decoder the same scale indexes
only while both run the same float operations in the same order: one image at a time, on a CPU, with row-by-row
products so that no value depends on its neighbours in a call. It cannot be batched, moved to a GPU or trusted on a
CPU whose ``exp`` or GEMM rounds differently. :class:`IntegerEntropyPath` computes every scale and mean of the
coding loop with the exact integer networks of :mod:`~model_store.entropy.integer_nets` instead: the same integers
for any batch, blocking, thread count and device, so the wavefront loop can code a whole batch of same-sized images
per step (one CAM call and one parameter-net call for all of them), and a stream decodes on any machine.

What a stream made this way depends on is stored in the weights file, not recomputed: the integer weights, biases
and shifts, the GELU and exp tables, the position biases SwinV2's continuous MLP produces, and for a variable-rate
model every code's gains and parameter-net bias (keys under :data:`STATE_PREFIX`, covered by the file's sha256 like
every other tensor). A file without them is coded on the float64 path as before, so every older stream decodes as it
always did; a file with them is a new model version whose streams are integer-path streams.

The coder sees ``σ = σ_int · 2^-frac`` and ``μ = μ_int · 2^-frac`` (exact floats), scaled by a code's stored gain
for a variable-rate model; the decoded latent goes back into the context on the ``2^-frac`` grid
(``round(ŷ · 2^frac)``). Those are single IEEE-754 operations, correctly rounded on every device.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from model_store.architectures.base import Shape
from model_store.entropy.coding import GaussianSymbolCoder
from model_store.entropy.hyper_bands import HyperTerm, band_grid
from model_store.entropy.integer import (
    EXACT_LIMIT,
    INTEGER_DTYPE,
    IntegerPathError,
    IntegerPrecision,
    check_integral,
    check_range,
    deferred_checks,
    derived,
    exact_product,
    shift_down_,
)
from model_store.entropy.integer_nets import (
    ACTIVATION_BOUND,
    IntegerCAM,
    IntegerHyperSynthesis,
    IntegerParameterNet,
    to_fixed,
)
from model_store.layers.cam import CausalContext, live_rows, wavefront_schedule

__all__ = ["IntegerEntropyPath", "STATE_PREFIX", "code_latents_integer", "has_integer_state"]

#: Key prefix of the integer path's tensors in a weights file.
STATE_PREFIX = "integer_entropy."


class _ContextView:
    """:class:`IntegerCAM` with the interface :class:`~model_store.layers.cam.CausalContext` stores rows through
    (its geometry comes from the float CAM; its features are the integer ``[x, q, k, v]``)."""

    def __init__(self, cam: IntegerCAM):
        self.integer = cam
        self.block_len, self.offsets, self.num_causal = cam.cam.block_len, cam.cam.offsets, cam.cam.num_causal

    def padding_features(self, batch_invariant: bool = True) -> Tensor:
        zero = torch.zeros(1, self.integer.cam.dim, dtype=INTEGER_DTYPE, device=self.integer.qkv.weight.device)
        return self.integer.token_features(zero)[0]


class IntegerEntropyPath:
    """h_s, the CAM and the parameter net of one model as exact integer networks (module docstring)."""

    def __init__(
        self,
        precision: IntegerPrecision,
        h_s: IntegerHyperSynthesis,
        cam: IntegerCAM,
        net: IntegerParameterNet,
        latent_channels: int,
        knob_gains: Optional[Tensor] = None,
        knob_biases: Optional[Tensor] = None,
    ):
        self.precision = precision
        self.h_s, self.cam, self.net = h_s, cam, net
        self.latent_channels = latent_channels
        #: a variable-rate model's per-code gains ``(levels, M)`` (float64) and first-layer biases ``(levels, E1)``
        #: (integers on the first layer's accumulator scale); row ``code - 1``
        self.knob_gains, self.knob_biases = knob_gains, knob_biases
        #: Keep the guard's checks on the path's device and read them once per wavefront step, before the coder
        #: sees that step's σ and μ (:func:`~model_store.entropy.integer.deferred_checks`). None: on any device
        #: but a CPU, where a host read costs nothing and the deferred form only adds operations. Not stored.
        self.defer_checks: Optional[bool] = None
        self._check_first_layer()

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def of(cls, model: nn.Module, precision: IntegerPrecision = IntegerPrecision()) -> "IntegerEntropyPath":
        """Post-training quantisation of ``model``'s entropy nets (run once, at export, on the fp16-rounded weights)."""
        frac, bits = precision.frac, precision.weight_bits
        net = IntegerParameterNet.of(model.entropy_parameters, frac, bits)
        gains = biases = None
        table = getattr(model, "knob_table", None)
        if table is not None:
            gains, raw_biases = _code_points(table)
            biases = torch.round(raw_biases * 2.0 ** (frac + net.layers[0].shift))
        return cls(
            precision,
            IntegerHyperSynthesis.of(model.h_s, frac, bits),
            IntegerCAM.of(model.context_prediction, frac, bits),
            net,
            model.latent_channels,
            gains,
            biases,
        )

    def check_knob(self, model: nn.Module) -> None:
        """ValueError unless the stored per-code gains are the ones ``model``'s knob table gives its codes now.

        Why: the table maps codes to positions through the knob's :attr:`~RateKnob.code_span`, and the stored
        gains were computed at export; a loader that spread the codes differently would code every latent on the
        wrong grid (a garbage image, not an error). Cheap: ``levels`` interpolations, once per load."""
        table = getattr(model, "knob_table", None)
        if (table is None) != (self.knob_gains is None):
            raise ValueError("the integer entropy path and the model disagree on whether it is variable-rate")
        if table is None:
            return
        gains, _ = _code_points(table)
        if gains.shape != self.knob_gains.shape or not torch.allclose(gains, self.knob_gains.cpu(), rtol=1e-12, atol=0):
            raise ValueError(
                f"the stored per-code gains do not match the knob's codes (code span {table.knob.code_span}): "
                "the file was exported with another code -> position map"
            )

    def _check_first_layer(self) -> None:
        """The first layer's accumulator is split (ψ half up front, context half per step, a code's bias): its
        static proof must hold with the largest knob bias added."""
        first = self.net.layers[0]
        extra = float(self.knob_biases.abs().max()) if self.knob_biases is not None else 0.0
        worst = first.input_bound * float(first.weight.abs().sum(1).max()) + float(first.bias.abs().max()) + extra
        if not worst < EXACT_LIMIT / 2:
            raise IntegerPathError(f"the first parameter layer can reach {worst:.3g}, beyond the exact range")

    # -- storage ---------------------------------------------------------------------------------------------------
    def state(self) -> Dict[str, Tensor]:
        """Every number this path computes with, as tensors named under :data:`STATE_PREFIX` (integers in the
        smallest integer dtype that holds them; the gains, which are not integers, in float64)."""
        out = {STATE_PREFIX + "precision": torch.tensor([self.precision.frac, self.precision.weight_bits])}
        for key, value in _walk(self, ""):
            out[STATE_PREFIX + key] = _stored(value)
        return out

    @classmethod
    def from_state(cls, model: nn.Module, state: Dict[str, Tensor]) -> "IntegerEntropyPath":
        """The path exactly as stored: built from ``model`` for its structure, then every number replaced by the
        stored one (so nothing this machine's float arithmetic computes can reach a stream)."""
        stored = {k[len(STATE_PREFIX) :]: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
        frac, weight_bits = (int(v) for v in stored.pop("precision"))
        path = cls.of(model, IntegerPrecision(frac, weight_bits))
        own = dict(_walk(path, ""))
        if set(stored) != set(own):
            missing, extra = sorted(set(own) - set(stored))[:3], sorted(set(stored) - set(own))[:3]
            raise ValueError(f"integer entropy tables do not match the architecture (missing {missing}, extra {extra})")
        for key, value in stored.items():
            _assign(path, key, value, own[key])
        path._check_first_layer()
        return path

    @property
    def device(self) -> torch.device:
        return self.net.layers[0].weight.device

    def to(self, device) -> "IntegerEntropyPath":
        """This path with every tensor on ``device`` (in place; returns self). The integers, hence the streams, are
        the same on every device: the path's operations are exact wherever they run (module docstring)."""
        for key, value in list(_walk(self, "")):
            if isinstance(value, Tensor):
                _assign(self, key, value.to(device), value)
        return self

    # -- the coding loop's pieces ------------------------------------------------------------------------------------
    def hyper_synthesis(self, z_hat: Tensor) -> Tensor:
        """ψ ``(1, 2M, h, w)`` integers at ``2^-frac`` from a decoded hyper-latent (floats)."""
        return self.h_s(to_fixed(z_hat, self.precision.frac))

    def first_layer(self) -> tuple:
        """The first parameter layer split by its inputs: ``(ψ weights.T, context weights.T)``, contiguous (one
        fast matmul each), derived once per stored weight."""
        first = self.net.layers[0]
        psi = first.weight.shape[1] - self.cam.cam.out_dim
        return derived(
            self, "_first_split", (first.weight,), lambda w: (w[:, :psi].t().contiguous(), w[:, psi:].t().contiguous())
        )

    def hyper_accumulator(self, psi_rows: Tensor) -> Tensor:
        """The first parameter layer's ψ half plus its bias and rounding half, before rescaling: ``(P, 2M)`` ->
        ``(P, E1)``, exact."""
        first = self.net.layers[0]
        check_integral(psi_rows, first.input_bound, "ψ")
        return exact_product(torch.addmm(first.kernel()[1], psi_rows, self.first_layer()[0]), "ψ term")

    def parameters(self, hyper_acc: Tensor, context: Tensor) -> tuple:
        """(σ_int, μ_int) ``(P, M)`` from the ψ accumulators ``(P, E1)`` (code bias included) and the CAM outputs."""
        first = self.net.layers[0]
        check_range(context, first.input_bound, "CAM output")
        acc = exact_product(torch.addmm(hyper_acc, context, self.first_layer()[1]), "context term")
        x = shift_down_(acc, first.shift)
        for layer in self.net.layers[1:]:
            x = layer(self.net.gelu(x))
        return check_integral(x, EXACT_LIMIT / 4, "entropy parameters").chunk(2, dim=-1)

    def code_gain(self, code: Optional[int]) -> Optional[Tensor]:
        """A code's gains ``(M,)`` on the CPU, where the coder works."""
        if code is None:
            return None
        if self.knob_gains is None:
            raise ValueError("a per-λ model's integer path has no knob codes")
        return self.knob_gains[code - 1].cpu()

    def code_bias(self, code: Optional[int]) -> Optional[Tensor]:
        return None if code is None else self.knob_biases[code - 1]  # type: ignore[index]


def has_integer_state(state: Dict[str, Tensor]) -> bool:
    """Whether a stored weights state carries an integer entropy path (a file made with one)."""
    return any(k.startswith(STATE_PREFIX) for k in state)


def _code_points(table: nn.Module) -> Tuple[Tensor, Tensor]:
    """Every code's gains ``(levels, M)`` and parameter-net biases ``(levels, E1)`` as the float64 path computes
    them (a float64 copy of the knob table)."""
    table = copy.deepcopy(table).double()
    with torch.no_grad():
        points = [table.at_code(code) for code in table.knob.codes]
    return torch.stack([p.gain.detach().double() for p in points]), torch.stack(
        [p.bias.detach().double() for p in points]
    )


def code_latents_integer(
    path: IntegerEntropyPath,
    model: nn.Module,
    ys: Optional[Sequence[Tensor]],
    z_hats: Sequence[Tensor],
    coders: Sequence[GaussianSymbolCoder],
    y_shape: Shape,
    banded: bool = False,
    knobs: Optional[Sequence[Optional[int]]] = None,
) -> List[Tensor]:
    """Code the latents of ``len(coders)`` same-sized images in one wavefront loop: at every step one CAM call and
    one parameter-net call cover every image's positions, then each image's symbols go to its own coder (same
    order as one image alone: the integers do not depend on the company they are computed in).

    ``ys``: the encoder's latents ``(1, M, h, w)`` each (None when decoding); ``z_hats`` ``(1, N, zh, zw)`` each;
    ``knobs``: a variable-rate model's code per image. Returns each image's ŷ ``(1, M, h, w)`` (float64). The
    guard's checks are read per operation or, deferred, once per step (:attr:`IntegerEntropyPath.defer_checks`).
    """
    c, h, w = y_shape
    frac = path.precision.frac
    device = path.device
    count = len(coders)
    knobs = list(knobs) if knobs is not None else [None] * count
    steps = wavefront_schedule(h, w, model.context_prediction.block_len)
    grid = band_grid(model) if banded else None
    hypers = []
    for b in range(count):
        bias = path.code_bias(knobs[b])
        term = path.hyper_accumulator if bias is None else (lambda rows, bias=bias: path.hyper_accumulator(rows) + bias)
        hypers.append(HyperTerm(path.hyper_synthesis, term, z_hats[b].to(device), y_shape, grid))
    gains = [path.code_gain(k) for k in knobs]
    view = _ContextView(path.cam)
    ring = live_rows(steps, w, view.block_len)
    context = CausalContext(view, h, w, INTEGER_DTYPE, ring, images=count)  # type: ignore[arg-type]
    y_cols = None if ys is None else [y[0].flatten(1) for y in ys]
    y_hats = [torch.zeros(c, h * w, dtype=INTEGER_DTYPE) for _ in range(count)]  # the coders' side: CPU
    defer = device.type != "cpu" if path.defer_checks is None else path.defer_checks
    with deferred_checks() if defer else nullcontext() as guard:
        for positions in steps:
            p = positions.numel()
            at = positions.to(device)
            hyper_acc = torch.cat([hyper.rows(at) for hyper in hypers])
            scales_int, means_int = path.parameters(
                hyper_acc, path.cam.attend(context.gather(at), context.padding, count)
            )
            if guard is not None:
                guard.verify()
            scales, means = (scales_int * 0.5**frac).cpu(), (means_int * 0.5**frac).cpu()
            parts = []
            for b in range(count):
                rows = slice(b * p, (b + 1) * p)
                exact = None if y_cols is None else y_cols[b].index_select(1, positions).t().to(INTEGER_DTYPE)
                a = gains[b]
                if a is None:
                    part = coders[b].code(scales[rows], means[rows], exact)
                else:
                    part = coders[b].code(scales[rows] * a, means[rows] * a, None if exact is None else exact * a) / a
                y_hats[b].index_copy_(1, positions, part.t())
                parts.append(part)
            fixed = to_fixed(torch.cat(parts), frac)
            check_integral(fixed, ACTIVATION_BOUND, "decoded latent")
            for b in range(count):
                coders[b].fold_latents(fixed[b * p : (b + 1) * p])
            context.write_features(at, path.cam.token_features(fixed.to(device), count))
            for hyper in hypers:
                hyper.release_above(int(positions.min()) // w)
    return [y.reshape(1, c, h, w) for y in y_hats]


# -- storage helpers ---------------------------------------------------------------------------------------------------
#: Objects of classes defined in these modules (the integer path's own) are walked into.
_PATH_MODULES = ("model_store.entropy.integer",)


def _walk(obj, prefix: str):
    """``(dotted name, value)`` of every tensor and number reachable through the integer-path objects (the float
    modules they keep for their geometry are not walked: they are the model's, stored as the model's; nor are
    attributes with a leading underscore: caches derived from the stored numbers)."""
    for name, value in sorted(vars(obj).items()):
        if name.startswith("_"):
            continue
        key = f"{prefix}{name}"
        if isinstance(value, Tensor):
            yield key, value
        elif isinstance(value, bool) or value is None or isinstance(value, (nn.Module, IntegerPrecision, str)):
            continue
        elif isinstance(value, (int, float)):
            yield key, value
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from _walk(item, f"{key}.{i}.")
        elif type(value).__module__.startswith(_PATH_MODULES):
            yield from _walk(value, f"{key}.")


def _stored(value) -> Tensor:
    if not isinstance(value, Tensor):
        return torch.tensor([float(value)], dtype=torch.float64)
    value = value.detach().cpu()
    if value.is_floating_point() and value.numel() and bool(torch.all(value == torch.round(value))):
        peak = float(value.abs().max())
        for dtype in (torch.int8, torch.int16, torch.int32):
            if peak <= torch.iinfo(dtype).max:
                return value.to(dtype).contiguous()
    return value.contiguous()


def _assign(root, key: str, stored: Tensor, current) -> None:
    *parents, leaf = key.split(".")
    obj = root
    for part in parents:
        obj = obj[int(part)] if isinstance(obj, list) else getattr(obj, part)
    if isinstance(current, Tensor):
        if tuple(stored.shape) != tuple(current.shape):
            raise ValueError(
                f"integer entropy table {key}: shape {tuple(stored.shape)}, expected {tuple(current.shape)}"
            )
        value = stored.to(current.dtype)
    else:
        number = float(stored.reshape(-1)[0])
        value = int(number) if isinstance(current, int) else number
    setattr(obj, leaf, value)
