"""The HTTP API: routes, request parsing and limits, JSON errors. ``create_app(settings)`` builds one app.

Routes stay thin: they check parameters and limits in the cheapest order (names, types, declared length, then
the body, then headers of the image or stream, and only then decode), and hand the work to
:class:`service.pipeline.CodecService`. Errors anywhere become ``{"error", "code"}`` via :mod:`service.errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import ExitStack, asynccontextmanager
from importlib.resources import files
from typing import Annotated, List, Literal, Optional

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Message

from model_store import __version__, container
from model_store.codec import decoder_kind
from model_store.errors import ImageInputError, LimitExceededError, ModelStoreError
from model_store.image_io import image_size
from model_store.rate_control import RateTarget, check_supported
from model_store.refine import MAX_EFFORT
from service import media
from service.access import ClientLimiter, TokenStore, client_key
from service.errors import (
    ERROR_CODES,
    BadParameter,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    Draining,
    NotReady,
    ServiceError,
    UnsupportedMediaType,
    describe,
)
from service.integrity import check_content_digest, digest_header
from service.memory import HeapTrimMiddleware
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.metrics import ServiceMetrics
from service.middleware import AdmissionMiddleware, MetricsMiddleware, RequestContextMiddleware
from service.pipeline import COMPRESS, DECOMPRESS, RATE_CONTROL, CodecService, RequestContext, Timings
from service.settings import ServiceSettings, load_settings

log = logging.getLogger("service")

TIMEOUT_HEADER = "X-Request-Timeout"

#: Swagger UI's script, styles and icon for /docs, served by the app itself so the page works without internet
#: access. They come from the fastapi-offline package: Swagger UI 5, the first release that renders the OpenAPI 3.1
#: documents FastAPI writes (swagger-ui-bundle, the other package that ships them, has Swagger UI 4).
DOCS_ASSETS_URL = "/docs/assets"
DOCS_ASSETS_DIR = str(files("fastapi_offline") / "static")


# -- response bodies (also the OpenAPI schemas) --------------------------------------------------------------------
class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong and what to do about it (for people; may change)")
    code: str = Field(description="stable identifier to branch on (see the API description)")


class ValidationRD(BaseModel):
    """Averages over the project's validation photos, real bitstreams, measured when the weights shipped."""

    bpp: float = Field(description="average bits per pixel")
    psnr: float = Field(description="average RGB PSNR in dB")
    ms_ssim: Optional[float] = None
    images: Optional[int] = Field(None, description="how many validation photos the averages are over")


class QualityInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    quality: int
    state: Literal["loading", "ready", "failed"]
    device: str
    weights_sha256: str = Field(description="sha256 of the weights file; every bitstream header carries it")
    version: str
    lmbda: float = Field(alias="lambda", description="rate-distortion trade-off the weights were trained for")
    validation: Optional[ValidationRD] = Field(
        None, description="what to expect from this quality (pick one by target bpp or PSNR); null if unmeasured"
    )
    load_seconds: Optional[float] = None
    error: Optional[str] = None


class KnobInfo(BaseModel):
    """A variable-rate model's quality scale: one set of weights codes at any integer quality 1..levels."""

    levels: int = Field(description="highest quality code; every integer 1..levels is a valid quality")
    lambda_low: float = Field(description="rate-distortion trade-off at quality 1 (the smallest files)")
    lambda_high: float = Field(description="rate-distortion trade-off at quality `levels`, log-spaced in between")


class ModelInfo(BaseModel):
    model: str
    arch: str
    preset: str
    default_quality: int = Field(description="the quality POST /compress uses when the request names none")
    variable_rate: Optional[KnobInfo] = Field(
        None,
        description="set for a variable-rate model: any quality 1..levels, and rate targets (max_bytes, target_bpp, "
        "min_psnr) on POST /compress; `qualities` then lists the codes measured on the validation photos",
    )
    qualities: List[QualityInfo]


class ModelsBody(BaseModel):
    default_model: Optional[str]
    ready: bool
    max_effort: int = Field(description="highest encoder effort POST /compress accepts (0: the feature is off)")
    max_effort_pixels: int = Field(description="largest image, in pixels, accepted with effort > 0")
    models: List[ModelInfo]


