"""Give freed heap memory back to the operating system after large requests (the service's side of it).

Why: glibc's malloc keeps memory a thread freed in that thread's arena for reuse instead of returning it, and the
tile threads, coding threads and network thread each have arenas. After a 12 MP request (or one abandoned at its
deadline) the server's resident memory stayed ~0.5-1 GiB above idle, and grew with each large request, which a
pod's memory limit counts. ``malloc_trim(0)`` returns the free pages of every arena: measured in-process after three
abandoned 4000x4000 requests, RSS went from 2.0 GiB back to 0.98 (idle after warm-up: 1.2). The primitive lives in
:mod:`model_store.heap` (the codec also trims between its own phases); here the service trims once a request's
objects are gone.
"""

from __future__ import annotations

import asyncio

from model_store.heap import TRIM_FROM_PIXELS, trim_heap

#: abandoned work stops at its next layer or wavefront step (a fraction of a second): trim again after that
LATE_TRIM_S = 0.5


class HeapTrimMiddleware:
    """After a request on a large image is answered and its handler's objects (the decoded image, the latent) are
    gone, collect and trim the heap, and once more ``LATE_TRIM_S`` later, when work the request abandoned at its
    deadline has stopped too. The executor threads trim when their part of the work ends (``trim_after_large``),
    but the handler frees its arrays only after that, on the event loop's thread. The size comes from the
    request's ASGI state (``pixels``, set by the codec routes)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope.get("state", {}).get("pixels", 0) >= TRIM_FROM_PIXELS:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, trim_heap, True)
                loop.call_later(LATE_TRIM_S, loop.run_in_executor, None, trim_heap, True)
