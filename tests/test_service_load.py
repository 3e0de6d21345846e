"""Concurrency on a real server: bounded load forms batches and loses nothing; overload gets 429s, never errors or
hangs; deadlines give 504; a client that goes away costs no network pass."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.register_assert_rewrite("service_fixtures")

from service_fixtures import MODEL, distinct_images, local_codec, png, running  # noqa: E402

from model_store import container  # noqa: E402
from model_store.image_io import encode_image  # noqa: E402

pytest_plugins = ("service_fixtures",)

CLIENTS = 64
REQUESTS = 128


async def _load(url: str, bodies, clients: int, quality: int = 1):
    """``clients`` concurrent connections working through ``bodies`` (a fixed count), each waiting at most 60 s."""
    todo = list(enumerate(bodies))
    responses = {}

    async def worker(http: httpx.AsyncClient) -> None:
        while todo:
            i, body = todo.pop()
            responses[i] = await http.post(
                "/compress", params={"quality": quality}, content=body, headers={"Content-Type": "image/png"}
            )

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.wait_for(asyncio.gather(*(worker(http) for _ in range(clients))), 120)
    return [responses[i] for i in range(len(bodies))]


def sample_value(metrics_text: str, name: str, **labels) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_64_concurrent_clients_form_batches_and_every_request_gets_its_own_stream(weights_root):
    images = distinct_images(REQUESTS, 32, 32)
    bodies = [encode_image(img, "PNG") for img in images]
    # the 64 simulated callers share one address here, so the per-client cap is off (test_service_security tests it)
    with running(
        weights_root, max_batch_size=8, max_batch_delay_ms=10, queue_size=REQUESTS, max_in_flight_per_client=0
    ) as server:
        responses = asyncio.run(_load(server.url, bodies, CLIENTS))
        metrics = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert len({r.content for r in responses}) == REQUESTS  # nothing lost or duplicated
    codec = local_codec(weights_root, 1)
    for i in range(0, REQUESTS, 8):  # and nothing swapped between requests of one batch
        assert responses[i].content == codec.compress(images[i])
    for r in responses:
        header = container.parse_header(r.content)
        assert (header.model_id, header.height, header.width) == (MODEL, 32, 32)
    batch_sizes = Counter(int(r.headers["x-batch-size"]) for r in responses)
    assert max(batch_sizes) > 1
    assert sample_value(metrics, "lic_batch_size_sum", op="compress") == REQUESTS
    assert sample_value(metrics, "lic_batch_size_count", op="compress") < REQUESTS


def test_overload_gets_429_with_retry_after_never_errors_or_hangs(weights_root):
    bodies = [png(64, 64, seed) for seed in range(CLIENTS)]
    with running(weights_root, max_batch_size=1, queue_size=2, retry_after_s=3, max_in_flight_per_client=0) as server:
        t0 = time.monotonic()
        responses = asyncio.run(_load(server.url, bodies, CLIENTS))
        elapsed = time.monotonic() - t0
        assert httpx.get(server.url + "/health/ready").status_code == 200  # still serving afterwards
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["code"] == "queue_full" and r.headers["retry-after"] == "3" for r in refused)
    assert elapsed < 60


def test_a_request_past_its_deadline_gets_504(weights_root):
    with running(weights_root, max_batch_delay_ms=400, max_batch_size=8) as server:
        r = httpx.post(
            server.url + "/compress",
            params={"quality": 1},
            content=png(16, 16),
            headers={"Content-Type": "image/png", "X-Request-Timeout": "0.05"},
        )
        assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded"
        # the server-wide deadline applies when the client names none
    with running(weights_root, max_batch_delay_ms=400, request_timeout_s=0.05) as server:
        r = httpx.post(
            server.url + "/compress", params={"quality": 1}, content=png(16, 16), headers={"Content-Type": "image/png"}
        )
        assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded"


def test_a_client_that_goes_away_is_dropped_before_its_network_pass(weights_root):
    body = png(16, 16)
    # the lone request waits up to 3 s for companions; the client hangs up while it waits
    with running(weights_root, max_batch_delay_ms=3000) as server:
        request = (
            f"POST /compress?quality=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        deadline = time.monotonic() + 10
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request)
            while sample_value(httpx.get(server.url + "/metrics").text, "lic_queue_depth") < 1:
                assert time.monotonic() < deadline, "the request was never queued"
                time.sleep(0.01)
        dropped = dict(name="lic_rejections_total", reason="client_disconnected")
        while sample_value(metrics := httpx.get(server.url + "/metrics").text, **dropped) < 1:
            assert time.monotonic() < deadline, "the abandoned request was never dropped"
            time.sleep(0.01)
    assert sample_value(metrics, "lic_rejections_total", reason="client_disconnected") == 1
    assert sample_value(metrics, "lic_batch_size_count", op="compress") == 0
