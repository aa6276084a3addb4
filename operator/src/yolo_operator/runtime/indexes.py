"""What the operator knows without asking the API server.

kopf indexes hold compact views (``status.trainingjob_view``/``job_view``/``pod_view``) of this instance's
TrainingJobs, Jobs and pods, filled from the watch streams the operator has anyway, so deriving a status
costs no GET or LIST. kopf fills every index before it calls any other handler (also on a restart), so a
missing entry means "not there", up to watch lag; callers confirm with a GET before acting on an absence.

The watches lag the operator's own writes: right after it created a Job or wrote a status, its index still
shows the old state. Until the watch delivers that write, the written object is overlaid here, so the next
event is judged against what the operator wrote instead of being answered by a redundant (and, for status
writes, 409-bound) request. Status writes carry a resourceVersion precondition, so the object went straight
from the version the write was based on to the written one: any other version in the index means the watch has
caught up (it may never show our version itself, since kopf batches events: the trainer's next patch can hide
it). An overlay that is wrong anyway only costs one rejected write: ``forget_written`` drops it on a 409.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from yolo_operator import GROUP, PLURAL, VERSION
from yolo_operator.controller.build import LABEL_TRAINING_JOB
from yolo_operator.controller.derive import job_view, needs_children, pod_view, trainingjob_view
from yolo_operator.controller.kueue import KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS, workload_jobs, workload_view

Key = tuple[str, str]  # (namespace, TrainingJob name)


@dataclass(frozen=True)
class _Written:
    view: dict[str, Any]
    superseded: frozenset[str]  # resourceVersions older than the write: the index showing one has not caught up

    def confirmed_by(self, index_view: dict[str, Any] | None) -> bool:
        return index_view is not None and index_view["metadata"].get("resourceVersion") not in self.superseded


class Overlay:
    """The operator's own writes its watches have not shown yet (one per Controller). Everything runs in kopf's
    event loop: nothing here needs a lock. An entry goes when the index is seen to have caught up with it."""

    def __init__(self) -> None:
        self.written: dict[Key, _Written] = {}  # TrainingJob views as returned by our own status writes
        self.created: dict[Key, dict[str, Any]] = {}  # Job views as returned by our own creates (or adopted)

    def wrote(self, namespace: str, name: str, tj: dict[str, Any], based_on: str | None) -> None:
        """Records the TrainingJob as our status write returned it; ``based_on`` is the write's precondition."""
        prev = self.written.get((namespace, name))
        superseded = {based_on} if based_on else set()
        if prev is not None and prev.view["metadata"].get("resourceVersion") == based_on:
            superseded |= prev.superseded  # written on top of our previous write, not yet seen either
        self.written[(namespace, name)] = _Written(trainingjob_view(tj), frozenset(superseded))

    def created_job(self, namespace: str, name: str, job: dict[str, Any]) -> None:
        """Records a Job we created (or found and adopted), until its watch event arrives."""
        self.created[(namespace, name)] = job_view(job)

    def forget_written(self, namespace: str, name: str) -> None:
        self.written.pop((namespace, name), None)

    def forget(self, namespace: str, name: str) -> None:
        """The TrainingJob is gone."""
        self.written.pop((namespace, name), None)
        self.created.pop((namespace, name), None)


@kopf.index(GROUP, VERSION, PLURAL, id="tj_index")
async def tj_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, name): trainingjob_view(body)}


@kopf.index(GROUP, VERSION, PLURAL, id="body_index")
async def body_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    """The whole TrainingJob (less managedFields), only while its children are still to be made (``needs_children``):
    creating them needs the spec, which the compact view leaves out. Once its status records the Job it is
    dropped (``{}``: kopf removes the object from the index)."""
    view = trainingjob_view(body)
    if not needs_children(view):
        return {}
    whole = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("metadata", "status")}
    meta = {k: copy.deepcopy(v) for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {(namespace, name): {**whole, "metadata": meta, "status": view["status"]}}


@kopf.index("batch", "v1", "jobs", labels={LABEL_TRAINING_JOB: kopf.PRESENT}, id="job_index")
async def job_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, labels[LABEL_TRAINING_JOB]): job_view(body)}


