"""The bitstream fuzzing harness shared by the atheris target (``bitstream_target.py``) and the pytest suite.

An input is one mode byte and a body:

* mode 0 (raw): the body is handed to the decoder as a stream, as any caller could send it;
* mode 1 (re-sealed): the body drives edits to a valid seed stream (header fields, payload bytes, lengths) and
  the result is packed again with correct CRCs, so the fuzzer gets past the CRC checks into field validation,
  shape checks, rANS decoding and the coder-index CRC, the parts a forger (CRC32 is not a signature) reaches.

The invariant (:func:`check`): decoding either raises a typed :class:`ModelStoreError`, or returns a uint8
image of exactly the size its header announces. Anything else (an untyped exception, a wrong shape, a crash, a
hang or a huge allocation, which libFuzzer's -timeout / -rss_limit_mb catch) is a bug.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from functools import lru_cache
from pathlib import Path
from typing import List, Optional

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import TinyHyperprior, natural_image  # noqa: E402

from model_store import container  # noqa: E402
from model_store.codec import ImageCodec, ModelIdentity  # noqa: E402
from model_store.errors import ModelStoreError  # noqa: E402
from model_store.image_io import ImageLimits  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"
CRASHERS = Path(__file__).resolve().parent / "crashers"
RAW, RESEALED = 0, 1
#: small enough that any header the fuzzer writes decodes in well under a second
MAX_PIXELS = 256 * 256
SEED_SIZES = ((1, 1), (17, 33), (64, 64), (70, 130))


@lru_cache(maxsize=1)
def codec() -> ImageCodec:
    import torch

    torch.manual_seed(0)
    model = TinyHyperprior()
    with torch.no_grad():  # untrained latents round to zero; scale them so payloads carry real symbols
        model.g_a[-1].weight.mul_(100.0)
    model.update(force=True)
    return ImageCodec(model, ModelIdentity("tiny-test", 1, bytes(range(32))), limits=ImageLimits(MAX_PIXELS))


@lru_cache(maxsize=1)
def seed_streams() -> List[bytes]:
    return [codec().compress(natural_image(h, w, seed=i)) for i, (h, w) in enumerate(SEED_SIZES)]


class _Bytes:
    """Reads small integers off the fuzzer's input; zeros once it runs out (deterministic, never raises)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def int(self, size: int) -> int:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return int.from_bytes(chunk.ljust(size, b"\0"), "little")

    @property
    def left(self) -> int:
        return max(0, len(self.data) - self.pos)


_HEADER_FIELDS = ("quality", "height", "width", "pad_bottom", "pad_right", "coder_crc", "shape", "model", "digest")


def resealed(body: bytes) -> Optional[bytes]:
    """A seed stream edited as ``body`` says and packed again with valid CRCs (None if it cannot be packed)."""
    src = _Bytes(body)
    seeds = seed_streams()
    stream = container.unpack(seeds[src.int(1) % len(seeds)])
    header, payloads = stream.header, [bytearray(p) for p in stream.payloads]
    for _ in range(src.int(1) % 8):  # header edits
        field = _HEADER_FIELDS[src.int(1) % len(_HEADER_FIELDS)]
        if field in ("quality",):
            header = dataclasses.replace(header, quality=src.int(1))
        elif field in ("height", "width", "coder_crc"):
            header = dataclasses.replace(header, **{field: src.int(4)})
        elif field in ("pad_bottom", "pad_right"):
            header = dataclasses.replace(header, **{field: src.int(2)})
        elif field == "shape":
            shapes = [list(s) for s in header.latent_shapes]
            shapes[src.int(1) % 2][src.int(1) % 3] = src.int(2)
            header = dataclasses.replace(header, latent_shapes=tuple(tuple(s) for s in shapes))
        elif field == "model":
            header = dataclasses.replace(
                header, model_id=bytes(src.int(1) % 128 for _ in range(1 + src.int(1) % 8)).decode("latin-1")
            )
        else:
            header = dataclasses.replace(header, weights_digest=bytes(src.int(1) for _ in range(32)))
    for _ in range(src.int(1) % 16):  # payload edits: flip, cut, extend
        which = payloads[src.int(1) % 2]
        op = src.int(1) % 3
        if op == 0 and which:
            which[src.int(2) % len(which)] ^= 1 + src.int(1) % 255
        elif op == 1:
            del which[src.int(2) % (len(which) + 1) :]
        else:
            which.extend(bytes(src.int(1) for _ in range(src.int(1) % 16)))
    try:
        return container.pack(header, [bytes(p) for p in payloads])
    except (ValueError, UnicodeEncodeError, OverflowError, TypeError, struct.error):
        return None  # not representable in the format (e.g. a non-ASCII model id): nothing to decode


def stream_of(data: bytes) -> Optional[bytes]:
    """The stream a fuzzer input stands for (raw or re-sealed)."""
    if not data:
        return b""
    return data[1:] if data[0] % 2 == RAW else resealed(data[1:])


def check(data: bytes) -> str:
    """Run one fuzzer input through the decoder and enforce the invariant; returns 'rejected' or 'decoded'."""
    stream = stream_of(data)
    if stream is None:
        return "unpackable"
    try:
        image = codec().decompress(stream)
    except ModelStoreError:
        return "rejected"
    header = container.parse_header(stream)
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8, type(image)
    assert image.shape == (header.height, header.width, 3), (image.shape, header)
    return "decoded"
