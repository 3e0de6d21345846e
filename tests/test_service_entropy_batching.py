"""Entropy coding in batches over HTTP (issue #29): a model with an integer entropy path codes concurrent requests in
shared wavefront loops, and every stream and image is still the one the library makes for that request alone.

The server serves the tiny variable-rate ERSTC (exported with its integer path) next to the per-λ test model, with a
long batching delay so that concurrent requests meet; Prometheus shows the entropy stages' own batches.
"""

from __future__ import annotations

import asyncio
import functools

import httpx
import numpy as np
import pytest

pytest.register_assert_rewrite("service_fixtures")

from conftest import natural_image  # noqa: E402
from service_fixtures import MODEL, QUALITIES, VR, running  # noqa: E402
from test_service_api import damage  # noqa: E402
from test_service_metrics import scrape, value  # noqa: E402

from model_store import registry  # noqa: E402
from model_store.architectures.erstc import ERSTC_TINY_KNOB  # noqa: E402
from model_store.codec import ImageCodec  # noqa: E402
from model_store.image_io import encode_image, open_image  # noqa: E402
from service.media import BITSTREAM  # noqa: E402

pytest_plugins = ("service_fixtures",)

IMAGES = [natural_image(64, 96, seed) for seed in range(4)]
CODES = (2, 7, 11, 16)


@pytest.fixture(scope="module")
def server(vr_root):
    with running(vr_root, models={VR: [], MODEL: list(QUALITIES)}, max_batch_delay_ms=300) as srv:
        yield srv


@functools.lru_cache(maxsize=None)
def local(root) -> ImageCodec:
    registry.refresh()
    return ImageCodec.from_entry(registry.resolve(VR, ERSTC_TINY_KNOB.default_code, root=root))


async def _all(server, requests):
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        return await asyncio.gather(
            *(
                http.post(path, params=params, content=body, headers={"Content-Type": kind})
                for path, params, body, kind in requests
            )
        )


def compress_all(server, images, codes):
    requests = [
        ("/compress", {"model": VR, "quality": code}, encode_image(image, "PNG"), "image/png")
        for image, code in zip(images, codes)
    ]
    return asyncio.run(_all(server, requests))


def decompress_all(server, streams):
    return asyncio.run(_all(server, [("/decompress", {"format": "png"}, stream, BITSTREAM) for stream in streams]))


def test_the_served_model_batches_entropy_coding(vr_root):
    assert local(vr_root).canonical.batches_entropy_coding


def test_concurrent_compressions_share_coding_loops_and_get_the_streams_they_get_alone(server, vr_root):
    before = scrape(server.url)
    responses = compress_all(server, IMAGES, CODES)
    after = scrape(server.url)
    assert [r.status_code for r in responses] == [200] * len(IMAGES)
    for r, image, code in zip(responses, IMAGES, CODES):
        assert r.content == local(vr_root).compress(image, quality=code)

    def added(name):
        return value(after, name, op="entropy_encode", model=VR) - value(before, name, op="entropy_encode", model=VR)

    assert added("lic_batch_size_sum") == len(IMAGES)
    assert added("lic_batch_size_count") < len(IMAGES)  # at least one coding loop coded two images


def test_concurrent_decompressions_share_coding_loops_and_decode_as_alone(server, vr_root):
    streams = [local(vr_root).compress(image, quality=code) for image, code in zip(IMAGES, CODES)]
    before = scrape(server.url)
    responses = decompress_all(server, streams)
    after = scrape(server.url)
    for r, stream in zip(responses, streams):
        assert r.status_code == 200
        assert np.array_equal(open_image(r.content), local(vr_root).decompress(stream))

    def added(name):
        return value(after, name, op="entropy_decode", model=VR) - value(before, name, op="entropy_decode", model=VR)

    assert added("lic_batch_size_sum") == len(IMAGES)
    assert added("lic_batch_size_count") < len(IMAGES)


def test_a_damaged_stream_in_a_batch_fails_alone(server, vr_root):
    streams = [local(vr_root).compress(image, quality=7) for image in IMAGES]
    bad, code = damage(streams[1], "payload")
    responses = decompress_all(server, [streams[0], bad, streams[2], streams[3]])
    assert [r.status_code for r in responses] == [200, 422, 200, 200]
    assert responses[1].json()["code"] == code
    for r, stream in zip([responses[0], responses[2], responses[3]], [streams[0], streams[2], streams[3]]):
        assert np.array_equal(open_image(r.content), local(vr_root).decompress(stream))
