"""POST /compress?effort=: a slower encoder for callers who store what they upload, bounded by the server's settings.

On a real server: effort > 0 answers with the same stream the library makes at that effort (so it is an ordinary
stream any decoder reads), says which effort it used, is counted in Prometheus, and is refused with a clear JSON
error above ``max_effort`` or, for big images, above ``max_effort_pixels`` (effort 0 still takes them).
"""

from __future__ import annotations

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")

from conftest import natural_image  # noqa: E402
from service_fixtures import local_codec, running  # noqa: E402
from test_service_api import assert_error, compress, decompress  # noqa: E402
from test_service_metrics import scrape, value  # noqa: E402

from model_store.image_io import encode_image  # noqa: E402
from service.client import LicClient  # noqa: E402

pytest_plugins = ("service_fixtures",)


def test_effort_1_answers_the_librarys_effort_1_stream_and_it_decodes(http, weights_root):
    img = natural_image(48, 64, seed=5)
    r = compress(http, encode_image(img, "PNG"), quality=1, effort=1)
    assert r.status_code == 200, r.text
    assert r.headers["x-effort"] == "1"
    local = local_codec(weights_root, 1)
    assert r.content == local.compress(img, effort=1)
    assert local.rd_cost(img, r.content) <= local.rd_cost(img, local.compress(img))
    d = decompress(http, r.content)
    assert d.status_code == 200


def test_effort_0_is_the_default_and_says_so(http):
    r = compress(http, encode_image(natural_image(32, 32), "PNG"), quality=1)
    assert r.status_code == 200 and r.headers["x-effort"] == "0"


@pytest.mark.parametrize("effort", [-1, 2])
def test_an_effort_outside_0_to_max_effort_is_a_bad_parameter(http, effort):
    body = assert_error(compress(http, encode_image(natural_image(16, 16), "PNG"), effort=effort), 400, "bad_parameter")
    assert "max_effort of 1" in body["error"]


def test_models_listing_tells_clients_the_effort_limits(http):
    listing = http.get("/v1/models").json()
    assert (listing["max_effort"], listing["max_effort_pixels"]) == (1, 500_000)


def test_big_images_are_refused_effort_but_still_compress_at_effort_0(weights_root):
    body = encode_image(natural_image(40, 50), "PNG")
    with running(weights_root, max_effort_pixels=1999) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        error = assert_error(compress(http, body, effort=1), 422, "too_many_pixels")
        assert "2000 pixels" in error["error"] and "effort=0" in error["error"]
        assert compress(http, body).status_code == 200


def test_max_effort_0_turns_the_feature_off(weights_root):
    with running(weights_root, max_effort=0) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        assert_error(compress(http, encode_image(natural_image(16, 16), "PNG"), effort=1), 400, "bad_parameter")


def test_compressions_are_counted_by_effort_and_the_client_reports_it(weights_root):
    img = encode_image(natural_image(32, 48, seed=2), "PNG")
    with running(weights_root) as srv:
        with LicClient(srv.url, timeout=30) as client:
            assert client.compress(img, quality=2, effort=1).effort == 1
            assert client.compress(img, quality=2).effort == 0
            assert client.compress(img, quality=2).effort == 0
        samples = scrape(srv.url)
    assert value(samples, "lic_compress_effort_total", quality=2, effort=1) == 1
    assert value(samples, "lic_compress_effort_total", quality=2, effort=0) == 2
