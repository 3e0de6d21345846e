"""Dynamic batching: the BatchQueue's rules on a fake network, then batch-invariance on the real server."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

pytest.register_assert_rewrite("service_fixtures")

from conftest import natural_image  # noqa: E402
from service_fixtures import distinct_images, local_codec  # noqa: E402

from model_store.image_io import encode_image, open_image  # noqa: E402
from service.batching import BatchQueue  # noqa: E402
from service.errors import DeadlineExceeded, Draining, QueueFull  # noqa: E402

pytest_plugins = ("service_fixtures",)


class FakeNetwork:
    """Records every batch it runs; payloads named ``bad`` make a batch raise."""

    def __init__(self, delay_s: float = 0.0):
        self.batches = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, payloads):
        with self.lock:
            self.batches.append(list(payloads))
        time.sleep(self.delay_s)
        if "bad" in payloads:
            raise ValueError("bad payload")
        return [f"done:{p}" for p in payloads]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def make_queue(network, **kwargs) -> BatchQueue:
    options = dict(max_batch_size=4, max_delay_s=0.05, max_pending=16)
    options.update(kwargs)
    return BatchQueue("test", network, ThreadPoolExecutor(1), **options)


def far() -> float:
    return time.monotonic() + 30


async def gather_results(jobs):
    return await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)


def test_queue_collects_up_to_the_max_batch_size():
    async def scenario():
        network = FakeNetwork()
        queue = make_queue(network, max_batch_size=4, max_delay_s=0.5)
        jobs = [queue.submit(i, "a", far()) for i in range(10)]
        results = await gather_results(jobs)
        await queue.close(1)
        return network, results

    network, results = run(scenario())
    assert [len(b) for b in network.batches] == [4, 4, 2]
    assert [r.value for r in results] == [f"done:{i}" for i in range(10)]
    assert [r.batch_size for r in results] == [4] * 8 + [2] * 2


def test_queue_never_mixes_buckets():
    async def scenario():
        network = FakeNetwork()
        queue = make_queue(network)
        jobs = [queue.submit(f"{bucket}{i}", bucket, far()) for i in range(3) for bucket in "ab"]
        await gather_results(jobs)
        await queue.close(1)
        return network

    network = run(scenario())
    assert sorted(map(sorted, network.batches)) == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]


def test_a_partial_batch_runs_after_the_max_delay():
    async def scenario():
        queue = make_queue(FakeNetwork(), max_batch_size=8, max_delay_s=0.1)
        t0 = time.monotonic()
        result = await queue.submit("only", "a", far()).future
        await queue.close(1)
        return time.monotonic() - t0, result

    elapsed, result = run(scenario())
    assert result.batch_size == 1 and 0.09 <= elapsed < 2.0
    assert result.queue_wait_s >= 0.09


def test_full_queue_refuses_with_queue_full_and_retry_after():
    async def scenario():
        queue = make_queue(FakeNetwork(), max_pending=3, max_delay_s=1.0, max_batch_size=8, retry_after_s=2)
        jobs = [queue.submit(i, "a", far()) for i in range(3)]
        with pytest.raises(QueueFull) as refused:
            queue.submit(3, "a", far())
        await queue.close(2)
        await gather_results(jobs)
        return refused.value

    error = run(scenario())
    assert error.status == 429 and error.headers == {"Retry-After": "2"}


def test_jobs_whose_deadline_passed_are_dropped_with_504_and_never_run():
    async def scenario():
        network = FakeNetwork()
        queue = make_queue(network, max_delay_s=0.1, max_batch_size=8)
        late = queue.submit("late", "a", time.monotonic() + 0.01)
        on_time = queue.submit("on-time", "a", far())
        results = await gather_results([late, on_time])
        await queue.close(1)
        return network, results

    network, (late, on_time) = run(scenario())
    assert isinstance(late, DeadlineExceeded) and late.status == 504
    assert on_time.value == "done:on-time"
    assert network.batches == [["on-time"]]


def test_jobs_whose_client_went_away_are_skipped():
    async def scenario():
        network = FakeNetwork()
        queue = make_queue(network, max_delay_s=0.1, max_batch_size=8)
        gone = queue.submit("gone", "a", far())
        stays = queue.submit("stays", "a", far())
        gone.future.cancel()  # what the route does when its client disconnects
        result = await stays.future
        await queue.close(1)
        return network, result

    network, result = run(scenario())
    assert network.batches == [["stays"]] and result.batch_size == 1


def test_a_failing_batch_falls_back_one_by_one_so_only_the_bad_request_fails():
    async def scenario():
        network = FakeNetwork()
        queue = make_queue(network, max_batch_size=4, max_delay_s=0.5)
        jobs = [queue.submit(p, "a", far()) for p in ("x", "bad", "y", "z")]
        results = await gather_results(jobs)
        follow_up = await queue.submit("after", "a", far()).future  # the worker is still alive
        await queue.close(1)
        return network, results, follow_up

    network, results, follow_up = run(scenario())
    assert network.batches[0] == ["x", "bad", "y", "z"]
    assert [b for b in network.batches[1:5]] == [["x"], ["bad"], ["y"], ["z"]]
    assert [r.value for i, r in enumerate(results) if i != 1] == ["done:x", "done:y", "done:z"]
    assert isinstance(results[1], ValueError)
    assert follow_up.value == "done:after"


def test_closing_runs_what_is_queued_then_refuses_new_work():
    async def scenario():
        queue = make_queue(FakeNetwork(), max_delay_s=5.0, max_batch_size=8)
        jobs = [queue.submit(i, "a", far()) for i in range(3)]
        t0 = time.monotonic()
        await queue.close(5)  # does not wait out the 5 s batch delay
        results = await gather_results(jobs)
        with pytest.raises(Draining):
            queue.submit(9, "a", far())
        return time.monotonic() - t0, results

    elapsed, results = run(scenario())
    assert elapsed < 2.0 and [r.value for r in results] == ["done:0", "done:1", "done:2"]


# -- on the real server --------------------------------------------------------------------------------------------
async def _concurrent_compress(url: str, bodies, quality: int):
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await asyncio.gather(
            *(
                http.post("/compress", params={"quality": quality}, content=b, headers={"Content-Type": "image/png"})
                for b in bodies
            )
        )


def test_bitstreams_made_in_a_batch_are_byte_identical_to_those_made_alone(server, http, weights_root):
    images = distinct_images(8, 64, 64)
    bodies = [encode_image(img, "PNG") for img in images]
    batched = asyncio.run(_concurrent_compress(server.url, bodies, 2))
    assert all(r.status_code == 200 for r in batched)
    assert len({r.content for r in batched}) == len(images)
    assert max(int(r.headers["x-batch-size"]) for r in batched) > 1
    alone = [
        http.post("/compress", params={"quality": 2}, content=b, headers={"Content-Type": "image/png"}) for b in bodies
    ]
    assert all(r.headers["x-batch-size"] == "1" for r in alone)
    assert [r.content for r in batched] == [r.content for r in alone]
    assert [r.content for r in alone] == [local_codec(weights_root, 2).compress(img) for img in images]


def test_images_decoded_in_a_batch_equal_those_decoded_alone(server, http):
    bodies = [encode_image(img, "PNG") for img in distinct_images(6, 64, 64)]
    streams = [r.content for r in asyncio.run(_concurrent_compress(server.url, bodies, 1))]
    assert len(set(streams)) == len(streams)

    async def decode_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/decompress", content=s) for s in streams))

    batched = asyncio.run(decode_all())
    assert max(int(r.headers["x-batch-size"]) for r in batched) > 1
    for stream, response in zip(streams, batched, strict=True):
        alone = http.post("/decompress", content=stream)
        assert np.array_equal(open_image(response.content), open_image(alone.content))


def test_different_sizes_are_batched_separately_and_all_succeed(server):
    sizes = [(64, 64), (32, 48), (64, 64), (32, 48), (17, 90), (64, 64)]
    bodies = [encode_image(natural_image(h, w, i), "PNG") for i, (h, w) in enumerate(sizes)]
    responses = asyncio.run(_concurrent_compress(server.url, bodies, 1))
    assert [r.status_code for r in responses] == [200] * len(sizes)
    assert [(int(r.headers["x-image-height"]), int(r.headers["x-image-width"])) for r in responses] == sizes
    assert max(int(r.headers["x-batch-size"]) for r in responses) <= 3  # at most the three 64x64 images


def test_a_bad_request_among_concurrent_ones_fails_alone(server):
    good = [encode_image(natural_image(40, 40, s), "PNG") for s in range(5)]
    bad = [b"\x89PNG\r\n\x1a\n" + b"garbage" * 10]
    responses = asyncio.run(_concurrent_compress(server.url, good[:3] + bad + good[3:], 1))
    assert [r.status_code for r in responses] == [200, 200, 200, 422, 200, 200]
