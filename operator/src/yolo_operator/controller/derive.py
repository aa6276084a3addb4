"""Pure status derivation: (TrainingJob, its Job, its pods) -> merge patch for TrainingJob.status.

The operator owns every status field except the trainer's (stage, progress, lastCheckpoint, artifacts;
see ``yolo_contract.progress``). ``derive_status`` recomputes the operator's fields from what the cluster
shows and returns only the ones that differ, so calling it again with the same inputs returns ``{}``:
redelivered events and restarts are harmless, and the handlers never write unchanged status.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from yolo_contract.base import now_rfc3339
from yolo_contract.exitcodes import DISRUPTION, GANG, REASONS, ExitCode

from yolo_operator.api import reasons as R
from yolo_operator.api.types import clean_status
from yolo_operator.controller.build import (
    ANNOTATION_MODEL,
    CONTAINER_NAME,
    LABEL_COMPLETION_INDEX,
    LABEL_OPERATOR_INSTANCE,
    max_gang_restarts,
    nodes_of,
)
from yolo_operator.controller.kueue import kueue_status, kueue_status_patch, queued_condition

MAX_MESSAGE = 4096
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
STALL_REASONS = {
    **dict.fromkeys(IMAGE_PULL_REASONS, R.REASON_IMAGE_PULL_FAILED),
    "CreateContainerConfigError": R.REASON_CONTAINER_CONFIG_ERROR,
    "CreateContainerError": R.REASON_CONTAINER_CREATE_ERROR,
}


def _truncate(msg: str | None, limit: int = MAX_MESSAGE) -> str:
    msg = (msg or "").strip()
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


# --- conditions ------------------------------------------------------------------------------------------


def get_condition(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Returns a new list with the condition set; lastTransitionTime only moves when status changes.
    Succeeded or Failed set True also sets Finished True (same reason and message): one condition that
    `kubectl wait --for=condition=Finished` ends on, whichever way the job ended."""
    st = status if isinstance(status, str) else ("True" if status else "False")
    out = _set_one(conditions, type_, st, reason, message, generation, now)
    if st == "True" and type_ in (R.COND_SUCCEEDED, R.COND_FAILED):
        out = _set_one(out, R.COND_FINISHED, st, reason, message, generation, now)
    return out


