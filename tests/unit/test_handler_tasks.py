"""The operator's own background tasks (coalesced status writes, CA-bundle rechecks) end with the operator."""

from __future__ import annotations

import asyncio

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
