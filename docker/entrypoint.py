#!/usr/bin/env python3
"""Container entry point: one uvicorn worker per GPU, threads sized from the CPU quota, signals forwarded.

    python /opt/lic/entrypoint.py [ARGS]     the images' ENTRYPOINT; ARGS go to ``python -m service serve``
    python /opt/lic/entrypoint.py --print-plan   print the workers/threads it would use, as JSON

What it decides, from the environment and the container's limits:

* **Workers** (``LIC_WORKERS``, default ``auto``): one per visible GPU when ``LIC_DEVICE`` is ``auto`` or ``cuda``
  and the container sees GPUs, otherwise one. Worker *i* runs on ``cuda:i``.
* **Threads**: the CPUs the container may use (its cgroup CPU quota, ``cpu.max`` on cgroup v2 or
  ``cpu.cfs_quota_us`` on v1, capped by the CPU affinity mask) divided by the workers, at least one. That sets
  ``LIC_CODING_THREADS``, ``LIC_TORCH_THREADS`` and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` unless already set.
  (``os.cpu_count()`` inside a container reports the host's CPUs, which oversubscribes a CPU-limited pod.)

With one worker the entry point *replaces itself* with ``python -m service`` (the service is PID 1 and handles
SIGTERM itself: it stops admitting work, drains for ``LIC_DRAIN_TIMEOUT_S`` and exits). With several, it binds the
service port once, starts one worker process per GPU that all accept on that socket, forwards SIGTERM/SIGINT to
them and exits when they have drained; if a worker dies on its own, the others are stopped and the container exits
non-zero so the orchestrator restarts it; if the supervisor itself is killed outright (SIGKILL, the OOM killer),
the kernel sends each worker SIGTERM (``PR_SET_PDEATHSIG``) instead of leaving it orphaned with the port open. The
service socket and each worker's private metrics socket are bound by the supervisor before any worker starts and
inherited, so no port is chosen late and lost to a race. Each worker's metrics are private (a counter per
process), so the supervisor serves them merged, with a ``worker`` label, on ``LIC_METRICS_PORT`` (default 9100): scrape that port,
not the service port, when ``LIC_WORKERS`` > 1 (``docker/docker-compose.gpu.yml`` does).
"""

from __future__ import annotations

import http.server
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: how long one scrape waits for a worker; a worker still loading its models has a listening socket whose
#: connections wait in the backlog, so without a bound a scrape of a starting container would hang
WORKER_SCRAPE_TIMEOUT_S = 2.0


# -- sizing --------------------------------------------------------------------------------------------------------
def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> Optional[float]:
    """CPUs allowed by the cgroup CPU quota (e.g. 2.5), or None when unlimited or unknown."""
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or 100_000)
        for folder in (root / "cpu", root / "cpu,cpuacct", root):
            quota_file, period_file = folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"
            if quota_file.is_file() and period_file.is_file():
                quota, period = int(quota_file.read_text()), int(period_file.read_text())
                return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs this container may keep busy: the affinity mask, capped by the quota (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.floor(limit))
    return max(1, cpus)


def count_gpus(timeout: float = 120.0) -> int:
    """GPUs torch sees, asked in a child process so this one never initialises CUDA before starting workers."""
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout, check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


@dataclass
class Plan:
    workers: int
    devices: List[str]
    threads: int
    env: Dict[str, str] = field(default_factory=dict)  # added to every worker's environment

    def describe(self) -> str:
        return f"{self.workers} worker(s) on {','.join(self.devices)}, {self.threads} thread(s) each"


