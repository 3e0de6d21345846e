"""Command line: run the server, talk to one, or write the OpenAPI contract.

    python -m service [serve] [--host H] [--port P] [--settings FILE]     settings also from LIC_* env vars
    python -m service compress IN.png OUT.bin --quality 4 [--model M] [--url URL] [--multipart]
    python -m service decompress OUT.bin BACK.png [--format png|webp|jpeg] [--url URL]
    python -m service openapi [--out openapi/openapi.json] [--check]

``--url`` defaults to ``$LIC_URL`` or http://127.0.0.1:8000. ``decompress`` picks the output format from the
output file's extension unless ``--format`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

COMMANDS = ("serve", "compress", "decompress", "openapi")
OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"
_FORMATS = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg", "jpeg": "image/jpeg"}


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
    compress.add_argument("--quality", type=int, required=True)
    compress.add_argument("--model", help="model id (default: the server's default model)")
    compress.add_argument("--url", default=DEFAULT_URL)
    compress.add_argument("--multipart", action="store_true", help="upload as multipart/form-data")

    decompress = sub.add_parser("decompress", help="decode a bitstream through a running server")
    decompress.add_argument("input", type=Path)
    decompress.add_argument("output", type=Path)
    decompress.add_argument("--format", choices=sorted(_FORMATS), help="default: from the output's extension")
    decompress.add_argument("--url", default=DEFAULT_URL)

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
        result = client.compress(args.input, quality=args.quality, model=args.model, multipart=args.multipart)
    args.output.write_bytes(result.stream)
    print(
        f"{args.input}: {result.width}x{result.height}, {result.original_bytes} -> {result.compressed_bytes} bytes, "
        f"{result.bpp:.4f} bpp ({result.model} q{result.quality})"
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
        return {"serve": _serve, "compress": _compress, "decompress": _decompress, "openapi": _openapi}[args.command](
            args
        )
    except ServiceClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
