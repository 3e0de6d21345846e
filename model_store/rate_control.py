"""Rate control: the stream that fits a byte budget, lands on a bpp, or reaches a PSNR, from a variable-rate model.

What users expect from ``avifenc``/``cwebp -size``/``cjxl -d``: say what you need, not a quality number. Exactly one
:class:`RateTarget` field is set; :func:`compress_to_target` answers with a real stream and what it achieved.

How (issue #27): g_a runs once, the hyperprior once (it does not depend on the knob), and each probe of the knob
only re-quantises the latent on that code's grid and sums the entropy model's likelihoods
(:class:`~model_store.entropy.causal_context.KnobProbe`, ~0.2x a real entropy encode, estimates within ~1 % of the
coded size). An interpolation search on log-size (size grows about geometrically with the code) finds the code in
a few probes; then one real encode, checked:

* ``max_bytes``: the stream is **never** larger than the cap. The search aims a margin below it; if the real stream
  is still over, the code steps down (rescaled by the real/estimated ratio) and encodes again until it fits; if it
  landed more than :data:`TOLERANCE` below the cap, one encode higher is tried and kept only if it fits.
* ``target_bpp``: the closest code, one corrective encode if the real stream is off by more than :data:`TOLERANCE`.
* ``min_psnr``: the smallest code whose estimated reconstruction reaches the PSNR (g_s per probe, so slower), then
  the real decoded pixels are checked; at most :data:`PSNR_SLACK` dB above the target where the knob allows.

Targets above what the top code produces get the top code's stream (the best this model does); targets below the
smallest stream, or a PSNR above the top code's, raise :class:`TargetUnreachableError` with the reachable limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from torch import Tensor

from model_store import cancellation, metrics
from model_store.errors import ModelStoreError

#: How close ``max_bytes`` (from below) and ``target_bpp`` (either side) must land, as a fraction of the target.
TOLERANCE = 0.03
#: How far above ``min_psnr`` the result may be, in dB, where a lower code exists.
PSNR_SLACK = 0.3
#: The search aims this fraction below a byte cap: the estimate's error (~1 %) should not cost a second encode.
CAP_MARGIN = 0.01
#: Container header bytes assumed before the first real stream says how many there are.
HEADER_GUESS = 64
#: Width of the window of estimates the search accepts (a fraction of the goal): ~2 codes of erstc-small's knob, so
#: a few probes find one, and with the estimate's ~1 % error the real stream still lands inside the tolerance.
SEARCH_WINDOW = 0.015
#: Encodes a ``max_bytes`` search may add when its stream landed more than :data:`TOLERANCE` below the cap.
LANDED_LOW_TRIES = 2
#: The same for PSNR targets, in dB above the goal.
PSNR_WINDOW = 0.15


class TargetUnreachableError(ModelStoreError):
    """The model cannot produce a stream that meets the target (the message names the reachable limit)."""

    code = "target_unreachable"


class RateControlUnsupportedError(ModelStoreError):
    """The model has no quality knob to search (a per-λ model): name a quality instead, or a variable-rate model."""

    code = "rate_control_unsupported"


@dataclass(frozen=True)
class RateTarget:
    """What the caller needs; exactly one field is set."""

    max_bytes: Optional[int] = None
    target_bpp: Optional[float] = None
    min_psnr: Optional[float] = None

    def __post_init__(self) -> None:
        given = {k: v for k, v in self.__dict__.items() if v is not None}
        if len(given) != 1:
            raise ValueError(f"give exactly one of max_bytes, target_bpp, min_psnr (got {sorted(given) or 'none'})")
        ((name, value),) = given.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if name == "max_bytes" and int(value) != value:
            raise ValueError(f"max_bytes must be a whole number of bytes, got {value!r}")

    @property
    def kind(self) -> str:
        return next(k for k, v in self.__dict__.items() if v is not None)


@dataclass(frozen=True)
class RateControlled:
    """A rate-controlled stream and what it achieved."""

    stream: bytes
    quality: int  # the knob code used (also in the stream's header)
    probes: int  # estimate probes of the knob
    encodes: int  # real entropy encodes
    bpp: float
    psnr: Optional[float] = None  # measured on the decoded pixels when the target was a PSNR


def search_largest(value: Callable[[int], float], limit: float, low: int, high: int, slack: float = 0.0) -> int:
    """The largest code in ``low..high`` whose ``value`` (increasing in the code, > 0) is ``<= limit``, or ``low - 1``
    if there is none; with ``slack`` > 0, any code whose value lies in ``[limit·(1 - slack), limit]`` will do.

    Size and PSNR grow smoothly with the code (log-size about linearly), so this is a secant search on
    ``log(value)`` from the middle of the range, kept inside a bracket of known values (bisection when the secant
    would leave it or stall): with a window of a few codes it ends in 2-4 calls where bisection needs ~8.
    """
    below, above = low - 1, high + 1  # bracket: value(below) <= limit < value(above); the ends are sentinels
    known: Dict[int, float] = {}
    aim = math.log(limit) + math.log1p(-slack / 2)  # the middle of the accepted window

    def probe(code: int) -> float:
        if code not in known:
            known[code] = value(code)
        return known[code]

    code, previous = (low + high) // 2, None
    while above - below > 1:
        v = probe(code)
        if limit * (1.0 - slack) <= v <= limit and slack > 0:
            return code
        if v <= limit:
            below = code
        else:
            above = code
        guess = None
        if previous is not None and previous != code:
            slope = (math.log(v) - math.log(known[previous])) / (code - previous)
            if slope > 0:
                guess = code + round((aim - math.log(v)) / slope)
        elif previous is None:
            # one point: assume the size doubles over a third of the range (erstc-small: x6.7 over 254 codes)
            guess = code + round((aim - math.log(v)) / (math.log(2.0) * 3 / max(1, high - low)))
        previous = code
        if above - below <= 1:
            break
        if guess is not None:  # a secant step past the bracket stops at its edge: the ends are often the answer
            guess = min(above - 1, max(below + 1, guess))
        if guess is None or guess in known:
            guess = (below + above) // 2
        code = guess
    return below


def check_supported(codec) -> None:
    """Raise :class:`RateControlUnsupportedError` unless ``codec`` has a quality knob to search."""
    if codec.rate_knob is None:
        raise RateControlUnsupportedError(
            f"{codec.identity.model_id} is a per-λ model: rate control (max_bytes, target_bpp, min_psnr) needs a "
            "variable-rate model; name a quality instead"
        )


def compress_to_target(codec, image: np.ndarray, target: RateTarget, latent: Optional[Tensor] = None) -> RateControlled:
    """The stream of ``image`` that meets ``target`` with ``codec`` (an ``ImageCodec`` of a variable-rate model).
    ``latent``: ``codec.analyse([image])`` if the caller already ran it (the service batches g_a across requests).

    The search checks the calling thread's cancellation token between probes and encodes, so an abandoned
    request stops within one of them."""
    check_supported(codec)
    return _Search(codec, image, latent).run(target)


class _Search:
    """One image's rate-control search: the latent and the knob probe are computed once, real encodes cached."""

    def __init__(self, codec, image: np.ndarray, latent: Optional[Tensor] = None):
        self.codec, self.image = codec, image
        self.height, self.width = image.shape[:2]
        self.top = codec.rate_knob.levels
        self.y = codec.analyse([image]) if latent is None else latent.reshape((1,) + tuple(latent.shape[-3:]))
        self.probe = codec.model.knob_probe(self.y.to(codec.device))
        self._bytes: Dict[int, float] = {}
        self._psnr: Dict[int, float] = {}
        self._real_psnr: Dict[int, float] = {}
        self.streams: Dict[int, Tuple[bytes, Tensor]] = {}

    # -- estimates and real encodes -----------------------------------------------------------------------------
    def estimated_bytes(self, code: int) -> float:
        if code not in self._bytes:
            cancellation.check()
            self._bytes[code] = self.probe.bits(code) / 8.0 + HEADER_GUESS
        return self._bytes[code]

    def estimated_psnr(self, code: int) -> float:
        if code not in self._psnr:
            cancellation.check()
            y_hat = self.probe.reconstruction(code).float().cpu()
            self._psnr[code] = metrics.psnr(self._pixels(y_hat, code), self.image)
        return self._psnr[code]

    def _pixels(self, y_hat: Tensor, code: int) -> np.ndarray:
        return self.codec.synthesise([y_hat], [_PixelsOnly(self.height, self.width, code)])[0]

    def stream(self, code: int) -> bytes:
        """The real stream at ``code`` (encoded once)."""
        if code not in self.streams:
            self.streams[code] = self.codec.encode_latent_and_reconstruct(self.y[0], self.height, self.width, code)
        return self.streams[code][0]

    def real_psnr(self, code: int) -> float:
        """PSNR of what every decoder of the stream at ``code`` shows (the encoder knows its ŷ exactly; g_s once)."""
        if code not in self._real_psnr:
            self.stream(code)
            self._real_psnr[code] = metrics.psnr(self._pixels(self.streams[code][1].float(), code), self.image)
        return self._real_psnr[code]

    def sizes(self) -> Dict[int, int]:
        """Byte size of every real stream encoded so far, by code."""
        return {c: len(s) for c, (s, _) in self.streams.items()}

    def result(self, code: int, psnr: Optional[float] = None) -> RateControlled:
        stream = self.stream(code)
        bpp = metrics.bpp(len(stream), self.height, self.width)
        return RateControlled(stream, code, self.probe.probes, len(self.streams), bpp, psnr)

    def code_for_size(self, goal: float, scale: float = 1.0, high: Optional[int] = None, slack: float = 0.0) -> int:
        """The largest code whose estimated size times ``scale`` is at most ``goal`` (at least 1); with ``slack``,
        any code within that fraction below ``goal``."""
        value = lambda c: self.estimated_bytes(c) * scale  # noqa: E731
        return max(1, search_largest(value, goal, 1, high or self.top, slack))

    def ratio(self, code: int) -> float:
        """Real over estimated size at an encoded ``code``: what the estimate misses, for the next guess."""
        return len(self.stream(code)) / self.estimated_bytes(code)

    # -- the three targets --------------------------------------------------------------------------------------
    def run(self, target: RateTarget) -> RateControlled:
        if target.kind == "max_bytes":
            return self.to_cap(int(target.max_bytes))
        if target.kind == "target_bpp":
            return self.to_size(target.target_bpp * self.height * self.width / 8.0)
        return self.to_psnr(float(target.min_psnr))

    def next_code(self, goal: float, low: int, high: int) -> int:
        """The next code to encode for a size ``goal`` strictly between ``low`` and ``high`` (0 and top + 1 are
        open ends), after at least one real encode: interpolated on log-size between the real streams that bracket
        it when there are two, else the estimate corrected by the nearest real stream's ratio."""
        real = self.sizes()
        under = [c for c in real if c <= low and real[c] <= goal]
        over = [c for c in real if c >= high and real[c] > goal]
        if under and over:
            c_lo, c_hi = max(under), min(over)
            share = math.log(goal / real[c_lo]) / math.log(real[c_hi] / real[c_lo])
            guess = c_lo + int(share * (c_hi - c_lo))
        else:
            nearest = min(real, key=lambda c: min(abs(c - low), abs(c - high)))
            guess = self.code_for_size(goal * (1.0 - CAP_MARGIN), self.ratio(nearest), slack=SEARCH_WINDOW)
        return min(high - 1, max(low + 1, guess))

    def to_cap(self, cap: int) -> RateControlled:
        code = self.code_for_size(cap * (1.0 - CAP_MARGIN), slack=SEARCH_WINDOW)
        while len(self.stream(code)) > cap:  # never over the cap: step down, every step a real stream
            if code == 1:
                raise TargetUnreachableError(
                    f"the smallest stream this model makes of this image is {len(self.stream(1))} bytes, "
                    f"above max_bytes={cap}"
                )
            code = self.next_code(cap, max((c for c, n in self.sizes().items() if n <= cap), default=0), code)
        for _ in range(LANDED_LOW_TRIES):  # landed low: try higher, keeping only what fits
            if len(self.stream(code)) >= (1.0 - TOLERANCE) * cap:
                break
            ceiling = min((c for c, n in self.sizes().items() if n > cap), default=self.top + 1)
            if ceiling - code <= 1:
                break  # the next code up is over the cap: this is the largest stream that fits
            higher = self.next_code(cap, code, ceiling)
            if len(self.stream(higher)) <= cap:
                code = higher
        return self.result(code)

    def to_size(self, goal: float) -> RateControlled:
        def closest(scale: float) -> int:
            code = self.code_for_size(goal * (1.0 + SEARCH_WINDOW / 2), scale, slack=SEARCH_WINDOW)
            if code < self.top and abs(self.estimated_bytes(code + 1) * scale - goal) < abs(
                self.estimated_bytes(code) * scale - goal
            ):
                code += 1
            return code

        def off(code: int) -> bool:
            return abs(len(self.stream(code)) - goal) > TOLERANCE * goal

        code = closest(1.0)
        for _ in range(2):  # at most two corrective encodes, on real streams
            if not off(code):
                break
            sizes = self.sizes()
            low = max((c for c, n in sizes.items() if n <= goal), default=0)
            high = min((c for c, n in sizes.items() if n > goal), default=self.top + 1)
            if high - low <= 1:
                break
            self.stream(self.next_code(goal, low, high))
            code = min(self.sizes().items(), key=lambda item: abs(item[1] - goal))[0]
        smallest = len(self.stream(code))
        if code == 1 and smallest > goal * (1.0 + TOLERANCE):
            bpp = metrics.bpp(smallest, self.height, self.width)
            raise TargetUnreachableError(
                f"the smallest stream this model makes of this image is {bpp:.4f} bpp, above target_bpp="
                f"{goal * 8.0 / (self.height * self.width):g}"
            )
        return self.result(code)

    def to_psnr(self, goal: float) -> RateControlled:
        def first_reaching(shift: float) -> int:
            """The smallest code whose estimated PSNR (+ ``shift``) reaches ``goal``: searched on 10^(dB/10), which
            is positive and, like the size, about geometric in the code."""
            limit = 10.0 ** ((goal + PSNR_WINDOW) / 10.0)
            slack = 1.0 - 10.0 ** (-PSNR_WINDOW / 10.0)
            code = max(
                1,
                search_largest(lambda c: 10.0 ** ((self.estimated_psnr(c) + shift) / 10.0), limit, 1, self.top, slack),
            )
            return code if self.estimated_psnr(code) + shift >= goal else min(self.top, code + 1)

        code = first_reaching(0.0)
        psnr = self.real_psnr(code)
        if (psnr < goal and code < self.top) or (psnr > goal + PSNR_SLACK and code > 1):
            code = first_reaching(psnr - self.estimated_psnr(code))  # corrected by what the estimate missed
            psnr = self.real_psnr(code)
        while psnr < goal and code < self.top:  # the real pixels decide: step up until they reach the goal
            code += 1
            psnr = self.real_psnr(code)
        if psnr < goal:
            raise TargetUnreachableError(
                f"the highest PSNR this model reaches on this image is {psnr:.2f} dB, below min_psnr={goal:g}"
            )
        while code > 1 and psnr > goal + PSNR_SLACK:  # and step down while they still do
            lower = self.real_psnr(code - 1)
            if lower < goal:
                break
            code, psnr = code - 1, lower
        return self.result(code, psnr)


@dataclass(frozen=True)
class _PixelsOnly:
    """The header fields ``ImageCodec.synthesise`` reads, for an estimated latent that has no stream."""

    height: int
    width: int
    quality: int  # the knob code (g_s may be conditioned on it)
