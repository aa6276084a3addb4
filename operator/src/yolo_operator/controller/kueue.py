"""Kueue, in one place: what the operator knows of it and decides about it, pure.

With ``spec.queueName`` the Job is created suspended and labelled with the LocalQueue; Kueue makes a Workload for
it (owned by the Job), admits it when quota allows and unsuspends the Job. The operator reads that Workload back
(``workload_view``) for the TrainingJob's status (``kueue_status``, the Queued phase's condition:
``queued_condition``), carries spec.suspend to the Workload's spec.active (``workload_active_patch``), and refuses
a queued TrainingJob on a Kueue that serves no Workload version it speaks (``kueue_unsupported``).

Nothing here makes a request: the controller's act asks the API server (discovery, the Workload patch) and the
runtime's wiring turns Workload events into the TrainingJob's key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from yolo_operator.api import reasons as R
from yolo_operator.api.types import TrainingJob, gang_stopped

# --- the API ---------------------------------------------------------------------------------------------
# The Kueue Workload API the operator speaks, and the first Kueue release that serves it (v0.15.0, 2025-11;
# v0.16 stores v1beta2). An older Kueue serves only v1beta1: see kueue_unsupported.
KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS = "kueue.x-k8s.io", "v1beta2", "workloads"
KUEUE_MIN_RELEASE = "v0.15"
KUEUE_PREFIX = "kueue.x-k8s.io/"
#: The LocalQueue of a Job: Kueue manages a Job that carries it. From spec.queueName only.
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
#: Kueue's WorkloadPriorityClass label: set on the TrainingJob, it is copied to the Job, where Kueue reads it.
LABEL_KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"
#: status.kueue's keys (a merge patch nulls the ones Kueue no longer reports).
KUEUE_KEYS = ("workload", "admitted", "clusterQueue", "reason", "message", "evictions", "preemptions")
MAX_KUEUE_MESSAGE = 1024


def served_versions(api_group: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """The versions an APIGroup discovery document (GET /apis/<group>) lists; None without one (404: the group
    is not installed)."""
    if api_group is None:
        return None
    versions = api_group.get("versions") or ()
    return tuple(v["version"] for v in versions if isinstance(v, Mapping) and isinstance(v.get("version"), str))


def kueue_unsupported(served: tuple[str, ...] | None) -> str | None:
    """Why a TrainingJob with spec.queueName cannot run here, or None. Only a Kueue that serves no
    KUEUE_VERSION is refused: without Kueue (None) the Job is created suspended as before and shows Queued
    until a Kueue admits it. An older Kueue would admit the Job without the operator seeing its Workload
    (no Queued phase, spec.suspend not applied): the Job is not created, and the condition says why."""
    if served is None or KUEUE_VERSION in served:
        return None
    have = ", ".join(f"{KUEUE_GROUP}/{v}" for v in served) or "no version"
    return (f"spec.queueName needs Kueue {KUEUE_MIN_RELEASE} or newer ({KUEUE_GROUP}/{KUEUE_VERSION} Workloads); "
            f"this cluster's Kueue serves {have}. The Job is not created: upgrade Kueue, then restart the operator "
            "(it reads the served versions when it starts)")  # fmt: skip


# --- the Job Kueue reads -----------------------------------------------------------------------------------


def job_labels(queue_name: str | None) -> dict[str, str]:
    """The labels that hand the Job to Kueue: its LocalQueue (none without spec.queueName)."""
    return {LABEL_KUEUE_QUEUE: queue_name} if queue_name else {}


def suspended_at_creation(suspend: bool, queue_name: str | None) -> bool:
    """spec.suspend of the Job as created: with Kueue the Job starts suspended and Kueue un-suspends it on
    admission."""
    return bool(suspend or queue_name)


def is_kueue_label(key: str) -> bool:
    """A label Kueue reads from the Job: kept off the pod (on a pod it would ask Kueue's pod integration,
    where enabled, to manage it too)."""
    return key.startswith(KUEUE_PREFIX)


def workload_active_patch(tj: dict[str, Any] | TrainingJob, workload: dict[str, Any] | None) -> dict[str, Any] | None:
    """Merge patch for the Kueue Workload of a TrainingJob with spec.queueName, or None when it already
    agrees. Kueue documents deactivation (Workload spec.active: false) as the way to stop a queued workload:
    Kueue evicts it, suspends the Job and keeps it out of the queue; spec.active: true hands it back to
    Kueue, which requeues it and unsuspends the Job once admitted. Setting the Job's own suspend instead
    would be undone by Kueue for an admitted Workload."""
    if isinstance(tj, TrainingJob):
        queue, suspend = tj.spec.queue_name, tj.spec.suspend
    else:  # a full body or the operator's compact view (status.trainingjob_view keeps these two fields)
        spec = tj.get("spec") if isinstance(tj.get("spec"), dict) else {}
        queue, suspend = spec.get("queueName"), spec.get("suspend") is True or gang_stopped(tj)
    if not queue or not workload:
        return None
    active = not suspend
    if ((workload.get("spec") or {}).get("active", True) is not False) == active:
        return None
    return {"spec": {"active": active}}


# --- the Workload, read back -------------------------------------------------------------------------------


def _pick(d: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    d = d or {}
    return {k: copy.deepcopy(d[k]) for k in keys if d.get(k) is not None}


def workload_view(workload: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Kueue Workload that status derivation and the suspend sync read."""
    meta = workload.get("metadata") or {}
    st = workload.get("status") or {}
    refs = [_pick(r, ("uid", "name", "kind")) for r in meta.get("ownerReferences") or () if isinstance(r, dict)]
    return {
        "metadata": {**_pick(meta, ("name", "namespace", "uid")), "ownerReferences": refs},
        "spec": _pick(workload.get("spec"), ("active", "queueName", "priorityClassRef", "priority")),
        "status": {
            "conditions": [
                _pick(c, ("type", "status", "reason", "message"))
                for c in st.get("conditions") or ()
                if isinstance(c, dict)
            ],
            **_pick(st, ("admission", "schedulingStats", "requeueState")),
        },
    }


