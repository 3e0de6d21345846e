#!/usr/bin/env python3
"""Docker HEALTHCHECK: exit 0 when ``/health/live`` answers 200 on this container's service port, else 1.

Liveness only (the process is up and its event loop answers): a container that is still warming up or draining
is alive but not ready, and restarting it would only make things worse. Readiness is the load balancer's business
(``/health/ready``, used by the Kubernetes readiness probe).
"""

import os
import sys
import urllib.request

port = os.environ.get("LIC_PORT", "8000")
try:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/health/live", timeout=float(sys.argv[1]) if len(sys.argv) > 1 else 3
    ) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
