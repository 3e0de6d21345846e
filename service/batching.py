"""Dynamic batching: many concurrent requests, few network passes.

One :class:`BatchQueue` serves one (model, quality, op). Requests carry a *bucket* (the shape they can be batched
with: the image size for compress, the latent shape for decompress) and the queue never mixes buckets::

    request ──submit──▶ [bounded deque, oldest first] ──worker──▶ batch of one bucket ──▶ network thread
                 │ full: 429 QueueFull         │ waits until B jobs of the oldest job's bucket,   │ run_batch(jobs)
                 │ draining: 503 Draining      │ or T ms after the oldest job arrived            │ fails? one by one
                 ▼                             ▼ drops jobs past their deadline (504) or whose     ▼
              Job.future ◀──────────────────────── client went away (future cancelled)  ◀── results, per job

The network pass runs in an executor (one thread per device, shared by every queue, so passes never compete for
the device), and the event loop stays free to accept requests and to entropy-code the previous batch in the coding
thread pool while the next batch runs. One deque per (model, quality, op) rather than one per bucket keeps memory
bounded whatever image sizes arrive, and serving the oldest job's bucket first means no bucket starves.

A batch that raises is retried one payload at a time, so a single bad request fails alone. A job may carry a
cancellation token: the pass runs bound to a token that is cancelled once *every* job of the batch is (its work
then stops at its next check, model_store.cancellation), and a cancelled batch is not retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Generic, Hashable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from model_store import cancellation
from service.errors import DeadlineExceeded, Draining, QueueFull

log = logging.getLogger("service.batching")

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchResult(Generic[R]):
    """One job's result and where its time went."""

    value: R
    queue_wait_s: float  # from submit until its network pass started
    inference_s: float  # the network pass it was part of
    batch_size: int


@dataclass(eq=False)
class Job(Generic[P]):
    payload: P
    bucket: Hashable
    deadline: float  # time.monotonic() after which nobody wants the result
    future: asyncio.Future
    token: Optional[cancellation.CancelToken] = None  # cancelled when nobody wants the result any more
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def abandoned(self) -> bool:
        """True if the caller stopped waiting (client gone, deadline handled by the caller)."""
        return self.future.done()


class QueueObserver:
    """Hooks for metrics; the defaults do nothing."""

    def depth(self, n: int) -> None: ...

    def batch(self, size: int, inference_s: float, fell_back: bool) -> None: ...

    def dropped(self, reason: str) -> None: ...


