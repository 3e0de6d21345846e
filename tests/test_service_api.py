"""The HTTP contract of /compress, /decompress, /v1/models and /health, with every error code, on a real server."""

from __future__ import annotations

import io
import json
import re
import time

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.register_assert_rewrite("service_fixtures")

from conftest import make_tiny_codec, natural_image  # noqa: E402
from service_fixtures import MODEL, QUALITIES, ServerThread, build_weights_root, local_codec, png, settings_for  # noqa: E402

from model_store import container, registry  # noqa: E402
from model_store.codec import ImageCodec, decoder_kind  # noqa: E402
from model_store.image_io import ImageLimits, encode_image, open_image  # noqa: E402
from model_store.refine import MAX_EFFORT  # noqa: E402
from service import media  # noqa: E402

pytest_plugins = ("service_fixtures",)


def compress(http, body: bytes, content_type: str = "image/png", **params):
    params.setdefault("quality", 1)
    params = {name: value for name, value in params.items() if value is not None}  # quality=None: leave it out
    return http.post("/compress", params=params, content=body, headers={"Content-Type": content_type})


def decompress(http, stream: bytes, **headers):
    return http.post("/decompress", content=stream, headers={"Content-Type": "application/octet-stream", **headers})


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code"} and body["code"] == code and body["error"]
    return body


# -- /compress ---------------------------------------------------------------------------------------------------
def test_compress_returns_the_bitstream_with_rate_and_timing_headers(http):
    body = png(48, 80)
    r = compress(http, body, quality=2)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    h = r.headers
    assert (h["x-model"], h["x-quality"], h["x-image-width"], h["x-image-height"]) == (MODEL, "2", "80", "48")
    assert int(h["x-original-bytes"]) == len(body) and int(h["x-compressed-bytes"]) == len(r.content)
    assert float(h["x-bits-per-pixel"]) == pytest.approx(8 * len(r.content) / (48 * 80), rel=1e-5)
    timing = h["server-timing"]
    for name in ("image-io;dur=", "queue;dur=", "inference;dur=", "entropy;dur="):
        assert name in timing
    header = container.parse_header(r.content)
    assert (header.model_id, header.quality, header.height, header.width) == (MODEL, 2, 48, 80)


def test_compressed_stream_is_byte_identical_to_the_library(http, weights_root):
    img = natural_image(64, 96, seed=3)
    r = compress(http, encode_image(img, "PNG"), quality=1)
    assert r.content == local_codec(weights_root, 1).compress(img)


@pytest.mark.parametrize("fmt,content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_compress_accepts_png_jpeg_and_webp_bodies(http, fmt, content_type):
    r = compress(http, encode_image(natural_image(40, 40), fmt), content_type)
    assert r.status_code == 200 and r.headers["x-image-width"] == "40"


def test_compress_accepts_multipart_uploads(http, weights_root):
    img = natural_image(32, 48, seed=1)
    r = http.post("/compress", params={"quality": 1}, files={"image": ("a.png", encode_image(img, "PNG"), "image/png")})
    assert r.status_code == 200
    assert r.content == local_codec(weights_root, 1).compress(img)


def test_model_defaults_to_the_servers_default_model(http):
    r = compress(http, png(16, 16))
    assert r.status_code == 200 and r.headers["x-model"] == MODEL


def test_compress_without_quality_uses_the_models_default_quality_and_says_which(http, weights_root):
    """The test model has qualities 1 and 2: the registry's rule picks the one nearest DEFAULT_QUALITY (3), q2, the
    same rule ``python -m model_store compress`` follows; /v1/models tells clients in advance."""
    default = registry.default_quality(QUALITIES)
    assert default == 2
    img = natural_image(32, 48, seed=6)
    r = compress(http, encode_image(img, "PNG"), quality=None)
    assert r.status_code == 200, r.text
    assert r.headers["x-quality"] == str(default) and container.parse_header(r.content).quality == default
    assert r.content == local_codec(weights_root, default).compress(img)
    assert http.get("/v1/models").json()["models"][0]["default_quality"] == default


def test_exif_orientation_is_applied_before_compressing(http):
    img = Image.fromarray(natural_image(20, 40))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif)
    r = compress(http, out.getvalue(), "image/jpeg")
    assert (r.headers["x-image-width"], r.headers["x-image-height"]) == ("20", "40")


