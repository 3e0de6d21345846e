"""Who may call the codec endpoints, and how much of the server one caller may hold.

* :class:`TokenStore`: optional bearer-token authentication. Tokens come from ``LIC_AUTH_TOKENS`` and/or a file
  (``LIC_AUTH_TOKENS_FILE``, re-read when its modification time changes, so a rotated secret needs no restart).
  Each token may carry a client name (``name:token``) that logs and the per-client cap use instead of the token.
  Only SHA-256 digests of tokens are kept in memory, and a presented token is compared with *every* known digest
  by :func:`hmac.compare_digest`, so neither the comparison nor the number of comparisons depends on which token
  (or how much of one) matched.
* :class:`ClientLimiter`: at most ``max_in_flight_per_client`` requests in flight per client (token name when
  authenticated, else the peer address, which uvicorn's ``--proxy-headers`` turns into the real client behind a
  trusted proxy). A client over its cap gets 429 ``client_busy`` at once, so one bulk caller cannot fill every
  queue and starve the others.

Health probes and ``/metrics`` stay open (orchestrators and Prometheus call them); restrict them at the network
level (see SECURITY.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from service.errors import ClientBusy, InvalidToken, MissingToken

log = logging.getLogger("service.access")

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class _Token:
    client: str
    digest: bytes


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(text: str, source: str) -> List[_Token]:
    """``token`` or ``name:token`` entries, separated by commas or newlines; ``#`` starts a comment line."""
    tokens = []
    for n, raw in enumerate(text.replace(",", "\n").splitlines(), 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        name, sep, secret = entry.rpartition(":")
        if not sep:
            name, secret = "", entry
        if len(secret) < 16:
            raise ValueError(f"{source} entry {n}: tokens must be at least 16 characters")
        tokens.append(_Token(name or f"token-{_digest(secret).hex()[:8]}", _digest(secret)))
    return tokens


class TokenStore:
    """The accepted bearer tokens; ``enabled`` is False when none are configured (local use)."""

    def __init__(self, tokens: Optional[str] = None, tokens_file: Optional[Path] = None):
        self._static = parse_tokens(tokens, "LIC_AUTH_TOKENS") if tokens else []
        self._file = tokens_file
        self._file_tokens: List[_Token] = []
        self._file_mtime: Optional[int] = None
        self._lock = threading.Lock()
        if tokens_file is not None:
            self._reload()
            if not self._file_tokens and not self._static:
                raise ValueError(f"auth tokens file {tokens_file} holds no tokens")

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._file is not None

    def _reload(self) -> None:
        assert self._file is not None
        mtime = os.stat(self._file).st_mtime_ns
        if mtime != self._file_mtime:
            self._file_tokens = parse_tokens(self._file.read_text(), str(self._file))
            self._file_mtime = mtime
            log.info("auth: %d token(s) loaded from %s", len(self._file_tokens), self._file)

    def _tokens(self) -> List[_Token]:
        if self._file is not None:
            with self._lock:
                try:
                    self._reload()
                except (OSError, ValueError) as exc:  # keep serving with the last good tokens
                    log.error("auth: cannot re-read %s (%s); keeping the previous tokens", self._file, exc)
        return self._static + self._file_tokens

    def authenticate(self, authorization: Optional[str]) -> str:
        """The client name for an ``Authorization`` header value; raises 401 errors when auth is on."""
        if not self.enabled:
            return ANONYMOUS
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise MissingToken("this server requires 'Authorization: Bearer <token>'")
        digest = _digest(presented.strip())
        client = None
        for token in self._tokens():  # no early exit: the time taken does not say which token matched
            if hmac.compare_digest(token.digest, digest):
                client = token.client
        if client is None:
            raise InvalidToken("the bearer token is not valid")
        return client


class ClientLimiter:
    """Counts requests and image pixels in flight per client and refuses one over either cap (runs on the event
    loop: no lock). The pixel cap prices requests by their size: 32 requests of 16 MP hold ~500x the work of 32
    thumbnails, and one client should not be able to hold a server's memory with a few large uploads."""

    def __init__(self, max_in_flight: int, retry_after_s: int, max_pixels_in_flight: int = 0):
        self.max_in_flight, self.retry_after_s = max_in_flight, retry_after_s
        self.max_pixels_in_flight = max_pixels_in_flight
        self._in_flight: Dict[str, int] = defaultdict(int)
        self._pixels: Dict[str, int] = defaultdict(int)

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        if self.max_in_flight and self._in_flight[client] >= self.max_in_flight:
            raise ClientBusy(
                f"this client already has {self._in_flight[client]} requests in flight (the limit is "
                f"{self.max_in_flight}); wait for some to finish",
                {"Retry-After": str(self.retry_after_s)},
            )
        with self._counted(self._in_flight, client, 1):
            yield

    @contextmanager
    def hold_pixels(self, client: str, pixels: int) -> Iterator[None]:
        """Count ``pixels`` against the client's cap for the block (429 ``client_busy`` if they do not fit; a
        single image always fits when nothing else of the client's is in flight, max_pixels bounds it)."""
        held = self._pixels[client]
        if self.max_pixels_in_flight and held and held + pixels > self.max_pixels_in_flight:
            raise ClientBusy(
                f"this client already has {held} image pixels in flight and this image adds {pixels} (the limit is "
                f"{self.max_pixels_in_flight}); wait for some to finish",
                {"Retry-After": str(self.retry_after_s)},
            )
        with self._counted(self._pixels, client, pixels):
            yield

    @staticmethod
    @contextmanager
    def _counted(counts: Dict[str, int], client: str, amount: int) -> Iterator[None]:
        counts[client] += amount
        try:
            yield
        finally:
            counts[client] -= amount
            if not counts[client]:
                del counts[client]

    def in_flight(self, client: str) -> int:
        return self._in_flight.get(client, 0)

    def pixels_in_flight(self, client: str) -> int:
        return self._pixels.get(client, 0)


def client_key(authenticated: str, peer: Optional[Tuple[str, int]]) -> str:
    """The identity the per-client cap counts: the token's client name, else the peer's address."""
    if authenticated != ANONYMOUS:
        return authenticated
    return f"addr:{peer[0]}" if peer else "addr:unknown"
