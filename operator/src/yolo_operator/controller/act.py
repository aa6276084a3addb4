"""The controller: one level-triggered reconcile per TrainingJob key, run by a work queue.

``reconcile(key)`` observes one snapshot of the TrainingJob (``observe``: the kopf indexes, a GET only to
confirm an absence or to read what no watch holds), decides (``reconcile.decide``, pure) and acts (``act``:
the only code here that writes to the API server). The watch events only queue keys (``enqueue``), so:

* a TrainingJob is reconciled by one worker at a time, and the events that come meanwhile make one more run;
* at most ``workers`` reconciles run at once (the connection pool's size): under a burst of new TrainingJobs
  the others wait as keys, holding nothing;
* a TrainingJob that still needs its Job is queued ahead of those that need only a status update (``first``),
  so under a burst the new TrainingJobs get their Jobs first, and their Jobs' and pods' events are settled
  afterwards;
* the reconcile that creates a Job also writes the status that records it, unless other TrainingJobs wait for
  their Jobs: then the status and the events (JobCreated among them) are written on the key's next run, queued
  behind them (creates first: the status says Pending meanwhile, as it would while the Job was being created);
* an error retries the key with exponential backoff; a decision to look again later is a requeue-after.

No kopf here: ``runtime/wiring.py`` wires the watches to ``enqueue`` and builds the one Controller.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from yolo_operator import GROUP, PLURAL, VERSION
from yolo_operator.api import reasons as R
from yolo_operator.api.types import clean_status
from yolo_operator.controller.build import LABEL_TRAINING_JOB, nodes_of, operator_instance
from yolo_operator.controller.decide import (
    Event,
    Plan,
    Snapshot,
    decide,
    decide_status,
    invalid_spec,
    owned_by,
)
from yolo_operator.controller.derive import (
    ca_bundle_ref,
    events_for,
    job_failed,
    job_view,
    needs_children,
    pod_view,
    terminated_state,
    waiting_to_create,
)
from yolo_operator.controller.kueue import KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS, served_versions
from yolo_operator.runtime import kube, metrics
from yolo_operator.runtime.config import OperatorConfig
from yolo_operator.runtime.indexes import Key, Observed, Overlay
from yolo_operator.runtime.kube import ApiError
from yolo_operator.runtime.queue import Backoff, WorkQueue

if TYPE_CHECKING:
    from yolo_operator.runtime.kube import Client

log = logging.getLogger("yolo_operator")

# Concurrent reconciles, and the most connections they hold (the client's pool: a reconcile creating a Job's
# RBAC side by side waits for free ones). Enough to keep a 2-core API server busy (bench/README.md) without holding
# hundreds of connections open; the rest wait in the queue as keys.
POOL_SIZE = 32
ENSURE_CONCURRENCY = POOL_SIZE
# How long a Job's or pod's event waits for more of the same TrainingJob's events before its reconcile: a Job's
# and its pod's events come in bursts (created, pod created, scheduled, started), and one status write follows
# them all instead of one per event.
STATUS_COALESCE_SECONDS = 0.5
# A status write refused with 409 (the TrainingJob changed since it was read) is decided again from a fresh
# GET, this many times in all; then the queue's backoff takes over.
STATUS_WRITE_ATTEMPTS = 5
# Errors that are expected now and then (the API server busy, restarting, refusing): logged in one line.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ApiError, aiohttp.ClientError, TimeoutError)
MAX_EVENT_MESSAGE = 1024
COMPONENT = "yolo-operator"


class Conflict(Exception):
    """A status write lost a race (409): decided again from a fresh read."""


def tj_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return kube.path(f"{GROUP}/{VERSION}", PLURAL, namespace, name, subresource)


class Controller:
    """Everything the operator holds: its configuration, its API client, the kopf indexes (``observed``, with the
    overlay of its own writes) and the work queue."""

    def __init__(self, config: OperatorConfig, client: Client, *, workers: int = ENSURE_CONCURRENCY,
                 backoff: Backoff | None = None):  # fmt: skip
        self.config = config
        self.client = client
        self.overlay = Overlay()
        # The Kueue Workload versions the cluster serves (detect_kueue, at start); None: no Kueue installed
        self.kueue_served: tuple[str, ...] | None = None
        self.observed = Observed(overlay=self.overlay)  # the indexes, once the first event hands them over
        # Keys whose RBAC and Job this operator created under a burst, until the status that records the Job
        # is written (the next run does not make sure of the RBAC again), and the events that wait for that write
        self.children_made: set[Key] = set()
        self.deferred_events: dict[Key, list[Event]] = {}
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=workers, backoff=backoff or Backoff(),
                                               quiet_errors=EXPECTED_ERRORS)  # fmt: skip

    # --- events in ---------------------------------------------------------------------------------------

    def watching(self, observed: Observed) -> None:
        """The kopf indexes (the same objects for every handler call of an operator run)."""
        if self.observed.tj_idx is None:
            self.observed = replace(observed, overlay=self.overlay)

    def enqueue(self, key: Key, after: float = 0.0, first: bool = False) -> None:
        """``first``: the TrainingJob needs its Job (served before keys that need only a status update)."""
        self.queue.add(key, after=after, first=first)

    def forget(self, key: Key) -> None:
        """The TrainingJob is gone."""
        self.overlay.forget(*key)
        self.queue.forget(key)
        self.children_made.discard(key)
        self.deferred_events.pop(key, None)
        metrics.observe_phase(*key, None)
        metrics.JOBS.observe(*key, None)

    def start(self) -> None:
        self.queue.start()

    async def detect_kueue(self) -> None:
        """Which kueue.x-k8s.io versions the cluster serves (API discovery, which every authenticated client may
        read). Asked once, at start: after upgrading Kueue, restart the operator. A failed request is logged and
        taken for "no Kueue", the behaviour from before this check."""
        try:
            group = await self.client.get_or_none(f"/apis/{KUEUE_GROUP}")
        except EXPECTED_ERRORS as e:
            log.warning("Kueue API discovery failed (%s); going on as without Kueue", e)
            return
        self.kueue_served = served_versions(group)
        if self.kueue_served is not None:
            log.info("Kueue serves %s", ", ".join(f"{KUEUE_GROUP}/{v}" for v in self.kueue_served))

    async def stop(self) -> None:
        await self.queue.stop()
        await self.client.close()

    # --- reconcile ---------------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """Observe, decide, act; returns the requeue-after. A status write that lost a race is decided again
        from a fresh GET of the TrainingJob (creates are idempotent, so acting again is safe)."""
        with metrics.timed("reconcile"):
            for attempt in range(STATUS_WRITE_ATTEMPTS):
                snapshot = await self.observe(key, fresh=attempt > 0)
                plan = decide(snapshot, self.config)
                level = logging.DEBUG if plan.idle else logging.INFO
                log.log(level, "%s/%s ensure: %s", *key, plan.outcome)
                try:
                    await self.act(snapshot, plan)
                except Conflict:
                    self.overlay.forget_written(*key)
                    continue
                return plan.requeue_after
            raise ApiError(409, "Conflict", f"status of {key[0]}/{key[1]} changed under {STATUS_WRITE_ATTEMPTS} writes")

    async def observe(self, key: Key, fresh: bool = False) -> Snapshot:
        """One snapshot of the TrainingJob from the indexes; requests only where they cannot say: the whole
        TrainingJob when the index lacks it, a Job the index says is gone although the status names it, the pods
        of a failed Job when no pod says why yet, the source of a fromTrainingJob model, the CA bundle's
        ConfigMap while the newest pod waits to mount it."""
        namespace, name = key
        obs = self.observed
        tj = await self.get_trainingjob(namespace, name) if fresh else obs.trainingjob(namespace, name)
        if tj is None or operator_instance(tj) != self.config.instance:
            return Snapshot(namespace, name, tj)
        status = tj.get("status") or {}
        terminal = status.get("phase") in R.TERMINAL_PHASES
        body = None
        if needs_children(tj):
            body = (tj if fresh else obs.body(namespace, name)) or await self.get_trainingjob(namespace, name)
            if body is None:
                return Snapshot(namespace, name, None)
        uid = (tj.get("metadata") or {}).get("uid")
        job = obs.job(namespace, name, uid)
        if job is None and status.get("jobName") and not terminal:
            # the index says gone: confirm before failing the TrainingJob for it
            found = await self.client.get_or_none(kube.path("batch/v1", "jobs", namespace, status["jobName"]))
            job = job_view(found) if found is not None else None
        service = obs.service(namespace, name, uid) if nodes_of(tj) > 1 else None
        if job is None or not owned_by(job, uid):
            source = await self._source(namespace, body) if body is not None and job is None else None
            return Snapshot(namespace, name, tj, body=body, job=job, source=source, kueue_served=self.kueue_served,
                            service=service)  # fmt: skip
        job_uid = job["metadata"].get("uid")
        source = None
        if body is not None and not job.get("model") and not status.get("jobName"):
            # a Job of the previous release, not recorded yet, tells no model: its spec's source does (adopted_model)
            source = await self._source(namespace, body)
        pods = obs.pods(namespace, name, job_uid)
        if job_failed(job) and not terminal and not any(map(terminated_state, pods)):
            # The pod watch may lag the Job's: list the pods once, so that the failure is reported (and
            # announced) with the trainer's exit code and message rather than the Job's generic reason.
            pods = [pod_view(p) for p in await self._list_pods(namespace, name) if owned_by(p, job_uid)]
        queued = (tj.get("spec") or {}).get("queueName")
        workload = obs.workload(namespace, job["metadata"]["name"], job_uid) if queued else None
        return Snapshot(namespace, name, tj, body=body, job=job, pods=tuple(pods), workload=workload, source=source,
                        missing_ca_bundle=await self.missing_ca_bundle(tj, pods),
                        refused=obs.refusal(namespace, name, job_uid) if not pods else None,
                        kueue_served=self.kueue_served, service=service,
                        children_made=key in self.children_made)  # fmt: skip

    async def act(self, s: Snapshot, plan: Plan) -> None:
        """Carries out the plan: creates, then patches, then the status, then the events."""
        if s.tj is None:
            return
        key = (s.namespace, s.name)
        deferred = self.deferred_events.pop(key, [])
        try:
            events = await self._act(s, plan, deferred)
        except BaseException:
            if deferred:  # a Conflict decided again, an error retried: the events wait for that run
                self.deferred_events[key] = deferred
            raise
        for event in events:
            await self.post_event(s.tj, event)

    async def _act(self, s: Snapshot, plan: Plan, deferred: list[Event]) -> list[Event]:
        """``act`` but the events: returns those to post (``deferred``, the created Job's, the plan's)."""
        assert s.tj is not None
        if plan.create:
            made = await self._create(s, plan, deferred)
            if isinstance(made, Plan):  # the Job was refused: what to write instead
                plan = made
            elif made is not None:
                if self.queue.waiting_first():
                    # A burst: other TrainingJobs wait for their Jobs. Creates first; the status that records
                    # this Job and its events are written on this key's next run, queued behind them.
                    self.deferred_events[(s.namespace, s.name)] = deferred
                    self.children_made.add((s.namespace, s.name))
                    self.queue.add((s.namespace, s.name))
                    return []
                # the Job exists now: the status that records it, in this reconcile
                pods = tuple(self.observed.pods(s.namespace, s.name, made["metadata"].get("uid")))
                plan = replace(plan, status=decide_status(replace(s, job=made, pods=pods)))
        if plan.job_patch is not None and s.job is not None:
            await self.client.merge_patch(kube.path("batch/v1", "jobs", s.namespace, s.job["metadata"]["name"]),
                                          plan.job_patch)  # fmt: skip
        if plan.workload_patch is not None and s.workload is not None:
            path = kube.path(f"{KUEUE_GROUP}/{KUEUE_VERSION}", KUEUE_WORKLOADS, s.namespace,
                             s.workload["metadata"]["name"])  # fmt: skip
            try:
                await self.client.merge_patch(path, plan.workload_patch)
            except ApiError as e:
                if e.status != 404:
                    raise  # 404: Kueue replaced or removed it; its successor's event brings the key back
        events = [*deferred, *plan.events]
        if plan.status:
            written = await self.write_status(s, plan)
            if written and plan.status.get("jobName"):
                self.children_made.discard((s.namespace, s.name))
            if written and plan.announce:
                events += [Event(*e) for e in events_for(s.tj.get("status"), plan.status)]
            if written and "phase" in plan.status:
                metrics.observe_phase(s.namespace, s.name, plan.status["phase"])
        return events

    async def _create(self, s: Snapshot, plan: Plan, events: list[Event]) -> dict[str, Any] | Plan | None:
        """Creates the plan's objects (409: exists): what the Job needs (its ServiceAccount and RBAC, a multi-node
        job's Service) side by side, as nothing among them depends on another, then the Job, so a new
        TrainingJob waits two round trips instead of four. Returns the Job (a view) when the plan made it or found
        it made and its own, an InvalidSpec plan when the API server refused it, else None. The Job's JobCreated
        event is appended to ``events`` (posted by the caller, after the status)."""
        assert s.tj is not None
        needed = [obj for obj in plan.create if obj["kind"] != "Job"]
        if needed:
            await asyncio.gather(*map(self.create_if_absent, needed))
        job = next((obj for obj in plan.create if obj["kind"] == "Job"), None)
        if job is None:
            return None
        try:
            new = await self.create_if_absent(job)
        except ApiError as e:
            if e.status not in (400, 422):
                raise
            # Admitted TrainingJob, refused Job (a free-form affinity, ...): the same spec is refused again.
            return invalid_spec(s.tj, f"the API server refused the Job built from the spec: {e.message}", s.now)
        jname = job["metadata"]["name"]
        if new is not None:
            metrics.JOBS_CREATED.inc()
            events.append(Event("Normal", "JobCreated", f"created Job {jname} (model {plan.model})"))
        else:  # it exists after all (created by an earlier run the index has not shown yet): adopt it
            new = await self.client.get_or_none(kube.path("batch/v1", "jobs", s.namespace, jname))
            if new is None or not owned_by(new, (s.tj.get("metadata") or {}).get("uid")):
                raise ApiError(409, "Conflict", f"Job {jname} exists but is not this TrainingJob's (yet)")
        self.overlay.created_job(s.namespace, s.name, new)
        return self.overlay.created[(s.namespace, s.name)]

    # --- requests ----------------------------------------------------------------------------------------

    async def get_trainingjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        tj = await self.client.get_or_none(tj_path(namespace, name))
        if tj is not None and "status" in tj:
            tj["status"] = clean_status(tj["status"])  # garbage from an older CRD is rewritten, not tripped over
        return tj

    async def write_status(self, s: Snapshot, plan: Plan) -> bool:
        """Merge-patches .status with the resourceVersion the plan was decided on: conditions are written as a
        whole list, so a write computed from a stale read must not land (``Conflict``: decided again)."""
        assert s.tj is not None
        based_on = (s.tj.get("metadata") or {}).get("resourceVersion")
        body: dict[str, Any] = {"status": plan.status}
        if based_on:
            body["metadata"] = {"resourceVersion": based_on}
        try:
            written = await self.client.merge_patch(tj_path(s.namespace, s.name, "status"), body)
        except ApiError as e:
            if e.status == 409:
                raise Conflict() from e
            if e.status == 422 and not plan.status_must_land:
                log.warning("%s/%s: status not writable (%s); %s", s.namespace, s.name, e.reason,
                            plan.events[0].message if plan.events else "")  # fmt: skip
                return False
            raise
        self.overlay.wrote(s.namespace, s.name, written, based_on)
        return True

    async def create_if_absent(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Creates the object; returns it as created, or None if it already existed (409)."""
        plural = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings", "Job": "jobs",
                  "Service": "services"}  # fmt: skip
        path = kube.path(obj["apiVersion"], plural[obj["kind"]], obj["metadata"]["namespace"])
        try:
            return await self.client.create(path, obj)
        except ApiError as e:
            if e.status == 409:
                return None
            raise

    async def _list_pods(self, namespace: str, tj_name: str) -> list[dict[str, Any]]:
        selector = f"{LABEL_TRAINING_JOB}={tj_name}"
        pods = await self.client.get(kube.path("v1", "pods", namespace), labelSelector=selector)
        return pods.get("items") or []

    async def _source(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """spec.model.fromTrainingJob's TrainingJob (read from the body as stored: it may not parse)."""
        spec = body.get("spec")
        model = spec.get("model") if isinstance(spec, dict) else None
        source = model.get("fromTrainingJob") if isinstance(model, dict) else None
        return await self.get_trainingjob(namespace, source) if isinstance(source, str) and source else None

    async def missing_ca_bundle(self, tj: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
        """Why the newest pod cannot mount spec.s3.caBundle, or None. Asked only while that pod waits in
        ContainerCreating (the kubelet reports a missing ConfigMap only as an Event), so it costs one GET then."""
        ref = ca_bundle_ref(tj)
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        newest = max(live, key=lambda p: p["metadata"].get("creationTimestamp", ""), default=None)
        if not ref or newest is None or not waiting_to_create(newest):
            return None
        namespace = (tj.get("metadata") or {}).get("namespace")
        cm = await self.client.get_or_none(kube.path("v1", "configmaps", namespace, ref["name"]))
        key = ref.get("key", "ca.crt")
        if cm is None:
            return (f"ConfigMap {ref['name']} (spec.s3.caBundle) does not exist in namespace {namespace}: create it "
                    f"with the PEM bundle under key {key}; the pod waits for it")  # fmt: skip
        if key not in (cm.get("data") or {}):
            return f"ConfigMap {ref['name']} has no key {key} (spec.s3.caBundle.key); the pod waits for it"
        return None

    async def post_event(self, tj: dict[str, Any], event: Event) -> None:
        """A core/v1 Event about the TrainingJob. Events are helpful but auxiliary: a failure to post one is
        logged, and fails nothing."""
        meta = tj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        try:
            await self.client.create(kube.path("v1", "events", namespace), event_body(tj, event, namespace))
        except EXPECTED_ERRORS as e:
            log.warning("%s/%s: event %s not posted: %s", namespace, meta.get("name"), event.reason, e)


def event_body(tj: dict[str, Any], event: Event, namespace: str) -> dict[str, Any]:
    meta = tj.get("metadata") or {}
    message = event.message
    if len(message) > MAX_EVENT_MESSAGE:  # as kopf did: the API server refuses longer ones
        half = (MAX_EVENT_MESSAGE - 3) // 2
        message = f"{message[:half]}...{message[-half:]}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": f"{meta.get('name') or 'trainingjob'}."},
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "involvedObject": {
            "apiVersion": tj.get("apiVersion") or f"{GROUP}/{VERSION}",
            "kind": tj.get("kind") or "TrainingJob",
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
        },
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("HOSTNAME") or COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
