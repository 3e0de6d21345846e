"""Quality metrics and Bjøntegaard deltas, computed the way the learned-compression literature does.

* ``psnr``: RGB PSNR, the mean squared error taken over all three channels at once (not the mean of per-channel
  PSNRs, and not on luma), peak 255. This is what CompressAI's ``eval_model`` and the STF/TinyLIC papers report.
* ``ms_ssim``: 5-scale MS-SSIM (Wang et al. 2003) on RGB with ``data_range=255`` via ``pytorch_msssim``.
* ``bpp``: real file bytes * 8 / pixels.
* ``bd_rate`` / ``bd_psnr``: Bjøntegaard deltas (VCEG-M33). Default interpolation is PCHIP, as in the JCT-VC/
  JVET CTC Excel sheets and the ``bjontegaard`` PyPI package (FAU-LMS); the classic cubic polynomial fit of
  VCEG-M33 is available as ``method="cubic"``. The polynomial fit can oscillate between points and give
  misleading numbers for unevenly spaced curves, which is why PCHIP became the reference.

Curves are given as sequences of ``(bpp, psnr)`` pairs (any order). Dataset averages should be formed first:
mean bpp and mean per-image PSNR per quality setting, as CompressAI does.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, Optional, Sequence, Tuple

import numpy as np

PEAK_8BIT = 255.0
MS_SSIM_SCALES = 5
MS_SSIM_WINDOW = 11
# Each of the 4 downsamplings halves the image, and the 11-tap window must still fit at the coarsest scale.
MS_SSIM_MIN_SIDE = (MS_SSIM_WINDOW - 1) * 2 ** (MS_SSIM_SCALES - 1) + 1

RDCurve = Sequence[Tuple[float, float]]
BDMethod = Literal["pchip", "cubic"]
_MIN_POINTS = {"pchip": 2, "cubic": 4}  # a cubic polynomial needs 4 points to be determined


class NoOverlapWarning(RuntimeWarning):
    """Two RD curves share no quality (or rate) interval, so a Bjøntegaard delta is undefined."""


def _pair(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over every pixel and channel."""
    x, y = _pair(a, b)
    return float(np.mean((x - y) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = PEAK_8BIT) -> float:
    """RGB PSNR in dB over all channels (``inf`` for identical images)."""
    err = mse(a, b)
    return math.inf if err == 0 else 10.0 * math.log10(peak**2 / err)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two HxWx3 uint8 images; NaN (with a warning) when a side is too small for 5 scales.

    pytorch_msssim asserts on images under ~161 px a side; returning NaN keeps an evaluation of small images
    running while making the gap visible, rather than silently computing a differently-weighted variant.
    """
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    x, y = _pair(a, b)
    if min(x.shape[:2]) < MS_SSIM_MIN_SIDE:
        warnings.warn(
            f"MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px, got {x.shape[1]}x{x.shape[0]}; reporting NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    # .contiguous(): a permuted (channels-last) view sends the depthwise convolutions down a ~15x slower path.
    tx = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).float().contiguous()
    ty = torch.from_numpy(y).permute(2, 0, 1).unsqueeze(0).float().contiguous()
    previous_threads = torch.get_num_threads()
    # One thread: the gain from more is small (0.18 -> 0.11 s per 768x512 image on 2 idle cores), but on a busy
    # machine torch's spinning worker threads made each call 1-2 s instead of 0.05 s. Restored afterwards so a
    # learned codec timed next still runs with its usual thread count.
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return float(_ms_ssim(tx, ty, data_range=PEAK_8BIT, size_average=True))
    finally:
        torch.set_num_threads(previous_threads)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the dB scale ``-10 log10(1 - ms_ssim)`` used for plots and BD-rates over MS-SSIM."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def bpp(nbytes: int, height: int, width: int) -> float:
    """Bits per pixel of a stream of ``nbytes`` bytes for an image of ``height`` x ``width`` pixels."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    return 8.0 * nbytes / (height * width)


def _curve(curve: RDCurve, name: str, method: BDMethod, x_is_rate: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Validate one curve and return it as (x, y) with x strictly increasing, rates in log10.

    ``x_is_rate=False`` gives (PSNR, log10 rate) for BD-rate, ``True`` gives (log10 rate, PSNR) for BD-PSNR.
    Points with equal x are averaged (interpolators need strictly increasing x); this happens when two settings
    of a coarse codec produce identical output.
    """
    if method not in _MIN_POINTS:
        raise ValueError(f"unknown BD interpolation method {method!r}; use one of {sorted(_MIN_POINTS)}")
    pts = np.asarray(curve, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name}: expected a sequence of (bpp, psnr) pairs, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{name}: rates and qualities must be finite")
    if np.any(pts[:, 0] <= 0):
        raise ValueError(f"{name}: rates must be positive (they are taken in log domain)")
    log_rate, quality = np.log10(pts[:, 0]), pts[:, 1]
    x, y = (log_rate, quality) if x_is_rate else (quality, log_rate)
    unique_x, inverse = np.unique(x, return_inverse=True)
    mean_y = np.bincount(inverse, weights=y) / np.bincount(inverse)
    if unique_x.size < _MIN_POINTS[method]:
        raise ValueError(f"{name}: method {method!r} needs >= {_MIN_POINTS[method]} distinct points")
    return unique_x, mean_y


def _overlap(lo_a: float, hi_a: float, lo_b: float, hi_b: float, what: str) -> Optional[Tuple[float, float]]:
    """The shared [lo, hi] of two ranges, or None (with a warning) when they do not overlap."""
    lo, hi = max(lo_a, lo_b), min(hi_a, hi_b)
    if hi <= lo:
        warnings.warn(
            f"RD curves do not overlap in {what} (anchor [{lo_a:.4g}, {hi_a:.4g}], test [{lo_b:.4g}, {hi_b:.4g}]);"
            " the Bjøntegaard delta is undefined, returning NaN",
            NoOverlapWarning,
            stacklevel=3,
        )
        return None
    return lo, hi


def _mean_over(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: BDMethod) -> float:
    """Average of the curve y(x) over [lo, hi], using the chosen interpolation."""
    if method == "pchip":  # the method names were validated by _curve
        from scipy.interpolate import PchipInterpolator

        integral = float(PchipInterpolator(x, y).integrate(lo, hi))
    elif method == "cubic":
        antiderivative = np.polyint(np.polyfit(x, y, 3))
        integral = float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    return integral / (hi - lo)


def bd_rate(rd_anchor: RDCurve, rd_test: RDCurve, method: BDMethod = "pchip") -> float:
    """Bjøntegaard delta rate in percent: average bitrate change of ``rd_test`` vs ``rd_anchor`` at equal quality.

    Negative means the test codec needs fewer bits (e.g. -20.0 = 20 % smaller files for the same PSNR).
    Log10-rate is interpolated as a function of PSNR for each curve, both are integrated over the PSNR interval
    the curves share, and the mean log-rate difference d gives ``(10**d - 1) * 100``. Returns NaN (with a
    ``NoOverlapWarning``) when the PSNR ranges do not overlap, since any number would be an extrapolation.
    """
    q_a, log_a = _curve(rd_anchor, "anchor", method, x_is_rate=False)
    q_t, log_t = _curve(rd_test, "test", method, x_is_rate=False)
    interval = _overlap(q_a[0], q_a[-1], q_t[0], q_t[-1], "quality (PSNR)")
    if interval is None:
        return math.nan
    lo, hi = interval
    delta = _mean_over(q_t, log_t, lo, hi, method) - _mean_over(q_a, log_a, lo, hi, method)
    return (10.0**delta - 1.0) * 100.0


def bd_psnr(rd_anchor: RDCurve, rd_test: RDCurve, method: BDMethod = "pchip") -> float:
    """Bjøntegaard delta PSNR in dB: average quality gain of ``rd_test`` over ``rd_anchor`` at equal rate.

    Positive means the test codec is better. PSNR is interpolated as a function of log10-rate and averaged over
    the shared log-rate interval. NaN (with a ``NoOverlapWarning``) when the rate ranges do not overlap.
    """
    x_a, y_a = _curve(rd_anchor, "anchor", method, x_is_rate=True)
    x_t, y_t = _curve(rd_test, "test", method, x_is_rate=True)
    interval = _overlap(x_a[0], x_a[-1], x_t[0], x_t[-1], "log10 rate")
    if interval is None:
        return math.nan
    lo, hi = interval
    return _mean_over(x_t, y_t, lo, hi, method) - _mean_over(x_a, y_a, lo, hi, method)
