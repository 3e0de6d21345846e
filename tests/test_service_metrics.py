"""/metrics after real traffic, read with Prometheus' own text parser."""

from __future__ import annotations

from typing import Dict, Tuple

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytest.register_assert_rewrite("service_fixtures")

from service_fixtures import MODEL, distinct_images, running  # noqa: E402

from model_store.image_io import encode_image  # noqa: E402
from service.metrics import STAGES  # noqa: E402

pytest_plugins = ("service_fixtures",)


def scrape(url: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    response = httpx.get(url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = {k: str(v) for k, v in labels.items()}
    return sum(v for (n, ls), v in samples.items() if n == name and want.items() <= dict(ls).items())


@pytest.fixture(scope="module")
def traffic(weights_root):
    """A fresh server (its own registry), a known mix of requests, then one scrape."""
    bodies = [encode_image(img, "PNG") for img in distinct_images(4, 48, 48)]
    with running(weights_root) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            png = {"Content-Type": "image/png"}
            streams = [
                http.post("/compress", params={"quality": 1}, content=b, headers=png).content for b in bodies[:3]
            ]
            http.post("/compress", params={"quality": 2}, content=bodies[3], headers=png)
            first = http.post("/decompress", content=streams[0])
            http.post("/decompress", content=streams[1])
            http.post("/decompress", content=streams[0], headers={"If-None-Match": first.headers["etag"]})
            http.post("/compress", params={"quality": 9}, content=bodies[0], headers=png)
            http.post("/compress", params={"quality": 1, "model": "nope"}, content=bodies[0], headers=png)
            http.post("/compress", params={"quality": 1}, content=bodies[0], headers={"Content-Type": "image/gif"})
            http.post("/decompress", content=streams[0][:-1] + b"\x00")
            http.get("/v1/models")
        samples = scrape(server.url)
    return samples, bodies, streams


def test_requests_are_counted_by_endpoint_model_quality_and_status(traffic):
    samples, _, _ = traffic
    count = "lic_http_requests_total"
    assert value(samples, count, endpoint="/compress", model=MODEL, quality=1, status=200) == 3
    assert value(samples, count, endpoint="/compress", model=MODEL, quality=2, status=200) == 1
    assert value(samples, count, endpoint="/decompress", model=MODEL, quality=1, status=200) == 2
    assert value(samples, count, endpoint="/decompress", model=MODEL, quality=1, status=304) == 1
    assert value(samples, count, endpoint="/compress", status=400) == 1
    assert value(samples, count, endpoint="/compress", status=404) == 1
    assert value(samples, count, endpoint="/compress", status=415) == 1
    assert value(samples, count, endpoint="/decompress", status=422) == 1
    assert value(samples, count, endpoint="/v1/models", status=200) == 1
    # the histogram saw the same requests
    latency = "lic_http_request_duration_seconds_count"
    assert value(samples, latency, endpoint="/compress", model=MODEL, quality=1, status=200) == 3
    assert value(samples, "lic_http_request_duration_seconds_sum", endpoint="/compress", status=200) > 0


def test_labels_stay_low_cardinality(traffic):
    samples, _, _ = traffic
    models = {dict(ls).get("model") for (n, ls) in samples if n == "lic_http_requests_total"}
    assert models == {MODEL, ""}  # the unknown model name from the 404 never becomes a label value


def test_stage_times_are_split_into_queue_wait_inference_and_entropy_coding(traffic):
    samples, _, _ = traffic
    for stage in STAGES:
        assert value(samples, "lic_stage_duration_seconds_count", op="compress", quality=1, stage=stage) == 3
        assert value(samples, "lic_stage_duration_seconds_count", op="decompress", quality=1, stage=stage) == 2
    assert value(samples, "lic_stage_duration_seconds_sum", op="compress", stage="inference") > 0


def test_batches_queue_depth_and_instances_are_reported(traffic):
    samples, _, _ = traffic
    assert value(samples, "lic_batch_size_sum", op="compress") == 4
    assert value(samples, "lic_batch_size_count", op="decompress") >= 1
    assert ("lic_queue_depth", (("model", MODEL), ("op", "compress"), ("quality", "1"))) in samples
    assert value(samples, "lic_queue_depth") == 0
    assert value(samples, "lic_instances_loaded") == 2 and value(samples, "lic_instances_ready") == 2


def test_rates_and_storage_saved_are_counted(traffic):
    samples, bodies, streams = traffic
    assert value(samples, "lic_bits_per_pixel_count", model=MODEL) == 4
    bpp_q1 = sum(8 * len(s) / (48 * 48) for s in streams)
    assert value(samples, "lic_bits_per_pixel_sum", quality=1) == pytest.approx(bpp_q1)
    assert value(samples, "lic_original_bytes_total", quality=1) == sum(map(len, bodies[:3]))
    assert value(samples, "lic_compressed_bytes_total", quality=1) == sum(map(len, streams))
    assert value(samples, "lic_original_bytes_total") > value(samples, "lic_compressed_bytes_total")


def test_rejections_are_counted_by_reason(traffic):
    samples, _, _ = traffic
    for reason in ("bad_parameter", "unknown_model", "unsupported_media_type", "corrupt_bitstream"):
        assert value(samples, "lic_rejections_total", reason=reason) == 1, reason


def test_admission_prices_are_exported_per_model_op_and_effort(traffic):
    """The numbers admission refuses with (service/cost.py), calibrated at warm-up, are what a dashboard sees."""
    samples, _, _ = traffic
    for name in ("lic_cost_seconds_per_megapixel", "lic_cost_overhead_seconds"):
        for op in ("compress", "decompress"):
            key = (name, (("effort", "0"), ("model", MODEL), ("op", op)))
            assert key in samples and 0 <= samples[key] < 1000, key  # a calibration under noise may clamp to 0


def test_gpu_gauges_are_absent_on_cpu(traffic):
    samples, _, _ = traffic
    assert not any(name.startswith("lic_device_") for name, _ in samples)
