"""Command line: ``python -m model_store {list,params,compress,decompress}``.

python -m model_store list [--json]          architectures, presets, qualities, which have shipped weights
python -m model_store params [--json]        parameter count of every architecture x preset
python -m model_store compress IN.png OUT.bin [--model NAME] [--quality Q] [--effort E] [--format-version V]
python -m model_store decompress IN.bin OUT.png   (model, quality and size are read from the container)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from model_store.errors import ModelStoreError


def _list(args) -> int:
    from model_store import registry
    from model_store.architectures.registry import presets

    shipped = registry.shipped_models()
    rows = [
        {
            "model": p.key,
            "arch": p.arch,
            "preset": p.name,
            "paper": p.is_paper,
            "qualities": p.qualities,
            "variable_rate": p.rate_knob is not None,
            "shipped_qualities": shipped.get(p.key, []),
            "description": p.description,
        }
        for p in presets()
    ]
    default = registry.default_model() if shipped else None
    if args.json:
        print(json.dumps({"default": default, "models": rows}, indent=2))
        return 0
    print(f"{'model':24} {'paper':5} {'qualities':18} shipped")
    for r in rows:
        mark = " (default)" if r["model"] == default else ""
        shipped_q = ",".join(map(str, r["shipped_qualities"])) or "-"
        qualities = r["qualities"]
        # a variable-rate preset's qualities are its knob's codes: the range says it, 255 numbers would not
        scale = f"{qualities[0]}-{qualities[-1]} (knob)" if r["variable_rate"] else ",".join(map(str, qualities))
        print(f"{r['model']:24} {str(r['paper']):5} {scale:18} {shipped_q}{mark}")
    return 0


def _params(args) -> int:
    from model_store.architectures.base import count_parameters
    from model_store.architectures.registry import presets

    rows = []
    for p in presets():
        # widths may change with quality (TIC's low/high split): count the lowest and the highest quality
        counts = {q: count_parameters(p.build(q)) for q in sorted({p.qualities[0], p.qualities[-1]})}
        rows.append({"model": p.key, "params": {str(q): n for q, n in counts.items()}})
        if not args.json:
            text = ", ".join(f"q{q}: {n / 1e6:.2f} M" for q, n in counts.items())
            print(f"{p.key:24} {text}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _compress(args) -> int:
    from model_store import registry
    from model_store.codec import bits_per_pixel, load_codec
    from model_store.image_io import open_image

    image = open_image(Path(args.input))
    quality = args.quality
    if quality is None:
        quality = registry.model_default_quality(args.model)
    codec = load_codec(args.model, quality)
    codec.format_version = args.format_version
    target = _rate_target(args)
    t0 = time.perf_counter()
    if target is None:
        data, used, achieved = codec.compress(image, effort=args.effort), codec.identity.quality, ""
    else:
        from model_store.rate_control import compress_to_target

        if args.effort:
            raise SystemExit("error: --effort applies to a fixed --quality, not to a rate target")
        result = compress_to_target(codec, image, target)
        data, used = result.stream, result.quality
        achieved = f", {target.kind} met in {result.probes} probes / {result.encodes} encodes"
        if result.psnr is not None:
            achieved += f", {result.psnr:.2f} dB"
    elapsed = time.perf_counter() - t0
    Path(args.output).write_bytes(data)
    h, w = image.shape[:2]
    print(
        f"{args.input}: {w}x{h} -> {len(data)} bytes, {bits_per_pixel(data, h, w):.4f} bpp "
        f"({codec.identity.model_id} q{used}, effort {args.effort}{achieved}, {elapsed:.2f} s)"
    )
    return 0


def _rate_target(args):
    """The rate target the command line names, if any (argparse keeps the four flags mutually exclusive)."""
    from model_store.rate_control import RateTarget

    fields = {"max_bytes": args.max_bytes, "target_bpp": args.target_bpp, "min_psnr": args.min_psnr}
    if all(v is None for v in fields.values()):
        return None
    return RateTarget(**fields)


def _decompress(args) -> int:
    from model_store import container
    from model_store.codec import codec_for_stream
    from model_store.image_io import encode_image

    data = Path(args.input).read_bytes()
    header = container.parse_header(data)
    codec = codec_for_stream(data)
    t0 = time.perf_counter()
    image = codec.decompress(data)
    elapsed = time.perf_counter() - t0
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}.get(Path(args.output).suffix.lower().lstrip("."), "PNG")
    Path(args.output).write_bytes(encode_image(image, fmt))
    print(f"{args.input}: {header.width}x{header.height} ({header.model_id} q{header.quality}, {elapsed:.2f} s)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="architectures, presets, qualities, shipped weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)
    p = sub.add_parser("params", help="parameter count of every architecture x preset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_params)
    from model_store.refine import EFFORTS
    from model_store.registry import DEFAULT_QUALITY

    p = sub.add_parser("compress", help="image file -> bitstream")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", default=None, help="model id (default: the default model)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--quality",
        type=int,
        help=f"quality level, or a variable-rate model's knob code (default: {DEFAULT_QUALITY}, or the nearest one)",
    )
    rate.add_argument("--max-bytes", type=int, help="variable-rate models: the largest stream to make (never exceeded)")
    rate.add_argument("--target-bpp", type=float, help="variable-rate models: the bits per pixel to land on (±3 %%)")
    rate.add_argument("--min-psnr", type=float, help="variable-rate models: the RGB PSNR to reach (dB)")
    p.add_argument(
        "--effort",
        type=int,
        choices=sorted(EFFORTS),
        default=0,
        help="encoder effort: >0 searches for a better latent (smaller/better stream, same decoder, slower)",
    )
    from model_store.container import FORMAT_VERSION, WRITABLE_VERSIONS

    p.add_argument(
        "--format-version",
        type=int,
        choices=WRITABLE_VERSIONS,
        default=FORMAT_VERSION,
        help="container version to write (default: the newest; an older one for decoders not yet upgraded)",
    )
    p.set_defaults(func=_compress)
    p = sub.add_parser("decompress", help="bitstream -> image file (PNG, or by extension WebP/JPEG)")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=_decompress)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ModelStoreError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
