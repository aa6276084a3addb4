"""The reconciler's decisions, pure: one TrainingJob's snapshot -> the plan that brings the cluster in line.

``Snapshot`` is what the controller observed of one TrainingJob (its view, its whole body while its children are
to be made, its Job, pods and Kueue Workload, the source of a fromTrainingJob model, whether the CA bundle is
missing). ``decide`` returns a ``Plan``: the children to create, the patches to the Job and the Workload, the
status patch, the events, and when to look again. It makes no request and imports no kopf: the controller
(``controller.py``) observes and acts, and every watch event only queues the TrainingJob's key.

The rules are the handlers' of before, level-triggered: whatever event brought the key, the same snapshot makes
the same plan, and a snapshot that already agrees with what is wanted makes an empty one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from yolo_operator.api import reasons as R
from yolo_operator.api.types import TrainingJob, describe_errors
from yolo_operator.controller.build import (
    build_job,
    build_role,
    build_role_binding,
    build_service,
    build_service_account,
    gang_stopped,
    job_mutable_patch,
    job_name,
    nodes_of,
    operator_instance,
    starting_model,
)
from yolo_operator.controller.derive import (
    ca_bundle_ref,
    derive_status,
    job_created_status,
    job_missing_status,
    needs_children,
    now_rfc3339,
    set_condition,
    waiting_for_model_status,
)
from yolo_operator.controller.kueue import kueue_unsupported, workload_active_patch
from yolo_operator.runtime.config import OperatorConfig

# A spec.model.fromTrainingJob whose source has no weights yet is looked at again this often.
WAIT_FOR_SOURCE_SECONDS = 15.0
# A Job of the TrainingJob's name owned by a deleted namesake: looked at again after this long (its deletion
# event comes too, once the garbage collector removes it).
WAIT_FOR_GC_SECONDS = 5.0
# A pod that cannot mount spec.s3.caBundle sends no event after its first status (the kubelet reports the
# missing ConfigMap only as a core Event): while such a TrainingJob is Pending it is looked at this often, so
# Stalled/CABundleMissing is set even when no event of the pod follows the one that left it waiting.
CA_BUNDLE_RECHECK_SECONDS = 20.0


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the TrainingJob."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Snapshot:
    namespace: str
    name: str
    tj: dict[str, Any] | None  # the newest view (status.trainingjob_view; our last write overlaid); None: gone
    body: dict[str, Any] | None = None  # the whole TrainingJob while its children are to be made (needs_children)
    job: dict[str, Any] | None = None  # its Job (a view), or a Job of its name that another TrainingJob owns
    pods: tuple[dict[str, Any], ...] = ()  # its Job's pods (views)
    workload: dict[str, Any] | None = None  # its Job's Kueue Workload (with spec.queueName)
    source: dict[str, Any] | None = None  # spec.model.fromTrainingJob's TrainingJob, while a Job is to be made
    # (or adopted from the previous release, which wrote no model annotation on it: adopted_model)
    missing_ca_bundle: str | None = None  # why the newest pod cannot mount spec.s3.caBundle, if it cannot
    refused: str | None = None  # the API server's newest message refusing its Job's pod, while it has none
    kueue_served: tuple[str, ...] | None = None  # the Kueue versions the cluster serves; None: no Kueue
    service: dict[str, Any] | None = None  # a multi-node job's headless Service (a view), None: not there
    children_made: bool = False  # this operator created the RBAC and the Job (status not written yet: a burst)
    now: str = field(default_factory=now_rfc3339)


@dataclass(frozen=True)
class Plan:
    outcome: str  # what this reconcile found, for the log
    create: tuple[dict[str, Any], ...] = ()  # in this order (RBAC, then the Job); one that exists is fine
    model: str | None = None  # the model the Job to create starts from (its JobCreated event says it)
    job_patch: dict[str, Any] | None = None  # the mutable spec fields, onto the Job
    workload_patch: dict[str, Any] | None = None  # spec.suspend -> the Kueue Workload's spec.active
    status: dict[str, Any] = field(default_factory=dict)  # merge patch of .status (resourceVersion-guarded)
    announce: bool = True  # also post the events the status change calls for (status.events_for)
    status_must_land: bool = True  # False: a 422 (a stored object the API server refuses every write to) is logged
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None

    @property
    def idle(self) -> bool:
        """Nothing to write."""
        return not (self.create or self.job_patch or self.workload_patch or self.status or self.events)


def decide(s: Snapshot, config: OperatorConfig) -> Plan:
    tj = s.tj
    if tj is None:
        return Plan("gone")
    if operator_instance(tj) != config.instance:
        return Plan(f"skipped: belongs to operator instance {operator_instance(tj)!r}")
    if (tj.get("metadata") or {}).get("deletionTimestamp"):
        return Plan("skipped: being deleted")  # the garbage collector removes its children
    status = tj.get("status") or {}
    nodes = nodes_of(tj)
    jname = job_name(s.name, nodes)
    uid = (tj.get("metadata") or {}).get("uid")
    job = s.job
    if job is None and status.get("jobName") and status.get("phase") not in R.TERMINAL_PHASES:
        # The Job was created before and is gone (deleted by hand, maybe while the operator was down; the
        # controller confirmed with a GET). Never silently start over: that would be a second training run.
        message = f"Job {jname} was deleted before it finished"
        gone = Event("Warning", R.REASON_JOB_DELETED, message)
        return Plan("Job gone", status=job_missing_status(tj, s.now), events=(gone,))
    if job is not None and not owned_by(job, uid):
        # Only a TrainingJob that still needs its Job waits for it; the others have nothing to derive from it.
        wait = WAIT_FOR_GC_SECONDS if needs_children(tj) else None
        return Plan(f"Job {jname} belongs to another (deleted) TrainingJob; waiting for garbage collection",
                    requeue_after=wait)  # fmt: skip

    create: tuple[dict[str, Any], ...] = ()
    if needs_children(tj):
        if s.body is None:
            return Plan("gone")
        try:
            t = TrainingJob.from_body(whole(tj, s.body))
        except ValidationError as e:
            return invalid_spec(tj, f"invalid TrainingJob: {describe_errors(e)}", s.now)
        rbac = (build_service_account(t, config), build_role(t), build_role_binding(t))
        if nodes > 1 and not service_present(s):
            rbac = (*rbac, build_service(t))  # before the Job: its pods' rendezvous name must resolve
        if job is None:
            if t.spec.queue_name and (why := kueue_unsupported(s.kueue_served)) is not None:
                return _kueue_unsupported(tj, why, s.now)
            res = starting_model(t.spec.model, s.source)
            if res.model is None:
                return _waiting_for_model(s, tj, res.reason, res.message, terminal=res.terminal)
            # RBAC first, so that the pod finds its ServiceAccount; then the Job. The status that records the
            # Job is written by this reconcile once it exists (decide_status on the Job as created), or, while
            # other keys wait (a burst), by the key's next run (act: creates first).
            return Plan(f"create Job {jname}", create=(*rbac, build_job(t, config, res.model)), model=res.model.text,
                        requeue_after=recheck_after(status, tj))  # fmt: skip
        # A Job made before a crash, not recorded yet: adopted (its RBAC made sure of). One this operator made
        # moments ago under a burst (act: creates first) came with its RBAC: nothing to make sure of.
        create = () if s.children_made else rbac
    elif nodes > 1 and job is not None and not service_present(s) and status.get("phase") not in R.TERMINAL_PHASES:
        # Deleted by hand (or never made, by an older operator): the pods' names resolve through it, so a gang
        # restart would never meet again without it.
        create = (build_service(tj),)

    # A gang failed for too many restarts keeps its status (a suspended Job would show Suspended); the Job stays
    # suspended (with Kueue: its Workload inactive) so that its GPUs are free.
    status_patch = {} if gang_stopped(tj) else decide_status(s)
    after = {**tj, "status": {**status, **status_patch}}
    job_patch, workload_patch, events = _mutable(after, job, s.workload)
    changed = status_patch or job_patch or workload_patch
    if len(create) == 1 and create[0]["kind"] == "Service":
        outcome = "re-create Service for"
    else:
        outcome = "adopt Job" if create else ("sync" if changed else "in sync")
    return Plan(
        f"{outcome} {jname}",
        create=create,
        job_patch=job_patch,
        workload_patch=workload_patch,
        status=status_patch,
        events=events,
        requeue_after=recheck_after({**status, **status_patch}, tj),
    )


def decide_status(s: Snapshot) -> dict[str, Any]:
    """The status patch for the TrainingJob as observed with its Job and pods (``{}``: none)."""
    tj = s.tj
    if tj is None:
        return {}
    status = tj.get("status") or {}
    job = s.job
    if job is None or not owned_by(job, (tj.get("metadata") or {}).get("uid")):
        return {}
    recorded: dict[str, Any] = {}
    if not status.get("jobName"):
        # This reconcile (or one before a crash) created the Job: this write records it, with what it shows
        model = job.get("model") or adopted_model(s)
        if not model or job["metadata"].get("name") != job_name(s.name, nodes_of(tj)):
            return {}
        recorded = job_created_status(tj, job["metadata"]["name"], model, s.now)
        tj = {**tj, "status": {**status, **recorded}}
    if pods_lag(job, s.pods):
        # The pod watch is behind the Job's (a new pod counted, not yet seen): its event follows. The Job is
        # recorded now all the same (under a burst the pods are made before the status is written: waiting for
        # the pod watch left TrainingJobs without a phase for minutes).
        return recorded
    workload = s.workload if (tj.get("spec") or {}).get("queueName") else None
    derived = derive_status(tj, job, list(s.pods), now=s.now, missing_volume=s.missing_ca_bundle, workload=workload,
                            refused=s.refused)  # fmt: skip
    return {**recorded, **derived}


def adopted_model(s: Snapshot) -> str | None:
    """The model of a Job made by the previous operator release, which wrote no model annotation on it
    (``build.ANNOTATION_MODEL``): what the spec resolves to now (a fromTrainingJob source's weights do not
    change once it Succeeded). None while that cannot be said (no body, a spec that does not parse, the source
    not read)."""
    if s.tj is None or s.body is None:
        return None
    try:
        t = TrainingJob.from_body(whole(s.tj, s.body))
    except ValidationError:
        return None
    resolved = starting_model(t.spec.model, s.source).model
    return resolved.text if resolved is not None else None


def invalid_spec(tj: dict[str, Any], message: str, now: str) -> Plan:
    """Failed/InvalidSpec, for good: the same spec is refused again. Where the API server refuses every write to
    the stored object (its CEL rules cannot evaluate on a spec from an older CRD) the Warning event is all that
    can be said."""
    status = tj.get("status") or {}
    gen = (tj.get("metadata") or {}).get("generation")
    conds = set_condition(
        status.get("conditions"), R.COND_FAILED, True, "InvalidSpec", message, generation=gen, now=now
    )
    return Plan(
        "invalid spec",
        status={"phase": R.FAILED, "conditions": conds, "completionTime": now},
        announce=False,
        status_must_land=False,
        events=(Event("Warning", "InvalidSpec", message),),
    )


def _kueue_unsupported(tj: dict[str, Any], message: str, now: str) -> Plan:
    """Pending with Stalled/KueueVersionUnsupported (its Warning event comes with the condition: events_for)."""
    status = tj.get("status") or {}
    gen = (tj.get("metadata") or {}).get("generation")
    conds = set_condition(status.get("conditions"), R.STALLED, True, R.REASON_KUEUE_VERSION_UNSUPPORTED, message,
                          generation=gen, now=now)  # fmt: skip
    desired = {"phase": R.PENDING, "conditions": conds, "observedGeneration": gen}
    return Plan("Kueue version unsupported", status={k: v for k, v in desired.items() if status.get(k) != v})


def _waiting_for_model(s: Snapshot, tj: dict[str, Any], reason: str, message: str, *, terminal: bool) -> Plan:
    status = tj.get("status") or {}
    conds = status.get("conditions") or []
    first_time = conds == [] or any(c.get("type") == R.MODEL_RESOLVED and c.get("reason") != reason for c in conds)
    if terminal:
        events: tuple[Event, ...] = (Event("Warning", reason, message),)
    else:
        events = (Event("Normal", R.EVENT_WAITING_FOR_MODEL, message),) if first_time else ()
    return Plan(
        f"waiting for the model: {message}",
        status=waiting_for_model_status(tj, reason, message, terminal=terminal, now=s.now),
        announce=False,
        events=events,
        requeue_after=None if terminal else WAIT_FOR_SOURCE_SECONDS,
    )


def _mutable(
    tj: dict[str, Any], job: dict[str, Any] | None, workload: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, tuple[Event, ...]]:
    """The mutable spec fields onto the Job (``job_mutable_patch``) and, with Kueue, spec.suspend onto the
    Workload's spec.active (``workload_active_patch``), where they differ."""
    if job is None:
        return None, None, ()
    events: list[Event] = []
    job_patch: dict[str, Any] | None = job_mutable_patch(tj)
    current = job.get("spec") or {}
    if all(current.get(k) == v for k, v in job_patch["spec"].items()):
        job_patch = None
    else:
        events.append(Event("Normal", "JobUpdated", f"applied {job_patch['spec']} to the Job"))
    wl_patch = workload_active_patch(tj, workload) if workload is not None else None
    if wl_patch is not None and workload is not None:
        message = f"set Kueue Workload {workload['metadata']['name']} active={wl_patch['spec']['active']}"
        events.append(Event("Normal", "WorkloadUpdated", message))
    return job_patch, wl_patch, tuple(events)


