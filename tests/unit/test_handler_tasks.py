"""The operator's own background tasks (coalesced status writes, CA-bundle rechecks) end with the operator."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from yolo_operator import handlers

pytestmark = pytest.mark.unit


def test_cleanup_cancels_the_pending_status_and_recheck_tasks():
    async def main() -> None:
        obs = object()  # never read: both tasks are still waiting when the operator stops
        handlers.sync_status_soon("ns", "a", obs)
        handlers.recheck_ca_bundle_while_pending("ns", "b", obs)
        tasks = [*handlers._sync_tasks, *handlers._rechecks.values()]
        assert len(tasks) == 2
        await asyncio.sleep(0.1)  # both are in their first sleep, as when kopf stops the operator
        await handlers.cleanup()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        assert all(t.cancelled() for t in tasks)
        # No task woke after the client was closed to open another one.
        assert handlers._api_client is None
        assert not handlers._syncing and not handlers._rechecks and not handlers._sync_tasks

    asyncio.run(main())


class _Cause:
    """Stands for kopf's cause of a handler call: it holds the event's whole body."""


def test_the_tasks_a_handler_starts_do_not_keep_its_cause_alive():
    """kopf puts the cause of a handler call (body, patch, logger) in a context variable, and a task copies its
    creator's context: a status task waiting out a burst of creations kept its event's body alive."""
    import gc
    import weakref

    from kopf._core.actions.execution import cause_var
    from kopf._core.engines.posting import settings_var

    async def main() -> None:
        obs = object()
        settings = object()

        def handler() -> weakref.ref:  # what kopf does around a handler call
            cause = _Cause()
            cause_var.set(cause)
            settings_var.set(settings)
            handlers.sync_status_soon("ns", "a", obs)
            handlers.recheck_ca_bundle_while_pending("ns", "b", obs)
            return weakref.ref(cause)

        cause = contextvars.copy_context().run(handler)
        tasks = [*handlers._sync_tasks, *handlers._rechecks.values()]
        assert len(tasks) == 2 and not any(t.done() for t in tasks)
        gc.collect()
        assert cause() is None, "a waiting task still references the handler's cause"
        # what kopf.info needs from the handler's context is still there
        def detached_in_handler() -> contextvars.Context:
            settings_var.set(settings)
            return handlers.detached_context()

        assert contextvars.copy_context().run(detached_in_handler).get(settings_var) is settings
        await handlers.cleanup()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_a_burst_of_new_trainingjobs_runs_at_most_ENSURE_CONCURRENCY_ensure_handlers_at_once(monkeypatch):
    """The others wait before they parse or build anything: what the handlers in flight hold is the heap's peak."""
    import logging

    running = peak = 0

    async def fake_ensure(body, name, namespace, obs):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return {"skipped": "test"}

    monkeypatch.setattr(handlers, "_ensure", fake_ensure)
    n = handlers.ENSURE_CONCURRENCY * 3

    async def main() -> None:
        log = logging.getLogger("test")
        await asyncio.gather(*(handlers.ensure(body={}, name=f"t{i}", namespace="ns", logger=log) for i in range(n)))

    asyncio.run(main())
    asyncio.run(main())  # a second operator run (another loop) gets its own slots
    assert peak == handlers.ENSURE_CONCURRENCY
