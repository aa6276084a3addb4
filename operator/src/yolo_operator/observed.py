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

from dataclasses import dataclass
from typing import Any

import kopf

from yolo_operator import GROUP, PLURAL, VERSION
from yolo_operator.builders import LABEL_TRAINING_JOB
from yolo_operator.status import job_view, pod_view, trainingjob_view, workload_view

Key = tuple[str, str]  # (namespace, TrainingJob name)


@dataclass(frozen=True)
class _Written:
    view: dict[str, Any]
    superseded: frozenset[str]  # resourceVersions older than the write: the index showing one has not caught up

    def confirmed_by(self, index_view: dict[str, Any] | None) -> bool:
        return index_view is not None and index_view["metadata"].get("resourceVersion") not in self.superseded


# Indexers and handlers all run in kopf's event loop: nothing here needs a lock.
_written: dict[Key, _Written] = {}  # TrainingJob views as returned by our own status writes
_created: dict[Key, dict[str, Any]] = {}  # Job views as returned by our own creates


@kopf.index(GROUP, VERSION, PLURAL, id="tj_index")
async def tj_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Key, dict[str, Any]]:
    view = trainingjob_view(body)
    w = _written.get((namespace, name))
    if w is not None and w.confirmed_by(view):
        del _written[(namespace, name)]  # the watch caught up with our write (or went past it)
    return {(namespace, name): view}


@kopf.index("batch", "v1", "jobs", labels={LABEL_TRAINING_JOB: kopf.PRESENT}, id="job_index")
async def job_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Key, dict[str, Any]]:
    key = (namespace, labels[LABEL_TRAINING_JOB])
    view = job_view(body)
    c = _created.get(key)
    if c is not None and c["metadata"].get("uid") == view["metadata"].get("uid"):
        del _created[key]  # the watch caught up with our create
    return {key: view}


@kopf.index("v1", "pods", labels={LABEL_TRAINING_JOB: kopf.PRESENT}, id="pod_index")
async def pod_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(namespace, labels[LABEL_TRAINING_JOB]): pod_view(body)}


# Kueue's Workloads, keyed by their Job (namespace, Job name): Kueue creates one per Job it manages, owned by
# the Job. Unlabelled (Kueue copies no labels by default), so every Workload in the watched namespaces is
# indexed; a cluster without Kueue's CRD has none and kopf only warns that it cannot serve the resource.
KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS = "kueue.x-k8s.io", "v1beta2", "workloads"


@kopf.index(KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS, id="workload_index")
async def workload_index(body: kopf.Body, namespace: str, **_: Any) -> dict[Key, dict[str, Any]]:
    view = workload_view(body)
    return {(namespace, r["name"]): view for r in view["metadata"]["ownerReferences"] if r.get("kind") == "Job"}


def _values(index: kopf.Index | None, key: Key) -> list[dict[str, Any]]:
    store = index.get(key) if index is not None else None
    return list(store) if store else []


@dataclass(frozen=True)
class Observed:
    """The indexes as kopf hands them to a handler (``Observed.of(kwargs)``)."""

    tj_idx: kopf.Index | None = None
    job_idx: kopf.Index | None = None
    pod_idx: kopf.Index | None = None
    workload_idx: kopf.Index | None = None

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> Observed:
        return cls(*(kwargs.get(k) for k in ("tj_index", "job_index", "pod_index", "workload_index")))

    def trainingjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The newest known view of the TrainingJob (our last write if the watch has not shown it yet)."""
        views = _values(self.tj_idx, (namespace, name))
        indexed = views[0] if views else None
        w = _written.get((namespace, name))
        if w is not None and w.confirmed_by(indexed):
            # the index got past our write before it was recorded here (the watch was faster than the answer)
            del _written[(namespace, name)]
            w = None
        return w.view if w is not None else indexed

    def job(self, namespace: str, name: str, owner_uid: str | None) -> dict[str, Any] | None:
        """The TrainingJob's Job: the one it owns if several carry its label (one left by a deleted
        namesake), else any, so that callers can tell "absent" from "someone else's"."""
        created = _created.get((namespace, name))
        views = _values(self.job_idx, (namespace, name)) + ([created] if created else [])
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

    def pods(self, namespace: str, name: str, job_uid: str | None) -> list[dict[str, Any]]:
        return [
            p
            for p in _values(self.pod_idx, (namespace, name))
            if any(r.get("uid") == job_uid for r in p["metadata"]["ownerReferences"])
        ]


def wrote(namespace: str, name: str, tj: dict[str, Any], based_on: str | None) -> None:
    """Records the TrainingJob as our status write returned it; ``based_on`` is the write's precondition."""
    prev = _written.get((namespace, name))
    superseded = {based_on} if based_on else set()
    if prev is not None and prev.view["metadata"].get("resourceVersion") == based_on:
        superseded |= prev.superseded  # written on top of our previous write, not yet seen either
    _written[(namespace, name)] = _Written(trainingjob_view(tj), frozenset(superseded))


def created(namespace: str, name: str, job: dict[str, Any]) -> None:
    """Records a Job we created, until its watch event arrives."""
    _created[(namespace, name)] = job_view(job)


def forget_written(namespace: str, name: str) -> None:
    _written.pop((namespace, name), None)


def forget(namespace: str, name: str) -> None:
    """The TrainingJob is gone."""
    _written.pop((namespace, name), None)
    _created.pop((namespace, name), None)