def recheck_after(status: Mapping[str, Any], tj: Mapping[str, Any]) -> float | None:
    """CA_BUNDLE_RECHECK_SECONDS while the TrainingJob waits on its CA bundle (``waiting_on_ca_bundle``)."""
    return CA_BUNDLE_RECHECK_SECONDS if waiting_on_ca_bundle({**tj, "status": status}) else None


def waiting_on_ca_bundle(tj: Mapping[str, Any]) -> bool:
    """Whether a TrainingJob (body or view) uses spec.s3.caBundle and is still Pending. It must not raise on a
    stored object of the wrong shape (a string spec or status)."""
    status = tj.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return ca_bundle_ref(tj) is not None and phase in (None, R.PENDING)


def pods_lag(job: dict[str, Any], pods: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> bool:
    """The Job counts more active pods than the pod index shows unfinished: the pod watch is behind the
    Job's (a replacement counted, not yet seen) or ahead of it (a pod finished, the Job not updated yet).
    Either way the next event completes the picture; deriving now could count a replacement twice."""
    jst = job.get("status") or {}
    if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in jst.get("conditions") or ()):
        return False
    live = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") in (None, "Pending", "Running")
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    return int(jst.get("active") or 0) > len(live)


def service_present(s: Snapshot) -> bool:
    """The snapshot shows the TrainingJob's own headless Service."""
    return s.service is not None and owned_by(s.service, ((s.tj or {}).get("metadata") or {}).get("uid"))


def owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or ())


def whole(view: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The whole TrainingJob, with the status and resourceVersion of the newest view (the body may predate our
    own status writes)."""
    meta = view.get("metadata") or {}
    newest = {k: meta[k] for k in ("resourceVersion", "deletionTimestamp") if k in meta}
    return {**body, "metadata": {**(body.get("metadata") or {}), **newest}, "status": view.get("status") or {}}
