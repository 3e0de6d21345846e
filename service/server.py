"""Running the app under uvicorn with a graceful drain.

On the first SIGTERM/SIGINT the service stops admitting work (new requests get 503 ``draining``, ``/health/ready``
fails so a load balancer stops routing here) while in-flight requests finish, for at most ``drain_timeout_s``;
then uvicorn closes the listener and connections and the lifespan shutdown releases the pool. A second signal
skips the wait.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import List, Optional

import uvicorn

from service.app import create_app
from service.pipeline import CodecService
from service.settings import ServiceSettings

log = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: CodecService):
        super().__init__(config)
        self.service = service
        self._drain_requested: Optional[float] = None

    def handle_exit(self, sig: int, frame) -> None:
        # runs in a signal handler: only set flags here, the event loop acts on them in on_tick
        if self._drain_requested is None and not self.should_exit:
            self._drain_requested = time.monotonic()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested is not None and not self.should_exit:
            self.service.begin_drain()
            waited = time.monotonic() - self._drain_requested
            if self.service.idle or waited >= self.service.settings.drain_timeout_s:
                log.info("drained after %.2f s; shutting down", waited)
                self.should_exit = True
        return await super().on_tick(counter)


def uvicorn_config(
    app, settings: ServiceSettings, host: Optional[str] = None, port: Optional[int] = None, log_level: str = "info"
) -> uvicorn.Config:
    """The uvicorn settings the service runs with (the tests' servers use the same)."""
    return uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        lifespan="on",  # a startup failure (unknown model, missing weights) must stop the process
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
        log_level=log_level,
        access_log=False,  # service.access logs each request with its request id instead
        server_header=False,  # do not advertise the server software and version
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        limit_concurrency=settings.max_connections or None,
    )


def build_server(
    settings: ServiceSettings, host: Optional[str] = None, port: Optional[int] = None, log_level: str = "info"
) -> DrainingServer:
    app = create_app(settings)
    return DrainingServer(uvicorn_config(app, settings, host, port, log_level), app.state.service)


def serve(
    settings: ServiceSettings,
    host: Optional[str] = None,
    port: Optional[int] = None,
    log_level: str = "info",
    sockets: Optional[List[socket.socket]] = None,
) -> None:
    build_server(settings, host, port, log_level).run(sockets=sockets)
