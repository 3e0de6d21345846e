"""ASGI middleware that sees every request, routed or not: request IDs, security headers, access log, metrics.

Pure ASGI (no ``BaseHTTPMiddleware``) so streaming bodies and client disconnects pass through untouched::

    client ─▶ RequestContextMiddleware ─▶ AdmissionMiddleware ─▶ MetricsMiddleware ─▶ FastAPI routes
                 │ X-Request-ID: the caller's      │ arrived before a drain began? then it is
                 │ (if sane) or a new one; logged   │ in flight and served through the drain
                 │ with every line of the request   │ (the handlers refuse the others: 503)
                 │ security headers on every response; one access-log line per request
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Dict, Iterable, Tuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from service.pipeline import CodecService

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

#: the current request's id, for log records emitted anywhere while it is handled (see RequestIdFilter)
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

access_log = logging.getLogger("service.access")

#: sent with every response. The API serves bytes, never pages: nothing may be sniffed, framed or embedded.
SECURITY_HEADERS: Tuple[Tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-site"),
)
#: the interactive docs load Swagger UI's script and styles, so the strict CSP would blank the page
_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` so a log format can print ``%(request_id)s`` for any logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def request_id_from(headers: Iterable[Tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` if it is a short token of safe characters (it goes into logs), else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            if _SANE_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        start, status, sent = time.monotonic(), 0, 0
        extra = [(b"x-request-id", request_id.encode())]
        if scope["path"] not in _DOCS_PATHS:
            extra += SECURITY_HEADERS

        async def send_with_headers(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %s %d %.1fms',
                f"{client[0]}:{client[1]}" if client else "-",
                scope["method"],
                scope["path"],
                status or "-",
                sent,
                (time.monotonic() - start) * 1000,
                extra={"client_name": scope["state"].get("client", "-")},
            )
            request_id_var.reset(token)


class AdmissionMiddleware:
    """Records, the moment a request arrives, whether the server was already draining (``CodecService.arrival``).

    It runs before the first ``await`` of the request, so a request counted in flight is never refused by a drain
    that began while it waited for the event loop.
    """

    def __init__(self, app: ASGIApp, service: "CodecService"):
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.service.arrival(scope.setdefault("state", {})):
            await self.app(scope, receive, send)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, instance and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.monotonic(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            state: Dict = scope.get("state", {})
            model, quality = state.get("instance", ("", ""))
            endpoint = getattr(route, "path", "other")
            self.metrics.observe_request(endpoint, model, str(quality), status, time.monotonic() - start)