def service_view(body: kopf.Body | dict[str, Any]) -> dict[str, Any]:
    """What the reconciler reads of a multi-node job's headless Service: that it exists, and whose it is."""
    meta = body.get("metadata") or {}
    owners = [{"uid": r.get("uid")} for r in meta.get("ownerReferences") or ()]
    return {"metadata": {"name": meta.get("name"), "uid": meta.get("uid"), "ownerReferences": owners}}


@kopf.index("v1", "services", labels={LABEL_TRAINING_JOB: kopf.PRESENT}, id="service_index")
async def service_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, labels[LABEL_TRAINING_JOB]): service_view(body)}


@kopf.index("v1", "pods", labels={LABEL_TRAINING_JOB: kopf.PRESENT}, id="pod_index")
async def pod_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, labels[LABEL_TRAINING_JOB]): pod_view(body)}


# The only core Events the operator reads: the Job controller's record that the API server refused a Job's pod.
# The watch asks the API server for these alone (a field selector): a namespace's other Events (every pod's
# FailedScheduling and Scheduled, every Job's SuccessfulCreate, the operator's own) would each cost a decode.
POD_REFUSAL_FIELDS = {"reason": "FailedCreate", "involvedObject.kind": "Job"}
POD_REFUSAL_SELECTOR = ",".join(f"{k}={v}" for k, v in POD_REFUSAL_FIELDS.items())


def is_pod_refusal(body: kopf.Body, **_: Any) -> bool:
    """A core Event in which the Job controller records that the API server refused a Job's pod (a
    ResourceQuota, a LimitRange, an admission webhook): nothing else records it. The watch's field selector
    already asks for these alone; this keeps the handlers to them wherever the selector is not applied."""
    return all(_field(body, path) == value for path, value in POD_REFUSAL_FIELDS.items())


def _field(body: Mapping[str, Any], path: str) -> Any:
    """A field selector's path (``involvedObject.kind``) read from an object."""
    value: Any = body
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def refusal_view(body: kopf.Body | dict[str, Any]) -> dict[str, Any]:
    """What ``Observed.refusal`` reads of a FailedCreate Event: the Job's uid, when, and the API's message."""
    meta = body.get("metadata") or {}
    when = body.get("lastTimestamp") or body.get("eventTime") or meta.get("creationTimestamp") or ""
    message = str(body.get("message") or "")[:MAX_REFUSAL_MESSAGE]
    return {"uid": (body.get("involvedObject") or {}).get("uid"), "time": when, "message": message}


# The API server's messages name the quota and what was requested, used and limited: a few hundred characters.
MAX_REFUSAL_MESSAGE = 1024


@kopf.index("v1", "events", when=is_pod_refusal, id="refusal_index")
async def refusal_index(body: kopf.Body, namespace: str, **kwargs: Any) -> dict[Key, dict[str, Any]]:
    """FailedCreate Events of this instance's Jobs, keyed by the TrainingJob: only those (the Job index says
    which Jobs are ours; an Event seen before its Job is indexed again when the Job controller retries, which
    updates it), and only a small view of each. The Event recorder folds a repeated message into one Event
    and the API server expires Events (an hour by default), so a Job holds a few entries at most;
    ``Observed.refusal`` picks the newest."""
    involved = body.get("involvedObject") or {}
    tj_name = Observed(job_idx=kwargs.get("job_index")).trainingjob_of_job(
        namespace, involved.get("name"), involved.get("uid")
    )
    return {(namespace, tj_name): refusal_view(body)} if tj_name is not None else {}


# Kueue's Workloads, keyed by their Job (namespace, Job name): Kueue creates one per Job it manages, owned by
# the Job. Unlabelled (Kueue copies no labels by default), so every Workload in the watched namespaces is
# indexed; a cluster without Kueue's CRD (or with a Kueue older than v0.15, which serves no v1beta2) has none
# and kopf only warns that it cannot serve the resource.


@kopf.index(KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS, id="workload_index")
async def workload_index(body: kopf.Body, namespace: str, **_: Any) -> dict[Key, dict[str, Any]]:
    view = workload_view(body)
    return {(namespace, r["name"]): view for r in workload_jobs(view)}


def _values(index: kopf.Index | None, key: Key) -> list[dict[str, Any]]:
    store = index.get(key) if index is not None else None
    return list(store) if store else []