def _set_one(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    st: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    out = [dict(c) for c in conditions or ()]
    new = {"type": type_, "status": st, "reason": reason, "message": _truncate(message)}
    if generation is not None:
        new["observedGeneration"] = generation
    for i, c in enumerate(out):
        if c.get("type") == type_:
            new["lastTransitionTime"] = c.get("lastTransitionTime") if c.get("status") == st else now
            new["lastTransitionTime"] = new["lastTransitionTime"] or now
            out[i] = _ordered(new)
            return out
    new["lastTransitionTime"] = now
    out.append(_ordered(new))
    return out


def _ordered(c: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "status", "reason", "message", "lastTransitionTime", "observedGeneration")
    return {k: c[k] for k in keys if k in c}


def clear_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Sets the condition False if it is present and True; leaves absent or already-False ones alone."""
    c = get_condition(conditions, type_)
    if c is None or c.get("status") != "True":
        return conditions
    return set_condition(conditions, type_, False, reason, message, generation=generation, now=now)


def is_true(conditions: Iterable[dict[str, Any]] | None, type_: str) -> bool:
    c = get_condition(conditions, type_)
    return bool(c and c.get("status") == "True")


# --- pods ------------------------------------------------------------------------------------------------


def _ts(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("creationTimestamp") or ""


def _trainer_status(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if cs.get("name") == CONTAINER_NAME:
            return cs
    return None


def terminated_state(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The trainer container's terminated state (current or last), if it terminated."""
    cs = _trainer_status(pod)
    if not cs:
        return None
    return (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")


def is_disrupted(pod: dict[str, Any]) -> bool:
    """Failed pods the Job's podFailurePolicy ignores: DisruptionTarget condition or exit code 75."""
    st = pod.get("status") or {}
    if st.get("phase") != "Failed":
        return False
    if any(c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in st.get("conditions") or ()):
        return True
    term = terminated_state(pod)
    return bool(term and term.get("exitCode") in DISRUPTION)


def unschedulable_message(pod: dict[str, Any]) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return c.get("message") or "the scheduler cannot place the pod"
    return None


def is_scheduled(pod: dict[str, Any]) -> bool:
    if (pod.get("spec") or {}).get("nodeName"):
        return True
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ()
    )


def ca_bundle_ref(tj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """spec.s3.caBundle ({name, key}) of a TrainingJob body or view, or None; None for garbage stored under an
    older CRD (a spec or s3 that is not an object) too: kopf's filters and the index call this on every object."""
    spec = tj.get("spec")
    s3 = spec.get("s3") if isinstance(spec, Mapping) else None
    ref = s3.get("caBundle") if isinstance(s3, Mapping) else None
    return ref if isinstance(ref, Mapping) and ref else None


def waiting_to_create(pod: dict[str, Any]) -> bool:
    """The trainer container waits in ContainerCreating: how the kubelet shows a volume it cannot mount yet
    (a missing ConfigMap among them), which says nothing of why."""
    cs = _trainer_status(pod)
    waiting = ((cs or {}).get("state") or {}).get("waiting") or {}
    return (pod.get("status") or {}).get("phase") == "Pending" and waiting.get("reason") == "ContainerCreating"


def stall(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when the trainer container cannot start (image pull, missing Secret, ...)."""
    cs = _trainer_status(pod)
    waiting = ((cs or {}).get("state") or {}).get("waiting") or {}
    reason = STALL_REASONS.get(waiting.get("reason", ""))
    if not reason:
        return None
    return reason, f"{waiting.get('reason')}: {waiting.get('message') or 'container cannot start'}"


def exit_reason(code: int) -> str:
    """Condition reason for a trainer exit code (the trainer's REASONS; ExitCode<n> for unknown codes)."""
    try:
        return REASONS[ExitCode(code)]
    except ValueError:
        return f"ExitCode{code}"


def job_failed(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Failed" and c.get("status") == "True" for c in conditions)


def failure_reason(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str]:
    """(reason, message) for a failed Job: the trainer's classified exit code and termination message
    when a pod says why, else the Job's own reason (DeadlineExceeded, BackoffLimitExceeded, ...)."""
    jcond = next(
        (c for c in (job.get("status") or {}).get("conditions") or () if c.get("type") == "Failed"),
        {},
    )
    jreason = jcond.get("reason") or R.REASON_JOB_FAILED
    jmsg = jcond.get("message") or "the Job failed"
    if jreason == R.REASON_DEADLINE_EXCEEDED:
        return R.REASON_DEADLINE_EXCEEDED, f"spec.activeDeadlineSeconds exceeded: {jmsg}"
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed" and not is_disrupted(p)]
    terms = [(t.get("finishedAt") or "", t) for p in failed if (t := terminated_state(p))]
    # A gang's survivors exit PeerLost after the pod that caused it: that pod's own end says why
    terms = [x for x in terms if x[1].get("exitCode") not in GANG] or terms
    if not terms:
        return jreason, jmsg
    _, term = max(terms, key=lambda x: x[0])
    code = int(term.get("exitCode", 1))
    text = _truncate(term.get("message"))
    if term.get("reason") == "OOMKilled":
        reason, detail = R.REASON_OOM_KILLED, "the container exceeded its memory limit (OOMKilled)"
    else:
        reason, detail = exit_reason(code), f"trainer exited with code {code}"
    msg = f"{detail}: {text}" if text else detail
    if jreason == R.REASON_BACKOFF_LIMIT_EXCEEDED:
        n = (job.get("status") or {}).get("failed", len(failed))
        msg = f"backoff limit reached after {n} failed attempt(s); last: {msg}"
    return reason, msg


# --- derivation ------------------------------------------------------------------------------------------


def derive_status(
    tj: dict[str, Any],
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    now: str | None = None,
    missing_volume: str | None = None,
    workload: dict[str, Any] | None = None,
    refused: str | None = None,
) -> dict[str, Any]:
    """Merge patch for ``.status`` (operator-owned fields only, changed ones only; ``{}`` = nothing to do).

    * Job Complete -> Succeeded; Job Failed -> Failed with the reason/message from the pod's exit code and
      termination message; Job Suspended -> Suspended, or with spec.queueName (and not spec.suspend) Queued:
      QueuedByKueue naming Kueue's reason from ``workload`` (the Job's Workload), PreemptedByKueue when Kueue
      evicted it for another and requeued it. ``status.kueue`` mirrors the Workload whatever the phase.
    * A running pod -> the trainer's ``status.stage`` (Staging/Training/Uploading; Staging until it reports).
    * Otherwise Pending, with Unschedulable (scheduler's message) or Stalled (image pull, missing Secret)
      conditions from the newest pod; ``missing_volume`` (the handler looked: the CA bundle's ConfigMap or key
      is missing) makes a pod waiting in ContainerCreating Stalled too. ``refused`` (the API server's message
      from the Job's newest FailedCreate event: a ResourceQuota, a LimitRange, an admission webhook) makes a
      Job with no pod Stalled/PodRefused; the first pod created clears it.
    * restartCount: pods replaced so far (failed attempts and disruptions); never decreases. podName: the
      newest pod, which is how a replacement is noticed when the pod it replaced is already gone.
    """
    if job is None:
        return {}
    now = now or now_rfc3339()
    meta = tj.get("metadata") or {}
    gen = meta.get("generation")
    spec = tj.get("spec") or {}
    status = tj.get("status") or {}
    kueue = kueue_status(workload) if spec.get("queueName") else None
    old_conds = copy.deepcopy(status.get("conditions") or [])
    conds = old_conds
    jst = job.get("status") or {}
    jconds = {c.get("type"): c for c in jst.get("conditions") or () if c.get("status") == "True"}
    newest = newest_pod_name(pods)  # pods being deleted included: an evicted pod is still the latest one
    newest_pods = pods
    pods = sorted((p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")), key=_ts)
    all_pods = pods
    desired: dict[str, Any] = {
        "jobName": (job.get("metadata") or {}).get("name"),
        "observedGeneration": gen,
    }
    if jst.get("startTime"):
        desired["startTime"] = jst["startTime"]

    def setc(type_: str, st: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, st, reason, message, generation=gen, now=now)

    def clearc(type_: str, reason: str, message: str) -> None:
        nonlocal conds
        conds = clear_condition(conds, type_, reason, message, generation=gen, now=now)

    def finished(message: str) -> None:
        clearc(R.RUNNING, R.REASON_JOB_FINISHED, message)
        clearc(R.UNSCHEDULABLE, R.REASON_JOB_FINISHED, message)
        clearc(R.STALLED, R.REASON_JOB_FINISHED, message)
        clearc(R.COND_SUSPENDED, R.REASON_JOB_FINISHED, message)

    if "Complete" in jconds:
        phase = R.SUCCEEDED
        setc(R.COND_SUCCEEDED, True, *succeeded_reason(status))
        finished("the Job completed")
        desired["completionTime"] = jst.get("completionTime") or jconds["Complete"].get("lastTransitionTime") or now
    elif "Failed" in jconds:
        phase = R.FAILED
        reason, msg = failure_reason(job, all_pods)
        setc(R.COND_FAILED, True, reason, msg)
        finished("the Job failed")
        desired["completionTime"] = jconds["Failed"].get("lastTransitionTime") or now
    elif "Suspended" in jconds:
        phase = R.SUSPENDED
        if spec.get("queueName") and not spec.get("suspend"):
            phase = R.QUEUED
            setc(R.COND_SUSPENDED, True, *queued_condition(spec["queueName"], kueue, workload))
        else:
            setc(R.COND_SUSPENDED, True, R.REASON_JOB_SUSPENDED, "spec.suspend is true; no pod runs")
        clearc(R.RUNNING, R.REASON_JOB_SUSPENDED, "the Job is suspended")
        clearc(R.UNSCHEDULABLE, R.REASON_JOB_SUSPENDED, "the Job is suspended")
        clearc(R.STALLED, R.REASON_JOB_SUSPENDED, "the Job is suspended")
    else:
        clearc(R.COND_SUSPENDED, R.REASON_RESUMED, "the Job was resumed")
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        latest = pods[-1] if pods else None
        if running:
            stage = status.get("stage")
            phase = stage if stage in R.RUNNING_PHASES else R.STAGING
            pod_name = (running[-1].get("metadata") or {}).get("name")
            setc(R.RUNNING, True, R.REASON_POD_RUNNING, f"pod {pod_name} is running")
            clearc(R.UNSCHEDULABLE, R.REASON_SCHEDULED, f"pod {pod_name} was scheduled")
            clearc(R.STALLED, R.REASON_RECOVERED, f"pod {pod_name} started")
        elif latest is not None and (latest.get("status") or {}).get("phase") == "Succeeded":
            # the Job controller has not marked the Job Complete yet: keep the phase the trainer reported
            phase = status.get("phase") if status.get("phase") in R.RUNNING_PHASES else R.UPLOADING
        else:
            phase = R.PENDING
            if latest is None and refused:
                setc(R.STALLED, True, R.REASON_POD_REFUSED, f"the API server refused the Job's pod: {refused}")
            if latest is not None:
                pod_name = (latest.get("metadata") or {}).get("name")
                clearc(R.RUNNING, R.REASON_POD_PENDING, f"pod {pod_name} is not running")
                unsched = unschedulable_message(latest)
                if unsched is not None:
                    setc(R.UNSCHEDULABLE, True, R.REASON_UNSCHEDULABLE, unsched)
                elif is_scheduled(latest):
                    clearc(R.UNSCHEDULABLE, R.REASON_SCHEDULED, f"pod {pod_name} was scheduled")
                stalled = stall(latest)
                if stalled is None and missing_volume and waiting_to_create(latest):
                    stalled = (R.REASON_CA_BUNDLE_MISSING, missing_volume)
                if stalled is not None:
                    setc(R.STALLED, True, *stalled)
                elif (get_condition(conds, R.STALLED) or {}).get("reason") == R.REASON_POD_REFUSED:
                    clearc(R.STALLED, R.REASON_POD_CREATED, f"pod {pod_name} was created")
                elif (latest.get("status") or {}).get("phase") != "Pending":
                    clearc(R.STALLED, R.REASON_RECOVERED, f"pod {pod_name} is {latest['status'].get('phase')}")

    desired["conditions"] = conds
    image = trainer_image(all_pods)
    lineage = status.get("lineage") if isinstance(status.get("lineage"), dict) else {}
    if image and lineage.get("trainerImage") != image:
        desired["lineage"] = {"trainerImage": image}  # a merge patch: the trainer's lineage fields stay
    nodes = nodes_of(tj)
    if nodes > 1:
        # A gang: podName is node 0's newest pod (global rank 0: progress, checkpoints), and every gang restart
        # replaces it (lost itself, or its ranks exit PeerLost when another pod is lost): restartCount counts them.
        leaders = [p for p in (newest_pods or ()) if completion_index(p) == 0]
        newest = newest_pod_name(leaders)
        # Pods back after a suspension (spec.suspend, Kueue's preemption) are no restart of the gang's doing
        replaced = bool(newest and status.get("podName") and newest != status["podName"]
                        and status.get("phase") not in (R.SUSPENDED, R.QUEUED))  # fmt: skip
        # floor (what the operator missed while down): node 0's failed pods that have a successor already, as
        # ``replaced`` counts them (a failed pod not yet replaced is not counted twice)
        ended = [p for p in leaders if (p.get("status") or {}).get("phase") == "Failed"
                 and (p.get("metadata") or {}).get("name") != newest]  # fmt: skip
        desired["restartCount"] = max(int(status.get("restartCount") or 0) + (1 if replaced else 0), len(ended), 0)
        desired["size"] = size(tj)
        limit = max_gang_restarts(tj)
        if desired["restartCount"] > limit and phase not in R.TERMINAL_PHASES:
            phase = R.FAILED
            last = failure_reason(job, all_pods)[1] if any(
                terminated_state(p) and not is_disrupted(p) for p in all_pods) else "pods lost or disrupted"
            msg = (f"the gang of {nodes} pods restarted {desired['restartCount']} times, more than "
                   f"spec.maxGangRestarts ({limit}); its Job is suspended and no pod runs. Last failure: {last}")
            setc(R.COND_FAILED, True, R.REASON_GANG_RESTART_LIMIT, msg)
            finished("the gang restarted too often")
            desired["completionTime"] = now
            desired["conditions"] = conds
        elif phase not in R.TERMINAL_PHASES and phase != R.SUSPENDED and phase != R.QUEUED and all_pods:
            cond = get_condition(conds, R.RUNNING) or {}
            if cond.get("status") == "True":
                setc(R.RUNNING, True, R.REASON_POD_RUNNING, gang_message(all_pods, nodes))
            else:  # False, but present: which pod of the gang is missing is what a user asks first
                setc(R.RUNNING, False, R.REASON_POD_PENDING, gang_message(all_pods, nodes))
            desired["conditions"] = conds
    else:
        replaced = bool(newest and status.get("podName") and newest != status["podName"])
        desired["restartCount"] = restart_count(status.get("restartCount"), job, all_pods, replaced)
    desired["phase"] = phase
    desired["podName"] = newest or status.get("podName")
    out = {k: v for k, v in desired.items() if v is not None and status.get(k) != v}
    if (kueue_patch := kueue_status_patch(kueue, status.get("kueue"))) is not None:
        out["kueue"] = kueue_patch
    return out


def succeeded_reason(status: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) of the Succeeded condition: the trainer's status.outcome (StopRequested,
    TimeBudgetReached, EarlyStopping) when it ended early, else Completed."""
    outcome = status.get("outcome") if isinstance(status.get("outcome"), dict) else {}
    done = "training finished; artifacts are listed in status.artifacts"
    reason = outcome.get("reason")
    if reason in (R.REASON_STOP_REQUESTED, R.REASON_TIME_BUDGET_REACHED, R.REASON_EARLY_STOPPING):
        detail = outcome.get("message") or "training stopped early"
        return reason, f"{detail}; the best weights were published (status.artifacts)"
    return R.REASON_COMPLETED, done


def completion_index(pod: dict[str, Any]) -> int | None:
    """A multi-node job's pod's index (its node rank), from the label the Job controller sets; None otherwise."""
    raw = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_COMPLETION_INDEX)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def size(tj: dict[str, Any]) -> str:
    """status.size of a multi-node job: nodes x GPUs (``2x4 GPU``), or on CPU ``2x CPU``."""
    res = ((tj.get("spec") or {}).get("resources") or {}) if isinstance(tj.get("spec"), dict) else {}
    gpus = res.get("gpus", 1)
    return f"{nodes_of(tj)}x{gpus} GPU" if isinstance(gpus, int) and gpus > 0 else f"{nodes_of(tj)}x CPU"


def gang_message(pods: list[dict[str, Any]], nodes: int) -> str:
    """Each index's newest pod, its phase and node: ``2/2 pods running: 0 Running on n1 (tj-train-0-x), ...``."""
    newest: dict[int, dict[str, Any]] = {}
    for p in sorted(pods, key=lambda p: (_ts(p), (p.get("metadata") or {}).get("name") or "")):
        i = completion_index(p)
        if i is not None:
            newest[i] = p
    parts, running = [], 0
    for i in range(nodes):
        p = newest.get(i)
        if p is None:
            parts.append(f"{i} not created")
            continue
        phase = (p.get("status") or {}).get("phase") or "Pending"
        running += phase == "Running"
        node = (p.get("spec") or {}).get("nodeName")
        why = unschedulable_message(p) if phase == "Pending" else None
        parts.append(f"{i} {phase}" + (f" on {node}" if node else "") + (f" ({why})" if why else "")
                     + f" [{(p.get('metadata') or {}).get('name')}]")  # fmt: skip
    return f"{running}/{nodes} pods running: " + ", ".join(parts)


def trainer_image(pods: list[dict[str, Any]]) -> str | None:
    """The image the newest pod's trainer container runs, by digest (containerStatuses[].imageID)."""
    for pod in sorted(pods, key=_ts, reverse=True):
        image_id = (_trainer_status(pod) or {}).get("imageID")
        if image_id:
            return image_id
    return None


def newest_pod_name(pods: list[dict[str, Any]]) -> str | None:
    """The most recently created pod (name breaks a tie of the 1 s timestamps, so the choice is stable)."""
    named = [(_ts(p), (p.get("metadata") or {}).get("name") or "") for p in pods]
    return (max(named)[1] or None) if named else None


def restart_count(previous: int | None, job: dict[str, Any], pods: list[dict[str, Any]], replaced: bool = False) -> int:
    """Pods created beyond the first = failed attempts + disruptions.

    ``replaced``: a pod newer than ``status.podName`` appeared since the last write - one more restart. That is
    what counts disruptions: podFailurePolicy Ignore leaves them out of Job.status.failed, and an evicted or a
    lost node's pod is deleted, usually before its replacement exists, so no single pod list shows both.
    The pod list and Job counters give a floor (what the operator missed while it was down, if still visible);
    both count a pod when it is created, so a replacement seen by both is counted once.
    Monotonic: pods garbage-collected later do not lower it."""
    jst = job.get("status") or {}
    counted = int(jst.get("failed") or 0) + int(jst.get("succeeded") or 0) + int(jst.get("active") or 0)
    disrupted = sum(1 for p in pods if is_disrupted(p))
    attempts = max(counted + disrupted, len(pods))
    return max(int(previous or 0) + (1 if replaced else 0), attempts - 1, 0)


# --- status outside the Job's lifecycle ------------------------------------------------------------------


def job_created_status(tj: dict[str, Any], job_name: str, model: str, now: str | None = None) -> dict[str, Any]:
    """Status patch after the Job (and its RBAC) exist."""
    now = now or now_rfc3339()
    status = tj.get("status") or {}
    gen = (tj.get("metadata") or {}).get("generation")
    conds = status.get("conditions") or []
    conds = set_condition(
        conds, R.MODEL_RESOLVED, True, R.REASON_MODEL_RESOLVED, f"model: {model}", generation=gen, now=now
    )
    conds = set_condition(
        conds, R.JOB_CREATED, True, R.REASON_JOB_CREATED, f"Job {job_name} created", generation=gen, now=now
    )
    desired = {
        "jobName": job_name,
        "model": model,
        "conditions": conds,
        "observedGeneration": gen,
        "phase": status.get("phase") or R.PENDING,
    }
    return {k: v for k, v in desired.items() if status.get(k) != v}


def waiting_for_model_status(
    tj: dict[str, Any], reason: str, message: str, *, terminal: bool, now: str | None = None
) -> dict[str, Any]:
    """Status patch while spec.model.fromTrainingJob cannot be resolved (terminal: the source failed)."""
    now = now or now_rfc3339()
    status = tj.get("status") or {}
    gen = (tj.get("metadata") or {}).get("generation")
    conds = set_condition(status.get("conditions"), R.MODEL_RESOLVED, False, reason, message, generation=gen, now=now)
    desired: dict[str, Any] = {"conditions": conds, "observedGeneration": gen, "phase": R.PENDING}
    if terminal:
        conds = set_condition(conds, R.COND_FAILED, True, reason, message, generation=gen, now=now)
        desired.update(conditions=conds, phase=R.FAILED, completionTime=now)
    return {k: v for k, v in desired.items() if status.get(k) != v}


def job_missing_status(tj: dict[str, Any], now: str | None = None) -> dict[str, Any]:
    """Status patch when the Job vanished (deleted by hand) before the TrainingJob finished."""
    now = now or now_rfc3339()
    status = tj.get("status") or {}
    if status.get("phase") in R.TERMINAL_PHASES:
        return {}
    gen = (tj.get("metadata") or {}).get("generation")
    msg = f"Job {status.get('jobName')} was deleted before it finished"
    conds = set_condition(
        status.get("conditions"), R.COND_FAILED, True, R.REASON_JOB_DELETED, msg, generation=gen, now=now
    )
    conds = clear_condition(conds, R.RUNNING, R.REASON_JOB_DELETED, msg, generation=gen, now=now)
    return {"phase": R.FAILED, "conditions": conds, "completionTime": now}


# --- compact views (what the operator keeps in memory) --------------------------------------------------


def _pick(d: dict[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    d = d or {}
    return {k: copy.deepcopy(d[k]) for k in keys if d.get(k) is not None}


def _owner_uids(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"uid": r.get("uid")} for r in meta.get("ownerReferences") or ()]


def trainingjob_view(tj: dict[str, Any]) -> dict[str, Any]:
    """The parts of a TrainingJob that status derivation, the instance check, events (involvedObject) and
    a resourceVersion-guarded status write need; the spec (and kopf's annotations) stay out."""
    meta = tj.get("metadata") or {}
    labels = meta.get("labels") or {}
    view_meta = _pick(meta, ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp"))
    if LABEL_OPERATOR_INSTANCE in labels:
        view_meta["labels"] = {LABEL_OPERATOR_INSTANCE: labels[LABEL_OPERATOR_INSTANCE]}
    # garbage stored under an older CRD (spec or status not an object, ...) must not break the index
    spec = tj.get("spec") if isinstance(tj.get("spec"), dict) else None
    # what the reconciler compares with the Job and its Workload (the mutable fields) and what Kueue needs
    view_spec = _pick(spec, ("queueName", "suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished"))
    if spec is not None and nodes_of(tj) > 1:
        # a multi-node job: its Job's name, status.size and the gang restart bound follow from these
        view_spec["resources"] = _pick(spec.get("resources"), ("nodes", "gpus"))
        view_spec["maxGangRestarts"] = max_gang_restarts(tj)
    if (ca := ca_bundle_ref(tj)) is not None:
        # missing_ca_bundle reads it: a pod that cannot mount it is Stalled/CABundleMissing
        view_spec["s3"] = {"caBundle": copy.deepcopy(dict(ca))}
    return {
        "apiVersion": tj.get("apiVersion"),
        "kind": tj.get("kind"),
        "metadata": view_meta,
        "spec": view_spec,
        # status.history (up to 100 points, the trainer's) is read by no decision: kept out, it would cost the
        # operator up to ~20 KB per TrainingJob, finished ones too (the yolo_trainingjob_* series read events)
        "status": copy.deepcopy({k: v for k, v in clean_status(tj.get("status")).items() if k != "history"}),
    }


def needs_children(tj: dict[str, Any]) -> bool:
    """A TrainingJob (view) whose Job may still have to be created or adopted: not finished, not being deleted,
    its status not yet naming the Job and the model it was started with."""
    status = tj.get("status") or {}
    if status.get("phase") in R.TERMINAL_PHASES or (tj.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return not (status.get("jobName") and status.get("model"))


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """The parts of a Job that derive_status, ownership checks and the mutable-field sync read, plus the
    model its trainer was started with (for adopting a Job created before a crash): the annotation the operator
    wrote on it, never read back out of the trainer's configuration."""
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    view = {
        "metadata": {**_pick(meta, ("name", "namespace", "uid")), "ownerReferences": _owner_uids(meta)},
        "spec": _pick(spec, ("suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished")),
        "status": {
            **_pick(job.get("status"), ("active", "failed", "succeeded", "startTime", "completionTime")),
            # derive_status reads only the conditions that hold, and of them no probe times
            "conditions": [
                _pick(c, ("type", "status", "reason", "message", "lastTransitionTime"))
                for c in (job.get("status") or {}).get("conditions") or ()
                if c.get("status") == "True"
            ],
        },
    }
    model = (meta.get("annotations") or {}).get(ANNOTATION_MODEL)
    if isinstance(model, str) and model:
        view["model"] = model
    return view


POD_CONDITIONS_READ = frozenset({"PodScheduled", "DisruptionTarget"})
CONTAINER_STATE_READ = {
    "waiting": ("reason", "message"),
    "running": (),
    "terminated": ("exitCode", "reason", "message", "finishedAt"),
}


def pod_view(pod: dict[str, Any]) -> dict[str, Any]:
    """The parts of a pod that derive_status reads: phase, conditions, the trainer container's state."""
    meta = pod.get("metadata") or {}
    st = pod.get("status") or {}
    view_st = _pick(st, ("phase",))
    # Kept per pod for as long as it exists (a finished pod too, until its TrainingJob is deleted): only what
    # derive_status reads, so that a completed TrainingJob costs little. Conditions: scheduling and disruption.
    conds = [
        _pick(c, ("type", "status", "reason", "message"))
        for c in st.get("conditions") or ()
        if c.get("type") in POD_CONDITIONS_READ
    ]
    if conds:
        view_st["conditions"] = conds
    trainer = _trainer_status(pod)
    if trainer is not None:
        cs = _pick(trainer, ("name", "imageID"))
        for which in ("state", "lastState"):
            state = trainer.get(which) or {}
            cs[which] = {k: _pick(state[k], CONTAINER_STATE_READ[k]) for k in CONTAINER_STATE_READ if k in state}
        view_st["containerStatuses"] = [cs]
    view_meta = _pick(meta, ("name", "creationTimestamp", "deletionTimestamp"))
    view_meta["ownerReferences"] = _owner_uids(meta)
    if LABEL_COMPLETION_INDEX in (meta.get("labels") or {}):  # a multi-node job's pod: its node rank
        view_meta["labels"] = {LABEL_COMPLETION_INDEX: meta["labels"][LABEL_COMPLETION_INDEX]}
    return {"metadata": view_meta, "spec": _pick(pod.get("spec"), ("nodeName",)), "status": view_st}


# --- events ----------------------------------------------------------------------------------------------


def events_for(old_status: dict[str, Any] | None, patch: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Kubernetes Events (type, reason, message) worth posting for a status patch: phase changes and
    conditions that just turned True."""
    old_status = old_status or {}
    out: list[tuple[str, str, str]] = []
    new_phase = patch.get("phase")
    if new_phase and new_phase != old_status.get("phase") and (old_status.get("phase"), new_phase) != (None, R.PENDING):
        # (a new TrainingJob's first phase is not a change)
        if new_phase == R.SUCCEEDED:
            out.append(("Normal", R.EVENT_SUCCEEDED, "training succeeded"))
        elif new_phase == R.FAILED:
            c = get_condition(patch.get("conditions"), R.COND_FAILED) or {}
            out.append(("Warning", R.EVENT_FAILED, f"{c.get('reason', 'Failed')}: {c.get('message', '')}".strip()))
        else:
            out.append(("Normal", R.EVENT_PHASE_CHANGED, f"phase {old_status.get('phase') or '-'} -> {new_phase}"))
    for type_, ev in ((R.UNSCHEDULABLE, R.EVENT_UNSCHEDULABLE), (R.STALLED, R.EVENT_STALLED)):
        new = get_condition(patch.get("conditions"), type_)
        if new and new.get("status") == "True" and not is_true(old_status.get("conditions"), type_):
            out.append(("Warning", ev, f"{new.get('reason')}: {new.get('message')}"))
    return out
