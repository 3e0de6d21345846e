"""Real uploads: requests are priced from their header before any pixel is decoded, large photos get a deadline
that fits them, and an abandoned request (deadline passed, client gone) stops its work at once."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

pytest.register_assert_rewrite("service_fixtures")

from service_fixtures import MODEL, png, running, server_process  # noqa: E402

from model_store import registry  # noqa: E402
from service.access import ClientLimiter  # noqa: E402
from service.cost import CostModel, Price  # noqa: E402
from service.errors import ClientBusy  # noqa: E402

pytest_plugins = ("service_fixtures",)


def bomb_png(width: int = 4000, height: int = 4000) -> bytes:
    """A ~2 KB PNG that declares ``width`` x ``height`` pixels (1-bit, one colour): cheap to send, costly to code."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG", optimize=True)
    return out.getvalue()


# -- the price of work ------------------------------------------------------------------------------------------
def test_a_price_is_fitted_through_two_measured_sizes_and_follows_observed_requests():
    costs = CostModel(smoothing=0.5, min_megapixels=0.25)
    price = costs.calibrate("k", (65_536, 0.2), (786_432, 0.9))
    assert price.per_megapixel_s == pytest.approx(0.7 / 0.720896)
    assert costs.estimate("k", 4_000_000) == pytest.approx(price.overhead_s + 4 * price.per_megapixel_s)
    costs.observe("k", 100_000, 50.0)  # too small to say anything about the per-pixel cost
    assert costs.price("k").per_megapixel_s == pytest.approx(0.7 / 0.720896)
    before = costs.price("k").per_megapixel_s
    costs.observe("k", 2_000_000, price.overhead_s + 2 * 3.0)  # this server got slower: 3 s/MP
    assert costs.price("k").per_megapixel_s == pytest.approx(before + 0.5 * (3.0 - before))
    assert costs.estimate("never measured", 10**7) is None


def test_the_largest_image_within_a_time_is_the_inverse_of_the_price():
    price = Price(overhead_s=0.5, per_megapixel_s=2.0)
    assert price.pixels_within(4.5) == 2_000_000 and price.seconds(2_000_000) == pytest.approx(4.5)
    assert price.pixels_within(0.4) == 0


def test_a_client_holds_at_most_its_pixel_budget_in_flight_but_one_image_always_fits():
    limiter = ClientLimiter(max_in_flight=0, retry_after_s=2, max_pixels_in_flight=10_000_000)
    with limiter.hold_pixels("a", 16_000_000):  # one image larger than the budget: max_pixels is its bound
        with pytest.raises(ClientBusy, match="16000000 image pixels in flight") as refused:
            with limiter.hold_pixels("a", 1):
                pass
        assert refused.value.headers == {"Retry-After": "2"}
        with limiter.hold_pixels("b", 9_000_000):  # another client has its own budget
            assert limiter.pixels_in_flight("b") == 9_000_000
    assert limiter.pixels_in_flight("a") == 0