def workload_jobs(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The owner references of a Workload (its body or view) that name a Job: Kueue makes one Workload per Job
    it manages, owned by the Job."""
    refs = (workload.get("metadata") or {}).get("ownerReferences") or ()
    return [r for r in refs if isinstance(r, Mapping) and r.get("kind") == "Job"]


def _conditions(workload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The Workload's conditions by type (metav1.Condition: one per type; the first, were there more)."""
    out: dict[str, dict[str, Any]] = {}
    for c in (workload.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict):
            out.setdefault(c.get("type"), c)
    return out


def _true(conds: Mapping[str, Mapping[str, Any]], type_: str) -> bool:
    return (conds.get(type_) or {}).get("status") == "True"


def kueue_preempted(workload: dict[str, Any] | None) -> bool:
    """Kueue evicted the Workload to make room for another (its Preempted condition, or Evicted with reason
    Preempted); it is requeued and waits for quota again."""
    if not workload:
        return False
    conds = _conditions(workload)
    return _true(conds, "Preempted") or (_true(conds, "Evicted") and conds["Evicted"].get("reason") == "Preempted")


def kueue_status(workload: dict[str, Any] | None) -> dict[str, Any] | None:
    """status.kueue from the Job's Workload (``workload_view``), or None without one. The reason is the
    newest thing Kueue says about it: finished, admitted, evicted, or why its quota is not reserved."""
    if not workload:
        return None
    conds = _conditions(workload)
    wst = workload.get("status") or {}
    admitted = _true(conds, "Admitted")
    held = conds.get("Evicted") if _true(conds, "Evicted") else conds.get("QuotaReserved")
    if _true(conds, "Finished"):
        shown = conds["Finished"]
    elif admitted:
        shown = conds["Admitted"]
    elif held:
        shown = held
    else:
        shown = {"reason": "Pending", "message": "Kueue has not considered the Workload yet"}
    message = (shown.get("message") or "").strip()
    if len(message) > MAX_KUEUE_MESSAGE:
        message = message[: MAX_KUEUE_MESSAGE - 3] + "..."
    out: dict[str, Any] = {
        "workload": (workload.get("metadata") or {}).get("name"),
        "admitted": admitted,
        "reason": shown.get("reason") or None,
        "message": message or None,
    }
    cq = (wst.get("admission") or {}).get("clusterQueue")
    if cq:
        out["clusterQueue"] = cq
    evictions = [e for e in (wst.get("schedulingStats") or {}).get("evictions") or () if isinstance(e, dict)]
    if evictions:
        out["evictions"] = sum(int(e.get("count") or 0) for e in evictions)
        out["preemptions"] = sum(int(e.get("count") or 0) for e in evictions if e.get("reason") == "Preempted")
    return {k: v for k, v in out.items() if v is not None}


def kueue_status_patch(kueue: dict[str, Any] | None, stored: Any) -> dict[str, Any] | None:
    """status.kueue to write, or None when the stored one already says the same (or there is no Workload). A
    merge patch: keys Kueue no longer reports (clusterQueue after an eviction) are nulled out."""
    stored = stored if isinstance(stored, dict) else {}
    if kueue is None or kueue == {key: v for key, v in stored.items() if v is not None}:
        return None
    return {**dict.fromkeys(KUEUE_KEYS), **kueue}


def queued_condition(queue_name: str, kueue: dict[str, Any] | None, workload: dict[str, Any] | None) -> tuple[str, str]:
    """(reason, message) of the Suspended condition of a TrainingJob whose Job Kueue holds (the Queued phase):
    PreemptedByKueue when Kueue evicted it for another and requeued it, else QueuedByKueue; the message names the
    queue and Kueue's own reason (``kueue_status``)."""
    k = kueue or {}
    said = f": {k['reason']}: {k.get('message', '')}".rstrip(": ") if k.get("reason") else ""
    if kueue_preempted(workload):
        return R.REASON_PREEMPTED, f"preempted by Kueue and requeued to queue {queue_name}{said}"
    return R.REASON_QUEUED, f"waiting for Kueue to admit it to queue {queue_name}{said}"
