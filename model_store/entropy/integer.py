"""Exact integer arithmetic held in float64: the building blocks of the integer entropy path (issue #29).

Why: the entropy path (hyper synthesis, context model, parameter nets) must give the encoder and every decoder the
same scale indexes bit for bit. Today it runs in float64 one image at a time on the CPU, whose rounding depends on
summation order, so it cannot be batched or moved to a GPU without breaking streams. Integers fix that: a float64
holds every integer below 2^53 exactly, and a sum of integers is exact whatever its order as long as every partial
sum stays below 2^53. So a matmul or convolution of integer-valued float64 tensors has one result on every BLAS,
blocking, batch size, thread count and device (Ballé, Johnston, Minnen, "Integer Networks for Data Compression with
Latent-Variable Models", ICLR 2019). What is not a sum of products needs its own exact form, here:

* **rescaling** by a power of two with round-half-up (:func:`round_shift`): dividing by 2^k is exact in binary
  floating point, and so is ``floor`` of the result;
* **division** by integers (:func:`floor_div`) and **square roots** (:func:`isqrt`): IEEE 754 rounds ``/`` and
  ``sqrt`` correctly, and ``floor`` of the result is then exact (proofs in their docstrings). A device whose
  division or square root were not correctly rounded would compute other scale indexes: the stream's index CRC
  turns that into a clear decode error, never a wrong image;
* **non-linear functions** of one integer (GELU, exp): a lookup table over a clamped integer range
  (:class:`IntegerTable`), built once, stored with the weights (a libm's ``erf``/``exp`` may round differently on
  another machine; a stored table cannot).

The guard cannot be skipped: every operation here checks that what it computes is integral and inside the bound that
makes it exact, and raises :class:`IntegerPathError` (never a stream) otherwise. On a GPU each check read on the host
would stall the device a dozen times per wavefront step; inside :func:`deferred_checks` the checks of one step are
kept on the device instead and read in one transfer, before the coder sees any value of that step.

Bounds are static where they can be: :class:`IntegerLinear` proves at construction that ``input_bound`` times its
largest row of absolute weights plus its largest bias stays below :data:`EXACT_LIMIT`, so no partial sum of any order
can pass it; at run time it only checks that its input is integral and within ``input_bound``.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from model_store.errors import ModelStoreError

__all__ = [
    "EXACT_LIMIT",
    "IntegerLayerNorm",
    "integer_softmax",
    "INTEGER_DTYPE",
    "IntegerLinear",
    "IntegerPrecision",
    "IntegerPathError",
    "IntegerTable",
    "check_integral",
    "deferred_checks",
    "check_range",
    "derived",
    "exact_product",
    "floor_div",
    "half_step",
    "isqrt",
    "quantize_weight",
    "round_shift",
    "shift_down_",
]

INTEGER_DTYPE = torch.float64


@dataclass(frozen=True)
class IntegerPrecision:
    """Fractional bits of activations and bits of weights of an integer entropy path. 8 / 12 cost -0.01 % rate
    against the float64 nets on erstc-small q6 (``benchmarks/integer_path.py``); 8-bit weights cost ~1 %."""

    frac: int = 8
    weight_bits: int = 12


#: Every integer of magnitude below this is exact in float64, and so is every sum that stays below it.
EXACT_LIMIT = 2.0**53


class IntegerPathError(ModelStoreError):
    """A value on the integer entropy path is not an integer, or left the range in which its arithmetic is exact.
    A model or input that triggers it must not produce a stream: the decoder could not reproduce it."""

    code = "integer_path_violation"


@dataclass
class DeferredGuard:
    """The guard's checks of one span of work (a wavefront step), recorded as device scalars and read at
    :meth:`verify` in one transfer. Each entry is ``(what, kind, bound, value)``: "integral" wants ``value`` (the
    largest distance to an integer) to be 0, "range" wants it ``<= bound``, "below" ``< bound``; NaN fails all three."""

    entries: List[Tuple[str, str, float, Tensor]] = field(default_factory=list)

    def expect(self, what: str, kind: str, bound: float, value: Tensor) -> None:
        self.entries.append((what, kind, bound, value))

    def verify(self) -> None:
        """Raise :class:`IntegerPathError` for the first recorded check that failed; forget them all."""
        if not self.entries:
            return
        entries, self.entries = self.entries, []
        values: List[float] = [0.0] * len(entries)
        by_device: dict = {}
        for i, entry in enumerate(entries):
            by_device.setdefault(entry[3].device, []).append(i)
        for indices in by_device.values():  # one host read per device (the coder's side is on the CPU)
            read = torch.stack([entries[i][3].to(INTEGER_DTYPE) for i in indices]).tolist()
            for i, value in zip(indices, read):
                values[i] = value
        for (what, kind, bound, _), value in zip(entries, values):
            if kind == "integral" and not value == 0:
                raise IntegerPathError(f"{what}: a value is not an integer")
            if kind == "range" and not value <= bound:
                raise IntegerPathError(f"{what}: |value| {value:.6g} exceeds the exact range {bound:.6g}")
            if kind == "below" and not value < bound:
                raise IntegerPathError(f"{what}: {value:.6g} leaves the exact range {bound:.6g}")


_DEFERRED: ContextVar[Optional[DeferredGuard]] = ContextVar("integer_path_deferred_guard", default=None)


@contextmanager
def deferred_checks() -> Iterator[DeferredGuard]:
    """Inside, :func:`check_integral`, :func:`check_range`, :func:`exact_product` and :class:`IntegerLayerNorm`'s
    headroom record their checks instead of reading values on the host; call ``verify()`` before any value leaves
    the path (it runs once more on a normal exit). Same checks, same errors, one device sync per ``verify``."""
    guard = DeferredGuard()
    token = _DEFERRED.set(guard)
    try:
        yield guard
        guard.verify()
    finally:
        _DEFERRED.reset(token)


def _deferred() -> Optional[DeferredGuard]:
    return _DEFERRED.get()


def check_integral(t: Tensor, bound: float, what: str) -> Tensor:
    """``t`` itself, after checking it is float64, integer-valued and within ``[-bound, bound]``."""
    if t.dtype != INTEGER_DTYPE:
        raise IntegerPathError(f"{what}: expected {INTEGER_DTYPE}, got {t.dtype}")
    guard = _deferred()
    if guard is not None and t.numel():
        guard.expect(what, "integral", 0.0, (t - torch.round(t)).abs().amax())
        guard.expect(what, "range", bound, t.abs().amax())
    elif t.numel():
        if not bool(torch.all(t == torch.round(t))):
            raise IntegerPathError(f"{what}: a value is not an integer")
        peak = float(t.abs().max())
        if not peak <= bound:  # also catches NaN
            raise IntegerPathError(f"{what}: |value| {peak:.6g} exceeds the exact range {bound:.6g}")
    return t


def check_range(t: Tensor, bound: float, what: str) -> Tensor:
    """``t`` itself, after checking it is float64 and within ``[-bound, bound]`` (NaN and ±inf fail too).

    Inside the path this is the whole check: a value computed from integers by this module's operations (exact
    sums of products below the bound, :func:`round_shift`, :func:`floor_div`, table lookups) is an integer by
    construction, so only its range can go wrong. :func:`check_integral` guards what enters and leaves the path.
    """
    if t.dtype != INTEGER_DTYPE:
        raise IntegerPathError(f"{what}: expected {INTEGER_DTYPE}, got {t.dtype}")
    guard = _deferred()
    if guard is not None and t.numel():
        guard.expect(what, "range", bound, t.abs().amax())
    elif t.numel():
        peak = float(t.abs().max())
        if not peak <= bound:
            raise IntegerPathError(f"{what}: |value| {peak:.6g} exceeds the exact range {bound:.6g}")
    return t


def exact_product(t: Tensor, what: str) -> Tensor:
    """``t``, the result of a matmul of integers, after checking every value is an integer. This is where a kernel
    that is not exact on integers shows (float32 or TF32 accumulation, Winograd or FFT algorithms): as fractions the
    rescaling that follows would otherwise round away into plausible, wrong integers."""
    guard = _deferred()
    if guard is not None:
        if t.numel():
            guard.expect(
                f"{what} (a product of integers; the matmul kernel is not exact)",
                "integral",
                0.0,
                (t - torch.round(t)).abs().amax(),
            )
    elif not torch.equal(t, torch.round(t)):  # NaN fails too
        raise IntegerPathError(f"{what}: a product of integers is not an integer (the matmul kernel is not exact)")
    return t


def round_shift(t: Tensor, bits: int) -> Tensor:
    """``round(t / 2^bits)``, halves rounded up, exactly (``t`` integer-valued, ``|t| < 2^52``)."""
    half = half_step(bits)  # checks bits >= 0
    return shift_down_(t + half, bits) if bits else t


def half_step(bits: int) -> float:
    """What to add to an integer ``v`` so that ``floor((v + half_step) · 2^-bits)`` is ``round_shift(v, bits)``.

    Why: a layer whose accumulator already adds a constant (a bias) folds the rounding half into it once, at
    construction, and rescales with two operations instead of four (``v + 2^(bits-1)`` is an exact integer below
    2^52, and multiplying by a power of two is exact)."""
    if bits < 0:
        raise ValueError(f"shift must be >= 0, got {bits}")
    return 0.5 * 2.0**bits if bits > 0 else 0.0


def shift_down_(acc: Tensor, bits: int) -> Tensor:
    """``floor(acc · 2^-bits)``, in place: the rescale of an accumulator that already holds the rounding half
    (:func:`half_step`), so the result is ``round_shift`` of the sum without it. Exact: multiplying by a power of two
    only moves the binary point. Every integer layer ends with this one step (one place for how it rounds)."""
    return torch.floor(acc.mul_(0.5**bits)) if bits else acc


def derived(owner: object, name: str, sources: Sequence[Optional[Tensor]], make: Callable):
    """``make(*sources)``, cached on ``owner`` as ``name`` until a source is replaced (loading a stored table,
    moving to a device) or changed in place (its ``_version``). Why: layouts and constants derived from the stored
    numbers (a contiguous transpose, a bias with the rounding half folded in) are computed once, not every step,
    and never stored themselves: :mod:`~model_store.entropy.integer_coding` skips attributes named ``_...``."""
    versions = tuple(None if t is None else t._version for t in sources)
    cache = vars(owner).get(name)
    if cache is None or cache[1] != versions or any(a is not b for a, b in zip(cache[0], sources)):
        cache = (tuple(sources), versions, make(*sources))
        setattr(owner, name, cache)
    return cache[2]


def floor_div(a: Tensor, b, *, divisor_positive: bool = False) -> Tensor:
    """``floor(a / b)`` of integer-valued tensors (or a positive number ``b``), ``b > 0``, ``|a| < 2^53``, exactly.

    Why plain ``floor(a / b)`` is exact: IEEE 754 division is correctly rounded (float64 on every CPU, and CUDA's
    default double division). If ``a / b`` is an integer ``k`` it is exact; otherwise it lies at least ``1/b`` away from
    the nearest integer, while rounding moves it by at most half an ulp, ``|a / b| · 2^-53 < 1/b`` for ``|a| < 2^53``:
    it never crosses an integer, so the floor is unchanged. (torch's ``rounding_mode="floor"`` is exact too but
    ~8x slower on the softmax's tensors.) Checked against Python's ``//`` up to 2^50, quotients just below an
    integer included (tests). ``divisor_positive``: the caller proved ``b >= 1`` (a softmax's sum of exps, which
    holds the largest one, ``exp(0)``; a standard deviation built as ``isqrt(v + 1)``), so the check is skipped: it
    was a third of the operations of the CAM's two LayerNorms."""
    if isinstance(b, (int, float)):
        if not b > 0:
            raise IntegerPathError("floor_div: a divisor is not positive")
    elif not divisor_positive and not bool(torch.all(b > 0)):
        raise IntegerPathError("floor_div: a divisor is not positive")
    return torch.floor(a / b)


def isqrt(a: Tensor, *, nonnegative: bool = False) -> Tensor:
    """``floor(sqrt(a))`` of a non-negative integer-valued tensor, exactly (``a < 2^52``).

    Why plain ``floor(sqrt(a))`` is exact: IEEE 754 square roots are correctly rounded (float64 on every CPU; CUDA's
    double ``sqrt``). With ``k = isqrt(a)`` and ``a`` not a square, ``sqrt(a) <= sqrt((k+1)^2 - 1) < k + 1 - 1/(2(k+1))``,
    while rounding moves it by at most half an ulp, below ``(k+1) · 2^-53 < 1/(2(k+1))`` for ``(k+1)^2 <= 2^52``: it
    never reaches ``k + 1``; a square's root is exact. Checked against ``math.isqrt`` around every square up to
    2^52 in the tests. ``nonnegative``: the caller proved ``a >= 0`` (a sum of squares plus a positive ε)."""
    if not nonnegative and a.numel() and float(a.min()) < 0:
        raise IntegerPathError("isqrt: a negative value")
    return torch.floor(torch.sqrt(a))


def quantize_weight(w: Tensor, bits: int) -> tuple:
    """``(w_int, shift)``: ``w ≈ w_int / 2^shift`` with ``|w_int| < 2^(bits-1)``, the largest such power-of-two
    scale for this tensor (a per-tensor shift: rescaling stays a :func:`round_shift`, never a multiplication)."""
    peak = float(w.abs().max()) if w.numel() else 0.0
    limit = 2 ** (bits - 1) - 1
    shift = 0
    if peak > 0:
        while peak * 2 ** (shift + 1) <= limit and shift < 62:
            shift += 1
        while peak * 2**shift > limit and shift > -62:
            shift -= 1
    return torch.round(w.double() * 2.0**shift).clamp(-limit, limit), shift


@dataclass
class IntegerLinear:
    """``round_shift(x @ weight.T + bias, shift)`` on integer-valued float64 tensors, exact by construction.

    ``weight`` ``(out, in)`` and ``bias`` ``(out,)`` are integers at scale ``2^-(in_frac + w_shift)``; with
    ``shift = w_shift`` the output has the input's scale. ``input_bound``: the largest ``|x|`` this layer accepts;
    construction refuses weights for which some partial sum could pass :data:`EXACT_LIMIT`.
    """

    weight: Tensor
    bias: Optional[Tensor]
    shift: int
    input_bound: float

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")
        self.weight = check_integral(self.weight.to(INTEGER_DTYPE), EXACT_LIMIT, "IntegerLinear weight")
        if self.bias is not None:
            self.bias = check_integral(self.bias.to(INTEGER_DTYPE), EXACT_LIMIT, "IntegerLinear bias")
        worst = self.input_bound * float(self.weight.abs().sum(1).max())
        worst += float(self.bias.abs().max()) if self.bias is not None else 0.0
        if not worst < EXACT_LIMIT / 2:  # round_shift's + 0.5 and floor need one more bit of headroom
            raise IntegerPathError(
                f"IntegerLinear: |x| <= {self.input_bound:g} times these weights can reach {worst:.3g}, beyond the "
                f"exact range 2^52: lower the input bound or the weights' precision"
            )
        self.output_bound = float(torch.floor(torch.tensor(worst * 0.5**self.shift + 0.5)))

    def kernel(self) -> tuple:
        """``(weight.T, bias + half)`` laid out for one ``addmm``, derived from the stored numbers on first use
        (and again when ``weight`` or ``bias`` is replaced: loading, moving to a device). A contiguous transpose
        made small matmuls up to 3x faster; the rounding half folded into the bias saves two operations a layer.
        An in-place change of a stored tensor (its ``_version``) counts as a replacement too."""
        return derived(self, "_kernel", (self.weight, self.bias), self._make_kernel)

    def _make_kernel(self, weight: Tensor, bias: Optional[Tensor]) -> tuple:
        bias = bias if bias is not None else weight.new_zeros(weight.shape[0])
        return weight.t().contiguous(), bias + half_step(self.shift)

    def __call__(self, x: Tensor) -> Tensor:
        check_range(x, self.input_bound, "IntegerLinear input")
        weight_t, bias = self.kernel()
        flat = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight_t)
        acc = exact_product(flat, "IntegerLinear").reshape(*x.shape[:-1], weight_t.shape[1])
        return shift_down_(acc, self.shift)


