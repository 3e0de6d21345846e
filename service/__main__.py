"""Command line: run the server, talk to one, or write the OpenAPI contract.

    python -m service [serve] [--host H] [--port P] [--settings FILE]     settings also from LIC_* env vars
    python -m service compress IN.png OUT.bin [--quality 4 | --max-bytes N | --target-bpp B | --min-psnr DB]
                               [--model M] [--url URL] [--multipart]
    python -m service decompress OUT.bin BACK.png [--format png|webp|jpeg] [--url URL]
    python -m service openapi [--out openapi/openapi.json] [--check]
    python -m service loadtest IMAGE --quality 1 [--factor 2] [--url URL] [--json OUT.json]   capacity + overload

``--url`` defaults to ``$LIC_URL`` or http://127.0.0.1:8000. ``decompress`` picks the output format from the
output file's extension unless ``--format`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

COMMANDS = ("serve", "compress", "decompress", "openapi", "loadtest")
OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"
_FORMATS = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
#: The rate-target flags of ``compress`` (the server's query parameters, see POST /compress).
_RATE_TARGETS = (
    ("--max-bytes", int, "the largest stream to make (never exceeded)"),
    ("--target-bpp", float, "the bits per pixel to land on (within 3 %%)"),
    ("--min-psnr", float, "the RGB PSNR in dB the decoded image must reach"),
)


def _parser() -> argparse.ArgumentParser:
    from service.client import DEFAULT_URL

    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (the default command)")
    serve.add_argument("--host", help="bind address (default: LIC_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: LIC_PORT or 8000)")
    serve.add_argument("--settings", type=Path, help="settings file (.json, .toml or dotenv); env vars win over it")
    serve.add_argument("--log-level", default="info")

    compress = sub.add_parser("compress", help="compress an image file through a running server")
    compress.add_argument("input", type=Path)
    compress.add_argument("output", type=Path)
    chosen = compress.add_mutually_exclusive_group()
    chosen.add_argument("--quality", type=int, help="quality level (default: the server's default for the model)")
    for flag, kind, what in _RATE_TARGETS:
        chosen.add_argument(flag, type=kind, help=f"instead of --quality, with a variable-rate model: {what}")
    compress.add_argument("--model", help="model id (default: the server's default model)")
    compress.add_argument("--url", default=DEFAULT_URL)
    compress.add_argument("--multipart", action="store_true", help="upload as multipart/form-data")
    compress.add_argument(
        "--effort", type=int, default=0, help="encoder effort (0 = fastest; up to the server's max_effort)"
    )

    decompress = sub.add_parser("decompress", help="decode a bitstream through a running server")
    decompress.add_argument("input", type=Path)
    decompress.add_argument("output", type=Path)
    decompress.add_argument("--format", choices=sorted(_FORMATS), help="default: from the output's extension")
    decompress.add_argument("--url", default=DEFAULT_URL)

    loadtest = sub.add_parser(
        "loadtest", help="measure a running server's sustainable rate, offer --factor times it, check recovery"
    )
    loadtest.add_argument("image", type=Path, help="the PNG/JPEG/WebP every request sends")
    loadtest.add_argument("--quality", type=int, required=True)
    loadtest.add_argument("--model")
    loadtest.add_argument("--url", default=DEFAULT_URL)
    loadtest.add_argument("--factor", type=float, default=2.0, help="overload = factor x the measured rate")
    loadtest.add_argument("--clients", type=int, default=4, help="concurrent callers while measuring capacity")
    loadtest.add_argument("--seconds", type=float, default=5.0, help="length of the overload phase")
    loadtest.add_argument("--json", type=Path, help="also write the three phase reports here")

    openapi = sub.add_parser("openapi", help="print or write the OpenAPI document the app serves")
    openapi.add_argument(
        "--out", type=Path, help=f"write here (e.g. {OPENAPI_PATH.relative_to(OPENAPI_PATH.parents[1])})"
    )
    openapi.add_argument("--check", action="store_true", help="exit 1 if --out differs from the app's document")
    return parser


def openapi_document() -> str:
    from service.app import create_app
    from service.settings import ServiceSettings

    # the document depends on the code only, never on the environment's settings
    return json.dumps(create_app(ServiceSettings()).openapi(), indent=2) + "\n"


def _serve(args) -> int:
    import logging

    from model_store.errors import ModelStoreError
    from service.middleware import RequestIdFilter
    from service.server import serve
    from service.settings import load_settings

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    settings = load_settings(args.settings)
    try:
        settings.instances()  # unknown models or an empty weights root: one clear line instead of a traceback
    except ModelStoreError as exc:
        print(f"error: cannot serve: {exc} (set LIC_WEIGHTS_ROOT / LIC_MODELS)", file=sys.stderr)
        return 2
    serve(settings, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _compress(args) -> int:
    from service.client import LicClient

    with LicClient(args.url) as client:
        result = client.compress(
            args.input,
            quality=args.quality,
            model=args.model,
            multipart=args.multipart,
            effort=args.effort,
            max_bytes=args.max_bytes,
            target_bpp=args.target_bpp,
            min_psnr=args.min_psnr,
        )
    args.output.write_bytes(result.stream)
    achieved = f"; {result.rate_control}" if result.rate_control else ""
    if result.psnr is not None:
        achieved += f", {result.psnr:.2f} dB"
    print(
        f"{args.input}: {result.width}x{result.height}, {result.original_bytes} -> {result.compressed_bytes} bytes, "
        f"{result.bpp:.4f} bpp ({result.model} q{result.quality}, effort {result.effort}{achieved})"
    )
    return 0


def _decompress(args) -> int:
    from service.client import LicClient

    fmt = args.format or args.output.suffix.lstrip(".").lower() or "png"
    if fmt not in _FORMATS:
        print(f"cannot tell the output format from {args.output.name}; pass --format", file=sys.stderr)
        return 2
    with LicClient(args.url) as client:
        result = client.decompress(args.input.read_bytes(), accept=_FORMATS[fmt])
    args.output.write_bytes(result.data)
    size = f"{result.width}x{result.height}"
    print(f"{args.input} -> {args.output}: {size} {result.content_type} ({result.model} q{result.quality})")
    return 0


def _loadtest(args) -> int:
    import asyncio
    import os

    from service.loadtest import overload_scenario

    phases = asyncio.run(
        overload_scenario(
            args.url,
            args.image.read_bytes(),
            factor=args.factor,
            clients=args.clients,
            overload_s=args.seconds,
            quality=args.quality,
            model=args.model,
            token=os.environ.get("LIC_TOKEN"),
        )
    )
    report = {name: phase.summary() for name, phase in phases.items()}
    for name, phase in phases.items():
        print(
            f"{name:9s} offered {phase.offered_rps:7.2f}/s  ok {phase.ok:5d} ({phase.throughput_rps:.2f}/s)  "
            f"rejected {phase.rejected:5d}  failed {phase.failed:3d}  p99 ok {phase.ok_latency_s.get('p99', 0):.3f} s  "
            f"p99 rejected {phase.rejected_latency_s.get('p99', 0):.3f} s  max queue {phase.max_queue_depth:g}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(phase.failed == 0 for phase in phases.values()) else 1


def _openapi(args) -> int:
    document = openapi_document()
    if args.out is None:
        sys.stdout.write(document)
        return 0
    if args.check:
        same = args.out.exists() and args.out.read_text() == document
        print(
            f"{args.out} is {'up to date' if same else 'STALE: run python -m service openapi --out ' + str(args.out)}"
        )
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document)
    return 0


def parse_args(argv: List[str]) -> argparse.Namespace:
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["serve", *argv]  # `python -m service --port 8000` serves
    return _parser().parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from service.client import ServiceClientError

    try:
        commands = {
            "serve": _serve,
            "compress": _compress,
            "decompress": _decompress,
            "openapi": _openapi,
            "loadtest": _loadtest,
        }
        return commands[args.command](args)
    except ServiceClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
