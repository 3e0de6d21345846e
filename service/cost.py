"""Admission by cost: what a request will take on this server, known before any pixel is decoded.

Why: the byte and pixel limits say nothing about time. A 2 KB PNG that declares 4000x4000 pixels passes both, and
before this it was admitted, ran out its 30 s deadline, and kept a core and gigabytes busy. The server now prices
each request from the size in its header and its own measured speed, and refuses (422 ``deadline_too_short``) one
that cannot finish in time, at once, with the estimate, the deadline and the largest image that would fit.

The price of one (model, op, effort) is affine in megapixels, ``seconds = overhead + per_megapixel · MP``
(per-request overhead plus work proportional to pixels: transforms over tiles, entropy coding, image I/O).
Both terms are measured at start-up on two image sizes (:meth:`CostModel.calibrate`), and ``per_megapixel``
follows the server's own recent requests (an exponential average over requests of at least
``min_megapixels``), so a slower machine, a busier one or a GPU prices itself. Unmeasured kinds of work (effort
> 0 before its first request) are not refused on cost; the deadline still bounds them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Dict, Hashable, Optional, Tuple


@dataclass
class Price:
    """``seconds = overhead_s + per_megapixel_s · megapixels`` for one kind of work."""

    overhead_s: float
    per_megapixel_s: float

    def seconds(self, pixels: int) -> float:
        return self.overhead_s + self.per_megapixel_s * pixels / 1e6

    def scaled(self, factor: float) -> "Price":
        """This price times ``factor``: a first price for work measured to cost about that multiple of this."""
        return Price(self.overhead_s * factor, self.per_megapixel_s * factor)

    def pixels_within(self, seconds: float) -> int:
        """The most pixels that fit in ``seconds`` (0 if not even the overhead does)."""
        if seconds <= self.overhead_s:
            return 0
        return int((seconds - self.overhead_s) / max(self.per_megapixel_s, 1e-9) * 1e6)


@dataclass
class CostModel:
    """Prices per key (e.g. ``(model, op, effort)``), from calibration and then from observed requests."""

    #: weight of the newest request in the running per-megapixel average
    smoothing: float = 0.2
    #: requests below this are dominated by the overhead and do not move the per-megapixel term
    min_megapixels: float = 0.25
    prices: Dict[Hashable, Price] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def calibrate(self, key: Hashable, small: Tuple[int, float], large: Tuple[int, float]) -> Price:
        """Fit the two terms through two measured ``(pixels, seconds)`` points of different sizes."""
        (p1, s1), (p2, s2) = sorted((small, large))
        if p2 <= p1:
            raise ValueError("calibration needs two different image sizes")
        per_mp = max(0.0, (s2 - s1) / ((p2 - p1) / 1e6))
        price = Price(overhead_s=max(0.0, s1 - per_mp * p1 / 1e6), per_megapixel_s=per_mp)
        with self._lock:
            self.prices[key] = price
        return price

    def seed(self, key: Hashable, price: Price) -> None:
        """Set the price of ``key`` without measuring it (observed requests then refine it)."""
        with self._lock:
            self.prices[key] = price

    def observe(self, key: Hashable, pixels: int, seconds: float) -> None:
        """Fold one finished request's compute time into the per-megapixel term of its key."""
        megapixels = pixels / 1e6
        if megapixels < self.min_megapixels or not math.isfinite(seconds):
            return
        with self._lock:
            price = self.prices.get(key)
            if price is None:
                return
            sample = max(0.0, seconds - price.overhead_s) / megapixels
            price.per_megapixel_s += self.smoothing * (sample - price.per_megapixel_s)

    def estimate(self, key: Hashable, pixels: int) -> Optional[float]:
        """Seconds the work should take here, or None when this kind of work was never measured."""
        price = self.prices.get(key)
        return None if price is None else price.seconds(pixels)

    def price(self, key: Hashable) -> Optional[Price]:
        return self.prices.get(key)

    def snapshot(self) -> Dict[Hashable, Price]:
        """A consistent copy of every price (for metrics, read from another thread)."""
        with self._lock:
            return {key: Price(p.overhead_s, p.per_megapixel_s) for key, p in self.prices.items()}
