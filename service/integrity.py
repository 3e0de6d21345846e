"""End-to-end integrity of bodies in transit: RFC 9530 ``Content-Digest`` in, ``Repr-Digest`` out.

The container already protects a stored bitstream (header, payload and coder CRCs plus the weights digest); these
headers protect the hops between a caller and the codec, where a proxy or a broken connection can truncate or
alter a body without anyone noticing:

* a request may carry ``Content-Digest: sha-256=:<base64>:`` (or sha-512); the server checks it against the bytes
  that arrived and answers 400 ``digest_mismatch`` instead of compressing a damaged upload;
* every ``/compress`` and ``/decompress`` response carries ``Repr-Digest: sha-256=:<base64>:`` of its body, which
  :mod:`service.client` verifies before handing the bytes to the caller.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Dict, Optional

from service.errors import BadParameter, DigestMismatch

_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def digest_header(data: bytes, algorithm: str = "sha-256") -> str:
    """``sha-256=:<base64>:``: the value of a Content-Digest or Repr-Digest header for ``data``."""
    return f"{algorithm}=:{base64.b64encode(_ALGORITHMS[algorithm](data).digest()).decode()}:"


def parse_digest_header(value: str) -> Dict[str, bytes]:
    """``{"sha-256": raw digest, ...}`` from a structured-field dictionary; unknown algorithms are skipped."""
    out = {}
    for member in value.split(","):
        name, sep, encoded = member.strip().partition("=")
        name = name.strip().lower()
        if name not in _ALGORITHMS:
            continue
        encoded = encoded.strip()
        if not sep or len(encoded) < 2 or encoded[0] != ":" or encoded[-1] != ":":
            raise BadParameter(f"malformed digest for {name}: expected {name}=:<base64>:")
        try:
            out[name] = base64.b64decode(encoded[1:-1], validate=True)
        except ValueError:
            raise BadParameter(f"digest for {name} is not valid base64") from None
    return out


def check_content_digest(value: Optional[str], body: bytes) -> None:
    """Raise 400 ``digest_mismatch`` unless every supported digest in ``value`` matches ``body``."""
    if not value:
        return
    for name, expected in parse_digest_header(value).items():
        if _ALGORITHMS[name](body).digest() != expected:
            raise DigestMismatch(
                f"the body's {name} digest differs from its Content-Digest header: it was damaged or cut "
                f"in transit ({len(body)} bytes arrived); send it again"
            )


def verify_repr_digest(value: Optional[str], body: bytes) -> bool:
    """True if ``value`` names a supported digest and every one matches ``body`` (the client's check)."""
    if not value:
        return False
    digests = parse_digest_header(value)
    return bool(digests) and all(_ALGORITHMS[n](body).digest() == d for n, d in digests.items())
