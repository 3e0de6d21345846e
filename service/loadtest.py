"""A small load generator for capacity and overload checks against a running server.

* :func:`closed_loop`: ``clients`` callers, each sending its next request when the last one is answered; the
  throughput it reaches is the server's *sustainable rate* for that image.
* :func:`open_loop`: requests arrive on a fixed schedule (``rate`` per second) whether or not earlier ones were
  answered, as independent callers do; at a multiple of the sustainable rate this is overload, and a healthy
  server answers the excess with fast 429s while the queue and memory stay bounded.

Both sample ``/metrics`` while they run, so a report also says how deep the queues got. Used by
``tests/test_service_overload.py``, ``benchmarks/overload.py`` and ``python -m service loadtest``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.media import sniff


@dataclass
class Outcome:
    status: int  # 0 = transport error (refused, reset, timed out)
    code: str  # the error body's code, "" on success
    seconds: float
    retry_after: Optional[str] = None


@dataclass
class LoadReport:
    mode: str
    seconds: float
    sent: int
    ok: int
    rejected: int  # 429 and 503: the server said "not now", with Retry-After
    failed: int  # anything else: 5xx, other 4xx, transport errors
    throughput_rps: float  # successful requests per second
    offered_rps: float
    statuses: Dict[str, int]
    codes: Dict[str, int]
    ok_latency_s: Dict[str, float]
    rejected_latency_s: Dict[str, float]
    rejected_without_retry_after: int
    max_queue_depth: float
    max_in_flight: float
    outcomes: List[Outcome] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("outcomes")
        return out


def _percentiles(values: List[float]) -> Dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(ordered[-1], 4)}


def metric_total(text: str, name: str) -> float:
    """Sum of every sample called ``name`` in a Prometheus exposition."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


class _MetricsSampler:
    """Polls /metrics while a load runs and keeps the maxima of the queue depth and in-flight gauges."""

    def __init__(self, http: httpx.AsyncClient, every_s: float = 0.1):
        self.http, self.every_s = http, every_s
        self.max_queue = self.max_in_flight = 0.0

    async def run(self) -> None:
        while True:
            try:
                text = (await self.http.get("/metrics")).text
                self.max_queue = max(self.max_queue, metric_total(text, "lic_queue_depth"))
                self.max_in_flight = max(self.max_in_flight, metric_total(text, "lic_http_requests_in_flight"))
            except httpx.HTTPError:
                pass
            await asyncio.sleep(self.every_s)


async def _send(http: httpx.AsyncClient, body: bytes, params: dict, headers: dict) -> Outcome:
    t0 = time.monotonic()
    try:
        r = await http.post("/compress", params=params, content=body, headers=headers)
    except httpx.HTTPError:
        return Outcome(0, "transport_error", time.monotonic() - t0)
    code = ""
    if r.status_code >= 400:
        try:
            code = r.json().get("code", "")
        except ValueError:
            code = "not_json"
    return Outcome(r.status_code, code, time.monotonic() - t0, r.headers.get("retry-after"))


def _report(mode: str, outcomes: List[Outcome], seconds: float, offered: float, sampler: _MetricsSampler) -> LoadReport:
    ok = [o for o in outcomes if o.status == 200]
    rejected = [o for o in outcomes if o.status in (429, 503)]
    return LoadReport(
        mode=mode,
        seconds=round(seconds, 3),
        sent=len(outcomes),
        ok=len(ok),
        rejected=len(rejected),
        failed=len(outcomes) - len(ok) - len(rejected),
        throughput_rps=round(len(ok) / seconds, 2) if seconds else 0.0,
        offered_rps=round(offered, 2),
        statuses={str(k): v for k, v in sorted(Counter(o.status for o in outcomes).items())},
        codes=dict(Counter(o.code for o in outcomes if o.code)),
        ok_latency_s=_percentiles([o.seconds for o in ok]),
        rejected_latency_s=_percentiles([o.seconds for o in rejected]),
        rejected_without_retry_after=sum(1 for o in rejected if not o.retry_after),
        max_queue_depth=sampler.max_queue,
        max_in_flight=sampler.max_in_flight,
        outcomes=outcomes,
    )


def _request_parts(body: bytes, quality: int, model: Optional[str], token: Optional[str]) -> Tuple[dict, dict]:
    params = {"quality": quality, **({"model": model} if model else {})}
    headers = {"Content-Type": sniff(body) or "image/png"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return params, headers


async def closed_loop(
    url: str,
    body: bytes,
    clients: int,
    seconds: float,
    quality: int = 1,
    model: Optional[str] = None,
    token: Optional[str] = None,
) -> LoadReport:
    """``clients`` concurrent callers back to back for ``seconds``: the sustainable throughput."""
    params, headers = _request_parts(body, quality, model, token)
    outcomes: List[Outcome] = []
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        sampler = _MetricsSampler(http)
        sampling = asyncio.ensure_future(sampler.run())
        t0 = time.monotonic()
        end = t0 + seconds

        async def caller() -> None:
            while time.monotonic() < end:
                outcomes.append(await _send(http, body, params, headers))

        await asyncio.gather(*(caller() for _ in range(clients)))
        elapsed = time.monotonic() - t0
        sampling.cancel()
    return _report("closed", outcomes, elapsed, len(outcomes) / elapsed, sampler)


async def open_loop(
    url: str,
    body: bytes,
    rate: float,
    seconds: float,
    quality: int = 1,
    model: Optional[str] = None,
    token: Optional[str] = None,
    max_connections: int = 512,
) -> LoadReport:
    """``rate`` requests per second for ``seconds`` (``rate * seconds`` in all), each on its own schedule."""
    params, headers = _request_parts(body, quality, model, token)
    count = max(1, int(rate * seconds))
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        sampler = _MetricsSampler(http)
        sampling = asyncio.ensure_future(sampler.run())
        t0 = time.monotonic()

        async def scheduled(i: int) -> Outcome:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            return await _send(http, body, params, headers)

        outcomes = list(await asyncio.gather(*(scheduled(i) for i in range(count))))
        elapsed = time.monotonic() - t0
        sampling.cancel()
    return _report("open", outcomes, elapsed, rate, sampler)


async def overload_scenario(
    url: str,
    body: bytes,
    factor: float = 2.0,
    clients: int = 8,
    capacity_s: float = 3.0,
    overload_s: float = 5.0,
    recovery_s: float = 2.0,
    quality: int = 1,
    model: Optional[str] = None,
    token: Optional[str] = None,
) -> Dict[str, LoadReport]:
    """Measure the sustainable rate (closed loop), offer ``factor`` times it (open loop), then check recovery with
    one caller. The three reports, by phase: ``capacity``, ``overload``, ``recovery``."""
    common = dict(quality=quality, model=model, token=token)
    capacity = await closed_loop(url, body, clients, capacity_s, **common)
    rate = max(1.0, factor * capacity.throughput_rps)
    overload = await open_loop(url, body, rate, overload_s, **common)
    recovery = await closed_loop(url, body, 1, recovery_s, **common)
    return {"capacity": capacity, "overload": overload, "recovery": recovery}