# -- /decompress -------------------------------------------------------------------------------------------------
def test_decompress_returns_the_same_pixels_as_the_library(http, weights_root):
    img = natural_image(50, 70, seed=4)
    stream = compress(http, encode_image(img, "PNG"), quality=2).content
    r = decompress(http, stream)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert (r.headers["x-image-width"], r.headers["x-image-height"]) == ("70", "50")
    assert "inference;dur=" in r.headers["server-timing"]
    expected = local_codec(weights_root, 2).decompress(stream)
    assert np.array_equal(open_image(r.content), expected)


@pytest.mark.parametrize(
    "accept,content_type",
    [
        (None, "image/png"),
        ("*/*", "image/png"),
        ("image/webp", "image/webp"),
        ("image/jpeg", "image/jpeg"),
        ("image/png;q=0.5, image/webp;q=0.9", "image/webp"),
        ("image/*", "image/png"),
    ],
)
def test_decompress_picks_the_format_from_accept(http, accept, content_type):
    stream = compress(http, png(32, 32)).content
    r = decompress(http, stream, **({"Accept": accept} if accept else {}))
    assert r.status_code == 200 and r.headers["content-type"] == content_type
    assert r.headers["vary"] == "Accept"
    assert Image.open(io.BytesIO(r.content)).format == content_type.split("/")[1].upper()


def test_decompress_unacceptable_accept_gets_406(http):
    stream = compress(http, png(16, 16)).content
    assert_error(decompress(http, stream, Accept="image/gif"), 406, "not_acceptable")


def damage(stream: bytes, how: str) -> tuple:
    """A damaged copy of ``stream`` and the 422 code decoding it must give."""
    if how == "payload":
        return stream[:-3] + bytes([stream[-3] ^ 0x10]) + stream[-2:], "corrupt_bitstream"
    if how == "truncate":
        return stream[:-5], "truncated_bitstream"
    return b"XXXX" + stream[4:], "corrupt_bitstream"