@dataclass
class IntegerTable:
    """An integer function of one integer, as a table over ``[low, low + len(values))``. Below the range an input
    gets the first value; above it the last, or itself with ``identity_above`` (input and output on one scale): the
    functions it holds flatten out (exp of a non-positive argument, GELU on the left) or become the identity (GELU
    on the right) past a range the caller picks, to within one output step. A clamp where GELU is linear cost the
    parameter net +0.5 % rate; the identity tail, +0.02 %."""

    low: int
    values: Tensor
    identity_above: bool = False

    def __post_init__(self) -> None:
        self.values = check_integral(self.values.to(INTEGER_DTYPE), EXACT_LIMIT, "IntegerTable values")

    @property
    def high(self) -> int:
        return self.low + self.values.numel() - 1

    def __call__(self, x: Tensor) -> Tensor:
        """``x``: integers from the path's own operations (their range is clamped here; :func:`check_range`)."""
        if x.dtype != INTEGER_DTYPE:
            raise IntegerPathError(f"IntegerTable input: expected {INTEGER_DTYPE}, got {x.dtype}")
        index = x.clamp(self.low, self.high).sub_(self.low).long()
        out = self.values.index_select(0, index.reshape(-1)).reshape(x.shape)  # 4x faster than values[index]
        return torch.where(x > self.high, x, out) if self.identity_above else out

    @classmethod
    def of(cls, fn, low: int, high: int, in_frac: int, out_frac: int, identity_above: bool = False) -> "IntegerTable":
        """``round(fn(k / 2^in_frac) · 2^out_frac)`` for every integer ``k`` in ``[low, high]``, computed once here
        (the table, not ``fn``, is what is stored and used, so every machine uses the same values)."""
        if identity_above and in_frac != out_frac:
            raise ValueError("an identity tail needs the input and output on one scale")
        k = torch.arange(low, high + 1, dtype=INTEGER_DTYPE)
        return cls(low, torch.round(fn(k * 0.5**in_frac) * 2.0**out_frac), identity_above)


