"""Return freed heap memory to the operating system after work on a large image.

Why: glibc's malloc keeps what a thread freed in that thread's arena, and the codec's phases run on different
threads (g_a / g_s tiles on workers, the entropy path on the caller). Memory freed by one phase is then not reused
by the next, and the process's peak is their sum: decompressing a 50 MP photo peaked at 2.1 GiB above idle while
at most 1.07 GiB was live. ``malloc_trim(0)`` hands the free pages of every arena back; it walks the heap (a few
ms), so it runs only after work on images of at least :data:`TRIM_FROM_PIXELS`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import Callable, Optional

#: work on images with at least this many pixels trims the heap when it ends (smaller ones leave little behind)
TRIM_FROM_PIXELS = 2_000_000


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None on a libc without it (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap(collect: bool = False) -> bool:
    """Return freed heap memory to the OS now; False where the C library cannot. ``collect`` first runs Python's
    cycle collector: an exception that stopped abandoned work keeps that work's frames (and their arrays) alive in
    a reference cycle until the collector runs."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trim_after_large(pixels: int) -> None:
    """Trim when work on an image of ``pixels`` has just ended (finished, failed or abandoned)."""
    if pixels >= TRIM_FROM_PIXELS:
        trim_heap()
