"""What each encoder effort buys and costs: encode time, peak memory, bits and PSNR against effort 0 measured in
the same run, on the same images, with the shipped weights (effort only pays off with trained weights).

    python benchmarks/effort.py [--model wacnn-small] [--qualities 1 6] [--efforts 0 1 2 3] [--images DIR]
                                [--crop 256x384] [--limit 3] [--threads 1]

Images: the first ``--limit`` PNGs of ``--images`` (default ``data/val`` when it was built, else the test assets),
centre-cropped to ``--crop`` so effort 3 stays affordable on a CPU. Every (quality, effort) runs in a fresh
subprocess so its peak RSS (``ru_maxrss``) is its own. Results go to ``benchmarks/results/effort.json`` and
``benchmarks/results/effort.md``; the ratios are against effort 0 of the same quality in this run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.report import RESULTS, machine, write_results  # noqa: E402


def image_paths(folder: Optional[Path], limit: int) -> List[Path]:
    if folder is None:
        val = ROOT / "data" / "val"
        folder = val if any(val.glob("*.png")) else ROOT / "tests" / "assets"
    paths = sorted(folder.glob("*.png"))[:limit]
    if not paths:
        raise SystemExit(f"no PNG images in {folder}")
    return paths


def centre_crop(image, height: int, width: int):
    import numpy as np

    h, w = image.shape[:2]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def measure(model: str, quality: int, effort: int, paths: List[Path], crop, threads: int) -> dict:
    """One (quality, effort) in this process: per-image encode seconds, bpp, PSNR and the real RD cost."""
    import resource
    import time

    import torch

    from model_store import metrics
    from model_store.codec import bits_per_pixel, load_codec
    from model_store.image_io import open_image

    torch.set_num_threads(threads)
    codec = load_codec(model, quality)
    images = [centre_crop(open_image(p), *crop) for p in paths]
    codec.compress(images[0][:64, :64])  # warm-up: first-call allocations are not the search
    rows = []
    for path, image in zip(paths, images):
        t0 = time.perf_counter()
        stream = codec.compress(image, effort=effort)
        enc_s = time.perf_counter() - t0
        decoded = codec.decompress(stream)
        rows.append(
            {
                "image": path.name,
                "enc_s": enc_s,
                "bpp": bits_per_pixel(stream, *image.shape[:2]),
                "psnr": metrics.psnr(decoded, image),
                "rd_cost": codec.rd_cost(image, stream, decoded),
            }
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("enc_s", "bpp", "psnr", "rd_cost")}
    return {"quality": quality, "effort": effort, **mean, "peak_rss_mib": peak_mib, "images": rows}


def run_isolated(args, quality: int, effort: int, paths: List[Path]) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        json.dumps({"quality": quality, "effort": effort}),
        "--model",
        args.model,
        "--crop",
        args.crop,
        "--threads",
        str(args.threads),
        "--paths",
        *map(str, paths),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def with_ratios(rows: List[dict]) -> List[dict]:
    """Each row gains its ratios against effort 0 of the same quality (measured in this run)."""
    base = {r["quality"]: r for r in rows if r["effort"] == 0}
    for r in rows:
        b = base.get(r["quality"])
        if b:
            r["enc_ratio"] = r["enc_s"] / b["enc_s"]
            r["bpp_ratio"] = r["bpp"] / b["bpp"]
            r["psnr_delta_db"] = r["psnr"] - b["psnr"]
            r["rd_cost_ratio"] = r["rd_cost"] / b["rd_cost"]
    return rows


def markdown(doc: dict) -> str:
    lines = [
        f"# Encoder effort: {doc['model']}, {doc['n_images']} image(s) cropped to {doc['crop']}, "
        f"{doc['threads']} thread(s)",
        "",
        "Ratios are against effort 0 of the same quality in this run; rd cost = λ·MSE + bpp on the real stream.",
        "",
        "| quality | effort | encode s | x effort 0 | bpp | PSNR dB | Δ PSNR | bpp ratio | rd cost ratio | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        lines.append(
            f"| {r['quality']} | {r['effort']} | {r['enc_s']:.2f} | {r.get('enc_ratio', float('nan')):.1f} | "
            f"{r['bpp']:.4f} | {r['psnr']:.2f} | {r.get('psnr_delta_db', float('nan')):+.2f} | "
            f"{r.get('bpp_ratio', float('nan')):.3f} | {r.get('rd_cost_ratio', float('nan')):.3f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    lines += ["", f"Machine: {json.dumps(doc['machine'])}"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wacnn-small")
    p.add_argument("--qualities", nargs="+", type=int, default=[1, 6])
    p.add_argument("--efforts", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--images", type=Path)
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--crop", default="256x384", help="HxW centre crop of every image")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "effort")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--paths", nargs="+", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    crop = tuple(int(v) for v in args.crop.lower().split("x"))
    if args.one:
        job = json.loads(args.one)
        print(json.dumps(measure(args.model, job["quality"], job["effort"], args.paths, crop, args.threads)))
        return
    paths = image_paths(args.images, args.limit)
    efforts = sorted(set(args.efforts) | {0})
    rows = []
    for quality in args.qualities:
        for effort in efforts:
            rows.append(run_isolated(args, quality, effort, paths))
            r = rows[-1]
            print(f"q{quality} effort {effort}: {r['enc_s']:.2f} s, {r['bpp']:.4f} bpp, {r['psnr']:.2f} dB", flush=True)
    doc = {
        "model": args.model,
        "crop": args.crop,
        "n_images": len(paths),
        "images": [p.name for p in paths],
        "threads": args.threads,
        "machine": machine(),
        "results": with_ratios(rows),
    }
    write_results(args.out, doc, markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
