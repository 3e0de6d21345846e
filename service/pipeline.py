"""CodecService: the model pool, one batch queue per (model, quality, op), two thread pools, and the path of a request.

::

    compress:    image file ─[coding pool: open_image]─▶ RGB ─[BatchQueue "compress", bucket = (H, W)]─▶
                 analysis (network thread, batched) ─▶ y_i ─[coding pool: rANS + container]─▶ bitstream
                 (a variable-rate model: one queue for every code, the code is the rANS step's; a rate target:
                 the knob search and its real encodes are the coding pool's step, model_store/rate_control.py)
    decompress:  bitstream ─[parse + check header]─▶ [coding pool: rANS decode]─▶ y_hat_i ─[BatchQueue "decompress",
                 bucket = latent shape]─▶ synthesis (network thread, batched) ─▶ RGB ─[coding pool: PNG/WebP/JPEG]─▶

Every wait is bounded by the request's deadline and abandoned as soon as its client disconnects; an abandoned job
is skipped by its queue instead of costing a network pass, and work already running in a thread stops at its next
tile, wavefront step or stage: each request carries a :class:`~model_store.cancellation.CancelToken` that the
threads doing its work are bound to (a batch stops once every request in it is abandoned).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from model_store import cancellation, container, rate_control
from model_store.codec import ImageCodec, bits_per_pixel
from model_store.heap import trim_after_large
from model_store.image_io import encode_image, open_image
from service.batching import BatchQueue
from service.cost import CostModel
from service.errors import ClientGone, DeadlineExceeded, DeadlineTooShort, Draining
from service.metrics import RATE_CONTROL_STAGE, ServiceMetrics
from service.pool import Instance, ModelPool, warm_up_image
from service.settings import ServiceSettings

log = logging.getLogger("service")

#: key in the request's ASGI state: whether it arrived before the drain began (see ``CodecService.arrival``)
ADMITTED = "admitted_before_drain"

COMPRESS, DECOMPRESS = "compress", "decompress"
#: The entropy-coding stage's own queues (models whose coding loop batches: an integer entropy path), so the
#: latents of one analysis batch, or streams of one latent shape, share every wavefront step.
ENTROPY_ENCODE, ENTROPY_DECODE = "entropy_encode", "entropy_decode"

#: metric stage -> Server-Timing metric name
_TIMING_NAMES = {
    "image_io": "image-io",
    "queue_wait": "queue",
    "inference": "inference",
    "entropy_coding": "entropy",
    RATE_CONTROL_STAGE: "rate-control",
}

#: The cost-model "effort" of a rate-controlled compression (service/cost.py keys work by (model, op, effort)).
RATE_CONTROL = "rate_control"
#: A rate-controlled compression's price before its first request, as a multiple of a plain compression's:
#: benchmarks/rate_control.py measured a median of 1.8x (max_bytes) and 2.0x (target_bpp) on erstc-small.
RATE_CONTROL_COST_FACTOR = 2.0


@dataclass
class RequestContext:
    """What bounds one request's waits: its deadline and, once its body is read, a future set on disconnect; and
    the token that stops its work in the threads once it is abandoned (deadline passed or client gone)."""

    deadline: float
    disconnected: Optional[asyncio.Future] = None
    #: the image's size: work on a large one gives its freed memory back when it ends (model_store/heap.py)
    pixels: int = 0
    token: cancellation.CancelToken = field(init=False)

    def __post_init__(self) -> None:
        self.token = cancellation.CancelToken(self.deadline)


@dataclass
class Timings:
    stages: Dict[str, float] = field(default_factory=dict)  # metric stage name -> seconds
    batch_size: int = 1

    def server_timing(self) -> str:
        """The ``Server-Timing`` header (durations in milliseconds, as the spec wants)."""
        parts = []
        for stage, seconds in self.stages.items():
            entry = f"{_TIMING_NAMES[stage]};dur={seconds * 1000:.2f}"
            if stage == "inference":
                entry += f';desc="batch of {self.batch_size}"'
            parts.append(entry)
        return ", ".join(parts)


@dataclass
class Compressed:
    stream: bytes
    height: int
    width: int
    bpp: float
    timings: Timings
    quality: int  # the quality (a variable-rate model: the knob code) in the stream's header
    #: what a rate target achieved (None when the request named a quality)
    rate: Optional[rate_control.RateControlled] = None


@dataclass
class Decompressed:
    data: bytes
    header: container.StreamHeader
    timings: Timings


class CodecService:
    """Owns everything with a lifecycle: pool, queues, executors, draining."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics):
        self.settings = settings
        self.metrics = metrics
        self.pool = ModelPool(settings)
        self.queues: Dict[Tuple[str, int, str], BatchQueue] = {}
        self.network: Optional[ThreadPoolExecutor] = None
        self.coding: Optional[ThreadPoolExecutor] = None
        self.draining = False
        self.in_flight = 0
        self._loading: Optional[asyncio.Future] = None
        self._legacy_lock = asyncio.Lock()
        #: what compress / decompress cost here per (model, op, effort): admission by cost (service/cost.py)
        self.costs = CostModel()

    # -- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve the configuration (fails fast on unknown models), then load and warm up in the background."""
        self.pool.configure()
        # one network thread: passes of different queues take turns on the device instead of thrashing it
        network_threads = self.settings.torch_threads or _auto_network_threads(self.pool.device)
        self.network = ThreadPoolExecutor(
            1, thread_name_prefix="lic-network", initializer=_set_torch_threads, initargs=(network_threads,)
        )
        self.coding = ThreadPoolExecutor(
            self.settings.coding_threads,
            thread_name_prefix="lic-coding",
            initializer=_set_torch_threads,
            initargs=(self.settings.coding_torch_threads,),
        )
        self.metrics.watch_device(self.pool.device)
        self.metrics.watch_costs(self.costs)
        for (model, quality), inst in self.pool.instances.items():
            for op, run in ((COMPRESS, self._analyse), (DECOMPRESS, self._synthesise)):
                self.queues[(model, quality, op)] = BatchQueue(
                    f"{model} q{quality} {op}",
                    _bind(run, inst),
                    self.network,
                    max_batch_size=self.settings.max_batch_size,
                    max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
                    max_pending=self.settings.queue_size,
                    retry_after_s=self.settings.retry_after_s,
                    observer=self.metrics.queue_observer(op, model, inst.label),
                )
            for op, run in ((ENTROPY_ENCODE, self._encode_latents), (ENTROPY_DECODE, self._decode_latents)):
                first_stage = self.queues[(model, quality, COMPRESS if op == ENTROPY_ENCODE else DECOMPRESS)]
                self.queues[(model, quality, op)] = BatchQueue(
                    f"{model} q{quality} {op}",
                    _bind(run, inst),
                    self.coding,
                    max_batch_size=self.settings.max_batch_size,
                    max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
                    max_pending=first_stage.max_reserved,  # only admitted requests get here: never a second 429
                    retry_after_s=self.settings.retry_after_s,
                    observer=self.metrics.queue_observer(op, model, inst.label),
                    workers=self.settings.coding_threads,
                )
        self.metrics.instances_loaded.set(0)
        self.metrics.instances_ready.set(0)
        self._loading = asyncio.get_running_loop().run_in_executor(self.network, self._load)

    def _load(self) -> None:
        self.pool.load_all(after_warm_up=self._price)
        self.metrics.instances_loaded.set(self.pool.count("ready") + self.pool.count("failed"))
        self.metrics.instances_ready.set(self.pool.count("ready"))

    def _price(self, inst: Instance, codec: ImageCodec) -> None:
        """Price compress and decompress of the instance's model on this machine, threads and device, before it
        is ready: at two sizes (its warm-up image, and that image repeated to 1024x768 or the largest 4:3 size
        max_pixels admits), as the request path runs them: image decode + analysis + rANS, and rANS + synthesis
        + PNG encode. Once per model: the qualities of a preset share their widths. A model that cannot be priced
        is not refused on cost (logged), never made unready."""
        model = inst.key[0]
        if self.costs.price((model, COMPRESS, 0)) is not None:
            return
        try:
            self._calibrate(model, codec)
        except Exception:
            log.exception("pricing %s failed: its requests are not refused on cost", model)
            return
        if codec.rate_knob is not None:  # until its own requests price it
            plain = self.costs.price((model, COMPRESS, 0))
            self.costs.seed((model, COMPRESS, RATE_CONTROL), plain.scaled(RATE_CONTROL_COST_FACTOR))

    def _calibrate(self, model: str, codec: ImageCodec) -> None:
        small = warm_up_image(codec.pad_multiple)
        width = min(1024, int((self.settings.max_pixels * 4 / 3) ** 0.5))
        height = width * 3 // 4
        if height * width < 2 * small.shape[0] * small.shape[1]:
            raise ValueError(f"max_pixels {self.settings.max_pixels} leaves no second size to price with")
        large = np.tile(small, (height // small.shape[0] + 1, width // small.shape[1] + 1, 1))[:height, :width]
        points: Dict[str, List[Tuple[int, float]]] = {COMPRESS: [], DECOMPRESS: []}
        for image in (small, np.ascontiguousarray(large)):
            data = encode_image(image, "PNG")
            t0 = time.monotonic()
            stream = codec.compress(open_image(data, self.pool.limits))
            t1 = time.monotonic()
            encode_image(codec.decompress(stream), "PNG")
            points[COMPRESS].append((image.shape[0] * image.shape[1], t1 - t0))
            points[DECOMPRESS].append((image.shape[0] * image.shape[1], time.monotonic() - t1))
        for op, (p_small, p_large) in points.items():
            price = self.costs.calibrate((model, op, 0), p_small, p_large)
            log.info("%s %s costs %.2f s + %.2f s/MP here", model, op, price.overhead_s, price.per_megapixel_s)

    def admit(
        self,
        inst: Instance,
        op: str,
        pixels: int,
        arrival: float,
        requested_s: Optional[float],
        effort: Union[int, str] = 0,
    ) -> float:
        """The deadline of a request for an image of ``pixels``, or 422 ``deadline_too_short`` at once when this
        server's estimate of the work does not fit in it (nothing has been decoded yet).

        The deadline is ``request_timeout_s`` from arrival, stretched for large images to
        ``request_timeout_per_megapixel_s`` per megapixel, and never longer than the client's ``requested_s``.
        """
        settings = self.settings
        timeout = max(settings.request_timeout_s, settings.request_timeout_per_megapixel_s * pixels / 1e6)
        if requested_s is not None:
            timeout = min(timeout, requested_s)
        deadline = arrival + timeout
        key = (inst.key[0], op, effort)
        estimate = self.costs.estimate(key, pixels)
        remaining = deadline - time.monotonic()
        if settings.admission_by_cost and estimate is not None and estimate > remaining:
            fits = self.costs.price(key).pixels_within(remaining)  # type: ignore[union-attr]
            side = int((fits * 4 / 3) ** 0.5)
            raise DeadlineTooShort(
                f"{op} of {pixels / 1e6:.1f} megapixels is estimated at {estimate:.1f} s on this server, longer than "
                f"the {remaining:.1f} s left of the request's deadline; the largest image that fits is about "
                f"{fits / 1e6:.2f} megapixels (e.g. {side}x{side * 3 // 4}). Send a smaller image or a longer "
                f"X-Request-Timeout (this server allows up to {settings.request_timeout_s:g} s, or "
                f"{settings.request_timeout_per_megapixel_s:g} s per megapixel for large images)"
            )
        return deadline

    def _price_observed(
        self, op: str, inst: Instance, pixels: int, timings: Timings, effort: Union[int, str] = 0
    ) -> None:
        """Fold a finished request's compute time (queueing excluded) into its price."""
        compute = sum(s for stage, s in timings.stages.items() if stage != "queue_wait")
        self.costs.observe((inst.key[0], op, effort), pixels, compute)

    async def wait_loaded(self) -> None:
        if self._loading is not None:
            await asyncio.shield(self._loading)

    def begin_drain(self) -> None:
        """Stop admitting requests (503 ``draining``, readiness fails); in-flight ones carry on."""
        if not self.draining:
            log.info("draining: %d request(s) in flight", self.in_flight)
        self.draining = True

    @property
    def idle(self) -> bool:
        return self.in_flight == 0

    async def stop(self) -> None:
        """Drain within ``drain_timeout_s``, then fail whatever is left and release the threads."""
        self.begin_drain()
        end = time.monotonic() + self.settings.drain_timeout_s
        while not self.idle and time.monotonic() < end:
            await asyncio.sleep(0.02)
        for queue in self.queues.values():
            await queue.close(max(0.0, end - time.monotonic()))
        for executor in (self.coding, self.network):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def arrival(self, state: dict) -> Iterator[None]:
        """Decide when a request *arrives* whether it is served through a drain, and count it in flight until it is
        answered.

        Deciding later (when the handler starts) lost requests: under load a request the server had already taken
        in could reach its handler after SIGTERM and get 503 although it was in flight when the drain began. Only
        requests that arrive while draining are refused (by :meth:`admitted`).
        """
        state[ADMITTED] = not self.draining
        if not state[ADMITTED]:
            yield
            return
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def admitted(self, state: dict) -> None:
        """Refuse (503 ``draining``) a request that arrived while the server was draining."""
        if not state.get(ADMITTED, not self.draining):  # no decision recorded: decide now
            raise Draining(
                "the server is shutting down; retry on another instance",
                {"Retry-After": str(self.settings.retry_after_s)},
            )

    def reserve(self, inst: Instance, op: str):
        """A slot on the path of ``op`` for ``inst`` (429 ``queue_full`` when it is full); hold it until answered."""
        return self.queues[(inst.key[0], inst.key[1], op)].reserve()

    # -- compress ------------------------------------------------------------------------------------------------
    async def decode_image(self, data: bytes, ctx: RequestContext, timings: Timings) -> np.ndarray:
        t0 = time.monotonic()
        image = await self._in_pool(ctx, open_image, data, self.pool.limits)
        timings.stages["image_io"] = time.monotonic() - t0
        return image

    async def compress(
        self,
        inst: Instance,
        image: np.ndarray,
        ctx: RequestContext,
        timings: Timings,
        effort: int = 0,
        quality: Optional[int] = None,
    ) -> Compressed:
        """Effort 0: batched analysis on the network thread, rANS in the coding pool. Effort > 0: the latent
        search and the choice between its stream and effort 0's need the networks throughout, so the whole
        encode is the network pass (batched only with requests of the same size, effort *and* quality).
        ``quality``: a variable-rate model's knob code (g_a does not depend on it, so effort 0 batches across
        codes); None or a per-λ instance: the instance's own."""
        quality = inst.codec.quality_of(quality)
        height, width = image.shape[:2]
        result = await self._analysis(inst, image, ctx, timings, effort, quality)
        if effort:
            stream = result
        else:
            t0 = time.monotonic()
            if inst.codec.canonical.batches_entropy_coding:
                job = self.queues[(inst.key[0], inst.key[1], ENTROPY_ENCODE)].submit(
                    (result, height, width, quality), (height, width), ctx.deadline, ctx.token
                )
                stream = (await self._wait(ctx, job.future)).value
            else:
                stream = await self._in_pool(ctx, inst.codec.encode_latent, result, height, width, quality)
            timings.stages["entropy_coding"] = time.monotonic() - t0
        self._observe(COMPRESS, inst, timings)
        self._price_observed(COMPRESS, inst, height * width, timings, effort)
        return Compressed(stream, height, width, bits_per_pixel(stream, height, width), timings, quality)

    async def compress_to_target(
        self, inst: Instance, image: np.ndarray, ctx: RequestContext, timings: Timings, target: rate_control.RateTarget
    ) -> Compressed:
        """The stream that meets ``target`` (a variable-rate model): g_a batched like any effort-0 request, then
        the knob search, its probes and real encodes, in the coding pool (model_store/rate_control.py)."""
        height, width = image.shape[:2]
        latent = await self._analysis(inst, image, ctx, timings)
        t0 = time.monotonic()
        found = await self._in_pool(ctx, rate_control.compress_to_target, inst.codec, image, target, latent)
        timings.stages[RATE_CONTROL_STAGE] = time.monotonic() - t0
        self._observe(COMPRESS, inst, timings)
        self._price_observed(COMPRESS, inst, height * width, timings, RATE_CONTROL)
        self.metrics.observe_rate_control(inst.key[0], target.kind, found.probes, found.encodes)
        return Compressed(found.stream, height, width, found.bpp, timings, found.quality, found)

    async def _analysis(self, inst, image, ctx, timings, effort: int = 0, quality: Optional[int] = None):
        """The batched network pass of a compression: a latent (effort 0: batched with any same-sized image, at any
        code) or a finished stream (effort > 0: only with the same size, effort and code)."""
        model, key_quality = inst.key
        height, width = image.shape[:2]
        bucket = (height, width, effort, quality) if effort else (height, width, 0)
        job = self.queues[(model, key_quality, COMPRESS)].submit(
            (image, effort, quality), bucket, ctx.deadline, ctx.token
        )
        result = await self._wait(ctx, job.future)
        timings.stages["queue_wait"] = result.queue_wait_s
        timings.stages["inference"] = result.inference_s
        timings.batch_size = result.batch_size
        return result.value

    @staticmethod
    def _analyse(inst: Instance, jobs: List[Tuple[np.ndarray, int, Optional[int]]]) -> List[object]:
        """Latents (effort 0) or finished streams (effort > 0) of one batch; a bucket holds one effort (and for
        effort > 0 one quality)."""
        images = [image for image, _, _ in jobs]
        _, effort, quality = jobs[0]
        try:
            if effort:
                return list(inst.codec.compress_batch(images, effort=effort, quality=quality))
            return list(inst.codec.analyse(images))
        finally:
            trim_after_large(sum(image.shape[0] * image.shape[1] for image in images))

    # -- decompress ----------------------------------------------------------------------------------------------
    async def decompress(
        self, inst: Instance, data: bytes, fmt: str, ctx: RequestContext, timings: Timings
    ) -> Decompressed:
        model, quality = inst.key
        t0 = time.monotonic()
        if inst.codec.canonical.batches_entropy_coding:
            header = container.parse_header(data)  # the route parsed it already: cheap, and it cannot fail here
            layout = (header.latent_shapes, header.banded_hyper)
            job = self.queues[(model, quality, ENTROPY_DECODE)].submit(data, layout, ctx.deadline, ctx.token)
            y_hat, header = (await self._wait(ctx, job.future)).value
        else:
            y_hat, header = await self._in_pool(ctx, inst.codec.decode_latent, data)
        timings.stages["entropy_coding"] = time.monotonic() - t0
        job = self.queues[(model, quality, DECOMPRESS)].submit(
            (y_hat, header), tuple(y_hat.shape), ctx.deadline, ctx.token
        )
        result = await self._wait(ctx, job.future)
        timings.stages["queue_wait"] = result.queue_wait_s
        timings.stages["inference"] = result.inference_s
        timings.batch_size = result.batch_size
        t0 = time.monotonic()
        encoded = await self._in_pool(ctx, encode_image, result.value, fmt)
        timings.stages["image_io"] = time.monotonic() - t0
        self._observe(DECOMPRESS, inst, timings)
        self._price_observed(DECOMPRESS, inst, header.height * header.width, timings)
        return Decompressed(encoded, header, timings)

    async def instance_for_stream(self, header: container.StreamHeader) -> Tuple[Instance, bool]:
        """(instance, is_legacy): the served instance that made the stream, else one loaded from the installed
        weights with the stream's digest (an older version or an unserved quality), else 409.

        Stored streams outlive weight upgrades: a service that shipped new weights must still decode everything
        its users stored, so every installed version stays decodable; only the served one is kept warm.
        """
        inst = self.pool.served_for_stream(header)
        if inst is not None:
            return inst, False
        entry = self.pool.weights_for_stream(header)
        async with self._legacy_lock:  # one load at a time; a second request for it finds it cached
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.network, self.pool.load_legacy, entry), True

    async def decompress_legacy(
        self, inst: Instance, data: bytes, fmt: str, ctx: RequestContext, timings: Timings
    ) -> Decompressed:
        """Decode with non-served weights: rare, so one at a time on the network thread, without batching."""
        t0 = time.monotonic()
        async with self._legacy_lock:
            image = await self._wait(
                ctx,
                asyncio.get_running_loop().run_in_executor(self.network, _bound_to, ctx, inst.codec.decompress, data),
            )
        timings.stages["inference"] = time.monotonic() - t0
        t0 = time.monotonic()
        encoded = await self._in_pool(ctx, encode_image, image, fmt)
        timings.stages["image_io"] = time.monotonic() - t0
        self.metrics.legacy_decodes.labels(inst.key[0], inst.label, inst.entry.version).inc()
        return Decompressed(encoded, container.parse_header(data), timings)

    @staticmethod
    def _encode_latents(inst: Instance, jobs: List[Tuple[torch.Tensor, int, int, int]]) -> List[bytes]:
        """Streams of one entropy-coding batch: latents of one image size, any codes, one coding loop."""
        _, height, width, _ = jobs[0]
        return inst.codec.encode_latents([y for y, _, _, _ in jobs], height, width, [q for _, _, _, q in jobs])

    @staticmethod
    def _decode_latents(inst: Instance, streams: List[bytes]) -> List[Tuple[torch.Tensor, container.StreamHeader]]:
        """(ŷ, header) of one entropy-decoding batch: streams of one latent layout, one coding loop (a bad stream
        fails the batch, and the queue's one-by-one retry fails it alone)."""
        return inst.codec.decode_latents(streams)

    @staticmethod
    def _synthesise(inst: Instance, items: List[Tuple[torch.Tensor, container.StreamHeader]]) -> List[np.ndarray]:
        try:
            return inst.codec.synthesise([y for y, _ in items], [h for _, h in items])
        finally:
            trim_after_large(sum(h.width * h.height for _, h in items))

    # -- waiting -------------------------------------------------------------------------------------------------
    def _observe(self, op: str, inst: Instance, timings: Timings) -> None:
        for stage, seconds in timings.stages.items():
            self.metrics.observe_stage(op, inst.key[0], inst.label, stage, seconds)

    async def _in_pool(self, ctx: RequestContext, fn, *args):
        loop = asyncio.get_running_loop()
        return await self._wait(ctx, loop.run_in_executor(self.coding, _bound_to, ctx, fn, *args))

    async def _wait(self, ctx: RequestContext, future: asyncio.Future):
        """The future's result, unless the deadline passes first (504) or the client leaves (then nobody asks)."""
        remaining = ctx.deadline - time.monotonic()
        waiters = {future} if ctx.disconnected is None else {future, ctx.disconnected}
        done: set = set()
        if remaining > 0:
            done, _ = await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        future.cancel()  # a queued job is skipped; running work stops at its next check of the token
        if ctx.disconnected is not None and ctx.disconnected in done:
            ctx.token.cancel("the client disconnected")
            raise ClientGone("the client disconnected")
        ctx.token.cancel("the deadline passed")
        raise DeadlineExceeded(
            f"the request did not finish within its deadline of {self.settings.request_timeout_s:g} s or less"
        )


def _auto_network_threads(device: str) -> int:
    """On CPU the network pass and the coding threads share the cores: give the pass half of them. OpenMP threads
    that find their core taken spin and wait, which made passes several times slower in
    ``benchmarks/overload.py`` when the pass asked for every core."""
    if device.startswith("cuda"):
        return torch.get_num_threads()
    return max(1, (os.cpu_count() or 1) // 2)


def _set_torch_threads(n: int) -> None:
    """Give this executor thread its own intra-op thread count (OpenMP/MKL keep it per calling thread).

    ``get_num_threads`` first: it runs torch's lazy per-thread initialisation, which would otherwise reset the
    count to the process-wide value on this thread's first parallel op.
    """
    torch.get_num_threads()
    torch.set_num_threads(n)


def _bound_to(ctx: RequestContext, fn, *args):
    """Run ``fn`` in this (executor) thread with the request's cancellation token bound to it; after work on a
    large image (finished, failed or stopped), hand its freed memory back."""
    try:
        with cancellation.bound(ctx.token):
            return fn(*args)
    finally:
        trim_after_large(ctx.pixels)


def _bind(fn, inst: Instance):
    return lambda payloads: fn(inst, payloads)
