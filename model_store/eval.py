"""Rate-distortion evaluation of learned and classical codecs on a folder of PNGs.

::

    python -m model_store.eval DIR [--model NAME ...] [--qualities 1 2 3 ...] [--classical jpeg webp avif jxl]
                                   [--json OUT.json] [--csv OUT.csv] [--plot OUT.png] [--limit N]

Every point is a real ``compress`` -> bytes -> ``decompress`` round trip per image: bpp counts the actual stream
(headers included), PSNR/MS-SSIM compare the decoded pixels with the original, and encode/decode times are
wall-clock seconds per image (after one untimed warm-up call per codec setting, so lazy initialisation and
first-call allocation are not billed to the first image). Dataset figures are means over images of per-image
bpp, PSNR and MS-SSIM, as CompressAI's ``eval_model`` reports them.

BD-rates (PCHIP, over PSNR; see ``model_store.metrics``) are given for every learned model against every
classical codec, and for every classical codec against JPEG as context. Published Kodak curves
(``reference_curves.json``) are only drawn on the plot: they come from a different image set and are never
used in a BD-rate.

JSON layout::

    {"images": [{"name", "width", "height", "sha256"}],
     "codecs": {name: {"kind": "learned"|"classical", "settings": {...},
                       "points": [{"quality", "bpp", "psnr", "ms_ssim", "enc_s", "dec_s", "n_images"}]}},
     "bd_rate": {test: {anchor: percent}},            # PSNR-based, negative = test saves bits
     "bd_rate_ms_ssim": {test: {anchor: percent}},    # same, over MS-SSIM in dB
     "environment": {...}}

Non-finite numbers (NaN BD-rates of non-overlapping curves, MS-SSIM of tiny images) are written as ``null``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from model_store import classical, metrics

REFERENCE_CURVES_PATH = Path(__file__).resolve().parent / "reference_curves.json"
CONTEXT_ANCHOR = "jpeg"  # classical codecs are compared with this one for context
IMAGE_SUFFIXES = (".png",)
LEARNED, CLASSICAL = "learned", "classical"
CSV_FIELDS = ("codec", "kind", "quality", "bpp", "psnr", "ms_ssim", "enc_s", "dec_s", "n_images")


class Codec(Protocol):
    """What both learned (``model_store.codec.ImageCodec``) and classical codecs provide."""

    def compress(self, img: np.ndarray) -> bytes: ...

    def decompress(self, data: bytes) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalImage:
    """One test image, kept decoded in memory so file I/O is never timed."""

    name: str
    pixels: np.ndarray
    sha256: str

    def describe(self) -> Dict[str, object]:
        h, w = self.pixels.shape[:2]
        return {"name": self.name, "width": w, "height": h, "sha256": self.sha256}


@dataclass(frozen=True)
class CodecJob:
    """One (codec, quality) to evaluate; ``make`` builds it lazily so only one learned model is in memory."""

    name: str
    kind: str
    quality: float
    make: Callable[[], Codec]
    settings: Dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageScore:
    """The measurements of one image through one codec setting."""

    bpp: float
    psnr: float
    ms_ssim: float
    enc_s: float
    dec_s: float


@dataclass(frozen=True)
class RDPoint:
    """Dataset means for one codec setting (one point of an RD curve)."""

    quality: float
    bpp: float
    psnr: float
    ms_ssim: float
    enc_s: float
    dec_s: float
    n_images: int


@dataclass
class CodecCurve:
    """All evaluated settings of one codec, in the order they were run (increasing quality)."""

    name: str
    kind: str
    settings: Dict[str, object] = field(default_factory=dict)
    points: List[RDPoint] = field(default_factory=list)

    def rd(self) -> List[Tuple[float, float]]:
        """(bpp, PSNR) pairs for BD computations."""
        return [(p.bpp, p.psnr) for p in self.points]

    def rd_ms_ssim(self) -> List[Tuple[float, float]]:
        """(bpp, MS-SSIM dB) pairs; empty when MS-SSIM could not be computed (images too small)."""
        if any(math.isnan(p.ms_ssim) for p in self.points):
            return []
        return [(p.bpp, metrics.ms_ssim_db(p.ms_ssim)) for p in self.points]


class EvalError(Exception):
    """A user-facing problem with the requested evaluation (unknown model, empty folder...)."""


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------
def load_images(folder: Path, limit: Optional[int] = None) -> List[EvalImage]:
    """The PNGs of ``folder`` in name order (stable across runs), at most ``limit`` of them."""
    from model_store.image_io import open_image

    if not folder.is_dir():
        raise EvalError(f"{folder} is not a directory")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise EvalError(f"no PNG images in {folder}")
    return [EvalImage(p.name, open_image(p), hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths]


def _learned_api() -> Optional[Tuple[Callable, Callable]]:
    """(load_codec, shipped_models), or None while the learned-codec modules do not exist in this checkout."""
    try:
        from model_store.codec import load_codec
        from model_store.registry import shipped_models
    except ModuleNotFoundError as exc:
        if exc.name in ("model_store.codec", "model_store.registry"):
            return None
        raise
    return load_codec, shipped_models


def learned_jobs(
    models: Optional[Sequence[str]],
    qualities: Optional[Sequence[int]],
    device: str,
    root: Optional[Path] = None,
    efforts: Sequence[int] = (0,),
) -> List[CodecJob]:
    """Jobs for the requested learned models (all shipped ones when ``models`` is None) under the weights ``root``
    (``model_store/weights`` when None; another root evaluates candidate weights before they ship).

    Each encoder effort (:mod:`model_store.refine`) is its own curve, named ``MODEL`` for effort 0 and
    ``MODEL@eN`` otherwise: the decoder is the same, the encoder is not, and a reader must see which one a number
    belongs to.

    A requested model or quality without shipped weights is an error, not a silent skip: an evaluation that
    quietly drops the model it was asked about would be worse than none.
    """
    api = _learned_api()
    if api is None:
        if models:
            raise EvalError(
                f"cannot evaluate {', '.join(models)}: learned codecs are not available in this "
                "checkout (model_store.codec is missing)"
            )
        return []
    load_codec, shipped_models = api
    shipped: Dict[str, List[int]] = shipped_models(root) if root else shipped_models()
    names = list(models) if models else sorted(shipped)
    for name in names:
        if name not in shipped:
            known = ", ".join(sorted(shipped)) or "none"
            raise EvalError(f"model {name!r} has no shipped weights (shipped models: {known})")
    jobs = []
    for name in names:
        wanted = list(qualities) if qualities else shipped[name]
        missing = sorted(set(wanted) - set(shipped[name]))
        if missing:
            raise EvalError(f"model {name!r} has no weights for qualities {missing} (shipped: {shipped[name]})")
        for effort in efforts:
            label = name if effort == 0 else f"{name}@e{effort}"
            for q in sorted(wanted):
                settings = {"quality_meaning": "shipped quality index", "device": device, "effort": effort}
                make = _learned_factory(load_codec, name, q, device, root, effort)
                jobs.append(CodecJob(label, LEARNED, q, make, settings))
    return jobs


class _EffortCodec:
    """A learned codec that encodes at a fixed effort (the decoder is unchanged)."""

    def __init__(self, codec, effort: int):
        self.codec, self.effort = codec, effort

    def compress(self, img: np.ndarray) -> bytes:
        return self.codec.compress(img, effort=self.effort)

    def decompress(self, data: bytes) -> np.ndarray:
        return self.codec.decompress(data)


def _learned_factory(
    load_codec: Callable, name: str, quality: int, device: str, root: Optional[Path] = None, effort: int = 0
) -> Callable[[], Codec]:
    """Bind loop variables now (a bare lambda in the loop would capture the last model/quality)."""

    where = {} if root is None else {"root": root}

    def make() -> Codec:
        codec = load_codec(name, quality, device=device, **where)
        return codec if effort == 0 else _EffortCodec(codec, effort)

    return make


def classical_jobs(names: Sequence[str], explicit: bool) -> List[CodecJob]:
    """Jobs for the default quality sweep of each named classical codec.

    Codecs the user asked for by name must be available; from the default list, unavailable ones (imagecodecs
    not installed) are skipped with a warning so a minimal install still gets JPEG and WebP.
    """
    jobs = []
    for name in names:
        if name not in classical.CLASSICAL_CODECS:
            raise EvalError(f"unknown classical codec {name!r}; known: {sorted(classical.CLASSICAL_CODECS)}")
        cls = classical.CLASSICAL_CODECS[name]
        if not cls.is_available():
            if explicit:
                raise EvalError(f"classical codec {name!r} is not available here (install imagecodecs)")
            warnings.warn(
                f"skipping classical codec {name!r}: its library is not installed", RuntimeWarning, stacklevel=2
            )
            continue
        settings = cls.settings()
        jobs.extend(CodecJob(name, CLASSICAL, q, _classical_factory(name, q), settings) for q in cls.default_qualities)
    return jobs


def _classical_factory(name: str, quality: float) -> Callable[[], Codec]:
    return lambda: classical.classical_codec(name, quality)


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------
def score_image(codec: Codec, image: np.ndarray, with_ms_ssim: bool = True) -> ImageScore:
    """One timed round trip; a decoder that returns another shape is a bug and fails loudly."""
    start = time.perf_counter()
    data = codec.compress(image)
    mid = time.perf_counter()
    decoded = codec.decompress(data)
    end = time.perf_counter()
    if decoded.shape != image.shape or decoded.dtype != np.uint8:
        raise RuntimeError(f"decoder returned {decoded.dtype} {decoded.shape} for a {image.shape} input")
    h, w = image.shape[:2]
    ms = math.nan
    if with_ms_ssim:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # tiny images: NaN MS-SSIM is reported once, below
            ms = metrics.ms_ssim(image, decoded)
    return ImageScore(metrics.bpp(len(data), h, w), metrics.psnr(image, decoded), ms, mid - start, end - mid)


def evaluate_job(job: CodecJob, images: Sequence[EvalImage], progress=None, with_ms_ssim: bool = True) -> RDPoint:
    """Mean scores of one codec setting over all images (one warm-up round trip first, untimed)."""
    codec = job.make()
    codec.decompress(codec.compress(images[0].pixels))
    scores = []
    for image in images:
        scores.append(score_image(codec, image.pixels, with_ms_ssim))
        if progress is not None:
            progress.update(1)
    return RDPoint(
        job.quality,
        *(_mean(scores, attr) for attr in ("bpp", "psnr", "ms_ssim", "enc_s", "dec_s")),
        n_images=len(scores),
    )


def _mean(scores: Sequence[ImageScore], attr: str) -> float:
    return float(np.mean([getattr(s, attr) for s in scores]))


def run_jobs(
    jobs: Sequence[CodecJob], images: Sequence[EvalImage], show_progress: bool = True, with_ms_ssim: bool = True
) -> List[CodecCurve]:
    """Evaluate every job; curves keep the job order (learned models first, then classical codecs)."""
    from tqdm import tqdm

    curves: Dict[str, CodecCurve] = {}
    with tqdm(total=len(jobs) * len(images), unit="img", disable=not show_progress) as bar:
        for job in jobs:
            bar.set_description(f"{job.name} q={job.quality:g}")
            curve = curves.setdefault(job.name, CodecCurve(job.name, job.kind, job.settings))
            curve.points.append(evaluate_job(job, images, bar, with_ms_ssim))
    if with_ms_ssim and any(min(img.pixels.shape[:2]) < metrics.MS_SSIM_MIN_SIDE for img in images):
        warnings.warn(
            f"some images have a side under {metrics.MS_SSIM_MIN_SIDE} px: their MS-SSIM is NaN, "
            "so mean MS-SSIM is null",
            RuntimeWarning,
            stacklevel=2,
        )
    return list(curves.values())


# --------------------------------------------------------------------------------------------------------------
# Bjøntegaard deltas
# --------------------------------------------------------------------------------------------------------------
def bd_pairs(curves: Sequence[CodecCurve]) -> List[Tuple[str, str]]:
    """(test, anchor) pairs: each learned model vs each classical codec, each encoder effort ``MODEL@eN`` vs the
    same model's effort 0, each classical codec vs JPEG."""
    learned = [c.name for c in curves if c.kind == LEARNED]
    classic = [c.name for c in curves if c.kind == CLASSICAL]
    pairs = [(t, a) for t in learned for a in classic]
    pairs += [(t, t.split("@")[0]) for t in learned if "@" in t and t.split("@")[0] in learned]
    if CONTEXT_ANCHOR in classic:
        pairs += [(t, CONTEXT_ANCHOR) for t in classic if t != CONTEXT_ANCHOR]
    return pairs