@dataclass
class IntegerLayerNorm:
    """LayerNorm over the last dimension of integer activations at scale ``2^-frac``, output on the same scale.

    ``m = floor(Σx / n)`` (a mean rounded to the activation step; its error, under one step, moves the normalised
    value by ``2^-frac / σ``), ``v = floor(Σ(x - m)² / n)``, ``s = isqrt(v · 4^extra + ε)`` (σ with ``extra`` more
    bits, fewer where the activations are so large that ``4^extra v`` would leave the exact range),
    ``x̂ = round((x - m) · 2^(frac + extra) / s)``, then ``γ x̂ + β`` with ``γ`` at ``2^-gamma_shift``. The input may
    have more fractional bits than the output (``input_frac``): the normalisation does not care, only ε's scale.
    """

    gamma: Tensor
    beta: Tensor  # at scale 2^-(frac + gamma_shift)
    gamma_shift: int
    frac: int
    eps: float
    extra: int = 8
    #: fractional bits of the input when they differ from the output's: a post-norm (SwinV2) normalises a branch
    #: whose values can be a few output steps in all, so the branch keeps more bits up to the norm
    input_frac: Optional[int] = None

    def __post_init__(self) -> None:
        self.gamma = check_integral(self.gamma.to(INTEGER_DTYPE), EXACT_LIMIT, "IntegerLayerNorm gamma")
        self.beta = check_integral(self.beta.to(INTEGER_DTYPE), EXACT_LIMIT, "IntegerLayerNorm beta")

    @classmethod
    def of(cls, norm, frac: int, bits: int = 16, input_frac: Optional[int] = None) -> "IntegerLayerNorm":
        """From a ``torch.nn.LayerNorm`` (post-training quantisation)."""
        gamma, shift = quantize_weight(norm.weight.detach(), bits)
        beta = torch.round(norm.bias.detach().double() * 2.0 ** (frac + shift))
        return cls(gamma, beta, shift, frac, norm.eps, input_frac=input_frac)

    def __call__(self, x: Tensor, groups: int = 1) -> Tensor:
        """Checked on the actual values: ``(2 max|x|)² · max(n, 4^extra)`` must stay below 2^52.

        ``groups``: ``x``'s leading dimension holds that many equal blocks of rows, one per image of a batched call.
        Why: ``extra`` depends on the largest value, and judged over a whole batch an image with large activations
        would take a bit of σ from every other image's rows (their means moved by a step: another decoded latent
        than the same stream gives alone). Judged per block, an image's rows compute what they compute alone."""
        if x.dtype != INTEGER_DTYPE:
            raise IntegerPathError(f"IntegerLayerNorm input: expected {INTEGER_DTYPE}, got {x.dtype}")
        n = x.shape[-1]
        blocks = x.reshape(groups, -1, n)
        guard = _deferred()
        if guard is not None and x.numel():
            four, eps, step = self._constants_on_device(blocks, guard)
        else:
            peaks = blocks.abs().amax((1, 2)).tolist() if x.numel() else [0.0] * groups
            extras = [self._extra_bits(peak, n) for peak in peaks]
            if len(set(extras)) == 1:  # the usual case: one set of constants, as Python numbers
                four, eps, step = self._constants(extras[0])
            else:
                index = torch.tensor(extras, device=x.device)
                four, eps, step = (t.index_select(0, index).view(-1, 1, 1) for t in self._constant_tables(x.device))
        d = blocks - floor_div(blocks.sum(-1, keepdim=True), n)
        variance = floor_div((d * d).sum(-1, keepdim=True), n)
        sigma = isqrt(variance * four + eps, nonnegative=True)  # at 2^-(frac + extra); >= 1
        normalised = floor_div(d * step + sigma, 2.0 * sigma, divisor_positive=True)
        out = shift_down_(torch.addcmul(self.beta_half(), normalised, self.gamma), self.gamma_shift)
        return out.reshape(x.shape)

    def _extra_bits(self, peak: float, n: int) -> int:
        """σ's extra bits for values up to ``peak``: :attr:`extra`, fewer for large activations (whose σ needs them
        less) so that ``4^extra (2 peak)²`` stays exact; an error where even ``n (2 peak)²`` would not."""
        if not n * (2 * peak) ** 2 < EXACT_LIMIT / 2:  # NaN fails too
            raise IntegerPathError(f"IntegerLayerNorm: {n} values up to |x| = {peak:g} leave the exact range")
        extra = self.extra
        while extra > 0 and not 4.0**extra * (2 * peak) ** 2 < EXACT_LIMIT / 2:
            extra -= 1
        return extra

    def _constants_on_device(self, blocks: Tensor, guard: DeferredGuard) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`_extra_bits` and :meth:`_constants` per block without reading the peaks on the host (inside
        :func:`deferred_checks`): the same comparisons on the same correctly rounded values, constants picked from
        tables of the exact floats, the range error recorded with the guard. ``(groups, 1, 1)`` each."""
        n = blocks.shape[-1]
        two_peak = 2 * blocks.abs().amax((1, 2))
        square = two_peak * two_peak  # (2 peak)², correctly rounded as Python's ** 2 is
        guard.expect(f"IntegerLayerNorm: {n} values (n (2 max|x|)²)", "below", EXACT_LIMIT / 2, n * square.amax())
        four, eps, step = self._constant_tables(blocks.device)
        # 4^k (2 peak)² < 2^52 holds for every k below one that passes, so the count of passing k is the largest
        extra = (square[:, None] * four[1:] < EXACT_LIMIT / 2).sum(1)
        return tuple(t.index_select(0, extra).view(-1, 1, 1) for t in (four, eps, step))  # type: ignore[return-value]

    def _constant_tables(self, device) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`_constants` for every ``extra`` from 0 to :attr:`extra`, as tensors on ``device`` (cached)."""
        cache = vars(self).setdefault("_tables", {})
        if device not in cache:
            rows = [self._constants(k) for k in range(self.extra + 1)]
            cache[device] = tuple(torch.tensor(c, dtype=INTEGER_DTYPE, device=device) for c in zip(*rows))
        return cache[device]

    def _constants(self, extra: int) -> tuple:
        """``(4^extra, max(ε, 1), 2^(frac + extra + 1))`` with ε on the variance's scale, exact floats."""
        eps = float(round(self.eps * 4.0 ** ((self.frac if self.input_frac is None else self.input_frac) + extra)))
        return 4.0**extra, max(eps, 1.0), 2.0 ** (self.frac + extra + 1)

    def beta_half(self) -> Tensor:
        """β plus the rounding half of the output shift (:func:`half_step`), derived once per stored β."""
        return derived(self, "_beta_half", (self.beta,), lambda beta: beta + half_step(self.gamma_shift))


def integer_softmax(logits: Tensor, exp_table: "IntegerTable", out_bits: int) -> Tensor:
    """Softmax over the last dimension of integer logits (on ``exp_table``'s input scale), as integers summing to
    about ``2^out_bits`` per row: ``e = exp_table(l - max l)``, ``p = round(e · 2^out_bits / Σe)``."""
    check_range(logits, EXACT_LIMIT / 4, "integer_softmax logits")
    e = exp_table(logits - logits.amax(-1, keepdim=True))
    total = e.sum(-1, keepdim=True)  # >= exp_table(0) > 0: it holds the largest logit's exp
    return floor_div(e * 2.0 ** (out_bits + 1) + total, 2.0 * total, divisor_positive=True)