class HealthBody(BaseModel):
    status: str


# -- OpenAPI details FastAPI cannot infer from signatures ----------------------------------------------------------
_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _errors(**codes_by_status: str) -> dict:
    """OpenAPI responses for error statuses, e.g. ``_errors(s400="bad_parameter", s503="draining not_ready")``."""
    out = {}
    for key, codes in codes_by_status.items():
        status = int(key[1:])
        if any(ERROR_CODES[c] != status for c in codes.split()):
            raise ValueError(f"codes {codes} are not all answered with {status}")
        out[status] = {"model": ErrorBody, "description": "error codes: " + ", ".join(codes.split())}
    return out


_UNAVAILABLE = dict(
    s401="auth_required invalid_token",
    s408="body_timeout",
    s429="queue_full client_busy",
    s503="draining not_ready",
    s504="deadline_exceeded",
)


def _header(description: str, type_: str = "string") -> dict:
    return {"description": description, "schema": {"type": type_}}


_RESULT_HEADERS = {
    "X-Model": _header("model id that made the stream"),
    "X-Quality": _header(
        "quality level of the stream (on /compress without quality: the model's default_quality; with a rate "
        "target: the knob code the search chose)",
        "integer",
    ),
    "X-Image-Width": _header("image width in pixels", "integer"),
    "X-Image-Height": _header("image height in pixels", "integer"),
    "X-Batch-Size": _header("requests that shared this request's network pass", "integer"),
    "X-Weights-Version": _header("version of the weights used (an older stream is decoded by its own version)"),
    "Server-Timing": _header("image-io, queue, inference and entropy durations in ms"),
    "Repr-Digest": _header("RFC 9530 sha-256 of the response body, for an end-to-end integrity check"),
    "X-Request-ID": _header("the caller's X-Request-ID if it was sane, else a new one; logged with the request"),
}
_COMPRESS_DOC = {
    "requestBody": {
        "required": True,
        "description": "the image: a raw PNG, JPEG or WebP body with its Content-Type, or multipart/form-data "
        "with the file in the field `image`",
        "content": {
            **{t: _BINARY for t in media.IMAGE_TYPES},
            media.MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
        },
    }
}
_COMPRESS_RESPONSES = {
    200: {
        "description": "the bitstream (container format 2, or any older format, see model_store/container.py)",
        "content": {media.BITSTREAM: _BINARY},
        "headers": {
            **_RESULT_HEADERS,
            "X-Bits-Per-Pixel": _header("8 x compressed bytes / pixels", "number"),
            "X-Original-Bytes": _header("bytes of the uploaded image file", "integer"),
            "X-Compressed-Bytes": _header("bytes of the bitstream", "integer"),
            "X-Effort": _header("encoder effort used (the request's effort parameter)", "integer"),
            "X-Rate-Control": _header(
                "with a rate target: the target and the search's work, e.g. `max_bytes=20000; probes=4; encodes=1`"
            ),
            "X-PSNR": _header("with min_psnr: the RGB PSNR of the decoded stream in dB", "number"),
        },
    },
    **_errors(
        s400="bad_parameter digest_mismatch",
        s404="unknown_model",
        s413="body_too_large",
        s415="unsupported_media_type",
        s422="bad_image too_many_pixels deadline_too_short target_unreachable rate_control_unsupported",
        **_UNAVAILABLE,
    ),
}
_DECOMPRESS_DOC = {
    "requestBody": {
        "required": True,
        "description": "a bitstream produced by POST /compress",
        "content": {media.BITSTREAM: _BINARY},
    }
}
_DECOMPRESS_RESPONSES = {
    200: {
        "description": "the decoded image in the negotiated format",
        "content": {t: _BINARY for t in media.IMAGE_TYPES},
        "headers": {
            **_RESULT_HEADERS,
            "ETag": _header(
                "digest of the bitstream + decoder kind + output format; strong on CPU (byte-identical pixels from "
                "every replica of one CPU kind and torch build), weak (W/) on GPU"
            ),
            "Vary": _header("Accept"),
        },
    },
    304: {"description": "If-None-Match matched the ETag; nothing was decoded"},
    **_errors(
        s400="bad_parameter digest_mismatch",
        s406="not_acceptable",
        s409="unknown_weights weights_mismatch",
        s410="weights_retired",
        s413="body_too_large",
        s415="unsupported_media_type",
        s422="corrupt_bitstream truncated_bitstream unsupported_format_version coder_mismatch too_many_pixels "
        "deadline_too_short",
        **_UNAVAILABLE,
    ),
}