@dataclass(frozen=True)
class Observed:
    """The indexes kopf hands to its handlers (``Observed.of(kwargs, overlay)``) and the controller's overlay of
    its own writes on them."""

    tj_idx: kopf.Index | None = None
    job_idx: kopf.Index | None = None
    pod_idx: kopf.Index | None = None
    workload_idx: kopf.Index | None = None
    body_idx: kopf.Index | None = None
    refusal_idx: kopf.Index | None = None
    service_idx: kopf.Index | None = None
    overlay: Overlay = field(default_factory=Overlay)

    @classmethod
    def of(cls, kwargs: dict[str, Any], overlay: Overlay) -> Observed:
        names = ("tj_index", "job_index", "pod_index", "workload_index", "body_index", "refusal_index",
                 "service_index")  # fmt: skip
        return cls(*(kwargs.get(k) for k in names), overlay=overlay)

    def service(self, namespace: str, name: str, owner_uid: str | None) -> dict[str, Any] | None:
        """The multi-node TrainingJob's headless Service (its own if several carry its label), or None."""
        views = _values(self.service_idx, (namespace, name))
        owned = [v for v in views if any(r.get("uid") == owner_uid for r in v["metadata"]["ownerReferences"])]
        return (owned or views or [None])[0]

    def trainingjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The newest known view of the TrainingJob (our last write if the watch has not shown it yet); None when
        the index does not have it: it is gone (the operator writes only to TrainingJobs the index showed)."""
        views = _values(self.tj_idx, (namespace, name))
        indexed = views[0] if views else None
        if indexed is None:
            self.overlay.forget(namespace, name)  # what a reconcile still wrote after its DELETED event
            return None
        w = self.overlay.written.get((namespace, name))
        if w is not None and w.confirmed_by(indexed):
            # the watch caught up with our write (or went past it)
            del self.overlay.written[(namespace, name)]
            w = None
        return w.view if w is not None else indexed

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The whole TrainingJob while its children are still to be made (``body_index``), else None."""
        views = _values(self.body_idx, (namespace, name))
        return views[0] if views else None

    def job(self, namespace: str, name: str, owner_uid: str | None) -> dict[str, Any] | None:
        """The TrainingJob's Job: the one it owns if several carry its label (one left by a deleted
        namesake), else any, so that callers can tell "absent" from "someone else's"."""
        indexed = _values(self.job_idx, (namespace, name))
        created = self.overlay.created.get((namespace, name))
        if created is not None and (
            any(j["metadata"].get("uid") == created["metadata"].get("uid") for j in indexed)  # the watch caught up
            or not any(r.get("uid") == owner_uid for r in created["metadata"]["ownerReferences"])  # a namesake's
        ):
            del self.overlay.created[(namespace, name)]
            created = None
        views = indexed + ([created] if created else [])
        owned = [j for j in views if any(r.get("uid") == owner_uid for r in j["metadata"]["ownerReferences"])]
        return (owned or views or [None])[0]

    def workload(self, namespace: str, job_name: str, job_uid: str | None) -> dict[str, Any] | None:
        """The Kueue Workload owned by that Job, or None (no Kueue, or it has not created one yet)."""
        for w in _values(self.workload_idx, (namespace, job_name)):
            if any(r.get("uid") == job_uid for r in w["metadata"]["ownerReferences"]):
                return w
        return None

    def trainingjob_of_job(self, namespace: str, job_name: str, job_uid: str | None) -> str | None:
        """The name of the TrainingJob whose Job this is (for a Workload's event), or None if not ours. A scan
        of the Job index: Workload events are rare next to pod events."""
        for (ns, tj_name), store in (self.job_idx or {}).items():
            if ns == namespace and any(
                j["metadata"].get("name") == job_name and j["metadata"].get("uid") == job_uid for j in store
            ):
                return tj_name
        return None

    def refusal(self, namespace: str, name: str, job_uid: str | None) -> str | None:
        """The API server's newest message refusing a pod of that Job (its FailedCreate Events), or None."""
        mine = [e for e in _values(self.refusal_idx, (namespace, name)) if e.get("uid") == job_uid]
        newest = max(mine, key=lambda e: e.get("time") or "", default=None)
        return (newest.get("message") or None) if newest is not None else None

    def pods(self, namespace: str, name: str, job_uid: str | None) -> list[dict[str, Any]]:
        return [
            p
            for p in _values(self.pod_idx, (namespace, name))
            if any(r.get("uid") == job_uid for r in p["metadata"]["ownerReferences"])
        ]


