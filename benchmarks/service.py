"""Service throughput and latency: batch size 1 against dynamic batching, under the same load on the same machine.

    python benchmarks/service.py [--preset stf-small] [--size 128] [--requests 48] [--concurrency 16] [--rounds 3]
    python benchmarks/service.py --weights-root model_store/weights --model stf-small --quality 4   (shipped weights)

Two servers run side by side as ``python -m service`` subprocesses on 127.0.0.1, identical except for
``max_batch_size`` (1, and ``--batch`` with ``--delay-ms``). Each round sends the same fixed set of requests
(distinct ``--size``² crops of one synthetic photo-like image) from ``--concurrency`` concurrent clients to one
server, then to the other, alternating which goes first so slow drift on a shared machine hits both alike;
compress and decompress are measured separately. Without ``--weights-root`` the model is a randomly initialised
preset exported to a temporary weights root (timing does not depend on training).

Results go to ``benchmarks/results/service.json`` and ``service.md``: images/s, p50/p95 latency and mean batch size
per configuration, and the throughput ratio dynamic / batch-1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from service.process import ServiceProcess  # noqa: E402


def synthetic_crops(n: int, size: int):
    """``n`` different ``size``x``size`` crops of a smooth-plus-texture image (as tests/conftest.natural_image)."""
    import numpy as np

    cols = 8
    h, w = size * (n // cols + 1), size * cols
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [
            128 + 80 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) + 30 * np.sin((xx + yy) / 7.0 + 2 * c)
            for c in range(3)
        ],
        axis=-1,
    )
    big = np.clip(base + rng.normal(0, 8, size=(h, w, 3)), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(big[(i // cols) * size :][:size, (i % cols) * size :][:, :size]) for i in range(n)]


def export_random_preset(spec: str, quality: int, root: Path) -> str:
    import torch

    from model_store import registry
    from model_store.architectures.registry import create_model

    arch, preset = spec.split("-", 1)
    torch.manual_seed(0)
    registry.write_model_version({quality: create_model(arch, preset, quality)}, arch, preset, "bench", root=root)
    return spec


def Server(name: str, settings: Dict[str, str]) -> ServiceProcess:
    """``python -m service`` in a subprocess with the given settings (keys without the LIC_ prefix)."""
    env = {f"LIC_{k.upper()}": v for k, v in settings.items()}
    return ServiceProcess(env, name=name, capture_stderr=False).start()


def compress_one(url: str, body: bytes, params: dict) -> bytes:
    import httpx

    r = httpx.post(url + "/compress", params=params, content=body, headers={"Content-Type": "image/png"}, timeout=600)
    r.raise_for_status()
    return r.content


async def load(url: str, op: str, bodies: List[bytes], concurrency: int, params: dict) -> dict:
    """Send every body once from ``concurrency`` clients; wall time, per-request latency and batch sizes."""
    import httpx

    todo = list(range(len(bodies)))
    latencies: List[float] = []
    batch_sizes: List[int] = []
    statuses: Dict[int, int] = {}
    headers = {"Content-Type": "image/png" if op == "compress" else "application/octet-stream"}

    async def worker(http: httpx.AsyncClient) -> None:
        while todo:
            i = todo.pop()
            t0 = time.perf_counter()
            r = await http.post(
                f"/{op}", params=params if op == "compress" else None, content=bodies[i], headers=headers
            )
            latencies.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                batch_sizes.append(int(r.headers["x-batch-size"]))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "latencies": latencies, "batch_sizes": batch_sizes, "statuses": statuses}


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarise(runs: List[dict]) -> dict:
    latencies = [x for r in runs for x in r["latencies"]]
    sizes = [x for r in runs for x in r["batch_sizes"]]
    requests = len(latencies)
    wall = sum(r["wall_s"] for r in runs)
    statuses: Dict[str, int] = {}
    for r in runs:
        for code, n in r["statuses"].items():
            statuses[str(code)] = statuses.get(str(code), 0) + n
    return {
        "requests": requests,
        "statuses": statuses,
        "images_per_s": requests / wall,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "mean_batch_size": statistics.fmean(sizes) if sizes else 0.0,
        "round_images_per_s": [len(r["latencies"]) / r["wall_s"] for r in runs],
    }


def render_markdown(report: dict) -> str:
    setup = report["setup"]
    machine = setup["machine"]
    lines = [
        f"# Service throughput: batch size 1 vs dynamic batching ({setup['model']}, q{setup['quality']})",
        "",
        f"{setup['image']}, {setup['concurrency']} concurrent clients, {setup['rounds']} rounds per configuration "
        f"and operation (alternating which server goes first), {machine['cores']} CPU cores; dynamic = up to "
        f"{setup['dynamic']['max_batch_size']} requests or {setup['dynamic']['max_batch_delay_ms']:g} ms. "
        "Produced by `python benchmarks/service.py`.",
        "",
        "| operation | configuration | images/s | p50 ms | p95 ms | mean batch | throughput ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for op, summary in report["results"].items():
        ratio = summary["throughput_ratio_dynamic_vs_batch_1"]
        for name in ("batch_size_1", "dynamic"):
            s = summary[name]
            lines.append(
                f"| {op} | {name} | {s['images_per_s']:.2f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | "
                f"{s['mean_batch_size']:.2f} | {'' if name == 'batch_size_1' else f'{ratio:.2f}x'} |"
            )
    load = ", ".join(f"{x:.1f}" for x in machine["load_average_at_end"])
    lines += [
        "",
        f"The machine was shared (load average {load} at the end), so absolute numbers are low and noisy; the two "
        "configurations ran interleaved under the same conditions, so compare the ratio. Every request succeeded "
        "(status counts are in `service.json`, with the per-round throughputs).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="stf-small", help="architecture-preset to export with random weights")
    p.add_argument("--weights-root", type=Path, help="serve existing weights instead (with --model)")
    p.add_argument("--model", help="model id under --weights-root")
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--requests", type=int, default=48, help="requests per round")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="rounds per configuration and operation")
    p.add_argument("--batch", type=int, default=8, help="max batch size of the dynamic configuration")
    p.add_argument("--delay-ms", type=float, default=10.0, help="max batch delay of the dynamic configuration")
    p.add_argument("--coding-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=RESULTS / "service")
    args = p.parse_args()

    import httpx

    from model_store.image_io import encode_image

    with tempfile.TemporaryDirectory() as tmp:
        if args.weights_root:
            root, model = args.weights_root, args.model
        else:
            root, model = Path(tmp), export_random_preset(args.preset, args.quality, Path(tmp))
        common = {
            "weights_root": str(root),
            "models": json.dumps({model: [args.quality]}),
            "queue_size": str(4 * args.concurrency),
            "coding_threads": str(args.coding_threads),
            "request_timeout_s": "600",
        }
        configs = {
            "batch_size_1": {**common, "max_batch_size": "1", "max_batch_delay_ms": "0"},
            "dynamic": {**common, "max_batch_size": str(args.batch), "max_batch_delay_ms": str(args.delay_ms)},
        }
        servers = {name: Server(name, settings) for name, settings in configs.items()}
        try:
            for server in servers.values():
                server.wait_ready()
            images = synthetic_crops(args.requests, args.size)
            pngs = [encode_image(img, "PNG") for img in images]
            params = {"model": model, "quality": args.quality}
            runs: Dict[str, Dict[str, List[dict]]] = {
                op: {name: [] for name in servers} for op in ("compress", "decompress")
            }
            bitstreams = [compress_one(servers["dynamic"].url, body, params) for body in pngs]
            for server in servers.values():  # warm each server's whole path outside the measurements
                for body in pngs[:4]:
                    httpx.post(server.url + "/decompress", content=compress_one(server.url, body, params), timeout=600)
            for op, bodies in (("compress", pngs), ("decompress", bitstreams)):
                order = list(servers)
                for rnd in range(args.rounds):
                    for name in order if rnd % 2 == 0 else order[::-1]:
                        result = asyncio.run(load(servers[name].url, op, bodies, args.concurrency, params))
                        runs[op][name].append(result)
                        print(
                            f"{op:10} {name:13} round {rnd}: {len(bodies) / result['wall_s']:.2f} images/s", flush=True
                        )
        finally:
            for server in servers.values():
                server.stop()

    report = {
        "setup": {
            "model": model if args.weights_root else f"{args.preset} (random init)",
            "quality": args.quality,
            "image": f"{args.size}x{args.size} PNG, {args.requests} distinct images per round",
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "dynamic": {"max_batch_size": args.batch, "max_batch_delay_ms": args.delay_ms},
            "coding_threads": args.coding_threads,
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "load_average_at_end": os.getloadavg(),
            },
        },
        "results": {},
    }
    for op, per_config in runs.items():
        summary = {name: summarise(r) for name, r in per_config.items()}
        summary["throughput_ratio_dynamic_vs_batch_1"] = (
            summary["dynamic"]["images_per_s"] / summary["batch_size_1"]["images_per_s"]
        )
        report["results"][op] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
