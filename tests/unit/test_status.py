"""derive_status: Job and pod observations -> TrainingJob status patch (phase, conditions, restarts)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yolo_operator.api import reasons as R
from yolo_operator.controller import derive as S
from yolo_operator.controller.kueue import workload_view

pytestmark = pytest.mark.unit
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "2026-01-01T01:00:00Z"


def tj(status: dict | None = None, **spec) -> dict:
    return {
        "metadata": {"name": "helmets", "namespace": "ns", "generation": 2},
        "spec": {"model": {"hub": "yolov8n.pt"}, **spec},
        "status": status or {},
    }


def job(conditions: list[tuple[str, str, str]] = (), **status) -> dict:
    return {
        "metadata": {"name": "helmets-train"},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": T2}
                for t, r, m in conditions
            ],
            **status,
        },
    }


def pod(name="helmets-train-a", phase="Pending", created=T0, **status) -> dict:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {},
        "status": {"phase": phase, **status},
    }


def terminated(code: int, message: str = "", reason: str = "Error", finished: str = T1) -> dict:
    return {
        "containerStatuses": [
            {
                "name": "trainer",
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "message": message,
                        "reason": reason,
                        "finishedAt": finished,
                    }
                },
            }
        ]
    }


def apply(tj_: dict, patch: dict) -> dict:
    out = copy.deepcopy(tj_)
    out["status"].update(patch)
    return out


def cond(patch: dict, type_: str) -> dict:
    c = S.get_condition(patch.get("conditions"), type_)
    assert c is not None, f"no {type_} condition in {patch.get('conditions')}"
    return c


def test_no_job_no_patch():
    assert S.derive_status(tj(), None, []) == {}


def test_succeeded():
    j = job([("Complete", "CompletionsReached", "")], succeeded=1, startTime=T0, completionTime=T2)
    p = S.derive_status(tj({"phase": "Training"}), j, [pod(phase="Succeeded")], now=T2)
    assert p["phase"] == "Succeeded"
    assert cond(p, R.COND_SUCCEEDED)["status"] == "True"
    assert cond(p, R.COND_SUCCEEDED)["reason"] == R.REASON_COMPLETED
    assert p["completionTime"] == T2 and p["startTime"] == T0
    assert p["jobName"] == "helmets-train"
    assert p["observedGeneration"] == 2
    assert p["restartCount"] == 0


def test_finished_is_true_on_success_and_on_every_failure_path():
    # `kubectl wait --for=condition=Finished` (the README's quick start) must end whichever way the job ends.
    ok = S.derive_status(tj({"phase": "Training"}), job([("Complete", "CompletionsReached", "")]), [], now=T2)
    assert cond(ok, R.COND_FINISHED) | {"lastTransitionTime": T2} == cond(ok, R.COND_SUCCEEDED) | {"type": "Finished"}
    failed = S.derive_status(tj({"phase": "Staging"}), job([("Failed", "BackoffLimitExceeded", "")]), [], now=T2)
    assert cond(failed, R.COND_FINISHED)["status"] == "True"
    assert cond(failed, R.COND_FINISHED)["reason"] == cond(failed, R.COND_FAILED)["reason"]
    missing = S.job_missing_status(tj({"phase": "Training", "jobName": "helmets-train"}), now=T1)
    assert cond(missing, R.COND_FINISHED)["status"] == "True"
    terminal = S.waiting_for_model_status(tj(), R.REASON_SOURCE_FAILED, "prev failed", terminal=True, now=T0)
    assert cond(terminal, R.COND_FINISHED)["reason"] == R.REASON_SOURCE_FAILED
    # Not before: a running job has no Finished condition.
    running = S.derive_status(tj(), job(), [pod(phase="Running")], now=T1)
    assert S.get_condition(running["conditions"], R.COND_FINISHED) is None
    # The order a reader sees: Succeeded (or Failed) first, Finished after it.
    types = [c["type"] for c in ok["conditions"]]
    assert types.index("Succeeded") < types.index("Finished")


@pytest.mark.parametrize(
    "reason", [R.REASON_STOP_REQUESTED, R.REASON_TIME_BUDGET_REACHED, R.REASON_EARLY_STOPPING]
)
def test_succeeded_early_takes_the_reason_the_trainer_reported(reason):
    j = job([("Complete", "CompletionsReached", "")], succeeded=1)
    outcome = {"reason": reason, "message": "spec.stop: training stopped after epoch 3", "epochs": 3}
    p = S.derive_status(tj({"phase": "Uploading", "outcome": outcome}), j, [pod(phase="Succeeded")], now=T2)
    c = cond(p, R.COND_SUCCEEDED)
    assert p["phase"] == "Succeeded" and c["status"] == "True" and c["reason"] == reason
    assert c["message"].startswith("spec.stop: training stopped after epoch 3") and "best weights" in c["message"]


def test_succeeded_with_all_epochs_or_an_unknown_outcome_is_completed():
    j = job([("Complete", "CompletionsReached", "")], succeeded=1)
    for outcome in ({"reason": "Completed", "message": "3 epochs"}, {"reason": "Bogus"}, "garbage"):
        p = S.derive_status(tj({"outcome": outcome}), j, [pod(phase="Succeeded")], now=T2)
        assert cond(p, R.COND_SUCCEEDED)["reason"] == R.REASON_COMPLETED


def test_trainer_image_digest_is_copied_from_the_pod_into_the_lineage():
    image = "quay.io/x/yolo-trainer@sha256:" + "0" * 64
    statuses = [{"name": "trainer", "imageID": image, "state": {"running": {}}}]
    running = pod(phase="Running", containerStatuses=statuses)
    state = tj({"phase": "Training", "lineage": {"torch": "2.14.1"}})
    p = S.derive_status(state, job(active=1), [running], now=T1)
    assert p["lineage"] == {"trainerImage": image}  # a merge patch: the trainer's lineage fields stay
    state["status"]["lineage"]["trainerImage"] = image
    assert "lineage" not in S.derive_status(state, job(active=1), [running], now=T1)
    assert S.pod_view(_full(running))["status"]["containerStatuses"][0]["imageID"] == image
    assert "lineage" not in S.derive_status(tj(), job(active=1), [pod(phase="Running")], now=T1)


def test_failed_with_non_retriable_exit_code_and_termination_message():
    j = job([("Failed", "PodFailurePolicy", "Container trainer for pod ns/x failed with exit code 11")], failed=1)
    pods = [pod(phase="Failed", **terminated(11, "data.yaml not found under s3://datasets/helmets/"))]
    p = S.derive_status(tj({"phase": "Staging"}), j, pods, now=T2)
    assert p["phase"] == "Failed"
    c = cond(p, R.COND_FAILED)
    assert c["status"] == "True"
    assert c["reason"] == "DatasetInvalid"
    assert "data.yaml not found" in c["message"] and "code 11" in c["message"]
    assert p["completionTime"] == T2


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (10, "ConfigInvalid"),
        (12, "S3AccessDenied"),
        (13, "ModelUnavailable"),
        (14, "OutOfMemory"),
        (16, "S3BucketNotFound"),
        (17, "S3WrongRegion"),
        (18, "S3TLSFailed"),
        (19, "S3Unreachable"),
        (22, "GPUNotVisible"),
        (99, "ExitCode99"),
    ],
)
def test_exit_code_reasons(code, reason):
    j = job([("Failed", "PodFailurePolicy", "")], failed=1)
    p = S.derive_status(tj(), j, [pod(phase="Failed", **terminated(code, "boom"))], now=T2)
    assert cond(p, R.COND_FAILED)["reason"] == reason


def test_backoff_limit_exceeded_uses_last_attempt():
    j = job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")], failed=3)
    pods = [
        pod("a", "Failed", T0, **terminated(21, "S3 endpoint unreachable", finished=T0)),
        pod("b", "Failed", T1, **terminated(20, "CUDA error: device-side assert", finished=T1)),
    ]
    p = S.derive_status(tj(), j, pods, now=T2)
    c = cond(p, R.COND_FAILED)
    assert c["reason"] == "TrainingError"
    assert "backoff limit reached after 3" in c["message"]
    assert "CUDA error" in c["message"]


def test_oom_killed():
    j = job([("Failed", "BackoffLimitExceeded", "")], failed=4)
    p = S.derive_status(tj(), j, [pod(phase="Failed", **terminated(137, "", reason="OOMKilled"))], now=T2)
    assert cond(p, R.COND_FAILED)["reason"] == R.REASON_OOM_KILLED


def test_deadline_exceeded():
    j = job([("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")])
    p = S.derive_status(tj(), j, [], now=T2)
    assert p["phase"] == "Failed"
    assert cond(p, R.COND_FAILED)["reason"] == R.REASON_DEADLINE_EXCEEDED
    assert "activeDeadlineSeconds" in cond(p, R.COND_FAILED)["message"]


def test_failed_without_pods_falls_back_to_job_reason():
    p = S.derive_status(tj(), job([("Failed", "BackoffLimitExceeded", "limit")]), [], now=T2)
    assert cond(p, R.COND_FAILED)["reason"] == "BackoffLimitExceeded"


def test_running_pod_maps_trainer_stage_to_phase():
    j = job(active=1, startTime=T0)
    running = [pod(phase="Running")]
    assert S.derive_status(tj(), j, running, now=T1)["phase"] == "Staging"  # before the first report
    for stage in ("Staging", "Training", "Uploading"):
        p = S.derive_status(tj({"stage": stage, "phase": "Pending"}), j, running, now=T1)
        assert p["phase"] == stage
        assert cond(p, R.RUNNING)["status"] == "True"


def test_terminal_phase_wins_over_stale_stage():
    j = job([("Complete", "CompletionsReached", "")])
    p = S.derive_status(tj({"stage": "Training"}), j, [pod(phase="Succeeded")], now=T2)
    assert p["phase"] == "Succeeded"


def test_pod_succeeded_before_job_complete_keeps_phase():
    j = job(active=0, succeeded=1)
    p = S.derive_status(tj({"phase": "Uploading", "stage": "Uploading"}), j, [pod(phase="Succeeded")], now=T2)
    assert "phase" not in p  # unchanged; not flipped back to Pending


def test_unschedulable_then_scheduled():
    msg = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    unsched = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}])
    j = job(active=1)
    p = S.derive_status(tj(), j, [unsched], now=T1)
    assert p["phase"] == "Pending"
    c = cond(p, R.UNSCHEDULABLE)
    assert (c["status"], c["reason"], c["message"]) == ("True", R.REASON_UNSCHEDULABLE, msg)
    assert c["lastTransitionTime"] == T1
    state = apply(tj(), p)
    # same observation again: nothing to write (idempotent)
    assert S.derive_status(state, j, [unsched], now=T2) == {}
    # now it runs: Unschedulable turns False, Running True
    p2 = S.derive_status(state, j, [pod(phase="Running", conditions=[{"type": "PodScheduled", "status": "True"}])], T2)
    assert cond(p2, R.UNSCHEDULABLE)["status"] == "False"
    assert cond(p2, R.UNSCHEDULABLE)["lastTransitionTime"] == T2
    assert cond(p2, R.RUNNING)["status"] == "True"


@pytest.mark.parametrize(
    ("waiting", "reason"),
    [
        ("ImagePullBackOff", R.REASON_IMAGE_PULL_FAILED),
        ("ErrImagePull", R.REASON_IMAGE_PULL_FAILED),
        ("CreateContainerConfigError", R.REASON_CONTAINER_CONFIG_ERROR),
    ],
)
def test_stalled_pod(waiting, reason):
    detail = 'secret "s3-keys" not found' if waiting.startswith("Create") else "pull access denied"
    st_ = {"containerStatuses": [{"name": "trainer", "state": {"waiting": {"reason": waiting, "message": detail}}}]}
    p = S.derive_status(tj(), job(active=1), [pod(**st_)], now=T1)
    c = cond(p, R.STALLED)
    assert (c["status"], c["reason"]) == ("True", reason)
    assert detail in c["message"] and waiting in c["message"]
    assert p["phase"] == "Pending"


def test_missing_ca_bundle_is_stalled_like_a_missing_secret():
    creating = {"containerStatuses": [{"name": "trainer", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    why = "ConfigMap object-store-ca (spec.s3.caBundle) does not exist in namespace team-a"
    p = S.derive_status(tj(), job(active=1), [pod(**creating)], now=T1, missing_volume=why)
    c = cond(p, R.STALLED)
    assert (c["status"], c["reason"], c["message"]) == ("True", R.REASON_CA_BUNDLE_MISSING, why)
    assert p["phase"] == "Pending"
    # without the handler's finding, ContainerCreating is just a pod starting
    plain = S.derive_status(tj(), job(active=1), [pod(**creating)], now=T1)
    assert S.get_condition(plain.get("conditions"), R.STALLED) is None
    # the ConfigMap appeared and the pod runs: Stalled clears
    running = S.derive_status(apply(tj(), p), job(active=1), [pod(phase="Running")], now=T2)
    assert cond(running, R.STALLED)["status"] == "False"


def test_suspended_and_resumed():
    j = job([("Suspended", "JobSuspended", "Job suspended")])
    p = S.derive_status(tj(suspend=True), j, [], now=T1)
    assert p["phase"] == "Suspended"
    assert cond(p, R.COND_SUSPENDED)["reason"] == R.REASON_JOB_SUSPENDED
    resumed = S.derive_status(apply(tj(suspend=False), p), job(active=1), [pod()], now=T2)
    assert resumed["phase"] == "Pending"
    assert cond(resumed, R.COND_SUSPENDED)["status"] == "False"
    assert cond(resumed, R.COND_SUSPENDED)["reason"] == R.REASON_RESUMED


def test_queued_by_kueue():
    j = job([("Suspended", "JobSuspended", "")])
    p = S.derive_status(tj(queueName="gpu-queue"), j, [], now=T1)
    assert p["phase"] == "Queued"
    assert cond(p, R.COND_SUSPENDED)["reason"] == R.REASON_QUEUED
    assert "gpu-queue" in cond(p, R.COND_SUSPENDED)["message"]
    assert "kueue" not in p  # no Workload seen (yet)
    # the user's spec.suspend with a queue is a plain suspension (the operator deactivated the Workload)
    s = S.derive_status(tj(queueName="gpu-queue", suspend=True), j, [], now=T1)
    assert s["phase"] == "Suspended" and cond(s, R.COND_SUSPENDED)["reason"] == R.REASON_JOB_SUSPENDED


def workload(*conds: tuple[str, str, str, str], evictions=(), cq=None, active=None) -> dict:
    st = {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds]}
    if evictions:
        st["schedulingStats"] = {"evictions": [{"reason": r, "underlyingCause": "", "count": n} for r, n in evictions]}
    if cq:
        st["admission"] = {"clusterQueue": cq}
    wl = {
        "metadata": {"name": "job-helmets-train-3f2a1", "namespace": "team-a", "uid": "w1",
                     "ownerReferences": [{"uid": "job-uid", "name": "helmets-train", "kind": "Job", "x": 1}]},
        "spec": {"queueName": "gpu-queue", **({} if active is None else {"active": active})},
        "status": st,
    }  # fmt: skip
    return workload_view(wl)


PENDING_QUOTA = (
    "QuotaReserved", "False", "Pending",
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor gpu, "
    "4 more needed",
)  # fmt: skip


def test_queued_names_kueues_reason():
    j = job([("Suspended", "JobSuspended", "")])
    p = S.derive_status(tj(queueName="gpu-queue"), j, [], now=T1, workload=workload(PENDING_QUOTA))
    c = cond(p, R.COND_SUSPENDED)
    assert p["phase"] == "Queued" and c["reason"] == R.REASON_QUEUED
    assert "queue gpu-queue: Pending: couldn't assign flavors" in c["message"] and "4 more needed" in c["message"]
    assert p["kueue"]["admitted"] is False and p["kueue"]["reason"] == "Pending"
    assert p["kueue"]["workload"] == "job-helmets-train-3f2a1" and p["kueue"]["clusterQueue"] is None
    # the same Workload again: nothing to write
    assert S.derive_status(apply(tj(queueName="gpu-queue"), p), j, [], now=T2, workload=workload(PENDING_QUOTA)) == {}


def test_preempted_by_kueue_is_requeued_not_failed():
    admitted = workload(("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue gpus"),
                        ("Admitted", "True", "Admitted", "The workload is admitted"), cq="gpus")  # fmt: skip
    running = S.derive_status(
        tj(queueName="gpu-queue"), job(active=1), [pod(phase="Running")], now=T1, workload=admitted
    )
    assert running["phase"] == "Staging" and running["kueue"]["admitted"] is True
    assert running["kueue"]["clusterQueue"] == "gpus"
    evicted = workload(
        ("QuotaReserved", "False", "Pending", "insufficient unused quota"),
        ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: x) due to prioritization"),
        ("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: x)"),
        evictions=[("Preempted", 1)],
    )
    state = apply(tj(queueName="gpu-queue"), running)
    p = S.derive_status(state, job([("Suspended", "JobSuspended", "")]), [], now=T2, workload=evicted)
    c = cond(p, R.COND_SUSPENDED)
    assert p["phase"] == "Queued" and c["reason"] == R.REASON_PREEMPTED
    assert "requeued to queue gpu-queue" in c["message"]
    assert "Failed" not in [x["type"] for x in p["conditions"] if x["status"] == "True"]
    assert p["kueue"]["preemptions"] == 1 and p["kueue"]["evictions"] == 1
    assert p["kueue"]["clusterQueue"] is None  # nulled in the merge patch: no longer admitted


def test_workload_view_keeps_what_derivation_reads():
    v = workload(PENDING_QUOTA, active=False)
    assert v["metadata"]["ownerReferences"] == [{"uid": "job-uid", "name": "helmets-train", "kind": "Job"}]
    assert v["spec"]["active"] is False and v["status"]["conditions"][0]["reason"] == "Pending"


def test_restart_count_counts_failures_and_disruptions():
    disrupted = pod(
        "a",
        "Failed",
        T0,
        conditions=[{"type": "DisruptionTarget", "status": "True"}],
        **terminated(143, finished=T0),
    )
    interrupted = pod("b", "Failed", T1, **terminated(75, "checkpointed after SIGTERM", finished=T1))
    retried = pod("c", "Failed", T1, **terminated(20, "nan loss", finished=T1))
    current = pod("d", "Running", T2)
    j = job(active=1, failed=1)  # Ignore'd pods are not counted in Job.status.failed
    p = S.derive_status(tj(), j, [disrupted, interrupted, retried, current], now=T2)
    assert p["restartCount"] == 3
    assert p["phase"] == "Staging"
    # pods garbage-collected later do not lower it
    p2 = S.derive_status(apply(tj(), p), j, [current], now=T2)
    assert "restartCount" not in p2


def test_restart_count_counts_evictions_whose_pods_are_gone_before_their_replacement_exists():
    """Evicted pods are deleted (and Ignore'd by the Job): only status.podName remembers them."""
    t = tj()
    running = job(active=1)
    a = pod("a", "Running", T0)
    t = apply(t, S.derive_status(t, running, [a], now=T0))
    assert t["status"]["restartCount"] == 0 and t["status"]["podName"] == "a"
    evicted = pod("a", "Failed", T0, conditions=[{"type": "DisruptionTarget", "status": "True"}])
    evicted["metadata"]["deletionTimestamp"] = T1
    for seen in ([evicted], []):  # terminating, then gone: nothing replaced yet
        t = apply(t, S.derive_status(t, job(active=0), seen, now=T1))
        assert t["status"]["restartCount"] == 0
    for phase in ("Pending", "Running", "Running"):  # the replacement, seen three times: counted once
        t = apply(t, S.derive_status(t, running, [pod("b", phase, T1)], now=T1))
        assert t["status"]["restartCount"] == 1 and t["status"]["podName"] == "b"
    t = apply(t, S.derive_status(t, running, [pod("c", "Running", T2)], now=T2))  # second eviction
    assert t["status"]["restartCount"] == 2


def test_restart_count_counts_a_retried_failure_once():
    t = tj()
    t = apply(t, S.derive_status(t, job(active=1), [pod("a", "Running", T0)], now=T0))
    failed = pod("a", "Failed", T0, **terminated(20, "nan loss"))
    t = apply(t, S.derive_status(t, job(failed=1), [failed], now=T1))
    assert t["status"]["restartCount"] == 0
    for phase in ("Pending", "Running"):
        t = apply(t, S.derive_status(t, job(failed=1, active=1), [failed, pod("b", phase, T1)], now=T1))
        assert t["status"]["restartCount"] == 1


def test_disrupted_pod_is_not_the_failure_reason():
    j = job([("Failed", "BackoffLimitExceeded", "")], failed=1)
    pods = [
        pod("a", "Failed", T0, **terminated(20, "real failure", finished=T0)),
        pod("b", "Failed", T1, **terminated(75, "interrupted", finished=T1)),
    ]
    assert cond(S.derive_status(tj(), j, pods, now=T2), R.COND_FAILED)["reason"] == "TrainingError"


def test_set_condition_keeps_transition_time_when_status_unchanged():
    c1 = S.set_condition([], "Running", True, "PodRunning", "a", generation=1, now=T0)
    c2 = S.set_condition(c1, "Running", True, "PodRunning", "b", generation=2, now=T1)
    assert c2[0]["lastTransitionTime"] == T0 and c2[0]["message"] == "b" and c2[0]["observedGeneration"] == 2
    c3 = S.set_condition(c2, "Running", False, "JobFinished", "c", generation=2, now=T2)
    assert c3[0]["lastTransitionTime"] == T2
    assert c1[0]["message"] == "a"  # inputs are not mutated


def test_long_termination_message_truncated():
    j = job([("Failed", "PodFailurePolicy", "")], failed=1)
    p = S.derive_status(tj(), j, [pod(phase="Failed", **terminated(10, "x" * 100_000))], now=T2)
    assert len(cond(p, R.COND_FAILED)["message"]) <= S.MAX_MESSAGE


OBSERVATIONS = st.sampled_from(
    [
        (job(active=1), [pod()]),
        (job(active=1), [pod(phase="Running")]),
        (job([("Complete", "CompletionsReached", "")], succeeded=1), [pod(phase="Succeeded")]),
        (
            job([("Failed", "PodFailurePolicy", "")], failed=1),
            [pod(phase="Failed", **terminated(12, "denied"))],
        ),
        (job([("Suspended", "JobSuspended", "")]), []),
    ]
)


@given(st.lists(OBSERVATIONS, min_size=1, max_size=6))
def test_derive_is_idempotent(observations):
    """Applying a patch and deriving again from the same observation yields no patch (no write loops)."""
    state = tj()
    for j, pods in observations:
        state = apply(state, S.derive_status(state, j, pods, now=T1))
        assert S.derive_status(state, j, pods, now=T2) == {}
        assert state["status"]["phase"] in R.PHASES


def test_creation_and_waiting_status():
    p = S.job_created_status(tj(), "helmets-train", "yolov8n.pt", now=T0)
    assert p["phase"] == "Pending" and p["jobName"] == "helmets-train" and p["model"] == "yolov8n.pt"
    assert cond(p, R.JOB_CREATED)["status"] == "True"
    assert cond(p, R.MODEL_RESOLVED)["status"] == "True"
    assert S.job_created_status(apply(tj(), p), "helmets-train", "yolov8n.pt", now=T1) == {}
    w = S.waiting_for_model_status(tj(), R.REASON_WAITING_FOR_SOURCE, "waiting for prev", terminal=False, now=T0)
    assert w["phase"] == "Pending" and cond(w, R.MODEL_RESOLVED)["reason"] == R.REASON_WAITING_FOR_SOURCE
    f = S.waiting_for_model_status(tj(), R.REASON_SOURCE_FAILED, "prev failed", terminal=True, now=T0)
    assert f["phase"] == "Failed" and cond(f, R.COND_FAILED)["reason"] == R.REASON_SOURCE_FAILED


def test_job_missing():
    p = S.job_missing_status(tj({"phase": "Training", "jobName": "helmets-train"}), now=T1)
    assert p["phase"] == "Failed" and cond(p, R.COND_FAILED)["reason"] == R.REASON_JOB_DELETED
    assert S.job_missing_status(tj({"phase": "Succeeded"}), now=T1) == {}


def test_events_for_transitions():
    j = job([("Failed", "PodFailurePolicy", "")], failed=1)
    p = S.derive_status(tj({"phase": "Training"}), j, [pod(phase="Failed", **terminated(12, "denied"))], now=T2)
    (ev,) = S.events_for({"phase": "Training"}, p)
    assert ev[0] == "Warning" and ev[1] == R.EVENT_FAILED and "S3AccessDenied" in ev[2]
    msg = "0/2 nodes are available"
    unsched = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}])
    p2 = S.derive_status(tj({"phase": "Pending"}), job(active=1), [unsched], now=T1)
    evs = S.events_for({"phase": "Pending"}, p2)
    assert [e[1] for e in evs] == [R.EVENT_UNSCHEDULABLE]
    assert S.events_for(apply(tj({"phase": "Pending"}), p2)["status"], p2) == []
    # a new TrainingJob's first phase is no change worth an Event; its first step after that is
    assert S.events_for({}, {"phase": "Pending"}) == []
    assert [e[2] for e in S.events_for({}, {"phase": "Staging"})] == ["phase - -> Staging"]