def bd_table(curves: Sequence[CodecCurve], use_ms_ssim: bool = False) -> Dict[str, Dict[str, float]]:
    """{test: {anchor: BD-rate %}}; NaN (warned) where curves do not overlap or have too few points."""
    by_name = {c.name: c for c in curves}
    table: Dict[str, Dict[str, float]] = {}
    for test, anchor in bd_pairs(curves):
        rd_t, rd_a = ((by_name[n].rd_ms_ssim() if use_ms_ssim else by_name[n].rd()) for n in (test, anchor))
        value = math.nan
        if rd_t and rd_a:  # empty = MS-SSIM not measured, already reported
            try:
                value = metrics.bd_rate(rd_a, rd_t)
            except ValueError as exc:  # e.g. a single quality was evaluated
                warnings.warn(f"BD-rate {test} vs {anchor}: {exc}", RuntimeWarning, stacklevel=2)
        table.setdefault(test, {})[anchor] = value
    return table


# --------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------
def environment(argv: Sequence[str]) -> Dict[str, object]:
    """What is needed to reproduce or compare timings: versions, CPU, threads, commit, command line."""
    import PIL
    import scipy
    import torch

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
    }
    for dist in ("imagecodecs", "pytorch-msssim", "compressai"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "versions": versions,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        # Timings taken on a busy machine are not comparable with quiet ones; say how busy it was.
        "load_average_at_start": _load_average(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git(["rev-parse", "HEAD"]),
        "git_dirty": bool(_git(["status", "--porcelain", "--untracked-files=no"])),  # tracked files edited
        "command": ["python", "-m", "model_store.eval", *argv],
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timing": "wall-clock seconds per image, mean over images, after one untimed warm-up round trip",
    }


def _load_average() -> Optional[List[float]]:
    """1/5/15-minute load averages (Unix only)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _git(args: List[str]) -> Optional[str]:
    """Output of a git command in this package's checkout; None outside git or before the first commit."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _finite_or_none(value):
    """JSON has no NaN/Infinity; null is the honest encoding of 'undefined'."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def build_report(
    images: Sequence[EvalImage],
    curves: Sequence[CodecCurve],
    bd_psnr_table: Dict[str, Dict[str, float]],
    bd_ms_ssim_table: Dict[str, Dict[str, float]],
    env: Dict[str, object],
) -> Dict:
    """The JSON document described in the module docstring."""
    return _finite_or_none(
        {
            "images": [img.describe() for img in images],
            "codecs": {
                c.name: {"kind": c.kind, "settings": c.settings, "points": [asdict(p) for p in c.points]}
                for c in curves
            },
            "bd_rate": bd_psnr_table,
            "bd_rate_ms_ssim": bd_ms_ssim_table,
            "environment": env,
        }
    )


def write_csv(curves: Sequence[CodecCurve], path: Path) -> None:
    """One row per (codec, quality), the same numbers as the JSON points."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for c in curves:
            for p in c.points:
                writer.writerow({"codec": c.name, "kind": c.kind, **asdict(p)})


def load_reference_curves(path: Path = REFERENCE_CURVES_PATH) -> Dict[str, Dict]:
    """Published Kodak curves: {name: {"bpp": [...], "psnr": [...], "source": ...}} (empty if the file is absent)."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())["curves"]


def plot_rd(curves: Sequence[CodecCurve], path: Path, title: str, references: Optional[Dict[str, Dict]] = None) -> None:
    """bpp vs PSNR, one solid line per measured codec, published Kodak curves dashed and labelled as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    for c in curves:
        style = "-o" if c.kind == LEARNED else "-s"
        ax.plot(
            [p.bpp for p in c.points],
            [p.psnr for p in c.points],
            style,
            markersize=4,
            linewidth=2.0 if c.kind == LEARNED else 1.2,
            label=f"{c.name} ({c.kind})",
        )
    for name, ref in (references or {}).items():
        ax.plot(
            ref["bpp"],
            ref["psnr"],
            "--",
            linewidth=1.0,
            alpha=0.8,
            label=f"{name} (Kodak, published — different image set)",
        )
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("RGB PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_summary(curves: Sequence[CodecCurve], bd: Dict[str, Dict[str, float]]) -> str:
    """Human-readable table of the points and BD-rates, printed at the end of a run."""
    lines = [f"{'codec':<16}{'q':>7}{'bpp':>8}{'PSNR':>8}{'MS-SSIM':>9}{'enc s':>8}{'dec s':>8}"]
    for c in curves:
        for p in c.points:
            lines.append(
                f"{c.name:<16}{p.quality:>7g}{p.bpp:>8.3f}{p.psnr:>8.2f}{p.ms_ssim:>9.4f}{p.enc_s:>8.3f}{p.dec_s:>8.3f}"
            )
    if bd:
        lines.append("")
        lines.append("BD-rate over PSNR (PCHIP), negative = test saves bits:")
        for test, row in bd.items():
            for anchor, value in row.items():
                shown = "n/a (no overlap)" if math.isnan(value) else f"{value:+.1f} %"
                lines.append(f"  {test} vs {anchor}: {shown}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model_store.eval", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="folder of PNG images")
    p.add_argument("--model", nargs="+", metavar="NAME", help="learned models (default: all with shipped weights)")
    p.add_argument(
        "--qualities", nargs="+", type=int, metavar="Q", help="learned-model qualities (default: all shipped)"
    )
    p.add_argument(
        "--effort",
        nargs="+",
        type=int,
        default=[0],
        metavar="E",
        help="learned-model encoder efforts, one curve each (default: 0; see model_store.refine)",
    )
    p.add_argument("--no-learned", action="store_true", help="evaluate classical codecs only")
    p.add_argument(
        "--classical",
        nargs="+",
        metavar="CODEC",
        help=f"classical codecs (default: {' '.join(classical.DEFAULT_CLASSICAL)}; "
        f"known: {' '.join(classical.CLASSICAL_CODECS)})",
    )
    p.add_argument("--no-classical", action="store_true", help="evaluate learned models only")
    p.add_argument("--device", default="cpu", help="torch device for learned models (default: cpu)")
    p.add_argument("--weights-root", type=Path, help="weights folder (default: model_store/weights)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N images (in name order)")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="write the full report as JSON")
    p.add_argument("--csv", type=Path, metavar="OUT.csv", help="write one row per codec and quality")
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="write an RD plot (bpp vs PSNR)")
    p.add_argument("--no-reference", action="store_true", help="do not draw the published Kodak curves")
    p.add_argument(
        "--no-ms-ssim",
        action="store_true",
        help="skip MS-SSIM (the slowest part of a classical-codec run on a busy CPU); reported as null",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.no_learned and (args.model or args.qualities):
        parser.error("--no-learned contradicts --model/--qualities")
    try:
        images = load_images(args.folder, args.limit)
        jobs = (
            []
            if args.no_learned
            else learned_jobs(args.model, args.qualities, args.device, args.weights_root, args.effort)
        )
        if not args.no_classical:
            jobs += classical_jobs(args.classical or classical.DEFAULT_CLASSICAL, explicit=bool(args.classical))
    except EvalError as exc:
        parser.error(str(exc))
    if not jobs:
        parser.error("nothing to evaluate (no shipped learned models and no classical codecs selected)")

    env = environment(argv)
    curves = run_jobs(jobs, images, show_progress=not args.quiet, with_ms_ssim=not args.no_ms_ssim)
    bd = bd_table(curves)
    env["load_average_at_end"] = _load_average()
    report = build_report(images, curves, bd, bd_table(curves, use_ms_ssim=True), env)
    print(format_summary(curves, bd))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.csv:
        write_csv(curves, args.csv)
    if args.plot:
        title = f"{args.folder.name}: {len(images)} image(s)"
        plot_rd(curves, args.plot, title, None if args.no_reference else load_reference_curves())
    return 0


if __name__ == "__main__":
    sys.exit(main())
