"""Rate control, measured: achieved vs requested, probes, encodes, and time against a plain encode at the same knob.

    python benchmarks/rate_control.py --weights runs/s23-vr/best.pt [--images data/val] [--crop 512x768]
                                      [--threads 2] [--plot]

For every image (centre-cropped to ``--crop``): the real stream sizes and PSNRs at the knob's ends set the reachable
range; then a grid of requests inside it: ``max_bytes`` and ``target_bpp`` at 10/30/50/70/90 % of the way (on a log
scale) from the smallest to the largest stream, ``min_psnr`` at 25/50/75 % of the PSNR range, plus one cap above the
top. Each request is timed (``compress_to_target``: g_a, probes, real encodes) against a plain ``compress`` at the
code it chose, measured right after it in the same process. ``--weights``: a variable-rate checkpoint (``.pt``) or
fp16 file (``.safetensors``); ``--preset``: its preset (default erstc-small-vr). Results:
``benchmarks/results/rate_control.{json,md}`` (+ ``.png``: requested vs achieved, with ``--plot``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.effort import centre_crop, image_paths  # noqa: E402
from benchmarks.report import RESULTS, machine, write_results  # noqa: E402

SHARES = (0.1, 0.3, 0.5, 0.7, 0.9)
PSNR_SHARES = (0.25, 0.5, 0.75)


def add_code_span_argument(parser) -> None:
    """``--code-span LOW HIGH`` for :func:`load_codec` (benchmarks that load a checkpoint or a shipped file)."""
    parser.add_argument(
        "--code-span",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="a checkpoint's knob codes over these positions (default: the preset's served span)",
    )


def load_codec(weights: str, arch: str, preset: str, float_path: bool = False, code_span=None):
    """A codec on ``weights`` (a training checkpoint or a shipped fp16 file); ``float_path``: a shipped file's
    integer entropy path left out, so the same weights code on the float64 path (what the path itself costs).
    Knob codes: a shipped file's own code span; a checkpoint's, the one its export would get (``code_span``, else
    the preset's ``served_knob``), so a preview measures the codes a release will serve."""
    import torch

    from model_store.architectures.registry import create_model, get_preset
    from model_store.codec import ImageCodec, ModelIdentity
    from model_store.registry import sha256_file, with_optional_modules
    from model_store.train import load_weights_only

    model = create_model(arch, preset, 1)
    if str(weights).endswith(".safetensors"):  # a shipped file: its CDF tables and integer path, as a loader uses them
        from safetensors.torch import load_file

        from model_store.entropy.integer_coding import STATE_PREFIX
        from model_store.registry import load_state

        state = load_file(str(weights))
        load_state(model, {k: v for k, v in state.items() if not (float_path and k.startswith(STATE_PREFIX))})
        model.eval()
        if code_span is not None and tuple(code_span) != model.rate_knob.code_span:
            raise SystemExit(f"{weights} spreads its codes over {model.rate_knob.code_span}, not {tuple(code_span)}")
    else:
        with_optional_modules(model, torch.load(weights, map_location="cpu", weights_only=False)["model"])
        if load_weights_only(model, weights):
            raise SystemExit(f"{weights} is not a complete {arch}-{preset} model")
        if model.rate_knob is not None:
            model.use_code_span(code_span or get_preset(arch, preset).served_knob.code_span)
        model.eval()
        with torch.no_grad():
            model.update(force=True)
    digest = bytes.fromhex(sha256_file(Path(weights)))
    return ImageCodec(model, ModelIdentity(f"{arch}-{preset}", model.rate_knob.levels // 2, digest))


def requests(low: int, high: int, psnr_low: float, psnr_high: float, pixels: int) -> List[Dict]:
    out = []
    for share in SHARES:
        size = low * (high / low) ** share
        out.append({"kind": "max_bytes", "value": int(size), "share": share})
        out.append({"kind": "target_bpp", "value": round(8.0 * size / pixels, 4), "share": share})
    for share in PSNR_SHARES:
        out.append({"kind": "min_psnr", "value": round(psnr_low + share * (psnr_high - psnr_low), 2), "share": share})
    out.append({"kind": "max_bytes", "value": 2 * high, "share": "above top"})
    return out


def run(args) -> dict:
    import numpy as np
    import torch

    from model_store import metrics
    from model_store.image_io import open_image
    from model_store.rate_control import PSNR_SLACK, TOLERANCE, RateTarget, compress_to_target

    torch.set_num_threads(args.threads)
    codec = load_codec(args.weights, args.arch, args.preset, code_span=args.code_span)
    top = codec.rate_knob.levels
    height, width = (int(v) for v in args.crop.split("x"))
    rows = []
    for path in image_paths(args.images, args.limit):
        image = np.ascontiguousarray(centre_crop(open_image(path), height, width))
        pixels = image.shape[0] * image.shape[1]
        ends = {q: codec.compress(image, quality=q) for q in (1, top)}
        psnrs = {q: metrics.psnr(codec.decompress(s), image) for q, s in ends.items()}
        for request in requests(len(ends[1]), len(ends[top]), psnrs[1], psnrs[top], pixels):
            target = RateTarget(**{request["kind"]: request["value"]})
            t0 = time.perf_counter()
            result = compress_to_target(codec, image, target)
            controlled = time.perf_counter() - t0
            t0 = time.perf_counter()
            codec.compress(image, quality=result.quality)
            plain = time.perf_counter() - t0
            achieved = {"max_bytes": len(result.stream), "target_bpp": result.bpp, "min_psnr": result.psnr}
            value = achieved[request["kind"]]
            rows.append(
                {
                    "image": path.name,
                    **request,
                    "achieved": value,
                    "error": (value - request["value"])
                    if request["kind"] == "min_psnr"
                    else value / request["value"] - 1,
                    "quality": result.quality,
                    "probes": result.probes,
                    "encodes": result.encodes,
                    "seconds": round(controlled, 3),
                    "plain_seconds": round(plain, 3),
                    "time_ratio": round(controlled / plain, 3),
                }
            )
            print(rows[-1], flush=True)
    summary = {}
    for kind in ("max_bytes", "target_bpp", "min_psnr"):
        inside = [r for r in rows if r["kind"] == kind and r["share"] != "above top"]
        ratios = sorted(r["time_ratio"] for r in inside)
        summary[kind] = {
            "requests": len(inside),
            "worst_error": max((r["error"] for r in inside), key=abs),
            "within_tolerance": sum(_within(r, TOLERANCE, PSNR_SLACK) for r in inside),
            "mean_probes": round(sum(r["probes"] for r in inside) / len(inside), 2),
            "max_probes": max(r["probes"] for r in inside),
            "second_encodes": sum(r["encodes"] > 1 for r in inside),
            "median_time_ratio": ratios[len(ratios) // 2],
            "worst_time_ratio": ratios[-1],
        }
    summary["max_bytes"]["over_the_cap"] = sum(r["achieved"] > r["value"] for r in rows if r["kind"] == "max_bytes")
    above = [r for r in rows if r["share"] == "above top"]
    summary["cap_above_top_gives_top_code"] = all(r["quality"] == top for r in above)
    return {
        "machine": machine(),
        "weights": args.weights,
        "preset": f"{args.arch}-{args.preset}",
        "crop": args.crop,
        "threads": args.threads,
        "summary": summary,
        "rows": rows,
    }


def _within(row: dict, tolerance: float, slack: float) -> bool:
    if row["kind"] == "max_bytes":
        return -tolerance <= row["error"] <= 0
    if row["kind"] == "target_bpp":
        return abs(row["error"]) <= tolerance
    return 0 <= row["error"] <= slack


def markdown(doc: dict) -> str:
    lines = [
        f"# Rate control ({doc['preset']}, weights `{doc['weights']}`, {doc['crop']} crops, {doc['threads']} threads)",
        "",
        f"Machine: {doc['machine']}. Time ratio: `compress_to_target` over a plain `compress` at the chosen code,",
        "same process, measured right after it. Error: achieved/requested - 1 (bytes, bpp), achieved - requested (dB).",
        "",
        "| target | requests | within tolerance | worst error | probes mean / max | second encodes "
        "| time ratio median / worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("max_bytes", "target_bpp", "min_psnr"):
        s = doc["summary"][kind]
        error = f"{s['worst_error']:+.2f} dB" if kind == "min_psnr" else f"{100 * s['worst_error']:+.2f} %"
        lines.append(
            f"| {kind} | {s['requests']} | {s['within_tolerance']} | {error} | {s['mean_probes']} / "
            f"{s['max_probes']} | {s['second_encodes']} | {s['median_time_ratio']:.2f}x / {s['worst_time_ratio']:.2f}x |"
        )
    lines += [
        "",
        f"Streams over their `max_bytes` cap: **{doc['summary']['max_bytes']['over_the_cap']}**. A cap above the top "
        f"code's stream gave the top code: {doc['summary']['cap_above_top_gives_top_code']}.",
    ]
    return "\n".join(lines)


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, kind, unit in zip(axes, ("max_bytes", "target_bpp", "min_psnr"), ("bytes", "bpp", "dB")):
        rows = [r for r in doc["rows"] if r["kind"] == kind and r["share"] != "above top"]
        ax.scatter([r["value"] for r in rows], [r["achieved"] for r in rows], s=12)
        lo = min(r["value"] for r in rows)
        hi = max(r["value"] for r in rows)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        if kind != "min_psnr":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(kind)
        ax.set_xlabel(f"requested ({unit})")
        ax.set_ylabel(f"achieved ({unit})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    add_code_span_argument(parser)
    parser.add_argument("--arch", default="erstc")
    parser.add_argument("--preset", default="small-vr")
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--crop", default="512x768")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "rate_control")
    args = parser.parse_args(argv)
    doc = run(args)
    write_results(args.out, doc, markdown(doc))
    if args.plot:
        plot(doc, args.out.with_suffix(".png"))
    print(markdown(doc))
    return 0 if doc["summary"]["max_bytes"]["over_the_cap"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