# -- admission against a real server -----------------------------------------------------------------------------
def _image_decodes(exposition: str) -> float:
    """How many compress requests reached the image decoder (the image_io stage's histogram count)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "lic_stage_duration_seconds_count"
        and sample.labels.get("stage") == "image_io"
        and sample.labels.get("op") == "compress"
    )


def test_a_request_that_cannot_finish_in_its_deadline_is_refused_at_once_before_decoding(weights_root):
    """The issue's cheap denial of service: a 2 KB PNG declaring 4000x4000 within the pixel limit used to be
    admitted, run out its deadline and keep the server busy; now it is priced from its header and refused."""
    with running(weights_root, max_pixels=16_000_000, max_body_bytes=1 << 20) as server:
        assert server.service.costs.price((MODEL, "compress", 0)) is not None  # priced before ready
        with httpx.Client(base_url=server.url, timeout=30) as http:
            body = bomb_png()
            assert len(body) < 4096
            t0 = time.monotonic()
            refused = http.post(
                "/compress",
                params={"quality": 1},
                content=body,
                headers={"Content-Type": "image/png", "X-Request-Timeout": "0.2"},
            )
            elapsed = time.monotonic() - t0
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "deadline_too_short"
            message = refused.json()["error"]
            assert "16.0 megapixels is estimated at" in message and "largest image that fits is about" in message
            assert elapsed < 0.2  # answered before its own deadline: nothing was decoded
            assert _image_decodes(http.get("/metrics").text) == 0
            assert http.post(
                "/compress", params={"quality": 1}, content=png(64, 64), headers={"Content-Type": "image/png"}
            ).is_success  # a small image is not refused
            assert _image_decodes(http.get("/metrics").text) == 1  # (so the count above could have moved)


def test_a_large_photo_gets_a_deadline_per_megapixel_and_succeeds(weights_root):
    """A deadline that is right for a thumbnail is wrong for a phone photo: big images get
    request_timeout_per_megapixel_s per megapixel, so an admitted photo finishes."""
    big = png(1536, 2048)  # 3.1 MP
    settings = dict(max_pixels=16_000_000, max_body_bytes=32 << 20, request_timeout_s=0.05)
    with running(weights_root, request_timeout_per_megapixel_s=10.0, **settings) as server:
        ok = httpx.post(server.url + "/compress", params={"quality": 1}, content=big, timeout=60,
                        headers={"Content-Type": "image/png"})  # fmt: skip
        assert ok.status_code == 200, ok.text
    with running(weights_root, request_timeout_per_megapixel_s=0.0, **settings) as server:
        refused = httpx.post(server.url + "/compress", params={"quality": 1}, content=big, timeout=60,
                             headers={"Content-Type": "image/png"})  # fmt: skip
        assert refused.status_code == 422 and refused.json()["code"] == "deadline_too_short"


@pytest.mark.slow
def test_a_12_megapixel_phone_photo_round_trips_at_the_default_settings():
    """What a phone uploads, on this 2-core CPU, with nothing configured but the model: admitted, compressed and
    decompressed within its (per-megapixel) deadline."""
    from benchmarks.large_images import photo
    from model_store.image_io import encode_image

    image = photo(12.0)
    body = encode_image(image, "JPEG", quality=92)  # what a phone sends
    with server_process(registry.WEIGHTS_ROOT, models={registry.default_model(): [3]}) as server:
        stream = httpx.post(server.url + "/compress", content=body, headers={"Content-Type": "image/jpeg"}, timeout=120)
        assert stream.status_code == 200, stream.text
        assert stream.headers["x-image-width"] == str(image.shape[1])
        back = httpx.post(
            server.url + "/decompress",
            content=stream.content,
            headers={"Content-Type": "application/octet-stream"},
            timeout=120,
        )
        assert back.status_code == 200, back.text
        assert Image.open(io.BytesIO(back.content)).size == (image.shape[1], image.shape[0])


# -- abandoned work stops ----------------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks (USER_HZ = 100)


@pytest.fixture(scope="module")
def default_model_server():
    """The shipped default model in a real ``python -m service`` process, admission by cost off so the costly
    request is admitted and has to be stopped."""
    env = {"LIC_MAX_PIXELS": "16000000", "LIC_ADMISSION_BY_COST": "false", "LIC_MAX_BODY_BYTES": str(1 << 20)}
    with server_process(registry.WEIGHTS_ROOT, env, models={registry.default_model(): [1]}) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("how", ["deadline", "disconnect"])
def test_an_abandoned_request_stops_its_work_and_the_server_goes_idle(default_model_server, how):
    """After a 504 (X-Request-Timeout: 1) or a client that hangs up after 1 s, the 4000x4000 upload's work stops
    at its next tile, layer or wavefront step: the server answers within 1.5 s, uses no CPU 2 s later, and its
    memory is back at the idle level (service/memory.py hands the freed heap back)."""
    server = default_model_server
    idle_kib = server.memory_kib("VmRSS")
    headers = {"Content-Type": "image/png"}
    if how == "deadline":
        headers["X-Request-Timeout"] = "1"
    t0 = time.monotonic()
    try:
        answer = httpx.post(
            server.url + "/compress",
            params={"quality": 1},
            content=bomb_png(),
            headers=headers,
            timeout=1.5 if how == "deadline" else 1.0,  # the bound on the 504; the hang-up after 1 s
        )
    except httpx.ReadTimeout:
        assert how == "disconnect"
    else:
        assert how == "deadline" and answer.status_code == 504 and answer.json()["code"] == "deadline_exceeded"
        assert time.monotonic() - t0 <= 1.5
    answered = time.monotonic()
    time.sleep(max(0.0, answered + 2.0 - time.monotonic()))
    cpu_before = _cpu_seconds(server.proc.pid)
    time.sleep(1.0)
    busy = _cpu_seconds(server.proc.pid) - cpu_before
    assert busy < 0.15, f"the server used {busy:.2f} CPU-seconds in the second after it went idle"
    grown = (server.memory_kib("VmRSS") - idle_kib) / 1024
    assert grown < 100, f"resident memory stayed {grown:.0f} MiB above idle (it peaked ~1 GiB higher)"
    assert httpx.get(server.url + "/health/ready").status_code == 200