DESCRIPTION = """
Learned image compression over HTTP: images in, entropy-coded bitstreams out, and back.

* `POST /compress?model=&quality=` with a PNG, JPEG or WebP body returns the bitstream. Both are optional: the
  server's default model, and that model's `default_quality` (`GET /v1/models`; `X-Quality` says which was used).
* Or name what you need instead of a quality, with a variable-rate model (`variable_rate` in `GET /v1/models`):
  `max_bytes` (the stream is never larger; within 3 % below), `target_bpp` (within 3 %) or `min_psnr` (met, at
  most 0.3 dB above where the knob allows); exactly one of `quality`, `max_bytes`, `target_bpp`, `min_psnr`.
  A target beyond the top quality gets the top quality's stream; one below the smallest stream (or a PSNR above
  the best) is a 422 `target_unreachable` naming the reachable limit. `X-Quality` says which code was used.
* `POST /decompress` with a bitstream returns the image (PNG by default; WebP or JPEG via `Accept`).
  The response is a pure function of the bitstream, the format and the decoder kind (CPU instruction set + torch
  build, or GPU), so it carries an `ETag` that names all three (strong on CPU, weak on GPU)
  and answers `If-None-Match` with 304 once the stream is known to be whole (header, lengths and CRCs
  checked) but without decoding it (a deliberate use of 304 on POST: the body is the request's only input).
* Requests may shorten their deadline with `X-Request-Timeout: <seconds>`; the body must arrive within it.
* When the server has tokens configured, the codec endpoints and `/v1/models` need `Authorization: Bearer <token>`.
  One client (token, else address) may have a limited number of requests in flight (429 `client_busy`).
* Uploads may carry `Content-Digest` (RFC 9530, sha-256 or sha-512), checked on arrival; results carry
  `Repr-Digest`. Every response carries `X-Request-ID` (the caller's, if sane, else a new one).

Errors are `{"error": "...", "code": "..."}`; codes are stable:

| status | codes |
|---|---|
""" + "\n".join(
    f"| {status} | {', '.join(f'`{c}`' for c in sorted(c for c, s in ERROR_CODES.items() if s == status))} |"
    for status in sorted(set(ERROR_CODES.values()))
)


# -- request helpers -----------------------------------------------------------------------------------------------
#: the ``X-Request-Timeout`` header of both codec endpoints (bounds declared here reach the OpenAPI schema)
RequestTimeout = Annotated[
    Optional[float], Header(gt=0, description="shorter deadline for this request, seconds (> 0)")
]


def _deadline(settings: ServiceSettings, requested: Optional[float], arrival: float) -> float:
    """When the body must have arrived: the server's timeout from arrival, or the request's shorter one (its
    signature declares it positive). The work's deadline, which depends on the image size, is
    ``CodecService.admit``'s."""
    timeout = settings.request_timeout_s if requested is None else min(settings.request_timeout_s, requested)
    return arrival + timeout


def _effort_range(settings: ServiceSettings) -> str:
    """What both effort refusals say: the signature's bounds (the codec's MAX_EFFORT) and this server's ceiling."""
    return f"effort must be between 0 and this server's max_effort of {settings.max_effort}"


def _check_effort(settings: ServiceSettings, effort: int) -> None:
    """The server's own ceiling (the signature declares only the codec's, MAX_EFFORT, for the OpenAPI schema)."""
    if not 0 <= effort <= settings.max_effort:
        raise BadParameter(f"{_effort_range(settings)}, got {effort}")


