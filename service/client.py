"""A small Python client (httpx), sync and async, with the same methods and results::

    with LicClient("http://127.0.0.1:8000") as client:
        result = client.compress(Path("photo.png").read_bytes(), quality=4)   # or no quality: the default one
        png = client.decompress(result.stream).data
        fits = client.compress(data, model="erstc-small-vr", max_bytes=20_000)  # a variable-rate model's targets

    async with AsyncLicClient(url) as client:
        result = await client.compress(data, quality=4)

Errors come back as :class:`ServiceClientError` with the server's stable ``code`` (and ``retry_after`` for 429/503,
``request_id`` for support). Bodies are integrity-checked both ways: uploads carry ``Content-Digest`` and results
whose ``Repr-Digest`` does not match their bytes raise ``digest_mismatch`` instead of being returned. A bearer
token comes from ``token=`` or ``$LIC_TOKEN``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import httpx

from service.integrity import digest_header, verify_repr_digest
from service.media import BITSTREAM, sniff

DEFAULT_URL = os.environ.get("LIC_URL", "http://127.0.0.1:8000")
ImageSource = Union[bytes, str, Path]


class ServiceClientError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: Optional[float] = None,
        request_id: Optional[str] = None,
    ):
        super().__init__(f"{status} {code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status, self.code, self.message, self.retry_after = (status, code, message, retry_after)
        self.request_id = request_id


@dataclass(frozen=True)
class CompressResult:
    stream: bytes
    model: str
    quality: int
    width: int
    height: int
    bpp: float
    original_bytes: int
    compressed_bytes: int
    batch_size: int
    server_timing: Dict[str, float]  # name -> milliseconds
    effort: int = 0
    #: with a rate target: what the server searched, e.g. "max_bytes=20000; probes=4; encodes=1"
    rate_control: Optional[str] = None
    #: with min_psnr: the PSNR of the decoded stream (dB)
    psnr: Optional[float] = None


@dataclass(frozen=True)
class DecompressResult:
    data: bytes  # the image file; b"" when not_modified
    content_type: str
    etag: str
    not_modified: bool
    model: Optional[str] = None
    quality: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    server_timing: Optional[Dict[str, float]] = None


# -- request building and response parsing, shared by both clients -------------------------------------------------
def _read(source: ImageSource) -> bytes:
    return source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()


def _compress_request(
    image: ImageSource,
    quality: Optional[int],
    model: Optional[str],
    multipart: bool,
    timeout_s: Optional[float],
    effort: int,
    target: Dict[str, Optional[float]],
) -> dict:
    data = _read(image)
    params: Dict[str, Union[str, int, float]] = {k: v for k, v in target.items() if v is not None}
    if quality is not None:  # else the server's default quality of the model (the result's quality says which)
        params["quality"] = quality
    if model:
        params["model"] = model
    if effort:
        params["effort"] = effort
    headers = {} if timeout_s is None else {"X-Request-Timeout": str(timeout_s)}
    content_type = sniff(data) or "application/octet-stream"
    if multipart:
        return {"params": params, "headers": headers, "files": {"image": ("image", data, content_type)}}
    headers.update({"Content-Type": content_type, "Content-Digest": digest_header(data)})
    return {"params": params, "headers": headers, "content": data}


def _decompress_request(stream: bytes, accept: str, etag: Optional[str], timeout_s: Optional[float]) -> dict:
    headers = {"Content-Type": BITSTREAM, "Accept": accept, "Content-Digest": digest_header(stream)}
    if etag:
        headers["If-None-Match"] = etag
    if timeout_s is not None:
        headers["X-Request-Timeout"] = str(timeout_s)
    return {"headers": headers, "content": stream}


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, message = body["code"], body["error"]
    except Exception:
        code, message = "http_error", response.text[:200]
    retry = response.headers.get("retry-after")
    raise ServiceClientError(
        response.status_code, code, message, float(retry) if retry else None, response.headers.get("x-request-id")
    )


def _check_integrity(response: httpx.Response) -> None:
    """A result whose Repr-Digest does not match its bytes was damaged on the way: never hand it over."""
    if "repr-digest" in response.headers and not verify_repr_digest(response.headers["repr-digest"], response.content):
        raise ServiceClientError(
            response.status_code,
            "digest_mismatch",
            f"the {len(response.content)}-byte response does not match its Repr-Digest; request it again",
            request_id=response.headers.get("x-request-id"),
        )


def parse_server_timing(value: str) -> Dict[str, float]:
    out = {}
    for metric in filter(None, (m.strip() for m in value.split(","))):
        name, *params = [p.strip() for p in metric.split(";")]
        for param in params:
            key, _, number = param.partition("=")
            if key == "dur":
                out[name] = float(number)
    return out


def _compress_result(response: httpx.Response) -> CompressResult:
    _raise_for_error(response)
    _check_integrity(response)
    h = response.headers
    return CompressResult(
        stream=response.content,
        model=h["x-model"],
        quality=int(h["x-quality"]),
        width=int(h["x-image-width"]),
        height=int(h["x-image-height"]),
        bpp=float(h["x-bits-per-pixel"]),
        original_bytes=int(h["x-original-bytes"]),
        compressed_bytes=int(h["x-compressed-bytes"]),
        batch_size=int(h["x-batch-size"]),
        server_timing=parse_server_timing(h.get("server-timing", "")),
        effort=int(h.get("x-effort", "0")),
        rate_control=h.get("x-rate-control"),
        psnr=float(h["x-psnr"]) if "x-psnr" in h else None,
    )


def _decompress_result(response: httpx.Response) -> DecompressResult:
    h = response.headers
    if response.status_code == 304:
        return DecompressResult(b"", "", h.get("etag", ""), True)
    _raise_for_error(response)
    _check_integrity(response)
    return DecompressResult(
        data=response.content,
        content_type=h["content-type"],
        etag=h["etag"],
        not_modified=False,
        model=h["x-model"],
        quality=int(h["x-quality"]),
        width=int(h["x-image-width"]),
        height=int(h["x-image-height"]),
        server_timing=parse_server_timing(h.get("server-timing", "")),
    )


def _json(response: httpx.Response) -> dict:
    _raise_for_error(response)
    return response.json()


def _auth_headers(token: Optional[str]) -> Dict[str, str]:
    token = token or os.environ.get("LIC_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- the clients -----------------------------------------------------------------------------------------------------
class LicClient:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0, token: Optional[str] = None, **httpx_kwargs):
        self.http = httpx.Client(base_url=url, timeout=timeout, headers=_auth_headers(token), **httpx_kwargs)

    def __enter__(self) -> "LicClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def compress(
        self,
        image: ImageSource,
        quality: Optional[int] = None,
        model: Optional[str] = None,
        multipart: bool = False,
        timeout_s: Optional[float] = None,
        effort: int = 0,
        *,
        max_bytes: Optional[int] = None,
        target_bpp: Optional[float] = None,
        min_psnr: Optional[float] = None,
    ) -> CompressResult:
        """Compress a PNG/JPEG/WebP file (bytes or path) at ``quality`` (None: the model's default quality, which
        ``result.quality`` reports); ``effort`` > 0 asks for a slower, better encoding (up to ``max_effort``).
        Instead of a quality, a variable-rate model takes one rate target: ``max_bytes`` (never exceeded),
        ``target_bpp`` or ``min_psnr``; ``result.quality`` is the code the server chose."""
        target = dict(max_bytes=max_bytes, target_bpp=target_bpp, min_psnr=min_psnr)
        request = _compress_request(image, quality, model, multipart, timeout_s, effort, target)
        return _compress_result(self.http.post("/compress", **request))

    def decompress(
        self, stream: bytes, accept: str = "image/png", etag: Optional[str] = None, timeout_s: Optional[float] = None
    ) -> DecompressResult:
        """Decode a bitstream; with ``etag`` the server answers 304 (``not_modified``) if it still matches."""
        return _decompress_result(self.http.post("/decompress", **_decompress_request(stream, accept, etag, timeout_s)))

    def models(self) -> dict:
        return _json(self.http.get("/v1/models"))

    def ready(self) -> bool:
        return self.http.get("/health/ready").status_code == 200

    def metrics(self) -> str:
        response = self.http.get("/metrics")
        _raise_for_error(response)
        return response.text


class AsyncLicClient:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0, token: Optional[str] = None, **httpx_kwargs):
        self.http = httpx.AsyncClient(base_url=url, timeout=timeout, headers=_auth_headers(token), **httpx_kwargs)

    async def __aenter__(self) -> "AsyncLicClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def compress(
        self,
        image: ImageSource,
        quality: Optional[int] = None,
        model: Optional[str] = None,
        multipart: bool = False,
        timeout_s: Optional[float] = None,
        effort: int = 0,
        *,
        max_bytes: Optional[int] = None,
        target_bpp: Optional[float] = None,
        min_psnr: Optional[float] = None,
    ) -> CompressResult:
        target = dict(max_bytes=max_bytes, target_bpp=target_bpp, min_psnr=min_psnr)
        request = _compress_request(image, quality, model, multipart, timeout_s, effort, target)
        return _compress_result(await self.http.post("/compress", **request))

    async def decompress(
        self, stream: bytes, accept: str = "image/png", etag: Optional[str] = None, timeout_s: Optional[float] = None
    ) -> DecompressResult:
        request = _decompress_request(stream, accept, etag, timeout_s)
        return _decompress_result(await self.http.post("/decompress", **request))

    async def models(self) -> dict:
        return _json(await self.http.get("/v1/models"))

    async def ready(self) -> bool:
        return (await self.http.get("/health/ready")).status_code == 200

    async def metrics(self) -> str:
        response = await self.http.get("/metrics")
        _raise_for_error(response)
        return response.text


__all__ = [
    "AsyncLicClient",
    "CompressResult",
    "DecompressResult",
    "LicClient",
    "ServiceClientError",
    "parse_server_timing",
]
