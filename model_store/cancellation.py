"""Cooperative cancellation of codec work that runs in threads.

Why: the service runs transforms and entropy coding in executor threads, and Python cannot stop a thread. Before
this, a request whose deadline passed (504) or whose client went away kept its thread busy until the work was
done: a 2 KB PNG declaring 4000x4000 pixels burned ~40 s of CPU and 4 GB of memory after its 504. Now the long
loops call :func:`check` at their natural boundaries (between tiles of g_a/g_s, between wavefront steps or channel
slices of the entropy coder, between the stages of a request), and raise :class:`Cancelled` once the work's token
is cancelled or past its deadline, so the thread is free again within one tile or step.

The token is bound to the *thread* doing the work (:func:`bound`), so the codec and the architectures need no extra
parameter on every call; work that nobody bound a token to (the CLI, training, tests) is never cancelled.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator, Optional, Sequence

from model_store.errors import ModelStoreError


class Cancelled(ModelStoreError):
    """The work was abandoned: its deadline passed or every caller waiting for it went away (the service answers
    504 ``deadline_exceeded``; usually it already has, and nobody reads this)."""

    code = "cancelled"


class CancelToken:
    """Cancelled explicitly (:meth:`cancel`) or implicitly once ``time.monotonic()`` passes ``deadline``."""

    def __init__(self, deadline: Optional[float] = None):
        self.deadline = deadline
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = self.reason or reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.cancel("deadline passed")
            return True
        return False

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled(f"work abandoned: {self.reason}")


class AllOf(CancelToken):
    """Cancelled when every one of ``tokens`` is: a batch shared by several requests goes on while one still
    waits for it (a token of ``None`` is never cancelled, so a batch holding one keeps running)."""

    def __init__(self, tokens: Sequence[Optional[CancelToken]]):
        super().__init__()
        self.tokens = list(tokens)

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self.tokens and all(t is not None and t.cancelled for t in self.tokens):
            self.cancel("every request of the batch was abandoned")
            return True
        return False


_local = threading.local()


def current() -> Optional[CancelToken]:
    """The token bound to this thread, if any."""
    return getattr(_local, "token", None)


@contextlib.contextmanager
def bound(token: Optional[CancelToken]) -> Iterator[None]:
    """Bind ``token`` to this thread for the block (``None``: nothing to cancel), restoring the previous one."""
    before = current()
    _local.token = token
    try:
        yield
    finally:
        _local.token = before


def check() -> None:
    """Raise :class:`Cancelled` if this thread's work was cancelled; a no-op when no token is bound."""
    token = current()
    if token is not None:
        token.check()