def _rate_target(
    quality: Optional[int],
    effort: int,
    max_bytes: Optional[int],
    target_bpp: Optional[float],
    min_psnr: Optional[float],
) -> Optional[RateTarget]:
    """The request's rate target, if it names one (400 when it names two, or one with a quality or an effort)."""
    given = {
        k: v for k, v in dict(max_bytes=max_bytes, target_bpp=target_bpp, min_psnr=min_psnr).items() if v is not None
    }
    if not given:
        return None
    if quality is not None or len(given) > 1:
        named = sorted(given) + (["quality"] if quality is not None else [])
        raise BadParameter(f"give at most one of quality, max_bytes, target_bpp, min_psnr; got {', '.join(named)}")
    if effort:
        raise BadParameter(
            "effort applies to a fixed quality; a rate target (max_bytes, target_bpp, min_psnr) "
            "searches the quality itself at effort 0"
        )
    try:
        return RateTarget(**given)
    except ValueError as exc:
        raise BadParameter(str(exc)) from None


def _check_effort_pixels(settings: ServiceSettings, effort: int, width: int, height: int) -> None:
    """Refuse (422) a search that would hold the network thread too long; effort 0 still takes the image."""
    if effort and height * width > settings.max_effort_pixels:
        raise LimitExceededError(
            f"{width}x{height} is {height * width} pixels, above this server's limit of {settings.max_effort_pixels} "
            f"for effort > 0; send it with effort=0"
        )


async def _read_body(request: Request, limit: int, deadline: float, content_digest: Optional[str]) -> bytes:
    """The whole body, refusing (413) as soon as its declared or actual length passes ``limit`` and (408) when it
    has not fully arrived by the request's deadline, so a slow or stalled sender cannot hold a slot for ever.
    ``content_digest`` (the request's ``Content-Digest``), if any, is checked here (400 ``digest_mismatch``)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0

    async def receive_all() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), timeout=max(0.0, deadline - time.monotonic()))
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending the body") from None
    except asyncio.TimeoutError:
        raise BodyTimeout(
            f"the body did not arrive before the request's deadline ({size} bytes received); send it faster or "
            f"raise {TIMEOUT_HEADER}"
        ) from None
    body = b"".join(chunks)
    check_content_digest(content_digest, body)
    return body


async def _multipart_image(request: Request, body: bytes) -> bytes:
    """The file in field ``image`` (or the only file) of a multipart body that was already read within limits."""

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=64 * 1024)
    except Exception as exc:  # malformed multipart
        raise BadParameter(f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    try:
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        part = form.get("image") if hasattr(form.get("image"), "read") else (files[0] if len(files) == 1 else None)
        if part is None:
            raise BadParameter("multipart body must carry the image file in the field 'image'")
        declared = media.media_type(part.content_type)
        if declared.startswith("image/") and declared not in media.IMAGE_TYPES:
            raise UnsupportedMediaType(
                f"unsupported image type {declared}; send one of {json.dumps(list(media.IMAGE_TYPES))}"
            )
        return await part.read()
    finally:
        await form.close()


def _watch_disconnect(request: Request) -> asyncio.Future:
    """A future that completes when the client goes away (call only after the body was read)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return asyncio.ensure_future(watch())


def _result_headers(model: str, quality: int, width: int, height: int, timings: Timings) -> dict:
    return {
        "X-Model": model,
        "X-Quality": str(quality),
        "X-Image-Width": str(width),
        "X-Image-Height": str(height),
        "X-Batch-Size": str(timings.batch_size),
        "Server-Timing": timings.server_timing(),
    }