def make_plan(env: Mapping[str, str], cpus: int, gpus: int) -> Plan:
    """Workers, their devices and thread counts (pure: the caller supplies CPUs and GPUs)."""
    device = env.get("LIC_DEVICE", "auto").strip() or "auto"
    use_gpus = device in ("auto", "cuda") and gpus > 0
    wanted = env.get("LIC_WORKERS", "auto").strip().lower() or "auto"
    if wanted == "auto":
        workers = gpus if use_gpus else 1
    else:
        workers = int(wanted)
        if workers < 1:
            raise ValueError(f"LIC_WORKERS must be 'auto' or >= 1, got {wanted!r}")
    if use_gpus:
        devices = [f"cuda:{i % gpus}" for i in range(workers)]
    else:
        devices = [device] * workers
    threads = max(1, cpus // workers)
    extra = {}
    for name in ("LIC_CODING_THREADS", "LIC_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if not env.get(name):
            extra[name] = str(threads)
    return Plan(workers=workers, devices=devices, threads=threads, env=extra)


# -- metrics of several workers, merged ------------------------------------------------------------------------------
def merge_metrics(texts: Mapping[str, str]) -> bytes:
    """Prometheus text of several workers (worker id -> text) as one exposition with a ``worker`` label."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: Dict[str, Metric] = {}
    for worker, text in texts.items():
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            for s in family.samples:
                merged.add_sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)

    class _Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


def _scrape(port: int) -> Optional[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WORKER_SCRAPE_TIMEOUT_S) as r:
            return r.read().decode()
    except OSError:
        return None


def _metrics_server(port: int, worker_ports: Dict[str, int]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            with ThreadPoolExecutor(max_workers=max(1, len(worker_ports))) as pool:
                scraped = dict(zip(worker_ports, pool.map(_scrape, worker_ports.values())))
            # a worker that is starting or gone simply has no samples this scrape
            body = merge_metrics({worker: text for worker, text in scraped.items() if text is not None})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- processes -------------------------------------------------------------------------------------------------------
def _log(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def _exit_with_the_supervisor() -> None:
    """Ask Linux for SIGTERM (a drain) when the supervisor dies, even by SIGKILL: an orphaned worker would keep the
    service port and a GPU busy with nobody to stop it (outside a container, where no PID namespace reaps it)."""
    supervisor = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers then outlive a killed supervisor
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        sys.exit(1)


def _run_worker(fd: int, private_fd: int) -> int:
    """A worker: the service app on the inherited shared socket and on its private loopback socket (for metrics).

    Both sockets are bound by the supervisor and inherited: a port chosen here, after the seconds it takes to import
    torch, could have been taken meanwhile (an outgoing connection gets any free ephemeral port).
    """
    import logging

    from service.server import serve
    from service.settings import load_settings

    _exit_with_the_supervisor()
    logging.basicConfig(
        level=os.environ.get("LIC_LOG_LEVEL", "info").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    shared = socket.socket(fileno=fd)
    private = socket.socket(fileno=private_fd)
    serve(load_settings(), sockets=[shared, private])
    return 0


def _supervise(plan: Plan, env: Dict[str, str]) -> int:
    host = env.get("LIC_HOST", "0.0.0.0")
    port = int(env.get("LIC_PORT", "8000"))
    metrics_port = int(env.get("LIC_METRICS_PORT", "9100"))
    listener = socket.create_server((host, port), backlog=2048)
    listener.set_inheritable(True)
    children: List[subprocess.Popen] = []
    stopping = {"signal": None}

    def forward(signum, frame):
        stopping["signal"] = signum
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # every port is bound before any worker starts: the kernel picks each worker's private (metrics) port and we
    # hold it from now on, so nothing can take it during the seconds a worker spends importing torch
    privates = [socket.create_server(("127.0.0.1", 0)) for _ in plan.devices]
    worker_ports = {str(i): private.getsockname()[1] for i, private in enumerate(privates)}
    metrics = _metrics_server(metrics_port, worker_ports)
    for device, private in zip(plan.devices, privates):
        worker_env = {**env, **plan.env, "LIC_DEVICE": device}
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker-fd",
            str(listener.fileno()),
            "--private-fd",
            str(private.fileno()),
        ]
        # own session: a terminal's Ctrl-C reaches the workers once (forwarded), not twice (which skips the drain)
        children.append(
            subprocess.Popen(
                cmd, env=worker_env, pass_fds=(listener.fileno(), private.fileno()), start_new_session=True
            )
        )
        private.close()  # the worker has its own copy
    _log(f"{plan.describe()}; service on {host}:{port}, merged metrics on :{metrics_port}/metrics")
    try:
        while True:
            codes = [child.poll() for child in children]
            if all(code is not None for code in codes):
                break
            if stopping["signal"] is None and any(code is not None for code in codes):
                _log(f"a worker exited on its own (codes {codes}); stopping the others")
                forward(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        metrics.shutdown()
        listener.close()
    codes = [code if code >= 0 else 128 - code for code in (child.returncode for child in children)]
    failed = next((code for code in codes if code), 0)
    if stopping["signal"] is None:  # a worker ended unasked: always a failure, so the orchestrator restarts us
        return failed or 1
    return failed


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker-fd"]:
        return _run_worker(int(argv[1]), int(argv[3]))
    env = dict(os.environ)
    device = env.get("LIC_DEVICE", "auto")
    gpus = count_gpus() if device in ("auto", "cuda") else 0
    plan = make_plan(env, available_cpus(), gpus)
    if argv[:1] == ["--print-plan"]:  # what this container would run, as JSON (for checks and debugging)
        print(json.dumps({"workers": plan.workers, "devices": plan.devices, "threads": plan.threads, "env": plan.env}))
        return 0
    if plan.workers == 1:
        env.update(plan.env)
        if plan.devices[0] != device:
            env["LIC_DEVICE"] = plan.devices[0]
        _log(plan.describe())
        os.execve(sys.executable, [sys.executable, "-m", "service", "serve", *argv], env)
    if argv:
        _log(f"ignoring arguments {argv}: with several workers, configure the service with LIC_* variables")
    return _supervise(plan, env)


if __name__ == "__main__":
    sys.exit(main())
