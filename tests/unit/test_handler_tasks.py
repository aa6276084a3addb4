"""The controller's work (its queue's workers and timers) ends with the operator; the watch handlers only queue
keys, holding no event body; at most ENSURE_CONCURRENCY reconciles run at once."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from yolo_operator.controller import act as C
from yolo_operator.runtime import wiring as handlers
from yolo_operator.runtime.config import OperatorConfig

pytestmark = pytest.mark.unit


class FakeClient:
    """Stands for kube.Client: records that it was closed; any request fails the test."""

    closed = False

    async def close(self) -> None:
        self.closed = True

    async def request(self, *args, **kwargs):
        raise AssertionError(f"unexpected request {args}")

    get = get_or_none = create = merge_patch = request


def make(**kw) -> C.Controller:
    return C.Controller(OperatorConfig(), FakeClient(), **kw)  # type: ignore[arg-type]


def test_cleanup_stops_the_workers_and_the_requeue_timers_before_closing_the_client():
    async def main() -> None:
        c = make()
        handlers.CONTROLLER = c
        c.start()
        ran: list[tuple[str, str]] = []

        async def reconcile(key):
            ran.append(key)

        c.queue._process = reconcile
        c.enqueue(("ns", "a"), after=0.2)  # as a pod event: a moment later
        c.enqueue(("ns", "b"), after=20)  # as the CA-bundle recheck
        workers = list(c.queue._workers)
        await asyncio.sleep(0.05)
        await handlers.cleanup()
        assert all(t.cancelled() for t in workers)
        await asyncio.sleep(0.3)
        assert ran == []  # no timer fired after the operator stopped (nor opened another client)
        assert c.client.closed and handlers.CONTROLLER is None
        assert not c.queue._timers

    asyncio.run(main())


class _Body(dict):
    """Stands for the event's body (weakly referenceable)."""


def test_the_watch_handlers_queue_only_the_key_and_keep_no_body_alive():
    """kopf hands each handler the event's whole body: a handler that waited (or started a task that waited) for
    its turn kept it alive; under a burst of new TrainingJobs that was most of the heap."""

    async def main() -> None:
        c = make()
        handlers.CONTROLLER = c  # not started: the keys stay queued, as behind busy workers
        refs = []
        for i in range(3):
            body = _Body(metadata={"name": f"p{i}", "labels": {"yolo-operator.io/training-job": "a"}})
            await handlers.pod_event(body=body, namespace="ns")
            refs.append(weakref.ref(body))
            tj = _Body(metadata={"name": "b"}, status={})
            await handlers.trainingjob_event(event={"type": "ADDED"}, body=tj, name="b", namespace="ns")
            refs.append(weakref.ref(tj))
            del body, tj
        gc.collect()
        assert all(r() is None for r in refs), "a queued key still references its event's body"
        assert c.queue.waiting(("ns", "a")) and c.queue.waiting(("ns", "b"))
        assert len(c.queue) == 1  # "b" three times: once; "a" waits for its coalescing timer
        await c.stop()
        handlers.CONTROLLER = None

    asyncio.run(main())


def test_a_burst_of_new_trainingjobs_runs_at_most_ENSURE_CONCURRENCY_reconciles_at_once():
    """The others wait as keys, before they parse or build anything: what the reconciles in flight hold is the
    heap's peak."""
    running = peak = done = 0
    n = C.ENSURE_CONCURRENCY * 3

    async def observe(key, fresh=False):
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        done += 1
        return C.Snapshot(*key, None)  # gone: nothing to do

    async def main() -> None:
        c = make()
        c.observe = observe  # type: ignore[method-assign]
        c.start()
        for i in range(n):
            c.enqueue(("ns", f"t{i}"))
        while done < n:
            await asyncio.sleep(0.01)
        await c.stop()

    asyncio.run(main())
    done = 0
    asyncio.run(main())  # a second operator run (another loop) gets its own workers
    assert peak == C.ENSURE_CONCURRENCY


@pytest.mark.parametrize(
    ("namespaces", "scanning_disabled"),
    [("", False), ("team-a", True), ("team-a,team-b", True), ("team-*", False), ("team-a,!kube-system", False)],
)
def test_named_namespaces_start_watching_without_listing_namespaces(namespaces, scanning_disabled):
    """A namespaced install (no RBAC to list namespaces) would otherwise wait out kopf's retries of the refusal."""
    import kopf

    settings = kopf.OperatorSettings()
    handlers.configure(settings, OperatorConfig.from_env({"YOLO_OPERATOR_NAMESPACES": namespaces}))
    assert settings.scanning.disabled is scanning_disabled


def test_the_event_watch_asks_the_api_server_for_pod_refusals_only():
    """The events watch carries a field selector of exactly what ``is_pod_refusal`` accepts: the namespace's other
    Events (FailedScheduling, SuccessfulCreate, the operator's own) never reach the operator."""
    import kopf
    from yolo_operator.runtime.indexes import POD_REFUSAL_SELECTOR, is_pod_refusal

    settings = kopf.OperatorSettings()
    handlers.configure(settings, OperatorConfig.from_env({"YOLO_OPERATOR_NAMESPACES": "team-a"}))
    (selector,) = settings.watching.field_selectors.collect(kopf.Resource("", "v1", "events"))
    assert selector == POD_REFUSAL_SELECTOR == "reason=FailedCreate,involvedObject.kind=Job"
    fields = dict(part.split("=") for part in selector.split(","))
    event = {"reason": fields["reason"], "involvedObject": {"kind": fields["involvedObject.kind"], "name": "j"}}
    assert is_pod_refusal(event)
    assert not is_pod_refusal({**event, "reason": "FailedScheduling"})
    assert not settings.watching.field_selectors.collect(kopf.Resource("", "v1", "pods"))
