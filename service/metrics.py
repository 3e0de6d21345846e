"""Prometheus metrics, in base units (seconds, bytes, ratios) and with low-cardinality labels only.

Labels take values from closed sets: ``endpoint`` is a route template (or ``other``), ``model``/``quality`` are
served instances (``quality="knob"`` for a variable-rate model's one instance, whatever code a request used; or
empty when a request named none that exists), ``target`` is ``max_bytes``/``target_bpp``/``min_psnr``, ``status`` is an HTTP status, ``reason`` and
``stage`` are fixed vocabularies; ``op`` is ``compress``/``decompress`` (the network passes) or ``entropy_encode``/
``entropy_decode`` (the coding loops of a model that batches entropy coding: an integer entropy path). Every app owns its own ``CollectorRegistry``, so two apps in one process (tests)
never share counters.

============================================  ===========  ===========================================
metric                                        type         labels
============================================  ===========  ===========================================
lic_http_requests_total                       counter      endpoint, model, quality, status
lic_http_request_duration_seconds             histogram    endpoint, model, quality, status
lic_http_requests_in_flight                   gauge        -
lic_stage_duration_seconds                    histogram    op, model, quality, stage
lic_batch_size                                histogram    op, model, quality
lic_batch_fallbacks_total                     counter      op, model, quality
lic_queue_depth                               gauge        op, model, quality
lic_bits_per_pixel                            histogram    model, quality
lic_original_bytes_total                      counter      model, quality   (uploaded image files)
lic_compressed_bytes_total                    counter      model, quality   (bitstreams returned)
lic_rejections_total                          counter      reason           (the error code)
lic_legacy_decodes_total                      counter      model, quality, version   (streams of older weights)
lic_rate_control_probes                       histogram    model, target    (estimates per rate-controlled request)
lic_rate_control_encodes                      histogram    model, target    (real entropy encodes per request)
lic_instances_loaded / lic_instances_ready    gauge        -
lic_device_memory_{allocated,reserved,total}_bytes, lic_device_utilization_ratio   gauge   device (GPU only)
lic_cost_seconds_per_megapixel                gauge        model, op, effort   (admission's price, service/cost.py;
                                                                          effort "rate_control": a rate target)
lic_cost_overhead_seconds                     gauge        model, op, effort
============================================  ===========  ===========================================

``lic_original_bytes_total - lic_compressed_bytes_total`` is the storage the service saved.
"""

from __future__ import annotations

from typing import Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from service.batching import QueueObserver
from service.cost import CostModel

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
BPP_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)

PROBE_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)
ENCODE_BUCKETS = (1, 2, 3, 4, 6, 8)

#: Stages every compress and decompress passes through.
STAGES = ("image_io", "queue_wait", "inference", "entropy_coding")
#: The stage of a compression with a rate target instead of entropy_coding: the knob search and its real encodes.
RATE_CONTROL_STAGE = "rate_control"


class ServiceMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        http = ["endpoint", "model", "quality", "status"]
        instance = ["op", "model", "quality"]
        self.requests = Counter("lic_http_requests", "HTTP requests answered", http, registry=r)
        self.request_seconds = Histogram(
            "lic_http_request_duration_seconds",
            "Time from request to response",
            http,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("lic_http_requests_in_flight", "HTTP requests being handled now", registry=r)
        self.stage_seconds = Histogram(
            "lic_stage_duration_seconds",
            "Time per request in each stage: image_io (decode/encode image files), queue_wait, inference (the "
            "batched network pass), entropy_coding (rANS, per image)",
            instance + ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lic_batch_size",
            "Requests per network pass (or per coding loop: op entropy_*)",
            instance,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_fallbacks = Counter(
            "lic_batch_fallbacks", "Batches that failed and were retried one request at a time", instance, registry=r
        )
        self.queue_depth = Gauge(
            "lic_queue_depth",
            "Requests waiting for a network pass (or a coding loop: op entropy_*)",
            instance,
            registry=r,
        )
        self.bpp = Histogram(
            "lic_bits_per_pixel",
            "Bits per pixel of produced bitstreams",
            ["model", "quality"],
            buckets=BPP_BUCKETS,
            registry=r,
        )
        self.original_bytes = Counter(
            "lic_original_bytes", "Bytes of image files received for compression", ["model", "quality"], registry=r
        )
        self.compressed_bytes = Counter(
            "lic_compressed_bytes", "Bytes of bitstreams returned by compression", ["model", "quality"], registry=r
        )
        self.efforts = Counter(
            "lic_compress_effort",
            "Compressions answered, by encoder effort (effort > 0 costs ~10x+ the network time)",
            ["model", "quality", "effort"],
            registry=r,
        )
        self.rejections = Counter("lic_rejections", "Requests refused or failed, by error code", ["reason"], registry=r)
        self.legacy_decodes = Counter(
            "lic_legacy_decodes",
            "Streams decoded with installed weights other than the served ones (older versions)",
            ["model", "quality", "version"],
            registry=r,
        )
        targets = ["model", "target"]
        self.rate_control_probes = Histogram(
            "lic_rate_control_probes",
            "Knob estimates a rate-controlled compression (max_bytes, target_bpp, min_psnr) searched through",
            targets,
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self.rate_control_encodes = Histogram(
            "lic_rate_control_encodes",
            "Real entropy encodes a rate-controlled compression needed (1 when the estimate was right)",
            targets,
            buckets=ENCODE_BUCKETS,
            registry=r,
        )
        self.instances_loaded = Gauge(
            "lic_instances_loaded", "Configured (model, quality) instances loaded", registry=r
        )
        self.instances_ready = Gauge("lic_instances_ready", "Instances warmed up and serving", registry=r)

    def observe_request(self, endpoint: str, model: str, quality: str, status: int, seconds: float) -> None:
        labels = (endpoint, model, quality, str(status))
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def observe_stage(self, op: str, model: str, quality: str, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(op, model, str(quality), stage).observe(seconds)

    def observe_compression(self, model: str, quality: str, original: int, compressed: int, bpp: float) -> None:
        labels = (model, str(quality))
        self.original_bytes.labels(*labels).inc(original)
        self.compressed_bytes.labels(*labels).inc(compressed)
        self.bpp.labels(*labels).observe(bpp)

    def observe_rate_control(self, model: str, target: str, probes: int, encodes: int) -> None:
        self.rate_control_probes.labels(model, target).observe(probes)
        self.rate_control_encodes.labels(model, target).observe(encodes)

    def queue_observer(self, op: str, model: str, quality: str) -> QueueObserver:
        return _QueueMetrics(self, op, model, str(quality))

    def watch_device(self, device: str) -> None:
        """Export GPU memory and utilisation (read at scrape time); a no-op on CPU."""
        if device.startswith("cuda"):
            self.registry.register(_CudaCollector(device))

    def watch_costs(self, costs: CostModel) -> None:
        """Export the admission prices (read at scrape time): what this server thinks a megapixel costs, per
        model, op and effort, as calibrated at start-up and then followed from its own requests. A dashboard sees
        a replica slow down (a busy neighbour, a throttled CPU) in the same number that decides its 422s."""
        self.registry.register(_CostCollector(costs))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueMetrics(QueueObserver):
    def __init__(self, metrics: ServiceMetrics, op: str, model: str, quality: str):
        self.metrics, self.labels = metrics, (op, model, quality)
        metrics.queue_depth.labels(*self.labels).set(0)

    def depth(self, n: int) -> None:
        self.metrics.queue_depth.labels(*self.labels).set(n)

    def batch(self, size: int, inference_s: float, fell_back: bool) -> None:
        self.metrics.batch_size.labels(*self.labels).observe(size)
        if fell_back:
            self.metrics.batch_fallbacks.labels(*self.labels).inc()

    def dropped(self, reason: str) -> None:
        pass  # counted once, by the HTTP layer, when the request is answered


class _CostCollector:
    def __init__(self, costs: CostModel):
        self.costs = costs

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        labels = ["model", "op", "effort"]
        per_mp = GaugeMetricFamily(
            "lic_cost_seconds_per_megapixel", "Admission's estimate of compute seconds per megapixel", labels=labels
        )
        overhead = GaugeMetricFamily(
            "lic_cost_overhead_seconds", "Admission's estimate of per-request compute seconds", labels=labels
        )
        for (model, op, effort), price in sorted(self.costs.snapshot().items(), key=lambda item: str(item[0])):
            per_mp.add_metric([model, op, str(effort)], price.per_megapixel_s)
            overhead.add_metric([model, op, str(effort)], price.overhead_s)
        yield per_mp
        yield overhead


class _CudaCollector:
    def __init__(self, device: str):
        self.device = device

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        import torch

        dev = torch.device(self.device)
        families = {
            "allocated": GaugeMetricFamily(
                "lic_device_memory_allocated_bytes", "Tensor memory allocated", labels=["device"]
            ),
            "reserved": GaugeMetricFamily(
                "lic_device_memory_reserved_bytes", "Memory held by the allocator", labels=["device"]
            ),
            "total": GaugeMetricFamily("lic_device_memory_total_bytes", "Device memory", labels=["device"]),
        }
        families["allocated"].add_metric([self.device], torch.cuda.memory_allocated(dev))
        families["reserved"].add_metric([self.device], torch.cuda.memory_reserved(dev))
        families["total"].add_metric([self.device], torch.cuda.get_device_properties(dev).total_memory)
        yield from families.values()
        try:  # needs NVML (pynvml); absent on some images, so utilisation is best effort
            util = torch.cuda.utilization(dev) / 100.0
        except Exception:
            return
        family = GaugeMetricFamily("lic_device_utilization_ratio", "GPU busy fraction (NVML)", labels=["device"])
        family.add_metric([self.device], util)
        yield family