# --- compact views: what the operator keeps in memory must derive the same status -----------------------


def _full(obj: dict, **extra_status) -> dict:
    """A fuller object as the API server returns it: noise the views must drop, and sidecar containers."""
    out = copy.deepcopy(obj)
    out["metadata"].update(
        uid="uid-" + out["metadata"]["name"],
        resourceVersion="42",
        labels={"yolo-operator.io/training-job": "helmets", "other": "x"},
        annotations={"yolo-operator.io/last-handled-configuration": "{" + "x" * 2000 + "}"},
        managedFields=[{"manager": "kube-controller-manager", "fieldsV1": {"f:status": {}}}],
        ownerReferences=[{"apiVersion": "v1", "kind": "X", "name": "owner", "uid": "owner-uid", "controller": True}],
    )
    out.setdefault("spec", {})["volumes"] = [{"name": "shm", "emptyDir": {"medium": "Memory"}}]
    st_ = out.setdefault("status", {})
    st_.update(extra_status)
    sidecar = {"name": "sidecar", "state": {"terminated": {"exitCode": 1, "message": "not the trainer"}}}
    if "containerStatuses" in st_:
        st_["containerStatuses"] = [sidecar, *st_["containerStatuses"]]
    return out


def _noisy_job(obj: dict) -> dict:
    """_full plus what the Job controller writes that derive_status does not read (the view drops it)."""
    out = _full(obj, ready=0, terminating=0, uncountedTerminatedPods={"succeeded": []})
    out["status"]["conditions"] = [
        {**c, "lastProbeTime": T1} for c in out["status"].get("conditions") or ()
    ] + [{"type": "Suspended", "status": "False", "reason": "JobResumed", "lastProbeTime": T1}]
    return out


