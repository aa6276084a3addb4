"""The operator against the real control plane (kube-apiserver, controller-manager, scheduler; kwok plays the
kubelets): Job creation in a restricted namespace, scheduling, Job outcomes, suspend, chained jobs,
garbage collection, and restarts without duplicate Jobs.

kwok completes Job pods on its nodes successfully at once. For failures the tests keep the pod off every
node (a nodeSelector nothing matches) and play the kubelet themselves: they patch the pod's status with a
terminated trainer container and an exit code, which the real Job controller then judges by the Job's
podFailurePolicy.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.operator_fixtures import (
    OperatorProcess,
    apply,
    condition,
    events_for,
    get,
    install_crd,
    items,
    set_pod_waiting,
    status_of,
    terminate_pod,
    trainingjob,
    wait_condition,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.integration
LABEL = "yolo-operator.io/training-job"
NOWHERE = {"nodeSelector": {"yolo-operator.io/test": "no-such-node"}}


@pytest.fixture(scope="module")
def crd_installed(kubectl):
    install_crd(kubectl)


@pytest.fixture
def start_operator(kubeconfig, tmp_path, crd_installed):
    """start_operator(*namespaces) -> a running OperatorProcess watching those namespaces; stopped after."""
    procs: list[OperatorProcess] = []

    def start(*namespaces: str) -> OperatorProcess:
        p = OperatorProcess(kubeconfig, list(namespaces), tmp_path / f"operator-{len(procs)}.log").start()
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()
    if procs:
        print("--- operator log (tail) ---\n" + procs[-1].logs()[-6000:])


def jobs_of(kubectl, ns: str, name: str) -> list[dict]:
    return items(kubectl, ns, "jobs", f"{LABEL}={name}")


def pods_of(kubectl, ns: str, name: str) -> list[dict]:
    return items(kubectl, ns, "pods", f"{LABEL}={name}")


def wait_pods(kubectl, ns: str, name: str, n: int, timeout: float = 120) -> list[dict]:
    def check():
        live = [p for p in pods_of(kubectl, ns, name) if p["status"].get("phase") in ("Pending", "Running")]
        return live if len(live) >= n else None

    return wait_for(check, timeout, what=f"{n} live pod(s) of {name}")


def s3_secret(kubectl, ns: str) -> None:
    kubectl(
        "create",
        "secret",
        "generic",
        "s3-keys",
        "--from-literal=AWS_ACCESS_KEY_ID=test",
        "--from-literal=AWS_SECRET_ACCESS_KEY=test-secret",
        namespace=ns,
    )


def can_i(kubectl, ns: str, sa: str, *args: str) -> bool:
    proc = kubectl("auth", "can-i", *args, f"--as=system:serviceaccount:{ns}:{sa}", namespace=ns, check=False)
    return proc.stdout.strip() == "yes"


# --- the happy path --------------------------------------------------------------------------------------


def test_valid_trainingjob_runs_in_restricted_namespace(kubectl, restricted_namespace, start_operator):
    ns = restricted_namespace
    start_operator(ns)
    s3_secret(kubectl, ns)
    apply(kubectl, ns, trainingjob("run"))
    status = wait_phase(kubectl, ns, "run", "Succeeded")
    tj = get(kubectl, ns, "tj", "run")

    # exactly one Job, owned by the TrainingJob, with the shm volume, GPU limit, credentials, restricted SC
    (job,) = jobs_of(kubectl, ns, "run")
    assert job["metadata"]["name"] == status["jobName"] == "run-train"
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["uid"] == tj["metadata"]["uid"] and owner["controller"] and owner["blockOwnerDeletion"]
    pod_spec = job["spec"]["template"]["spec"]
    (c,) = pod_spec["containers"]
    shm = next(v for v in pod_spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory" and shm["emptyDir"]["sizeLimit"]
    assert {"name": "shm", "mountPath": "/dev/shm"} in [
        {k: m[k] for k in ("name", "mountPath")} for m in c["volumeMounts"]
    ]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-keys"
    assert "test-secret" not in json.dumps(job)  # the operator never read the Secret
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert json.loads(env["YOLO_TRAINER_CONFIG"]["value"])["model"] == {"kind": "hub", "hub": "yolov8n.pt"}
    assert job["metadata"]["annotations"]["yolo-operator.io/model"] == "yolov8n.pt"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailJob"

    # its pod was admitted under Pod Security "restricted" and the scheduler put it on the GPU node
    ns_labels = get(kubectl, None, "namespace", ns)["metadata"]["labels"]
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    (pod,) = pods_of(kubectl, ns, "run")
    assert pod["spec"]["nodeName"] == "gpu-node-0"
    assert pod["spec"]["serviceAccountName"] == "run-trainer"

    # status and events
    for type_ in ("ModelResolved", "JobCreated", "Succeeded"):
        assert condition(status, type_)["status"] == "True", type_
    running = condition(status, "Running")  # only there if the (fast, fake) pod was seen running
    assert running is None or running["status"] == "False"
    assert status["completionTime"] and status["startTime"] and status["restartCount"] == 0
    reasons = {e["reason"] for e in events_for(kubectl, ns, "run")}
    assert {"JobCreated", "Succeeded"} <= reasons
    assert not tj["metadata"].get("finalizers")  # deletion never waits for the operator

    # least-privilege ServiceAccount for the trainer's status reports
    for kind in ("serviceaccount", "role", "rolebinding"):
        obj = get(kubectl, ns, kind, "run-trainer")
        assert obj["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"], kind
    assert can_i(kubectl, ns, "run-trainer", "patch", "trainingjobs.yolo-operator.io/run", "--subresource=status")
    assert can_i(kubectl, ns, "run-trainer", "get", "trainingjobs.yolo-operator.io/run")
    assert not can_i(kubectl, ns, "run-trainer", "patch", "trainingjobs.yolo-operator.io/other", "--subresource=status")
    assert not can_i(kubectl, ns, "run-trainer", "patch", "trainingjobs.yolo-operator.io/run")  # spec: no
    assert not can_i(kubectl, ns, "run-trainer", "get", "secrets")


def test_more_gpus_than_exist_is_unschedulable(kubectl, namespace, start_operator):
    start_operator(namespace)
    apply(kubectl, namespace, trainingjob("greedy", resources={"gpus": 16}))
    cond = wait_condition(kubectl, namespace, "greedy", "Unschedulable")
    assert cond["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond["message"], cond
    status = status_of(kubectl, namespace, "greedy")
    assert status["phase"] == "Pending"
    assert len(jobs_of(kubectl, namespace, "greedy")) == 1
    warnings = [e for e in events_for(kubectl, namespace, "greedy") if e["type"] == "Warning"]
    assert any(e["reason"] == "Unschedulable" and "nvidia.com/gpu" in e["message"] for e in warnings)


def test_a_pod_the_quota_refuses_is_stalled_with_the_api_servers_message(kubectl, namespace, start_operator):
    """A ResourceQuota on limits.cpu refuses a pod without a CPU limit: only the Job's FailedCreate Event says
    so, and the TrainingJob shows it as Stalled/PodRefused. spec.resources.cpuLimit gets a pod admitted."""
    start_operator(namespace)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "cpu-quota"},
             "spec": {"hard": {"limits.cpu": "8"}}}  # fmt: skip
    apply(kubectl, namespace, quota)
    wait_for(lambda: (get(kubectl, namespace, "resourcequota", "cpu-quota").get("status") or {}).get("hard"),
             60, what="the quota's status")  # fmt: skip
    apply(kubectl, namespace, trainingjob("refused", scheduling=NOWHERE))
    cond = wait_condition(kubectl, namespace, "refused", "Stalled", timeout=120)
    print(f"Stalled condition: {cond['reason']}: {cond['message']}")
    assert cond["reason"] == "PodRefused", cond
    assert cond["message"].startswith("the API server refused the Job's pod: ")
    assert "cpu-quota" in cond["message"] and "limits.cpu" in cond["message"], cond
    assert status_of(kubectl, namespace, "refused")["phase"] == "Pending"
    assert pods_of(kubectl, namespace, "refused") == []
    warnings = [e for e in events_for(kubectl, namespace, "refused") if e["type"] == "Warning"]
    assert any(e["reason"] == "Stalled" and "PodRefused" in e["message"] for e in warnings)

    # a CPU limit within the quota: admitted
    resources = {"gpus": 1, "cpu": "2", "cpuLimit": "3", "memory": "4Gi"}
    apply(kubectl, namespace, trainingjob("limited", scheduling=NOWHERE, resources=resources))
    (pod,) = wait_pods(kubectl, namespace, "limited", 1)
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "3"
    assert condition(status_of(kubectl, namespace, "limited"), "Stalled") is None

    # the quota gone, the Job controller's next try creates the refused job's pod: the condition clears
    kubectl("delete", "resourcequota", "cpu-quota", namespace=namespace)
    cleared = wait_condition(kubectl, namespace, "refused", "Stalled", status="False", timeout=180)
    assert cleared["reason"] == "PodCreated", cleared


# --- Job outcomes ----------------------------------------------------------------------------------------


def test_non_retriable_exit_code_fails_at_once(kubectl, namespace, start_operator):
    start_operator(namespace)
    apply(kubectl, namespace, trainingjob("baddata", scheduling=NOWHERE, backoffLimit=3))
    (pod,) = wait_pods(kubectl, namespace, "baddata", 1)
    msg = "DatasetInvalid: data.yaml not found under s3://datasets/helmets/"
    terminate_pod(kubectl, namespace, pod["metadata"]["name"], 11, msg)

    status = wait_phase(kubectl, namespace, "baddata", "Failed")
    failed = condition(status, "Failed")
    assert failed["reason"] == "DatasetInvalid"
    assert "data.yaml not found" in failed["message"] and "code 11" in failed["message"]
    (job,) = jobs_of(kubectl, namespace, "baddata")
    job_failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert job_failed["reason"] == "PodFailurePolicy"  # not retried although backoffLimit is 3
    assert len(pods_of(kubectl, namespace, "baddata")) == 1
    assert status["completionTime"]
    evs = [e for e in events_for(kubectl, namespace, "baddata") if e["reason"] == "Failed"]
    assert evs and evs[0]["type"] == "Warning" and "DatasetInvalid" in evs[0]["message"]


def test_disruption_does_not_count_but_retriable_failure_does(kubectl, namespace, start_operator):
    start_operator(namespace)
    apply(kubectl, namespace, trainingjob("flaky", scheduling=NOWHERE, backoffLimit=0))
    (first,) = wait_pods(kubectl, namespace, "flaky", 1)
    # exit 75: checkpointed after SIGTERM (preemption) -> podFailurePolicy Ignore -> replaced, not counted
    terminate_pod(kubectl, namespace, first["metadata"]["name"], 75, "Interrupted: checkpoint flushed")

    def replacement():
        live = [
            p
            for p in pods_of(kubectl, namespace, "flaky")
            if p["metadata"]["name"] != first["metadata"]["name"] and p["status"].get("phase") == "Pending"
        ]
        return live[0] if live else None

    second = wait_for(replacement, 120, what="a replacement pod")
    wait_for(lambda: status_of(kubectl, namespace, "flaky").get("restartCount") == 1, 60, what="restartCount 1")
    status = status_of(kubectl, namespace, "flaky")
    assert status["phase"] == "Pending" and condition(status, "Failed") is None
    (job,) = jobs_of(kubectl, namespace, "flaky")
    assert not job["status"].get("failed")

    # exit 20: retriable, counts against backoffLimit 0 -> the Job fails with the trainer's reason
    terminate_pod(kubectl, namespace, second["metadata"]["name"], 20, "TrainingError: CUDA error: device-side assert")
    status = wait_phase(kubectl, namespace, "flaky", "Failed")
    failed = condition(status, "Failed")
    assert failed["reason"] == "TrainingError"
    assert "backoff limit reached" in failed["message"] and "CUDA error" in failed["message"]
    assert status["restartCount"] == 1


def test_missing_secret_surfaces_as_stalled(kubectl, namespace, start_operator):
    start_operator(namespace)
    apply(kubectl, namespace, trainingjob("nosecret", scheduling=NOWHERE))
    (pod,) = wait_pods(kubectl, namespace, "nosecret", 1)
    set_pod_waiting(
        kubectl, namespace, pod["metadata"]["name"], "CreateContainerConfigError", 'secret "s3-keys" not found'
    )
    cond = wait_condition(kubectl, namespace, "nosecret", "Stalled")
    assert cond["reason"] == "CreateContainerConfigError"
    assert 'secret "s3-keys" not found' in cond["message"]
    assert any(e["reason"] == "Stalled" for e in events_for(kubectl, namespace, "nosecret"))


def test_trainer_stage_reports_drive_the_phase(kubectl, namespace, start_operator):
    start_operator(namespace)
    apply(kubectl, namespace, trainingjob("stages", scheduling=NOWHERE))
    (pod,) = wait_pods(kubectl, namespace, "stages", 1)
    pod_name = pod["metadata"]["name"]
    running = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "image": "x",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    kubectl(
        "patch", "pod", pod_name, "--subresource=status", "--type=merge", "-p", json.dumps(running), namespace=namespace
    )
    wait_phase(kubectl, namespace, "stages", "Staging")  # running, nothing reported yet
    assert condition(status_of(kubectl, namespace, "stages"), "Running")["status"] == "True"

    # the trainer, with its own ServiceAccount's rights, merge-patches its report
    report = {"status": {"stage": "Training", "progress": {"epoch": 7, "epochs": 50, "epochDisplay": "7/50"}}}
    kubectl(
        "patch",
        "tj",
        "stages",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(report),
        f"--as=system:serviceaccount:{namespace}:stages-trainer",
        namespace=namespace,
    )
    wait_phase(kubectl, namespace, "stages", "Training")
    row = kubectl("get", "tj", "stages", "--no-headers", namespace=namespace).stdout.split()
    assert row[1:3] == ["Training", "7/50"]

    kubectl(
        "patch",
        "tj",
        "stages",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"stage": "Uploading"}}),
        f"--as=system:serviceaccount:{namespace}:stages-trainer",
        namespace=namespace,
    )
    wait_phase(kubectl, namespace, "stages", "Uploading")

    done = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "image": "x",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": "2026-01-01T00:00:00Z",
                            "finishedAt": "2026-01-01T00:10:00Z",
                        }
                    },
                }
            ],
        }
    }
    kubectl(
        "patch", "pod", pod_name, "--subresource=status", "--type=merge", "-p", json.dumps(done), namespace=namespace
    )
    status = wait_phase(kubectl, namespace, "stages", "Succeeded")
    assert status["stage"] == "Uploading"  # the trainer's fields are left alone
    assert status["progress"]["epochDisplay"] == "7/50"


def test_suspend_and_resume(kubectl, namespace, start_operator):
    start_operator(namespace)
    apply(kubectl, namespace, trainingjob("paused", suspend=True))
    cond = wait_condition(kubectl, namespace, "paused", "Suspended")
    assert cond["reason"] == "JobSuspended"
    assert status_of(kubectl, namespace, "paused")["phase"] == "Suspended"
    (job,) = jobs_of(kubectl, namespace, "paused")
    assert job["spec"]["suspend"] is True
    assert pods_of(kubectl, namespace, "paused") == []

    kubectl("patch", "tj", "paused", "--type=merge", "-p", '{"spec":{"suspend":false}}', namespace=namespace)
    status = wait_phase(kubectl, namespace, "paused", "Succeeded")
    assert condition(status, "Suspended")["status"] == "False"
    (job,) = jobs_of(kubectl, namespace, "paused")
    assert job["spec"]["suspend"] is False


def test_from_training_job_waits_for_source_weights(kubectl, namespace, start_operator):
    start_operator(namespace)
    apply(kubectl, namespace, trainingjob("next", model={"fromTrainingJob": "base"}))
    cond = wait_condition(kubectl, namespace, "next", "ModelResolved", "False")
    assert cond["reason"] == "SourceTrainingJobNotFound" and "base" in cond["message"]
    assert jobs_of(kubectl, namespace, "next") == []

    # the source runs; while suspended the "trainer" reports its weights, then it completes
    apply(kubectl, namespace, trainingjob("base", suspend=True))
    wait_phase(kubectl, namespace, "base", "Suspended")
    cond = wait_condition(kubectl, namespace, "next", "ModelResolved", "False")
    wait_for(
        lambda: (
            condition(status_of(kubectl, namespace, "next"), "ModelResolved")["reason"] == "WaitingForSourceTrainingJob"
        ),
        40,
        what="WaitingForSourceTrainingJob",
    )
    assert jobs_of(kubectl, namespace, "next") == []
    best = f"s3://runs/{namespace}/base/weights/best.pt"
    kubectl(
        "patch",
        "tj",
        "base",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"artifacts": {"bestWeights": best}}}),
        namespace=namespace,
    )
    kubectl("patch", "tj", "base", "--type=merge", "-p", '{"spec":{"suspend":false}}', namespace=namespace)
    wait_phase(kubectl, namespace, "base", "Succeeded")

    (job,) = wait_for(lambda: jobs_of(kubectl, namespace, "next"), 120, what="the dependent's Job")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    model = json.loads(env["YOLO_TRAINER_CONFIG"]["value"])["model"]  # typed: the parent's weights and the parent
    assert (model["kind"], model["uri"], model["namespace"], model["name"]) == ("fromTrainingJob", best, namespace,
                                                                               "base")  # fmt: skip
    status = wait_phase(kubectl, namespace, "next", "Succeeded")
    assert status["model"] == best
    assert condition(status, "ModelResolved")["status"] == "True"


# --- deletion and restarts -------------------------------------------------------------------------------


def test_delete_removes_job_even_with_operator_down(kubectl, namespace, start_operator):
    op = start_operator(namespace)
    apply(kubectl, namespace, trainingjob("gone", scheduling=NOWHERE))
    wait_condition(kubectl, namespace, "gone", "JobCreated")
    wait_pods(kubectl, namespace, "gone", 1)
    op.kill()
    assert not get(kubectl, namespace, "tj", "gone")["metadata"].get("finalizers")
    kubectl("delete", "tj", "gone", "--wait=true", "--timeout=30s", namespace=namespace)
    # the garbage collector (real kube-controller-manager) removes everything the operator created
    wait_for(lambda: jobs_of(kubectl, namespace, "gone") == [], 120, what="the Job to be garbage-collected")
    wait_for(lambda: pods_of(kubectl, namespace, "gone") == [], 120, what="the pod to be garbage-collected")
    for kind in ("serviceaccount", "role", "rolebinding"):
        wait_for(lambda k=kind: get(kubectl, namespace, k, "gone-trainer") is None, 120, what=f"{kind} GC")


def test_adopts_job_created_before_a_crash(kubectl, namespace, start_operator):
    """Crash window: the Job exists but status.jobName was never written. A restart must adopt it."""
    from yolo_operator.controller.build import build_job
    from yolo_operator.runtime.config import OperatorConfig

    apply(kubectl, namespace, trainingjob("adopt", scheduling=NOWHERE))
    tj = get(kubectl, namespace, "tj", "adopt")
    job = build_job(tj, OperatorConfig(trainer_image="registry.invalid/yolo-trainer:test"))
    kubectl("create", "-f", "-", input=json.dumps(job), namespace=namespace)
    uid_before = jobs_of(kubectl, namespace, "adopt")[0]["metadata"]["uid"]

    start_operator(namespace)
    status = wait_condition(kubectl, namespace, "adopt", "JobCreated") and status_of(kubectl, namespace, "adopt")
    assert status["jobName"] == "adopt-train"
    (job_after,) = jobs_of(kubectl, namespace, "adopt")
    assert job_after["metadata"]["uid"] == uid_before  # the same Job, not a second one
    wait_condition(kubectl, namespace, "adopt", "Unschedulable")


def test_killed_and_restarted_mid_reconcile_no_duplicates(kubectl, namespace, start_operator):
    names = [f"batch-{i}" for i in range(6)]
    apply(kubectl, namespace, *(trainingjob(n, scheduling=NOWHERE) for n in names))
    op = start_operator(namespace)
    wait_for(lambda: items(kubectl, namespace, "jobs", LABEL), 60, what="the first Job")
    op.kill()  # SIGKILL in the middle of creating the batch

    start_operator(namespace)
    for n in names:
        wait_condition(kubectl, namespace, n, "JobCreated")
        wait_condition(kubectl, namespace, n, "Unschedulable")
    jobs = items(kubectl, namespace, "jobs", LABEL)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(f"{n}-train" for n in names)

    # a third start finds nothing to do: no new Jobs, statuses unchanged
    before = {n: status_of(kubectl, namespace, n) for n in names}
    op3 = start_operator(namespace)
    # resume handlers ran for every TrainingJob (and found nothing to create)
    wait_for(lambda: all(f"{namespace}/{n} ensure" in op3.logs() for n in names), 60, what="resume of all")
    time.sleep(2)  # let any (wrong) follow-up writes land
    assert len(items(kubectl, namespace, "jobs", LABEL)) == len(names)
    after = {n: status_of(kubectl, namespace, n) for n in names}
    assert after == before


def test_health_and_metrics(kubectl, namespace, start_operator):
    op = start_operator(namespace)
    apply(kubectl, namespace, trainingjob("observed"))
    wait_phase(kubectl, namespace, "observed", "Succeeded")
    assert op.healthy()

    def gauge_ready() -> str | None:
        t = op.metrics()
        return t if 'yolo_operator_trainingjobs{phase="Succeeded"} 1.0' in t else None

    text = wait_for(gauge_ready, 20, what="the phase gauge")
    assert "yolo_operator_reconcile_duration_seconds_count" in text
    assert 'yolo_operator_reconcile_errors_total{handler="reconcile"} 0.0' in text
    assert "yolo_operator_jobs_created_total 1.0" in text
    # the job's own series (yolo_trainingjob_*): its phase, labelled with its namespace and name
    job = f'trainingjob="observed",trainingjob_namespace="{namespace}"'
    assert f'yolo_trainingjob_phase{{phase="Succeeded",{job}}} 1.0' in text
    assert f'yolo_trainingjob_phase{{phase="Training",{job}}} 0.0' in text


def test_operator_instances_leave_each_others_trainingjobs_alone(kubectl, namespace, start_operator):
    """YOLO_OPERATOR_INSTANCE: an instance handles only TrainingJobs labelled with its name."""
    op = start_operator(namespace)  # instance name = the namespace
    apply(kubectl, namespace, trainingjob("foreign"), instance="someone-else")
    apply(kubectl, namespace, trainingjob("unlabelled"), instance=None)
    apply(kubectl, namespace, trainingjob("mine"))
    wait_phase(kubectl, namespace, "mine", "Succeeded")
    (job,) = jobs_of(kubectl, namespace, "mine")
    assert job["metadata"]["labels"]["yolo-operator.io/operator-instance"] == namespace
    assert job["spec"]["template"]["metadata"]["labels"]["yolo-operator.io/operator-instance"] == namespace
    assert f"{namespace}/mine ensure" in op.logs()
    time.sleep(2)
    for other in ("foreign", "unlabelled"):
        assert f"{namespace}/{other} " not in op.logs(), other  # never handled by this instance
        ours = items(kubectl, namespace, "jobs", f"{LABEL}={other},yolo-operator.io/operator-instance={namespace}")
        assert ours == [], other