# -- the app -------------------------------------------------------------------------------------------------------
def create_app(settings: Optional[ServiceSettings] = None) -> FastAPI:
    """One service instance: its own pool, queues, thread pools and metrics registry."""
    settings = settings or load_settings()
    metrics = ServiceMetrics()
    service = CodecService(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not tokens.enabled:
            log.warning(
                "AUTHENTICATION IS OFF: anyone who can reach this port can use the codec endpoints. Set "
                "LIC_AUTH_TOKENS or LIC_AUTH_TOKENS_FILE for any deployment beyond localhost (SECURITY.md)."
            )
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="lic-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below from local assets, not from a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(HeapTrimMiddleware)  # innermost: runs once the handler's arrays are released
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(AdmissionMiddleware, service=service)  # decided on arrival, before any await
    app.add_middleware(RequestContextMiddleware)  # outermost: its request id covers everything below

    tokens = TokenStore(
        settings.auth_tokens.get_secret_value() if settings.auth_tokens else None, settings.auth_tokens_file
    )
    limiter = ClientLimiter(
        settings.max_in_flight_per_client, settings.retry_after_s, settings.max_pixels_in_flight_per_client
    )
    app.state.limiter = limiter

    def caller(
        request: Request,
        authorization: Optional[str] = Header(None, description="'Bearer <token>' when the server requires auth"),
    ) -> str:
        """The authenticated client name (or the peer address): the identity the per-client cap counts."""
        client = client_key(tokens.authenticate(authorization), request.scope.get("client"))
        request.state.client = client
        return client

    def error_response(exc: BaseException) -> JSONResponse:
        status, code, message, headers = describe(exc)
        if status >= 500 and not isinstance(exc, ServiceError):
            log.error("unhandled error", exc_info=exc)
        if status in (429, 503):
            headers = {"Retry-After": str(settings.retry_after_s), **headers}
        metrics.rejections.labels(code).inc()
        headers = {"Cache-Control": "no-store", **headers}
        return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    @app.exception_handler(ModelStoreError)
    async def _known(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        names = {e["loc"][-1] for e in exc.errors()}
        if "quality" in names and service.pool.instances:
            problems += f" (served models and qualities: {json.dumps(service.pool.served_description())})"
        if "effort" in names:
            problems += f" ({_effort_range(settings)})"
        return error_response(BadParameter(problems))

    def allowed_methods(request: Request) -> str:
        """Every method the request's path answers, for a 405's ``Allow`` (RFC 9110 section 15.5.6); Starlette's
        own lists only the first matching route's, and a path may have several (GET and HEAD on /health/*)."""
        methods = {
            method
            for route in app.router.routes
            if route.matches(request.scope)[0] is not Match.NONE
            for method in getattr(route, "methods", None) or ()
        }
        return ", ".join(sorted(methods))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        headers = {"Allow": allowed_methods(request)} if exc.status_code == 405 else None
        err = ServiceError(str(exc.detail), headers)
        err.status, err.code = exc.status_code, code
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    # -- codec endpoints -------------------------------------------------------------------------------------------
    @app.post(
        "/compress",
        operation_id="compress",
        summary="Compress an image into a bitstream",
        response_class=Response,
        responses=_COMPRESS_RESPONSES,
        openapi_extra=_COMPRESS_DOC,
    )
    async def compress(
        request: Request,
        quality: Optional[int] = Query(
            None,
            ge=1,
            description="quality level of the model (1 = smallest files); the model's default_quality when omitted; "
            "see GET /v1/models (a variable-rate model takes any integer 1..levels; a code's rate point belongs to "
            "the weights version serving it and may move in a new version: for a stable size ask for target_bpp "
            "or max_bytes)",
        ),
        max_bytes: Optional[int] = Query(
            None,
            ge=1,
            description="rate target (variable-rate models): the largest stream that fits, never more bytes; "
            "exclusive with quality, target_bpp and min_psnr",
        ),
        target_bpp: Optional[float] = Query(
            None, gt=0, description="rate target (variable-rate models): the stream closest to this many bits per pixel"
        ),
        min_psnr: Optional[float] = Query(
            None,
            gt=0,
            description="rate target (variable-rate models): the smallest stream whose decoded image reaches this "
            "RGB PSNR in dB",
        ),
        model: Optional[str] = Query(None, description="model id; the server's default model when omitted"),
        effort: int = Query(
            0,
            ge=0,
            le=MAX_EFFORT,
            description="encoder effort: 0 (default, fastest) up to the server's max_effort (see GET /v1/models); "
            "higher efforts search for a latent that costs fewer bits at equal quality, for the same decoder, at "
            "~10x (effort 1) or more the encoding time",
        ),
        x_request_timeout: RequestTimeout = None,
        content_digest: Optional[str] = Header(None, description="RFC 9530 digest of the body, checked on arrival"),
        client: str = Depends(caller),
    ) -> Response:
        service.admitted(request.scope.get("state", {}))
        with limiter.hold(client), ExitStack() as held:
            arrival = time.monotonic()
            deadline = _deadline(settings, x_request_timeout, arrival)
            _check_effort(settings, effort)
            target = _rate_target(quality, effort, max_bytes, target_bpp, min_psnr)
            inst, quality = service.pool.get(model, quality)
            request.state.instance = (inst.key[0], inst.label)
            if target is not None:
                check_supported(inst.codec)  # 422 before the body is read
            held.enter_context(service.reserve(inst, COMPRESS))  # sheds overload before reading the body
            declared = media.media_type(request.headers.get("content-type"))
            if declared not in media.IMAGE_TYPES and declared != media.MULTIPART:
                raise UnsupportedMediaType(
                    f"Content-Type {declared or '(none)'} is not supported; send one of "
                    f"{json.dumps(list(media.IMAGE_TYPES))} or {media.MULTIPART}"
                )
            body = await _read_body(request, settings.max_body_bytes, deadline, content_digest)
            data = await _multipart_image(request, body) if declared == media.MULTIPART else body
            if media.sniff(data) is None:
                raise ImageInputError("the body is not a PNG, JPEG or WebP image")
            width, height = image_size(data, service.pool.limits)  # the header: no pixel decoded yet
            _check_effort_pixels(settings, effort, width, height)
            work = RATE_CONTROL if target is not None else effort
            deadline = service.admit(inst, COMPRESS, width * height, arrival, x_request_timeout, work)
            held.enter_context(limiter.hold_pixels(client, width * height))
            request.state.pixels = width * height
            ctx = RequestContext(deadline, _watch_disconnect(request), width * height)
            timings = Timings()
            try:
                image = await service.decode_image(data, ctx, timings)
                if target is None:
                    result = await service.compress(inst, image, ctx, timings, effort, quality)
                else:
                    result = await service.compress_to_target(inst, image, ctx, timings, target)
            finally:
                ctx.disconnected.cancel()
            model_id = inst.key[0]
            metrics.observe_compression(model_id, inst.label, len(data), len(result.stream), result.bpp)
            headers = _result_headers(model_id, result.quality, result.width, result.height, timings)
            headers.update(
                {
                    "X-Bits-Per-Pixel": f"{result.bpp:.6f}",
                    "X-Original-Bytes": str(len(data)),
                    "X-Compressed-Bytes": str(len(result.stream)),
                    "Repr-Digest": digest_header(result.stream),
                    "X-Weights-Version": inst.entry.version,
                    "X-Effort": str(effort),
                }
            )
            if result.rate is not None:
                asked = getattr(target, target.kind)
                headers["X-Rate-Control"] = (
                    f"{target.kind}={asked:g}; " if isinstance(asked, float) else f"{target.kind}={asked}; "
                ) + f"probes={result.rate.probes}; encodes={result.rate.encodes}"
                if result.rate.psnr is not None:
                    headers["X-PSNR"] = f"{result.rate.psnr:.4f}"
            metrics.efforts.labels(model_id, inst.label, str(effort)).inc()
            return Response(result.stream, media_type=media.BITSTREAM, headers=headers)

    @app.post(
        "/decompress",
        operation_id="decompress",
        summary="Decode a bitstream into an image",
        response_class=Response,
        responses=_DECOMPRESS_RESPONSES,
        openapi_extra=_DECOMPRESS_DOC,
    )
    async def decompress(
        request: Request,
        accept: Optional[str] = Header(None, description="image/png (default), image/webp or image/jpeg"),
        if_none_match: Optional[str] = Header(None, description="ETag of a representation the client holds"),
        x_request_timeout: RequestTimeout = None,
        content_digest: Optional[str] = Header(None, description="RFC 9530 digest of the body, checked on arrival"),
        client: str = Depends(caller),
    ) -> Response:
        service.admitted(request.scope.get("state", {}))
        with limiter.hold(client), ExitStack() as held:
            arrival = time.monotonic()
            deadline = _deadline(settings, x_request_timeout, arrival)
            content_type, fmt = media.negotiate_image_type(accept)
            declared = media.media_type(request.headers.get("content-type"))
            if declared not in ("", media.BITSTREAM):
                raise UnsupportedMediaType(f"Content-Type {declared} is not a bitstream; send {media.BITSTREAM}")
            body = await _read_body(request, settings.max_body_bytes, deadline, content_digest)
            header = container.parse_header(body)  # cheap: refuses damaged/unknown streams before any decoding
            inst, legacy = await service.instance_for_stream(header)
            request.state.instance = (inst.key[0], inst.label)
            if not legacy:  # a legacy decode waits for the legacy lock instead, within its deadline
                held.enter_context(service.reserve(inst, DECOMPRESS))  # before any rANS decoding
            inst.codec.check_header(header)  # weights digest (409), pixel limit and shapes (422)
            etag = media.etag_for(body, fmt, *decoder_kind(inst.device))
            if media.etag_matches(if_none_match, etag):
                # the ETag names the bytes, not a decodable stream: a damaged or cut one must get the 422 a decode
                # would, never "not modified" (payload lengths and CRC: a pass over the body, no decoding)
                container.unpack(body)
                return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept"})
            pixels = header.width * header.height
            deadline = service.admit(inst, DECOMPRESS, pixels, arrival, x_request_timeout)  # before any rANS
            held.enter_context(limiter.hold_pixels(client, pixels))
            request.state.pixels = pixels
            ctx = RequestContext(deadline, _watch_disconnect(request), pixels)
            timings = Timings()
            try:
                decode = service.decompress_legacy if legacy else service.decompress
                result = await decode(inst, body, fmt, ctx, timings)
            finally:
                ctx.disconnected.cancel()
            headers = _result_headers(inst.key[0], header.quality, header.width, header.height, timings)
            headers.update(
                {
                    "ETag": etag,
                    "Vary": "Accept",
                    "Repr-Digest": digest_header(result.data),
                    "X-Weights-Version": inst.entry.version,
                }
            )
            return Response(result.data, media_type=content_type, headers=headers)

    # -- introspection ---------------------------------------------------------------------------------------------
    @app.get(
        "/v1/models",
        operation_id="listModels",
        response_model=ModelsBody,
        summary="Served models, qualities, weights and state",
        responses=_errors(s401="auth_required invalid_token"),
    )
    async def models(client: str = Depends(caller)) -> dict:
        return {
            **service.pool.describe(),
            "ready": service.pool.ready and not service.draining,
            "max_effort": settings.max_effort,
            "max_effort_pixels": settings.max_effort_pixels,
        }

    def probe(path: str, operation_id: str, summary: str, **route):
        """Registers a health endpoint for GET and for HEAD, which load balancers probe with (the same status, no
        body). Two routes on one handler, so that each method has its own operationId in the OpenAPI document."""

        def register(endpoint):
            for method, suffix, note in (("GET", "", ""), ("HEAD", "Head", " (HEAD: the status only)")):
                app.add_api_route(
                    path,
                    endpoint,
                    methods=[method],
                    operation_id=operation_id + suffix,
                    summary=summary + note,
                    response_model=HealthBody,
                    **route,
                )
            return endpoint

        return register

    @probe("/health/live", "live", "The process is up")
    async def live() -> dict:
        return {"status": "alive"}

    @probe(
        "/health/ready",
        "ready",
        "Every configured instance is warm and the server is not draining",
        responses=_errors(s503="draining not_ready"),
    )
    async def ready() -> dict:
        if service.draining:
            raise Draining("the server is shutting down")
        if not service.pool.ready:
            states = {f"{m} q{q}": inst.state for (m, q), inst in service.pool.instances.items()}
            raise NotReady(f"instances are not all ready: {json.dumps(states)}")
        return {"status": "ready"}

    @app.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    # -- interactive docs, self-contained (no CDN: the page must work on an offline host) ----------------------------
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + app.swagger_ui_oauth2_redirect_url,
        )

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    async def docs_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    return app
