"""A keyed, coalescing work queue with a fixed number of workers: client-go's workqueue, in asyncio.

* ``add(key)`` queues a key once: adding it again while it waits changes nothing (its events coalesce), and a key
  added while a worker processes it is processed once more afterwards, never by two workers at once.
* ``add(key, after=s)`` queues it in ``s`` seconds (one timer per key; the earliest wins, and ``add(key)`` now
  supersedes it: every run of ``process`` says anew when it wants the key again).
* ``process(key)`` returns a requeue-after (seconds) or None; an exception requeues the key with exponential
  backoff (``Backoff``), reset by the next success.
* Keys are taken in the order they were queued: under a burst, the keys queued first are served first.
* ``add(key, first=True)`` queues it ahead of every key queued without it (in order among themselves): the
  controller's keys that still need their Job, so that under a burst creations are not kept waiting behind
  status updates of jobs already created.

No kopf here: the event handlers only call ``add``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("yolo_operator.runtime.queue")


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th consecutive retry of a failing key: base * 2**(n-1), at most ``cap``."""

    base: float = 1.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.base * 2 ** max(failures - 1, 0), self.cap)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], Awaitable[float | None]],
        *,
        workers: int,
        backoff: Backoff = Backoff(),
        quiet_errors: tuple[type[BaseException], ...] = (),
    ):
        """``quiet_errors``: exceptions logged in one line (expected: an API error); others with a traceback."""
        self._process = process
        self._workers_wanted = workers
        self._backoff = backoff
        self._quiet = quiet_errors
        self._first: deque[K] = deque()  # served before _ready
        self._ready: deque[K] = deque()
        self._queued: set[K] = set()  # in _first or _ready
        self._active: set[K] = set()  # a worker has it
        self._dirty: set[K] = set()  # added while active: processed again when done
        self._dirty_first: set[K] = set()  # ... and queued first then
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}  # key -> (due, handle)
        self._failures: dict[K, int] = {}
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self.added = 0  # calls of add(), ever: how busy the watches have been (runtime/heap.py)

    # --- adding ------------------------------------------------------------------------------------------

    def add(self, key: K, after: float = 0.0, first: bool = False) -> None:
        self.added += 1
        if after > 0:
            self._add_later(key, after)
            return
        self._cancel_timer(key)
        if key in self._active:
            self._dirty.add(key)
            if first:
                self._dirty_first.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            (self._first if first else self._ready).append(key)
            self._signal()
        elif first and key in self._ready:  # rare: queued for an update, now needing a creation
            self._ready.remove(key)
            self._first.append(key)

    def _add_later(self, key: K, after: float) -> None:
        if key in self._queued:
            return  # it runs before the timer would fire anyway
        loop = asyncio.get_running_loop()
        due = loop.time() + after
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _cancel_timer(self, key: K) -> None:
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    def _signal(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # --- state, for tests and metrics ---------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys waiting for a worker (not those waiting for a timer)."""
        return len(self._first) + len(self._ready)

    def waiting_first(self) -> int:
        """Keys queued with ``first=True`` waiting for a worker."""
        return len(self._first)

    def waiting(self, key: K) -> bool:
        """Queued now or by a timer."""
        return key in self._queued or key in self._timers

    def forget(self, key: K) -> None:
        """The key's object is gone: drop its timer and failure count (a run in progress still ends)."""
        self._cancel_timer(key)
        self._failures.pop(key, None)

    # --- workers -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the workers in the running loop (its context is theirs: start it from a long-lived task)."""
        if self._workers:
            return
        self._wakeup = asyncio.Event()
        if self:
            self._wakeup.set()
        self._workers = [
            asyncio.get_running_loop().create_task(self._work(), name=f"workqueue worker {i}")
            for i in range(self._workers_wanted)
        ]

    async def stop(self) -> None:
        for t in self._workers:
            t.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _next(self) -> K:
        assert self._wakeup is not None
        while not self:
            self._wakeup.clear()
            await self._wakeup.wait()
        key = (self._first or self._ready).popleft()
        self._queued.discard(key)
        if self:
            self._wakeup.set()  # more for the other workers
        return key

    async def _work(self) -> None:
        while True:
            key = await self._next()
            self._active.add(key)
            try:
                requeue = await self._run(key)
            finally:
                self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                first = key in self._dirty_first
                self._dirty_first.discard(key)
                self.add(key, first=first)
            elif requeue is not None:
                self.add(key, after=requeue)

    async def _run(self, key: K) -> float | None:
        try:
            requeue = await self._process(key)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = self._backoff.delay(failures)
            if isinstance(e, self._quiet):
                log.warning("%s failed (%d in a row), retrying in %.1fs: %s", key, failures, delay, e)
            else:
                log.exception("%s failed (%d in a row), retrying in %.1fs", key, failures, delay)
            return delay
        self._failures.pop(key, None)
        return requeue
