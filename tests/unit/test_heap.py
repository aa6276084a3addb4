"""The heap trimmer (runtime/heap.py): once per interval in which the queue was handed keys, never while idle."""

import asyncio

import pytest
from yolo_operator.runtime import heap

pytestmark = pytest.mark.unit


def test_trims_once_per_busy_interval_and_never_while_idle():
    added = [0]
    trims: list[int] = []
    # each interval: what the queue was handed during it (the trimmer's sleep, played by a queue of ticks)
    intervals = [0, 0, 500, 1, 0, 0, 7]

    async def main() -> None:
        ticks: asyncio.Queue[int] = asyncio.Queue()
        for n in intervals:
            ticks.put_nowait(n)

        async def tick() -> None:
            if ticks.empty():
                await asyncio.Event().wait()  # the operator's run goes on; the test cancels it
            added[0] += ticks.get_nowait()

        task = asyncio.create_task(heap.trim_after_activity(lambda: added[0], lambda: trims.append(added[0]), tick))
        while not ticks.empty():
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert trims == [500, 501, 508]  # the burst's two intervals and the last one; none for the idle ones


def test_without_malloc_trim_the_trimmer_returns_at_once():
    asyncio.run(asyncio.wait_for(heap.trim_after_activity(lambda: 0, None), 1))


def test_glibc_trim_runs_here():
    trim = heap.malloc_trim()
    assert trim is not None, "this machine's libc is glibc"
    assert trim() in (0, 1)  # malloc_trim returns whether memory was released
