"""Overload: the shipped default model behind a real ``python -m service``, at a multiple of its sustainable rate.

    python benchmarks/overload.py [--factor 2] [--seconds 10] [--image tests/assets/val_flowers_256.png]

Phases (``service.loadtest.overload_scenario``): closed-loop capacity with ``--clients`` callers, open-loop arrivals
at ``--factor`` x that rate for ``--seconds``, then one caller to check recovery. The server's resident memory is
read from /proc before the load and at its peak. Results go to ``benchmarks/results/overload.json`` and
``overload.md`` (the README's "Reliability" section quotes them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from model_store import registry  # noqa: E402
from service.loadtest import metric_total, overload_scenario  # noqa: E402
from service.process import ServiceProcess  # noqa: E402


def render_markdown(report: dict) -> str:
    lines = [
        f"# Overload: {report['model']} q{report['quality']}, {report['image']}",
        "",
        f"{report['date']}, {report['machine']}; server settings {report['settings']}",
        "",
        "| phase | offered /s | sent | ok | ok /s | rejected (429) | failed | p50 / p99 ok (s) | p50 / p99 rejected (s) "
        "| max queue |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in report["phases"].items():
        ok_lat, rej_lat = p["ok_latency_s"], p["rejected_latency_s"]
        lines.append(
            f"| {name} | {p['offered_rps']:.1f} | {p['sent']} | {p['ok']} | {p['throughput_rps']:.1f} | "
            f"{p['rejected']} | {p['failed']} | {ok_lat.get('p50', 0):.3f} / {ok_lat.get('p99', 0):.3f} | "
            f"{rej_lat.get('p50', 0):.3f} / {rej_lat.get('p99', 0):.3f} | {p['max_queue_depth']:g} |"
        )
    m = report["memory_mib"]
    lines += [
        "",
        f"Server memory: {m['before']:.0f} MiB resident before the load, peak {m['peak']:.0f} MiB "
        f"(+{m['peak'] - m['before']:.0f} MiB). Goodput under overload: "
        f"{report['goodput_ratio']:.2f} x the sustainable rate.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--quality", type=int, default=1)
    p.add_argument("--image", type=Path, default=ROOT / "tests" / "assets" / "val_flowers_256.png")
    p.add_argument("--out", type=Path, default=RESULTS / "overload.json")
    args = p.parse_args()

    model = registry.default_model()
    settings = {
        "LIC_MODELS": json.dumps({model: [args.quality]}),
        "LIC_DEVICE": "cpu",
        "LIC_QUEUE_SIZE": "16",
        "LIC_MAX_BATCH_SIZE": "4",
        "LIC_MAX_IN_FLIGHT_PER_CLIENT": "0",  # all simulated callers share 127.0.0.1
        # the load generator shares the machine: one coding thread leaves it a core (the network pass takes
        # half the cores by default; with every core it ran at 0.5 instead of 6 images/s here)
        "LIC_CODING_THREADS": "1",
    }
    with ServiceProcess(settings) as server:
        before = server.memory_kib("VmRSS")
        phases = asyncio.run(
            overload_scenario(
                server.url,
                args.image.read_bytes(),
                factor=args.factor,
                clients=args.clients,
                overload_s=args.seconds,
                quality=args.quality,
            )
        )
        peak = server.memory_kib("VmHWM")
        queued_after = metric_total(httpx.get(server.url + "/metrics").text, "lic_queue_depth")
    summary = {name: phase.summary() for name, phase in phases.items()}
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average at end {os.getloadavg()[0]:.2f}",
        "model": model,
        "quality": args.quality,
        "image": args.image.name,
        "factor": args.factor,
        "settings": {k.removeprefix("LIC_").lower(): v for k, v in settings.items() if k != "LIC_MODELS"},
        "phases": summary,
        "memory_mib": {"before": before / 1024, "peak": peak / 1024},
        "goodput_ratio": summary["overload"]["throughput_rps"] / max(1e-9, summary["capacity"]["throughput_rps"]),
        "queue_depth_after": queued_after,
        "requests": {
            "sent": sum(p["sent"] for p in summary.values()),
            "rejected": sum(p["rejected"] for p in summary.values()),
            "failed": sum(p["failed"] for p in summary.values()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