class BatchQueue(Generic[P, R]):
    """Collects jobs of one (model, quality, op) into batches of one bucket and runs them off the event loop."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[List[P]], Sequence[R]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_pending: int,
        retry_after_s: int = 1,
        observer: Optional[QueueObserver] = None,
        workers: int = 1,
    ):
        """``workers``: batches run side by side (one per thread of ``executor`` that should stay busy; 1 where
        passes must take turns on one device)."""
        if workers < 1:
            raise ValueError(f"a queue needs at least one worker, got {workers}")
        self.name = name
        self.workers = workers
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_pending = max_pending
        self.retry_after_s = retry_after_s
        self.observer = observer or QueueObserver()
        self._pending: Deque[Job[P]] = deque()
        self._wakeup = asyncio.Event()
        self._accepting = True
        self._running = 0  # jobs in the passes running now
        self._reserved = 0  # requests admitted to this queue's path (decoding, queued, running or coding)
        self._tasks: List[asyncio.Task] = []

    # -- producer side -------------------------------------------------------------------------------------------
    @property
    def max_reserved(self) -> int:
        return self.max_pending + self.workers * self.max_batch_size

    @contextmanager
    def reserve(self) -> Iterator[None]:
        """Admit a request to this queue's whole path *before* its body is decoded, or refuse it (429) at once.

        ``submit`` alone bounds the queue, but under overload the expensive work happens before it (image or rANS
        decoding in the coding pool), so requests that will be refused would still pile up there and their 429s
        would come slowly. Reserving first sheds them in microseconds and bounds the work and memory held by
        admitted requests to ``max_pending + max_batch_size`` per queue.
        """
        if not self._accepting:
            raise Draining("the server is shutting down; retry on another instance", self._retry_after())
        if self._reserved >= self.max_reserved:
            self.observer.dropped(QueueFull.code)
            raise QueueFull(
                f"{self.name}: {self._reserved} requests already admitted; retry after {self.retry_after_s} s",
                self._retry_after(),
            )
        self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1

    def submit(
        self, payload: P, bucket: Hashable, deadline: float, token: Optional[cancellation.CancelToken] = None
    ) -> Job[P]:
        """Queue a payload; await ``job.future`` for a :class:`BatchResult` (cancel it to withdraw the job, and
        ``token`` to stop a pass that already runs it)."""
        if not self._accepting:
            raise Draining("the server is shutting down; retry on another instance", self._retry_after())
        if len(self._pending) >= self.max_pending:
            self.observer.dropped(QueueFull.code)
            raise QueueFull(
                f"{self.name}: {len(self._pending)} requests already queued; retry after {self.retry_after_s} s",
                self._retry_after(),
            )
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._work(), name=f"batch-queue {self.name} #{i}") for i in range(self.workers)
            ]
        job = Job(payload, bucket, deadline, asyncio.get_running_loop().create_future(), token)
        job.future.add_done_callback(self._on_withdrawn)
        self._pending.append(job)
        self.observer.depth(len(self._pending))
        self._wakeup.set()
        return job

    def _on_withdrawn(self, future: asyncio.Future) -> None:
        if future.cancelled():  # its caller left: let the worker drop it now rather than at the batch deadline
            self._wakeup.set()

    def _retry_after(self) -> dict:
        return {"Retry-After": str(self.retry_after_s)}

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._running

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        self._accepting = False
        self._wakeup.set()  # a waiting batch fires now instead of waiting out its delay

    async def close(self, timeout_s: float) -> None:
        """Stop accepting, let queued jobs run for up to ``timeout_s``, then fail the rest with 503."""
        self.stop_accepting()
        end = time.monotonic() + timeout_s
        while not self.idle and time.monotonic() < end:
            await asyncio.sleep(0.01)
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(Draining("the server shut down before this request ran"))
        for task in self._tasks:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.observer.depth(0)

    # -- worker --------------------------------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            batch: List[Job[P]] = []
            try:
                batch = await self._next_batch()
                await self._run(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must fail its batch, never stop the queue
                log.exception("%s: batch worker error", self.name)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    async def _next_batch(self) -> List[Job[P]]:
        while True:
            self._discard_dead()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._pending[0]
            fire_at = first.enqueued_at + self.max_delay_s
            while self._accepting and self._count(first.bucket) < self.max_batch_size and not first.abandoned:
                remaining = fire_at - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take(first.bucket)
            if batch:
                return batch

    def _count(self, bucket: Hashable) -> int:
        return sum(1 for job in self._pending if job.bucket == bucket and not job.abandoned)

    def _discard_dead(self) -> None:
        """Drop jobs whose caller left and fail the ones whose deadline passed (checked again in ``_take``)."""
        if any(self._dead(job) for job in self._pending):
            self._pending = deque(job for job in self._pending if not self._dead(job))
            self.observer.depth(len(self._pending))

    def _dead(self, job: Job[P]) -> bool:
        if job.abandoned:
            return True
        if time.monotonic() > job.deadline:
            job.future.set_exception(DeadlineExceeded("the request's deadline passed while it was queued"))
            self.observer.dropped(DeadlineExceeded.code)
            return True
        return False

    def _take(self, bucket: Hashable) -> List[Job[P]]:
        batch: List[Job[P]] = []
        keep: Deque[Job[P]] = deque()
        for job in self._pending:
            if job.bucket == bucket and len(batch) < self.max_batch_size and not self._dead(job):
                batch.append(job)
            elif not job.abandoned:
                keep.append(job)
        self._pending = keep
        self.observer.depth(len(keep))
        return batch

    async def _run(self, batch: List[Job[P]]) -> None:
        self._running += len(batch)
        try:
            loop = asyncio.get_running_loop()
            token = cancellation.AllOf([job.token for job in batch])
            started, inference_s, outcomes, fell_back = await loop.run_in_executor(
                self.executor, self._call, [job.payload for job in batch], token
            )
        finally:
            self._running -= len(batch)
        self.observer.batch(len(batch), inference_s, fell_back)
        for job, outcome in zip(batch, outcomes, strict=True):
            if job.future.done():  # the caller left while the batch ran
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(BatchResult(outcome, started - job.enqueued_at, inference_s, len(batch)))

    def _call(
        self, payloads: List[P], token: Optional[cancellation.CancelToken] = None
    ) -> Tuple[float, float, List[Any], bool]:
        """Runs in the network thread: the batch, or each payload alone if the batch fails."""
        started = time.monotonic()
        fell_back = False
        try:
            with cancellation.bound(token):
                outcomes: List[Any] = list(self.run_batch(payloads))
            if len(outcomes) != len(payloads):
                raise RuntimeError(f"run_batch returned {len(outcomes)} results for {len(payloads)} payloads")
        except Exception as exc:
            if len(payloads) == 1 or isinstance(exc, cancellation.Cancelled):  # nobody waits: do not retry
                outcomes = [exc] * len(payloads)
            else:
                log.warning("%s: batch of %d failed (%s); retrying one by one", self.name, len(payloads), exc)
                fell_back = True
                outcomes = [self._call_one(p) for p in payloads]
        return started, time.monotonic() - started, outcomes, fell_back

    def _call_one(self, payload: P) -> Any:
        try:
            return list(self.run_batch([payload]))[0]
        except Exception as exc:
            return exc
