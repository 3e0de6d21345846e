"""Cooperative cancellation (model_store.cancellation): abandoned work stops at its next check, in the codec's
loops and in a batch that nobody waits for any more."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from test_service_batching import FakeNetwork, far, make_queue, run

from model_store import cancellation
from model_store.cancellation import AllOf, Cancelled, CancelToken


def test_a_token_is_cancelled_explicitly_or_by_its_deadline():
    token = CancelToken()
    token.check()
    token.cancel("the client disconnected")
    with pytest.raises(Cancelled, match="the client disconnected"):
        token.check()
    late = CancelToken(deadline=time.monotonic() - 0.001)
    assert late.cancelled and "deadline" in late.reason


def test_a_batch_token_is_cancelled_only_when_every_request_of_the_batch_is():
    a, b = CancelToken(), CancelToken()
    batch = AllOf([a, b])
    a.cancel()
    assert not batch.cancelled  # b still waits for its result
    b.cancel()
    assert batch.cancelled
    assert not AllOf([CancelToken(), None]).cancelled and not AllOf([]).cancelled


def test_checks_see_only_the_token_bound_to_their_own_thread():
    cancelled = CancelToken()
    cancelled.cancel()
    cancellation.check()  # nothing bound: the CLI, training and tests are never cancelled
    with cancellation.bound(cancelled):
        with pytest.raises(Cancelled):
            cancellation.check()
        seen = []
        thread = threading.Thread(target=lambda: seen.append(cancellation.current()))
        thread.start()
        thread.join()
        assert seen == [None]
    assert cancellation.current() is None


def test_a_cancelled_encode_stops_inside_the_codec_instead_of_finishing(tiny_codec):
    image = np.full((256, 384, 3), 128, np.uint8)
    stopper = CancelToken()
    stopper.cancel("the deadline passed")
    with cancellation.bound(stopper), pytest.raises(Cancelled):
        tiny_codec.compress(image)
    with cancellation.bound(CancelToken()):
        assert tiny_codec.decompress(tiny_codec.compress(image)).shape == image.shape


def test_a_batch_abandoned_by_all_its_requests_is_not_retried_one_by_one():
    class Stoppable(FakeNetwork):
        def __call__(self, payloads):
            with self.lock:
                self.batches.append(list(payloads))
            for _ in range(200):  # long work with checks, like tiles and wavefront steps
                cancellation.check()
                time.sleep(0.01)
            return [f"done:{p}" for p in payloads]

    async def scenario():
        network = Stoppable()
        queue = make_queue(network, max_batch_size=2, max_delay_s=0.01)
        tokens = [CancelToken(), CancelToken()]
        jobs = [queue.submit(p, "a", far(), token) for p, token in zip(("x", "y"), tokens)]
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        for job, token in zip(jobs, tokens):
            token.cancel("the client disconnected")
            job.future.cancel()
        while queue._running:
            await asyncio.sleep(0.01)
        stopped_after = time.monotonic() - t0
        await queue.close(1)
        return network, stopped_after

    network, stopped_after = run(scenario())
    assert network.batches == [["x", "y"]]  # no one-by-one retry of abandoned work
    assert stopped_after < 1.0  # not the 2 s the work would take
