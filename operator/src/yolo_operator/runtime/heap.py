"""Giving freed memory back to the system after a burst.

A burst of watch events (thousands of TrainingJobs created at once, their Jobs' and pods' events) is decoded into
Python objects that are freed once handled, but glibc's malloc keeps the pages it got for them: the process's RSS
stays at the burst's peak (bench/README.md: 271 MiB, 195 MiB after ``malloc_trim(0)``, with 5,000 TrainingJobs).
So, every ``TRIM_INTERVAL_SECONDS`` in which the work queue was handed keys, the heap is trimmed once (glibc
returns the free pages of every arena): milliseconds of one core while the operator is busy, nothing while idle.
Where the C library has no ``malloc_trim`` (musl, macOS), nothing is trimmed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("yolo_operator.runtime.heap")

TRIM_INTERVAL_SECONDS = 10.0


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


async def trim_after_activity(activity: Callable[[], int], trim: Callable[[], object] | None,
                              tick: Callable[[], Awaitable[object]] | None = None) -> None:  # fmt: skip
    """Runs until cancelled: after each ``tick`` (``TRIM_INTERVAL_SECONDS`` of sleep) in which ``activity()`` (a
    count that only grows) moved, ``trim()`` once."""
    if trim is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the process")
        return
    tick = tick or (lambda: asyncio.sleep(TRIM_INTERVAL_SECONDS))
    seen = activity()
    while True:
        await tick()
        now = activity()
        if now != seen:
            seen = now
            trim()
