"""The integer entropy path with real streams (issue #29): RD cost against the float64 path of the same weights, and
CPU entropy-coding time per image, one by one and batched, in one run.

    python benchmarks/integer_streams.py [--model erstc-small-vr] [--sets data/val data/reserved]
                                         [--codes 1 73 157 255] [--limit N] [--threads 1]
    python benchmarks/integer_streams.py --device cuda --no-rd --batches 1 8 32 64 --sizes 768x512 --throughput

RD: every image of every set is analysed once (g_a); at each code the latent is coded on the float64 path and on
the integer path (the file's stored tables; PTQ of the same weights for a file without them), and each stream's
pixels are ``g_s(ŷ)`` (what every decoder of it gets). Per set: average bpp and RGB PSNR per code for both, the
**BD-rate of the integer path against the float64 path** (issue goal ≤ 1 %, stop at 2 %) and the rate change per
code. Time: entropy encode and decode (``ImageCodec.encode_latents`` / ``decode_latents``, g_a and g_s excluded)
per image at 768x512 and 256x256 (centre crops of the first validation photos): the float64 path one image at a
time (it cannot batch) against the integer path in batches of 1, 4 and 8 (``--batches``), the integer path on
``--device``. ``--throughput`` adds whole compressions (``compress_batch``, g_a batched too) in images/s per batch
size: the issue's GPU goal is ≥ 300 images/s at 768x512 on one H100. Results:
``benchmarks/results/integer_streams.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.effort import centre_crop, image_paths  # noqa: E402
from benchmarks.report import RESULTS, machine, write_results  # noqa: E402

#: goal and stop line of the issue (BD-rate of the integer path against the float64 path, percent)
BD_GOAL, BD_STOP = 1.0, 2.0
BATCHES = (1, 4, 8)
SIZES = ("768x512", "256x256")


def load(model_id: str, device: str = "cpu", root: Optional[Path] = None):
    """(codec, integer path): the installed model's newest version; its stored path, or PTQ of its weights."""
    from model_store import registry
    from model_store.codec import ImageCodec
    from model_store.entropy.integer_coding import IntegerEntropyPath

    root = root or registry.WEIGHTS_ROOT
    entry = registry.resolve(model_id, registry.model_default_quality(model_id, root=root), root=root)
    codec = ImageCodec.from_entry(entry, device=device)
    stored = codec.canonical.integer_entropy
    path = stored if stored is not None else IntegerEntropyPath.of(codec.canonical).to(codec.device)
    return codec, path, stored is not None


def on_path(codec, path) -> None:
    """Code on ``path`` (None: the float64 path)."""
    codec.canonical.integer_entropy = path


def rd_point(codec, y, image, code) -> Dict[str, float]:
    from model_store import container, metrics

    h, w = image.shape[:2]
    [(stream, y_hat)] = codec.encode_latents_and_reconstruct([y], h, w, [code])
    pixels = codec.synthesise([y_hat.float()], [container.parse_header(stream)])[0]
    return {"bpp": metrics.bpp(len(stream), h, w), "psnr": metrics.psnr(pixels, image)}


def evaluate_set(codec, integer, folder: Path, codes: Sequence[int], limit) -> dict:
    import numpy as np

    from model_store import metrics
    from model_store.image_io import open_image

    sums = {(side, c): [0.0, 0.0] for side in ("float", "integer") for c in codes}
    paths = image_paths(folder, limit)
    for p in paths:
        image = np.ascontiguousarray(open_image(p))
        y = codec.analyse([image])[0]
        for side, path in (("float", None), ("integer", integer)):
            on_path(codec, path)
            for code in codes:
                point = rd_point(codec, y, image, code)
                sums[(side, code)][0] += point["bpp"]
                sums[(side, code)][1] += point["psnr"]
    n = len(paths)
    points = {
        side: [{"code": c, "bpp": sums[(side, c)][0] / n, "psnr": sums[(side, c)][1] / n} for c in codes]
        for side in ("float", "integer")
    }
    curve = {side: [(p["bpp"], p["psnr"]) for p in points[side]] for side in points}
    return {
        "folder": str(folder),
        "images": n,
        "points": points,
        "bd_rate_percent": metrics.bd_rate(curve["float"], curve["integer"]),
        "rate_change_percent": [
            100.0 * (i["bpp"] / f["bpp"] - 1.0) for f, i in zip(points["float"], points["integer"])
        ],
        "psnr_change_db": [i["psnr"] - f["psnr"] for f, i in zip(points["float"], points["integer"])],
    }