def test_decompress_has_a_strong_etag_per_format_and_answers_if_none_match_with_304(http):
    stream = compress(http, png(32, 40)).content
    first = decompress(http, stream)
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert decompress(http, stream).headers["etag"] == etag
    assert decompress(http, stream, Accept="image/webp").headers["etag"] != etag
    again = decompress(http, stream, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["vary"] == "Accept"
    assert decompress(http, stream, **{"If-None-Match": '"other"'}).status_code == 200
    assert etag == media.etag_for(stream, "PNG", *decoder_kind("cpu"))


def test_etags_name_the_decoder_kind_and_are_weak_where_bytes_are_not_guaranteed():
    """Pixels are byte-identical between decoders of one kind only (README, Portable bitstreams): two kinds of
    replica must never send one strong tag for different bytes, and a GPU's tag is weak."""
    stream = b"a stream"
    cpu = media.etag_for(stream, "PNG", *decoder_kind("cpu"))
    assert decoder_kind("cpu")[1] is True and not cpu.startswith("W/")
    other_cpu = media.etag_for(stream, "PNG", "cpu/AVX512/torch-2.14.1", True)
    gpu = media.etag_for(stream, "PNG", "cuda/NVIDIA H100/torch-2.14.1", False)
    assert len({cpu, other_cpu, gpu.removeprefix("W/")}) == 3 and gpu.startswith('W/"')
    assert media.etag_matches(gpu, gpu) and media.etag_matches(gpu.removeprefix("W/"), gpu)  # weak comparison


@pytest.mark.parametrize("how", ["payload", "truncate"])
def test_if_none_match_never_answers_304_for_a_damaged_or_truncated_stream(http, how):
    """A 304 says "the image you hold is this stream's": only true of a whole, undamaged stream. A damaged one gets
    the 422 it gets without If-None-Match, whether the client sends * or the ETag of exactly these bytes."""
    bad, code = damage(compress(http, png(32, 32)).content, how)
    for tag in ("*", media.etag_for(bad, "PNG", *decoder_kind("cpu"))):
        assert_error(decompress(http, bad, **{"If-None-Match": tag}), 422, code)


# -- introspection -----------------------------------------------------------------------------------------------
def test_models_lists_every_quality_with_weights_digest_device_and_state(http, weights_root):
    body = http.get("/v1/models").json()
    assert body["default_model"] == MODEL and body["ready"] is True
    (model,) = body["models"]
    assert model["model"] == MODEL and [q["quality"] for q in model["qualities"]] == [1, 2]
    for q in model["qualities"]:
        assert q["state"] == "ready" and q["device"] == "cpu"
        assert bytes.fromhex(q["weights_sha256"]) == local_codec(weights_root, q["quality"]).identity.digest


def test_models_say_what_each_quality_measured_on_the_validation_set(http):
    """Clients pick a quality by target bpp/PSNR from the manifest's RD points; unmeasured weights say null."""
    q1, q2 = http.get("/v1/models").json()["models"][0]["qualities"]
    assert q1["validation"] == {"bpp": 0.5, "psnr": 21.5, "ms_ssim": 0.81, "images": 3}
    assert q2["validation"] is None


def test_health_endpoints(http):
    assert http.get("/health/live").json() == {"status": "alive"}
    assert http.get("/health/ready").json() == {"status": "ready"}


def test_head_on_the_health_endpoints_answers_the_status_of_get_without_a_body(http, tmp_path):
    """Load balancers probe with HEAD: it must say what GET says, ready or not."""
    for path in ("/health/live", "/health/ready"):
        get, head = http.get(path), http.head(path)
        assert head.status_code == get.status_code == 200 and head.content == b""
    root = build_weights_root(tmp_path)
    weights = registry.resolve(MODEL, 2, root=root).path
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # damaged on disk: q2 fails to load, never ready
    with ServerThread(settings_for(root), wait_ready=False) as broken, httpx.Client(base_url=broken.url) as probe:
        deadline = time.monotonic() + 30
        while "failed" not in [q["state"] for q in probe.get("/v1/models").json()["models"][0]["qualities"]]:
            assert time.monotonic() < deadline, "the damaged instance never failed"
            time.sleep(0.02)
        get, head = probe.get("/health/ready"), probe.head("/health/ready")
        assert head.status_code == get.status_code == 503 and head.content == b""
        assert probe.head("/health/live").status_code == 200


# -- errors ------------------------------------------------------------------------------------------------------
def test_unknown_quality_gets_400_listing_the_allowed_values(http):
    body = assert_error(compress(http, png(8, 8), quality=9), 400, "bad_parameter")
    assert json.dumps(list(QUALITIES)) in body["error"]


@pytest.mark.parametrize("quality", ["high", "0", "-1"])
def test_malformed_or_non_positive_quality_gets_400_listing_the_served_qualities_as_json(http, quality):
    r = http.post("/compress", params={"quality": quality}, content=png(8, 8), headers={"Content-Type": "image/png"})
    error = assert_error(r, 400, "bad_parameter")["error"]
    assert "quality" in error and json.dumps({MODEL: list(QUALITIES)}) in error


@pytest.mark.parametrize("effort", [-1, MAX_EFFORT + 1])
def test_effort_outside_its_declared_bounds_gets_400(http, effort):
    assert "effort" in assert_error(compress(http, png(8, 8), effort=effort), 400, "bad_parameter")["error"]


def test_unknown_model_gets_404_listing_the_served_models_as_json(http):
    body = assert_error(compress(http, png(8, 8), model="no-such-model"), 404, "unknown_model")
    assert json.dumps([MODEL]) in body["error"]


def test_oversized_body_gets_413(http, server):
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(server.settings.max_body_bytes)
    assert_error(compress(http, too_big), 413, "body_too_large")


def test_oversized_chunked_body_without_length_gets_413(http, server):
    def chunks():
        for _ in range(server.settings.max_body_bytes // 65536 + 2):
            yield bytes(65536)

    r = http.post("/compress", params={"quality": 1}, content=chunks(), headers={"Content-Type": "image/png"})
    assert_error(r, 413, "body_too_large")


@pytest.mark.parametrize("content_type", ["image/gif", "text/plain", "application/octet-stream"])
def test_unsupported_image_type_gets_415_listing_the_accepted_types_as_json(http, content_type):
    refused = compress(http, png(8, 8), content_type)
    assert_error(refused, 415, "unsupported_media_type")
    assert json.dumps(list(media.IMAGE_TYPES)) in refused.json()["error"]


def test_non_bitstream_content_type_on_decompress_gets_415(http):
    r = http.post("/decompress", content=b"x", headers={"Content-Type": "image/png"})
    assert_error(r, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body", [b"not an image at all", png(16, 16)[:40], encode_image(natural_image(8, 8), "PNG")[:-30]]
)
def test_undecodable_image_gets_422(http, body):
    assert_error(compress(http, body), 422, "bad_image")


def test_mislabelled_gif_gets_422_without_reaching_the_decoder(http):
    out = io.BytesIO()
    Image.fromarray(natural_image(8, 8)).save(out, format="GIF")
    assert_error(compress(http, out.getvalue()), 422, "bad_image")


def test_transparent_image_gets_422(http):
    rgba = np.dstack([natural_image(8, 8), np.full((8, 8), 128, np.uint8)])
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG")
    assert "transparency" in assert_error(compress(http, out.getvalue()), 422, "bad_image")["error"]


def test_image_with_too_many_pixels_gets_422(http, server):
    side = int(server.settings.max_pixels**0.5) + 1
    assert_error(compress(http, encode_image(np.zeros((side, side, 3), np.uint8), "PNG")), 422, "too_many_pixels")


def test_stream_with_too_many_pixels_gets_422_from_its_header(http, server, weights_root):
    codec = local_codec(weights_root, 1)
    unlimited = ImageCodec(codec.model, codec.identity, limits=ImageLimits(max_pixels=10**8))
    side = int(server.settings.max_pixels**0.5) + 4
    stream = unlimited.compress(natural_image(side, side))
    # damage the payload: were it decoded, this would be corrupt_bitstream; the header check must come first
    damaged = stream[:-1] + bytes([stream[-1] ^ 0xFF])
    assert_error(decompress(http, damaged), 422, "too_many_pixels")


@pytest.mark.parametrize("how", ["payload", "truncate", "magic"])
def test_corrupt_bitstream_gets_422(http, how):
    bad, code = damage(compress(http, png(32, 32)).content, how)
    assert_error(decompress(http, bad), 422, code)


def test_stream_from_other_weights_gets_409(http, tmp_path):
    other = build_weights_root(tmp_path, seed=7)  # same model id and quality, different weights
    stream = local_codec(other, 1).compress(natural_image(16, 16))
    assert "weights" in assert_error(decompress(http, stream), 409, "weights_mismatch")["error"]


def test_stream_from_a_model_this_server_does_not_serve_gets_409(http):
    stream = make_tiny_codec().compress(natural_image(16, 16))
    assert_error(decompress(http, stream), 409, "unknown_weights")


def test_unknown_route_and_method_are_json_errors(http):
    assert_error(http.get("/nope"), 404, "not_found")
    assert_error(http.get("/compress"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "method,path,allow",
    [("GET", "/compress", "POST"), ("PUT", "/decompress", "POST"), ("POST", "/health/live", "GET, HEAD")],
)
def test_405_lists_every_method_the_path_answers_in_allow(http, method, path, allow):
    """RFC 9110 section 15.5.6: a 405 MUST carry Allow."""
    r = http.request(method, path)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


@pytest.mark.parametrize("timeout", ["-1", "0", "soon"])
def test_bad_timeout_header_gets_400(http, timeout):
    r = http.post(
        "/compress",
        params={"quality": 1},
        content=png(8, 8),
        headers={"Content-Type": "image/png", "X-Request-Timeout": timeout},
    )
    assert "x-request-timeout" in assert_error(r, 400, "bad_parameter")["error"].lower()


# -- /docs ---------------------------------------------------------------------------------------------------------
def test_docs_page_loads_swagger_ui_from_the_service_itself(http):
    """/docs must work on a host without internet access: no asset from a CDN, every asset served here."""
    page = http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", page.text), "the docs page references an outside URL"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {a.rsplit(".", 1)[-1] for a in assets} >= {"js", "css"}
    for asset in assets:
        r = http.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert http.get("/openapi.json").status_code == 200  # what the page loads next
