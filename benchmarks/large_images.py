"""Time and peak memory of compress / decompress against image size (0.4-50 MP), tiled vs whole-image transforms.

    python benchmarks/large_images.py [--model erstc-small] [--quality 5] [--sizes 0.4 3 12 24 50]
                                      [--untiled-up-to 12] [--threads 2] [--plot]

Each (size, mode, op) runs in a fresh subprocess: it loads the codec, builds the photo, records its resident memory
then ("idle": what a server holding the model and the request already has), runs the one operation and reports
its wall time and its peak RSS (``VmHWM``) above that idle level, which is what the tiling bounds. The photo is a
real validation crop (tests/assets) mirrored and resized with LANCZOS to the size asked for. Results:
``benchmarks/results/large_images.{json,md}`` (+ ``.png`` with ``--plot``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.report import RESULTS, machine, write_results  # noqa: E402

ASPECT = 4 / 3  # phone photos


def photo(megapixels: float):
    """A ``megapixels`` 4:3 image made of real photo content (the citrus validation crop, mirrored 2x2)."""
    import numpy as np
    from PIL import Image

    from model_store.image_io import open_image

    crop = open_image(ROOT / "tests" / "assets" / "val_citrus_384x256.png")
    top = np.concatenate([crop, crop[:, ::-1]], axis=1)
    tile = np.concatenate([top, top[::-1]], axis=0)
    width = int((megapixels * 1e6 * ASPECT) ** 0.5)
    height = int(width / ASPECT)  # rounded down: "50 MP" stays within the default 50 M pixel limit
    return np.asarray(Image.fromarray(tile).resize((width, height), Image.LANCZOS))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(args) -> dict:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    from model_store.codec import load_codec
    from model_store.tiling import TileGrid

    torch.set_num_threads(args.threads)
    codec = load_codec(args.model, args.quality)
    if args.mode == "untiled":
        codec.tile_grid = TileGrid(core=10**6, halo=0, large_core=10**6)
    stream_file = Path(args.stream)
    if args.op == "compress":
        image = photo(args.mp)
        idle = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on is this op's
        t0 = time.perf_counter()
        stream = codec.compress(image)
        seconds = time.perf_counter() - t0
        stream_file.write_bytes(stream)
        height, width = image.shape[:2]
    else:
        stream = stream_file.read_bytes()
        idle = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        t0 = time.perf_counter()
        image = codec.decompress(stream)
        seconds = time.perf_counter() - t0
        height, width = image.shape[:2]
    peak = _status_kib("VmHWM")
    return {
        "megapixels": round(height * width / 1e6, 2),
        "size": f"{width}x{height}",
        "mode": args.mode,
        "op": args.op,
        "seconds": round(seconds, 2),
        "idle_mib": round(idle / 1024),
        "peak_over_idle_mib": round((peak - idle) / 1024),
        "bpp": round(8 * len(stream) / (height * width), 4),
    }


def run_child(mp: float, mode: str, op: str, stream: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mp", str(mp), "--mode", mode, "--op", op, "--stream", str(stream)]
    cmd += ["--model", args.model, "--quality", str(args.quality), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        return {"megapixels": mp, "mode": mode, "op": op, "error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(doc: dict) -> str:
    lines = [
        f"# Large images: {doc['model']} q{doc['quality']}, {doc['threads']} threads",
        "",
        "Peak RSS is above the process's resident memory once the model and the request's data are in it.",
        "",
        "| MP | size | mode | compress s | compress peak MiB | decompress s | decompress peak MiB | bpp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = {}
    for r in doc["results"]:
        rows.setdefault((r["megapixels"] if "size" in r else r["megapixels"], r["mode"]), {})[r["op"]] = r
    for (mp, mode), ops in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        c, d = ops.get("compress", {}), ops.get("decompress", {})
        cell = lambda r, k: str(r.get(k, r.get("error", "-")))  # noqa: E731
        size = c.get("size") or d.get("size") or "-"
        lines.append(
            f"| {mp} | {size} | {mode} | {cell(c, 'seconds')} | {cell(c, 'peak_over_idle_mib')} | "
            f"{cell(d, 'seconds')} | {cell(d, 'peak_over_idle_mib')} | {c.get('bpp', '-')} |"
        )
    return "\n".join(lines) + "\n"


def plot(doc: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in ("tiled", "untiled"):
        for op, style in (("compress", "-o"), ("decompress", "--s")):
            pts = sorted((r["megapixels"], r) for r in doc["results"] if r["mode"] == mode and r["op"] == op)
            pts = [(mp, r) for mp, r in pts if "seconds" in r]
            if pts:
                ax_t.plot([p for p, _ in pts], [r["seconds"] for _, r in pts], style, label=f"{op} {mode}")
                ax_m.plot([p for p, _ in pts], [r["peak_over_idle_mib"] for _, r in pts], style, label=f"{op} {mode}")
    ax_t.set(xlabel="megapixels", ylabel="seconds", title="time")
    ax_m.set(xlabel="megapixels", ylabel="peak RSS over idle, MiB", title="memory")
    ax_m.axhline(2048, color="grey", lw=0.8, ls=":")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{doc['model']} q{doc['quality']}, {doc['threads']} threads")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="erstc-small")
    p.add_argument("--quality", type=int, default=5)
    p.add_argument("--sizes", type=float, nargs="+", default=[0.4, 3, 12, 24, 50])
    p.add_argument("--untiled-up-to", type=float, default=12, help="largest size also run with whole-image transforms")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "large_images"))
    p.add_argument("--plot", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mp", type=float, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--op", help=argparse.SUPPRESS)
    p.add_argument("--stream", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.sizes:
            for mode in ("tiled", "untiled") if mp <= args.untiled_up_to else ("tiled",):
                stream = Path(tmp) / f"{mp}-{mode}.bin"
                for op in ("compress", "decompress"):
                    result = run_child(mp, mode, op, stream, args)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    doc = {
        "model": args.model,
        "quality": args.quality,
        "threads": args.threads,
        "machine": machine(),
        "results": results,
    }
    out = Path(args.out)
    write_results(out, doc, markdown(doc))
    if args.plot:
        plot(doc, out.with_suffix(".png"))
    print(markdown(doc))


if __name__ == "__main__":
    main()
