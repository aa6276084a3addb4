"""yolo_operator.runtime.queue: coalescing, one worker per key, bounded workers, backoff and requeue-after."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
from yolo_operator.runtime.queue import Backoff, WorkQueue

pytestmark = pytest.mark.unit


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_key_added_many_times_while_it_waits_is_processed_once():
    seen: list[str] = []

    async def process(key: str) -> None:
        seen.append(key)

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=2)
        for _ in range(5):
            q.add("a")
        q.add("b")
        assert len(q) == 2
        q.start()
        await until(lambda: len(seen) == 2)
        await asyncio.sleep(0.05)
        await q.stop()

    run(main())
    assert sorted(seen) == ["a", "b"]


def test_a_key_added_while_processed_runs_again_afterwards_never_twice_at_once():
    running: Counter[str] = Counter()
    peak = 0
    runs = 0
    release = asyncio.Event()

    async def process(key: str) -> None:
        nonlocal peak, runs
        running[key] += 1
        peak = max(peak, running[key])
        runs += 1
        if runs == 1:
            await release.wait()
        running[key] -= 1

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=4)
        q.start()
        q.add("a")
        await until(lambda: runs == 1)
        for _ in range(3):
            q.add("a")  # the other workers are idle: still only one runs "a"
        await asyncio.sleep(0.05)
        assert runs == 1
        release.set()
        await until(lambda: runs == 2)
        await asyncio.sleep(0.05)
        await q.stop()

    run(main())
    assert peak == 1 and runs == 2  # the three adds while it ran: one more run


def test_at_most_the_given_number_of_workers_run_at_once():
    running = peak = done = 0

    async def process(key: int) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        done += 1

    async def main() -> None:
        q: WorkQueue[int] = WorkQueue(process, workers=3)
        q.start()
        for i in range(30):
            q.add(i)
        await until(lambda: done == 30)
        await q.stop()

    run(main())
    assert peak == 3


def test_keys_are_served_in_the_order_they_were_queued():
    order: list[int] = []

    async def process(key: int) -> None:
        order.append(key)

    async def main() -> None:
        q: WorkQueue[int] = WorkQueue(process, workers=1)
        for i in (3, 1, 2, 1, 3):
            q.add(i)
        q.start()
        await until(lambda: len(order) == 3)
        await q.stop()

    run(main())
    assert order == [3, 1, 2]


def test_keys_added_first_are_served_before_the_others_in_their_own_order():
    order: list[str] = []

    async def process(key: str) -> None:
        order.append(key)

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=1)
        for key in ("update-1", "update-2"):
            q.add(key)
        q.add("create-1", first=True)
        q.add("update-1")  # already queued: stays where it is
        q.add("create-2", first=True)
        q.add("update-2", first=True)  # queued for an update, now needing a creation: moves up
        assert len(q) == 4 and q.waiting_first() == 3
        q.start()
        await until(lambda: len(order) == 4)
        await q.stop()

    run(main())
    assert order == ["create-1", "create-2", "update-2", "update-1"]


def test_a_key_added_first_while_processed_runs_again_first():
    order: list[str] = []
    release = asyncio.Event()

    async def process(key: str) -> None:
        order.append(key)
        if key == "busy" and order.count("busy") == 1:
            await release.wait()

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=1)
        q.add("busy")
        q.start()
        await until(lambda: order == ["busy"])
        q.add("other")
        q.add("busy", first=True)  # while it runs: once more afterwards, ahead of "other"
        release.set()
        await until(lambda: len(order) == 3)
        await q.stop()

    run(main())
    assert order == ["busy", "busy", "other"]


def test_requeue_after_and_add_after():
    times: list[float] = []

    async def process(key: str) -> float | None:
        times.append(asyncio.get_running_loop().time())
        return 0.1 if len(times) == 1 else None

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=1)
        q.start()
        q.add("a")
        await until(lambda: len(times) == 2)
        assert 0.09 <= times[1] - times[0] < 0.5
        assert not q.waiting("a")  # None: not again
        t0 = asyncio.get_running_loop().time()
        q.add("a", after=0.3)
        q.add("a", after=0.1)  # the earliest wins
        q.add("a", after=0.5)
        assert q.waiting("a")
        await until(lambda: len(times) == 3)
        assert 0.09 <= times[2] - t0 < 0.25
        await asyncio.sleep(0.5)
        assert len(times) == 3  # one timer per key: the later ones were dropped
        await q.stop()

    run(main())


def test_add_now_supersedes_a_timer():
    times: list[float] = []

    async def process(key: str) -> None:
        times.append(asyncio.get_running_loop().time())

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=1)
        q.start()
        q.add("a", after=0.2)
        q.add("a")
        await until(lambda: len(times) == 1)
        await asyncio.sleep(0.4)
        assert len(times) == 1
        await q.stop()

    run(main())


def test_a_failing_key_is_retried_with_exponential_backoff_reset_by_success():
    times: list[float] = []

    async def process(key: str) -> None:
        times.append(asyncio.get_running_loop().time())
        if len(times) <= 3:
            raise RuntimeError("API server says no")

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=1, backoff=Backoff(base=0.05, cap=0.15),
                                      quiet_errors=(RuntimeError,))  # fmt: skip
        q.start()
        q.add("a")
        await until(lambda: len(times) == 4)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 0.045 <= gaps[0] < 0.1 and 0.095 <= gaps[1] < 0.2 and 0.145 <= gaps[2] < 0.25  # capped
        assert not q._failures  # success forgets the failures
        await asyncio.sleep(0.3)
        assert len(times) == 4
        await q.stop()

    run(main())


def test_backoff_delays():
    b = Backoff(base=1.0, cap=30.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]


def test_stop_cancels_workers_and_timers():
    seen: list[str] = []

    async def process(key: str) -> None:
        seen.append(key)

    async def main() -> None:
        q: WorkQueue[str] = WorkQueue(process, workers=2)
        q.start()
        q.add("later", after=0.1)
        await q.stop()
        await asyncio.sleep(0.2)

    run(main())
    assert seen == []