def _noisy_pod(obj: dict) -> dict:
    """_full plus the conditions, times and container fields of a real pod that derive_status does not read."""
    out = _full(obj, hostIP="10.0.0.1", qosClass="Burstable")
    st_ = out["status"]
    st_["conditions"] = [
        {**c, "lastTransitionTime": T0, "lastProbeTime": None} for c in st_.get("conditions") or ()
    ] + [{"type": t, "status": "True", "lastTransitionTime": T0} for t in ("Initialized", "ContainersReady")]
    for cs in st_.get("containerStatuses") or ():
        cs.update(containerID="containerd://abc", restartCount=0, ready=False, started=False)
        for state in (cs.get("state") or {}).values():
            state.update(startedAt=T0, containerID="containerd://abc")
    return out


UNSCHEDULABLE = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes"}]
DISRUPTED = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]
WAITING = {"containerStatuses": [{"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
MORE_OBSERVATIONS = st.one_of(
    OBSERVATIONS,
    st.sampled_from(
        [
            (job(active=1), [pod(conditions=UNSCHEDULABLE)]),
            (job(active=1), [pod(**WAITING)]),
            (job(active=2), [pod(phase="Failed", conditions=DISRUPTED, **terminated(1)), pod("b", created=T1)]),
            (job([("Failed", "BackoffLimitExceeded", "")], failed=2), [pod(phase="Failed", **terminated(20, "x"))]),
        ]
    ),
)


@given(st.lists(MORE_OBSERVATIONS, min_size=1, max_size=6))
def test_views_derive_the_same_status(observations):
    state = tj({"phase": "Pending"}, queueName="q", suspend=False)
    for j, pods in observations:
        full_job, full_pods = _noisy_job(j), [_noisy_pod(p) for p in pods]
        want = S.derive_status(state, full_job, full_pods, now=T1)
        got = S.derive_status(
            S.trainingjob_view(state), S.job_view(full_job), [S.pod_view(p) for p in full_pods], now=T1
        )
        assert got == want
        state = apply(state, want)


def test_views_keep_what_the_handlers_need_and_drop_the_rest():
    full = _full(tj({"phase": "Pending", "jobName": "helmets-train"}, queueName="q", suspend=True))
    full.update(apiVersion="yolo-operator.io/v1alpha1", kind="TrainingJob")
    full["metadata"]["labels"]["yolo-operator.io/operator-instance"] = "a"
    v = S.trainingjob_view(full)
    assert v["metadata"] == {
        "name": "helmets",
        "namespace": "ns",
        "uid": "uid-helmets",
        "generation": 2,
        "resourceVersion": "42",
        "labels": {"yolo-operator.io/operator-instance": "a"},
    }
    assert v["spec"] == {"queueName": "q", "suspend": True} and v["status"] == full["status"]
    assert v["apiVersion"] == "yolo-operator.io/v1alpha1" and v["kind"] == "TrainingJob"  # events' involvedObject
    # The status derivation asks whether the pod waits for spec.s3.caBundle's ConfigMap: the view must say which
    # (without it, a pod stuck on a missing CA bundle was never reported Stalled unless a full body came by).
    ca = {"name": "object-store-ca", "key": "ca.crt"}
    full["spec"]["s3"] = {"endpoint": "https://s3.example.com", "caBundle": ca, "credentialsSecretRef": {"name": "k"}}
    assert S.trainingjob_view(full)["spec"]["s3"] == {"caBundle": ca}
    for garbage in ("x", {"caBundle": "x"}, None):
        full["spec"]["s3"] = garbage
        assert "s3" not in S.trainingjob_view(full)["spec"]

    j = _full(job(active=1))
    j["spec"].update(suspend=False, activeDeadlineSeconds=60, backoffLimit=3)
    j["metadata"]["annotations"].update({"yolo-operator.io/model": "m.pt", "team": "vision"})
    env = [{"name": "YOLO_TRAINER_CONFIG", "value": '{"model": "other.pt"}'}]
    j["spec"]["template"] = {"spec": {"containers": [{"name": "trainer", "env": env}]}}
    jv = S.job_view(j)
    assert jv["model"] == "m.pt"  # the annotation the operator wrote; the trainer's configuration is not read
    assert jv["spec"] == {"suspend": False, "activeDeadlineSeconds": 60}
    assert jv["metadata"]["ownerReferences"] == [{"uid": "owner-uid"}]
    assert "annotations" not in jv["metadata"] and "managedFields" not in jv["metadata"]

    pv = S.pod_view(_full(pod(phase="Failed", **terminated(12, "denied"))))
    assert [c["name"] for c in pv["status"]["containerStatuses"]] == ["trainer"]
    assert set(pv["metadata"]) == {"name", "creationTimestamp", "ownerReferences"}
    j["status"]["active"] = 0
    assert jv["status"]["active"] == 1  # a copy, not a reference into kopf's body

    # What a finished TrainingJob keeps for its Job and pod until it is deleted: only what derive_status reads.
    done = _noisy_job(job([("Complete", "CompletionsReached", "done")], succeeded=1))
    assert S.job_view(done)["status"] == {
        "succeeded": 1,
        "conditions": [
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "done",
             "lastTransitionTime": T2}
        ],
    }  # fmt: skip
    pv = S.pod_view(_noisy_pod(pod(phase="Failed", conditions=DISRUPTED + UNSCHEDULABLE, **terminated(12, "no"))))
    assert pv["status"] == {
        "phase": "Failed",
        "conditions": DISRUPTED + UNSCHEDULABLE,
        "containerStatuses": [
            {"name": "trainer", "state": {"terminated": {"exitCode": 12, "reason": "Error", "message": "no",
                                                         "finishedAt": T1}}, "lastState": {}}
        ],
    }  # fmt: skip


# --- a pod the API server refused (a ResourceQuota, a LimitRange, an admission webhook) -----------------------

QUOTA = ('Error creating: pods "helmets-train-x" is forbidden: failed quota: cpu-quota: must specify limits.cpu '
         "for: trainer")  # fmt: skip


def test_a_refused_pod_stalls_with_the_api_servers_message():
    patch = S.derive_status(tj({"phase": R.PENDING}), job(), [], now=T1, refused=QUOTA)
    assert patch.get("phase", R.PENDING) == R.PENDING
    c = S.get_condition(patch["conditions"], R.STALLED)
    assert c["status"] == "True" and c["reason"] == R.REASON_POD_REFUSED
    assert c["message"] == f"the API server refused the Job's pod: {QUOTA}"
    assert ("Warning", R.EVENT_STALLED, f"{R.REASON_POD_REFUSED}: {c['message']}") in S.events_for({}, patch)
    # the same observation again: nothing to write
    again = tj({"phase": R.PENDING, "conditions": patch["conditions"]})
    assert "conditions" not in S.derive_status(again, job(), [], now=T2, refused=QUOTA)


def test_the_first_pod_created_clears_a_refusal():
    stalled = S.derive_status(tj({"phase": R.PENDING}), job(), [], now=T1, refused=QUOTA)
    after = tj({"phase": R.PENDING, "conditions": stalled["conditions"]})
    patch = S.derive_status(after, job(active=1), [pod()], now=T2, refused=QUOTA)
    c = S.get_condition(patch["conditions"], R.STALLED)
    assert c["status"] == "False" and c["reason"] == R.REASON_POD_CREATED


def test_a_refusal_is_not_shown_for_a_suspended_or_finished_job():
    suspended = job([("Suspended", "JobSuspended", "")])
    patch = S.derive_status(tj({}, suspend=True), suspended, [], now=T1, refused=QUOTA)
    assert not S.is_true(patch.get("conditions"), R.STALLED)
    done = job([("Complete", "", "")])
    assert not S.is_true(S.derive_status(tj({}), done, [], now=T1, refused=QUOTA)["conditions"], R.STALLED)
