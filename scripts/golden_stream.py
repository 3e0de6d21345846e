#!/usr/bin/env python3
"""Freeze a stream of the newest installed release as a golden file, before that release can change.

    python scripts/golden_stream.py MODEL QUALITY

Writes ``tests/assets/golden/<model>-<version>-q<Q>.lic`` (the stream), ``.png`` (what it decodes to today) and an
entry in ``golden.json`` with the latent's sha256; ``tests/test_golden_streams.py`` then holds every later
release to decoding it the same. Run it once per new weights file a release ships. The source is a fixed 48x64
crop of a validation asset (small streams, a real photo), the same crop every earlier entry used. The weights come
from ``$LIC_WEIGHTS_ROOT`` when set (scripts/release.sh sets it), else model_store/weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_store import container, registry  # noqa: E402
from model_store.codec import ImageCodec  # noqa: E402
from model_store.image_io import encode_image, open_image  # noqa: E402

GOLDEN = ROOT / "tests" / "assets" / "golden"
SOURCE = "tests/assets/val_citrus_384x256.png"
ROWS, COLS = (100, 148), (200, 264)


def make_case(
    entry: registry.WeightsEntry, format_version: int = container.FORMAT_VERSION
) -> Tuple[dict, bytes, bytes]:
    """(golden.json entry, stream, decoded PNG) for one installed weights file, written in ``format_version`` (the
    newest by default); deterministic, so the committed entries can be checked against it."""
    codec = ImageCodec.from_entry(entry, format_version=format_version)
    image = open_image(ROOT / SOURCE)[ROWS[0] : ROWS[1], COLS[0] : COLS[1]]
    stream = codec.compress(image)
    header = container.parse_header(stream)
    y_hat, _ = codec.decode_latent(stream)
    name = f"{entry.model_id}-{entry.version}-q{entry.quality}"
    case = {
        "stream": f"{name}.lic",
        "decoded": f"{name}.png",
        "format_version": header.version,
        "model": entry.model_id,
        "weights_version": entry.version,
        "quality": entry.quality,
        "weights_sha256": entry.digest.hex(),  # the whole sha256, whatever part of it the header stores
        "latent_sha256": hashlib.sha256(y_hat.numpy().astype(np.float32).tobytes()).hexdigest(),
        "source": f"{SOURCE} rows {ROWS[0]}:{ROWS[1]}, cols {COLS[0]}:{COLS[1]}",
    }
    return case, stream, encode_image(codec.decompress(stream), "PNG")


def add(model: str, quality: int) -> dict:
    """Freeze the newest installed release of (model, quality)."""
    root = Path(os.environ.get("LIC_WEIGHTS_ROOT") or registry.WEIGHTS_ROOT)
    case, stream, decoded = make_case(registry.resolve(model, quality, root=root))
    cases = json.loads((GOLDEN / "golden.json").read_text())
    if any(existing["stream"] == case["stream"] for existing in cases):
        raise SystemExit(f"{case['stream']} is already golden: a golden stream is never regenerated")
    (GOLDEN / case["stream"]).write_bytes(stream)
    (GOLDEN / case["decoded"]).write_bytes(decoded)
    (GOLDEN / "golden.json").write_text(json.dumps([*cases, case], indent=2) + "\n")
    return case


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(json.dumps(add(sys.argv[1], int(sys.argv[2])), indent=2))
