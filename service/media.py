"""Media types: what the service accepts and produces, content sniffing, ``Accept`` negotiation and ETags.

The declared ``Content-Type`` decides 415; the bytes decide what is decoded. Only files whose magic bytes say
PNG, JPEG or WebP ever reach the image decoder, whatever they are labelled, so the decoder's attack surface is
those three formats.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Tuple

from service.errors import NotAcceptable

#: media type -> Pillow format name, for image bodies of /compress and the output of /decompress
IMAGE_TYPES: Dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
MULTIPART = "multipart/form-data"
BITSTREAM = "application/octet-stream"
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_EXTENSION = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def media_type(content_type: Optional[str]) -> str:
    """``"Image/PNG; charset=x"`` -> ``"image/png"`` (aliases folded)."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def sniff(data: bytes) -> Optional[str]:
    """The media type the magic bytes announce, if it is one the service decodes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _parse_accept(accept: str) -> List[Tuple[str, float]]:
    ranges = []
    for item in accept.split(","):
        fields = [f.strip() for f in item.split(";")]
        if not fields[0]:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((_ALIASES.get(fields[0].lower(), fields[0].lower()), q))
    return ranges


def negotiate_image_type(accept: Optional[str]) -> Tuple[str, str]:
    """(media type, Pillow format) for an ``Accept`` header; PNG when absent or indifferent, 406 when impossible.

    Each offered type takes the q of the most specific range that matches it; the highest q wins and ties go to
    the server's preference order (PNG, WebP, JPEG: lossless first).
    """
    if not accept or not accept.strip():
        return "image/png", "PNG"
    ranges = _parse_accept(accept)
    best: Optional[Tuple[float, int, str]] = None
    for preference, offered in enumerate(IMAGE_TYPES):
        q = None
        for match in (offered, "image/*", "*/*"):  # most specific first
            hits = [rq for rng, rq in ranges if rng == match]
            if hits:
                q = max(hits)
                break
        if q and q > 0 and (best is None or (q, -preference) > (best[0], best[1])):
            best = (q, -preference, offered)
    if best is None:
        raise NotAcceptable(f"cannot produce any of {accept!r}; available: {', '.join(IMAGE_TYPES)}")
    return best[2], IMAGE_TYPES[best[2]]


def file_extension(fmt: str) -> str:
    return _EXTENSION[fmt.upper()]


def etag_for(stream: bytes, fmt: str, decoder: str = "", strong: bool = True) -> str:
    """ETag of a decompressed representation: the stream's digest, the output format (Vary: Accept) and the kind
    of decoder that made the pixels (``model_store.codec.decoder_kind``).

    The latent is exact everywhere, but the pixels are only byte-identical between decoders of one kind (same
    device type, CPU instruction set and torch build: tiles run with one thread each, so batch size, thread count
    and process do not matter). Replicas of two kinds therefore send two different tags, never one strong tag for
    different bytes (a client resuming with If-Range would splice two files). Where even one kind does not promise
    identical bytes (CUDA kernels), the tag is weak (``strong=False``): fine for If-None-Match, never for If-Range.
    """
    kind = hashlib.sha256(decoder.encode()).hexdigest()[:8]
    tag = f'"{hashlib.sha256(stream).hexdigest()[:32]}.{kind}.{file_extension(fmt)}"'
    return tag if strong else "W/" + tag


def etag_matches(if_none_match: Optional[str], etag: str) -> bool:
    """``If-None-Match`` uses the weak comparison (RFC 9110 section 13.1.2): ``W/`` prefixes are ignored."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag.removeprefix("W/"):
            return True
    return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
