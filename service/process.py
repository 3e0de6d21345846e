"""``python -m service`` in a child process: for load tests, benchmarks and tests that need signals or the
server's own memory figures (a server thread inside the caller's process shows neither).

    with ServiceProcess({"LIC_MODELS": '{"wacnn-small": [1]}'}) as server:
        httpx.get(server.url + "/v1/models")
        server.memory_kib("VmHWM")          # peak resident memory so far

``preload`` is Python run in the child before the service starts (tests register their tiny preset with it).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import httpx

ROOT = Path(__file__).resolve().parents[1]


#: where free_port looks: above the well-known and registered-service crowd, below the ephemeral range
_PORT_FLOOR = 15000


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port() -> int:
    """A port that is free on 127.0.0.1 now and that no *outgoing* connection will take before a server binds it.

    The usual trick (bind port 0, close, hand the number on) returns a port from the kernel's ephemeral range, the
    same pool every outgoing connection draws from: a server child that binds seconds later (after importing
    torch) can find it taken. Picking outside that range leaves only other explicit binders as competition.
    """
    for port in _ports_outside_the_ephemeral_range():
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the ephemeral range covers every port: nothing better to offer
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports_outside_the_ephemeral_range(tries: int = 200) -> List[int]:
    """Random candidates below the ephemeral range (above the crowd of well-known services when there is room)
    or above it; empty when the range covers everything."""
    ephemeral = _ephemeral_ports()
    floor = _PORT_FLOOR if ephemeral.start > _PORT_FLOOR + 1000 else 1024
    pools = [pool for pool in (range(floor, ephemeral.start), range(ephemeral.stop, 65536)) if len(pool)]
    rng = random.SystemRandom()
    return [rng.choice(rng.choice(pools)) for _ in range(tries)] if pools else []


class ServiceProcess:
    def __init__(
        self,
        env: Optional[Dict[str, str]] = None,
        preload: str = "",
        log_level: str = "warning",
        capture_stderr: bool = True,
        name: str = "service",
    ):
        self.name = name
        self.port = free_port()
        argv = ["service", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", log_level]
        launcher = (
            f"{preload}\nimport runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module('service', run_name='__main__')"
        )
        self.args = [sys.executable, "-c", launcher]
        self.env = {**os.environ, **(env or {})}
        self.capture_stderr = capture_stderr
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServiceProcess":
        stderr = subprocess.PIPE if self.capture_stderr else None
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stderr=stderr, text=True)
        return self

    def wait_ready(self, timeout_s: float = 600) -> "ServiceProcess":
        end = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                detail = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}: {detail}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name} server did not become ready in {timeout_s:g} s")
            time.sleep(0.1)

    def memory_kib(self, field: str = "VmHWM") -> int:
        """Resident memory of the server from /proc (Linux): ``VmRSS`` now, ``VmHWM`` the peak so far, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (a graceful drain), then SIGKILL if it does not exit in time; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode

    def __enter__(self) -> "ServiceProcess":
        return self.start().wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()