def timing(codec, integer, images, code: int, batches: Sequence[int], throughput: bool) -> dict:
    """Seconds per image of entropy encode and decode: float64 one by one, integer at each batch size; with
    ``throughput``, whole compressions per second at each batch size (g_a batched: ``batch_invariant`` off)."""
    latents = [codec.analyse([image])[0] for image in images]
    h, w = images[0].shape[:2]

    def clock(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    rows = []
    on_path(codec, None)
    streams = [codec.encode_latent(y, h, w, code) for y in latents[:1]]  # warm up
    enc = clock(lambda: [codec.encode_latent(y, h, w, code) for y in latents])
    streams = [codec.encode_latent(y, h, w, code) for y in latents]
    dec = clock(lambda: [codec.decode_latent(s) for s in streams])
    rows.append({"path": "float64", "batch": 1, "encode_s": enc / len(images), "decode_s": dec / len(images)})
    on_path(codec, integer)
    for batch in batches:
        groups = [latents[i : i + batch] for i in range(0, len(latents), batch)]
        enc = clock(lambda: [codec.encode_latents(g, h, w, [code] * len(g)) for g in groups])
        streams = codec.encode_latents(latents, h, w, [code] * len(latents))
        dec = clock(lambda: [codec.decode_latents(streams[i : i + batch]) for i in range(0, len(streams), batch)])
        row = {"path": "integer", "batch": batch, "encode_s": enc / len(images), "decode_s": dec / len(images)}
        if throughput:
            codec.batch_invariant = False
            groups = [images[i : i + batch] for i in range(0, len(images), batch)]
            row["compress_images_per_s"] = len(images) / clock(
                lambda: [codec.compress_batch(g, quality=code) for g in groups]
            )
            codec.batch_invariant = True
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["encode_vs_float"] = row["encode_s"] / base["encode_s"]
        row["decode_vs_float"] = row["decode_s"] / base["decode_s"]
    return {"size": f"{w}x{h}", "images": len(images), "code": code, "device": str(codec.device), "rows": rows}


def run(args) -> dict:
    import numpy as np
    import torch

    from model_store.image_io import open_image

    torch.set_num_threads(args.threads)
    codec, integer, stored = load(args.model, args.device, args.weights_root)
    codes = args.codes
    sets = [evaluate_set(codec, integer, Path(folder), codes, args.limit) for folder in args.sets] if args.rd else []
    photos = [np.ascontiguousarray(open_image(p)) for p in image_paths(Path(args.sets[0]), None)]
    default = codec.rate_knob.default_code if codec.rate_knob is not None else codec.identity.quality
    count = max(args.batches)
    timings = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        crops = [np.ascontiguousarray(centre_crop(p, height, width)) for p in photos]
        crops = [c for c in crops if c.shape[:2] == (height, width)]
        crops = (crops * (count // max(1, len(crops)) + 1))[:count]  # repeated when a set has fewer photos
        timings.append(timing(codec, integer, crops, default, args.batches, args.throughput))
    return {
        "model": args.model,
        "weights_sha256": codec.identity.digest.hex(),
        "tables": "stored in the weights file" if stored else "post-training quantisation of the installed weights",
        "precision": {"frac": integer.precision.frac, "weight_bits": integer.precision.weight_bits},
        "codes": list(codes),
        "threads": args.threads,
        "device": args.device,
        "sets": sets,
        "timing": timings,
        "goal": {"bd_rate_percent": BD_GOAL, "stop_percent": BD_STOP},
        "machine": machine(),
    }


def markdown(doc: dict) -> str:
    p = doc["precision"]
    lines = [
        f"# Integer entropy path, real streams: {doc['model']} ({doc['tables']})",
        "",
        f"{p['frac']} fractional activation bits, {p['weight_bits']}-bit weights; codes {doc['codes']}; "
        f"{doc['threads']} torch thread(s). Goal: BD-rate ≤ +{BD_GOAL:g} % against the float64 path (stop at "
        f"+{BD_STOP:g} %).",
        "",
        "| set | images | BD-rate integer vs float64 | rate change per code | PSNR change per code (dB) |",
        "|---|---|---|---|---|",
    ]
    for s in doc["sets"]:
        rates = ", ".join(f"{r:+.2f} %" for r in s["rate_change_percent"])
        psnrs = ", ".join(f"{d:+.3f}" for d in s["psnr_change_db"])
        lines.append(f"| {s['folder']} | {s['images']} | **{s['bd_rate_percent']:+.2f} %** | {rates} | {psnrs} |")
    lines += [
        "",
        "Entropy coding time per image (g_a and g_s excluded), same run:",
        "",
        "| size | path | device | batch | encode s | decode s | encode vs float64 | decode vs float64 | compress img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in doc["timing"]:
        for r in t["rows"]:
            device = "cpu" if r["path"] == "float64" else t.get("device", "cpu")
            rate = f"{r['compress_images_per_s']:.1f}" if "compress_images_per_s" in r else ""
            lines.append(
                f"| {t['size']} | {r['path']} | {device} | {r['batch']} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | "
                f"{r['encode_vs_float']:.2f}x | {r['decode_vs_float']:.2f}x | {rate} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="erstc-small-vr")
    parser.add_argument("--weights-root", type=Path, default=None, help="a weights tree other than the installed one")
    parser.add_argument("--sets", nargs="+", default=[str(ROOT / "data/val"), str(ROOT / "data/reserved")])
    parser.add_argument("--codes", type=int, nargs="+", default=[1, 73, 157, 255])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the model and the integer path run (cuda on a GPU)")
    parser.add_argument("--rd", action=argparse.BooleanOptionalAction, default=True, help="the RD comparison")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WIDTHxHEIGHT crops to time")
    parser.add_argument("--throughput", action="store_true", help="also whole compressions per second")
    parser.add_argument("--out", type=Path, default=RESULTS / "integer_streams")
    args = parser.parse_args(argv)
    doc = run(args)
    write_results(args.out, doc, markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
