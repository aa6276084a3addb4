"""TrainingJobs queued by a real Kueue (v0.17.0, hack/build-kueue.sh) on a throwaway kwokctl cluster with one
kwok GPU node (nvidia.com/gpu: 8): a ClusterQueue with 8 GPUs of quota, a LocalQueue, and the operator as a
local process. kwok nodes run no containers: a pod is Running once scheduled, and "finishing" is this test
writing Succeeded into its status as the kubelet would.

* quota: three TrainingJobs of 4 GPUs -> two admitted and Running, the third Queued naming Kueue's reason;
  the first finishes -> the third is admitted and runs.
* priority: a TrainingJob labelled kueue.x-k8s.io/priority-class (propagated to its Job) preempts a running
  lower-priority one, which shows Queued/PreemptedByKueue (not Failed) and runs again when room is made.

The trainer's checkpoint flush on SIGTERM when Kueue preempts it is not exercised here (no containers run on
kwok nodes); it is the same SIGTERM path the disruption tests cover on the bed's real node.

Each step prints its time in seconds since the test started; the quota test prints a
``kubectl get tj,workloads -A`` snapshot while the third job waits.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from yolo_dev import kueue
from yolo_operator.api import reasons as R

from tests.fault.kwok_cluster import ThrowawayCluster
from tests.fault.operator_log import operator_problems
from tests.operator_fixtures import (
    OperatorProcess,
    apply,
    condition,
    install_crd,
    status_of,
    trainingjob,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain: hack/build-kueue.sh cannot build Kueue"),
]

QUEUE = "team-queue"
NODE_RESOURCES = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti", "nvidia.com/gpu": "8"}
GPU_NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "gpu-node-0", "annotations": {"kwok.x-k8s.io/node": "fake"},
                 "labels": {"type": "kwok", "nvidia.com/gpu.present": "true"}},
    "spec": {},
    "status": {"allocatable": NODE_RESOURCES, "capacity": NODE_RESOURCES},
}  # fmt: skip


class Bed:
    def __init__(self, cluster: ThrowawayCluster, operator: OperatorProcess, kq: kueue.KueueProcess, ns: str):
        self.cluster, self.operator, self.kueue, self.ns = cluster, operator, kq, ns
        self.t0 = time.monotonic()

    def kubectl(self, *args: str, **kw: Any):
        return self.cluster.kubectl(*args, **kw)

    def step(self, what: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {what}", flush=True)

    def submit(self, name: str, labels: dict[str, str] | None = None, gpus: int = 4) -> None:
        tj = trainingjob(name, queueName=QUEUE, resources={"gpus": gpus, "cpu": "2", "memory": "4Gi"})
        tj["metadata"]["labels"] = dict(labels or {})
        tj["metadata"]["annotations"] = {"example.com/ticket": "ML-42"}  # propagates to the Job and pod
        apply(self.kubectl, self.ns, tj)

    def status(self, name: str) -> dict[str, Any]:
        return status_of(self.kubectl, self.ns, name)

    def wait_phase(self, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status(name)).get("phase") in phases and s, timeout, interval=0.5,
                        what=f"{name} phase in {phases}; now {self.status(name)}\n{self.snapshot()}")  # fmt: skip

    def running_pod(self, name: str) -> dict[str, Any]:
        pods = json.loads(self.kubectl("get", "pods", "-n", self.ns, "-l", f"yolo-operator.io/training-job={name}",
                                       "-o", "json").stdout)["items"]  # fmt: skip
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return next(p for p in live if p["status"].get("phase") == "Running")

    def succeed(self, name: str) -> None:
        """Plays the kubelet: the trainer container exited 0 and the pod Succeeded."""
        pod = self.running_pod(name)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        term = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
        status = {"phase": "Succeeded", "containerStatuses": [
            {"name": "trainer", "image": "registry.invalid/yolo-trainer:test", "imageID": "", "ready": False,
             "restartCount": 0, "state": {"terminated": term}}]}  # fmt: skip
        self.kubectl("patch", "pod", pod["metadata"]["name"], "-n", self.ns, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": status}))  # fmt: skip

    def snapshot(self) -> str:
        return (self.kubectl("get", "tj,workloads", "-A", "-o", "wide", check=False).stdout
                + self.kubectl("get", "localqueues,clusterqueues", "-A", check=False).stdout)  # fmt: skip

    def workload_of(self, name: str) -> dict[str, Any]:
        job = self.status(name)["jobName"]
        wls = json.loads(self.kubectl("get", "workloads", "-n", self.ns, "-o", "json").stdout)["items"]
        return next(w for w in wls if any(r["name"] == job for r in w["metadata"].get("ownerReferences") or ()))


@pytest.fixture(scope="module")
def kq_bed(tmp_path_factory) -> Iterator[Bed]:
    tmp = tmp_path_factory.mktemp("kueue")
    t0 = time.monotonic()
    binary = kueue.binary()  # builds on the first run (minutes), before any cluster exists
    print(f"\n[{time.monotonic() - t0:6.1f} s] kueue binary {binary}")
    with ThrowawayCluster(tmp, components=("kube-controller-manager", "kube-scheduler", "kwok-controller"),
                          name=f"kueue-{int(time.time()) % 100000}",
                          extra_config=kueue.kwok_stages_without_pod_complete()) as cluster:  # fmt: skip
        print(f"[{time.monotonic() - t0:6.1f} s] cluster up")
        ns = "ml-team"
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(GPU_NODE))
        install_crd(cluster.kubectl)
        with kueue.KueueProcess(cluster.kubeconfig, tmp, cluster.kubectl) as kq:
            print(f"[{time.monotonic() - t0:6.1f} s] kueue ready")
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(kueue.kueue_objects(ns, QUEUE)))
            active = "jsonpath={.status.conditions[?(@.type=='Active')].status}"
            wait_for(lambda: cluster.kubectl("get", "clusterqueue", "gpus", "-o", active).stdout == "True",
                     60, what="ClusterQueue gpus Active")  # fmt: skip
            op = OperatorProcess(cluster.kubeconfig, [ns], tmp / "operator.log").start()
            print(f"[{time.monotonic() - t0:6.1f} s] operator up")
            try:
                yield Bed(cluster, op, kq, ns)
            finally:
                op.stop()
                problems = [ln for ln in op.logs().splitlines() if "Traceback" in ln or " ERROR " in ln]
                print("operator log problems:", problems[:10] or "none")
                (tmp.parent / "kueue-logs").mkdir(exist_ok=True)
                shutil.copy(kq.log_path, tmp.parent / "kueue-logs" / "kueue.log")


def test_quota_two_run_one_queued_then_admitted(kq_bed: Bed):
    kq_bed.t0 = time.monotonic()
    for name in ("qa", "qb", "qc"):
        kq_bed.submit(name, labels={"cost-centre": "cc-1234"})
        time.sleep(1)  # creation order is Kueue's queue order (BestEffortFIFO)
    kq_bed.step("submitted qa, qb, qc (4 GPUs each; quota 8)")
    for name in ("qa", "qb"):
        kq_bed.wait_phase(name, R.STAGING)
        kq_bed.step(f"{name} admitted and Running (phase {kq_bed.status(name)['phase']})")
    s = kq_bed.wait_phase("qc", R.QUEUED)
    c = condition(s, R.COND_SUSPENDED)
    kq_bed.step(f"qc Queued: {c['reason']}: {c['message']}")
    s = wait_for(lambda: (x := kq_bed.status("qc")).get("kueue", {}).get("reason") and x, 30, what="qc status.kueue")
    print(f"qc status.kueue: {s['kueue']}")
    print("snapshot while qc waits:\n" + kq_bed.snapshot())
    assert c["reason"] == R.REASON_QUEUED and QUEUE in c["message"]
    assert s["kueue"]["admitted"] is False and s["kueue"]["reason"] == "Pending"
    assert "nvidia.com/gpu" in s["kueue"]["message"]  # Kueue's own words: insufficient quota for nvidia.com/gpu
    assert "nvidia.com/gpu" in c["message"]
    for name in ("qa", "qb"):
        k = kq_bed.status(name)["kueue"]
        assert k["admitted"] is True and k["clusterQueue"] == "gpus"
    # the user's label reached the Job and its pod
    job = json.loads(kq_bed.kubectl("get", "job", kq_bed.status("qa")["jobName"], "-n", kq_bed.ns, "-o", "json").stdout)
    assert job["metadata"]["labels"]["cost-centre"] == "cc-1234"
    assert job["spec"]["template"]["metadata"]["labels"]["cost-centre"] == "cc-1234"
    assert job["metadata"]["annotations"]["example.com/ticket"] == "ML-42"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in job["metadata"]["annotations"]
    assert kq_bed.running_pod("qa")["metadata"]["annotations"]["example.com/ticket"] == "ML-42"

    kq_bed.succeed("qa")
    kq_bed.step("qa's pod marked Succeeded")
    kq_bed.wait_phase("qa", R.SUCCEEDED)
    kq_bed.step("qa Succeeded")
    s = kq_bed.wait_phase("qc", R.STAGING)
    kq_bed.step(f"qc admitted and Running; status.kueue {s['kueue']}")
    assert s["kueue"]["admitted"] is True
    assert condition(s, R.COND_SUSPENDED)["status"] == "False"
    assert kq_bed.status("qb")["phase"] == R.STAGING
    kq_bed.kubectl("delete", "tj", "qa", "qb", "qc", "-n", kq_bed.ns, "--wait=true")
    wait_for(lambda: not json.loads(kq_bed.kubectl("get", "workloads", "-n", kq_bed.ns, "-o", "json").stdout)["items"],
             60, what="the workloads to go with their Jobs")  # fmt: skip
    kq_bed.step("cleaned up")


def test_higher_priority_preempts_and_the_preempted_job_is_requeued_not_failed(kq_bed: Bed):
    kq_bed.t0 = time.monotonic()
    low = {"kueue.x-k8s.io/priority-class": "research-low"}
    for name in ("low-a", "low-b"):
        kq_bed.submit(name, labels=low)
        time.sleep(1)
    for name in ("low-a", "low-b"):
        kq_bed.wait_phase(name, R.STAGING)
        kq_bed.step(f"{name} Running")
    wl = kq_bed.workload_of("low-a")
    assert wl["spec"]["priorityClassRef"]["name"] == "research-low" and wl["spec"].get("priority") == 100

    kq_bed.submit("urgent", labels={"kueue.x-k8s.io/priority-class": "production-high"})
    kq_bed.step("submitted urgent (production-high)")
    s = kq_bed.wait_phase("urgent", R.STAGING, timeout=120)
    kq_bed.step("urgent admitted and Running")
    assert kq_bed.workload_of("urgent")["spec"].get("priority") == 10000
    preempted = wait_for(
        lambda: next((n for n in ("low-a", "low-b") if kq_bed.status(n).get("phase") == R.QUEUED), None),
        60, what="one of the low-priority jobs to be preempted",
    )  # fmt: skip
    s = wait_for(lambda: (x := kq_bed.status(preempted)).get("kueue", {}).get("preemptions") and x, 60,
                 what=f"{preempted} status.kueue.preemptions")  # fmt: skip
    c = condition(s, R.COND_SUSPENDED)
    kq_bed.step(f"{preempted} preempted: phase {s['phase']}, {c['reason']}: {c['message']}")
    print(f"{preempted} status.kueue: {s['kueue']}")
    print("snapshot after the preemption:\n" + kq_bed.snapshot())
    assert s["phase"] == R.QUEUED and c["reason"] == R.REASON_PREEMPTED
    assert (condition(s, R.COND_FAILED) or {}).get("status") != "True"
    assert s["kueue"]["preemptions"] == 1 and s["kueue"]["admitted"] is False
    job = json.loads(kq_bed.kubectl("get", "job", s["jobName"], "-n", kq_bed.ns, "-o", "json").stdout)
    assert job["spec"]["suspend"] is True and not job["status"].get("failed")  # no retry spent

    kq_bed.succeed("urgent")
    kq_bed.step("urgent's pod marked Succeeded")
    s = kq_bed.wait_phase(preempted, R.STAGING, timeout=120)
    kq_bed.step(f"{preempted} readmitted and Running again; restartCount {s.get('restartCount')}")
    assert s["kueue"]["admitted"] is True and s["kueue"]["preemptions"] == 1
    assert condition(s, R.COND_SUSPENDED)["status"] == "False"
    job = json.loads(kq_bed.kubectl("get", "job", s["jobName"], "-n", kq_bed.ns, "-o", "json").stdout)
    assert not job["status"].get("failed")


def test_suspend_with_a_queue_deactivates_the_workload_and_resume_hands_it_back(kq_bed: Bed):
    kq_bed.t0 = time.monotonic()
    name = next(n for n in ("low-a", "low-b") if kq_bed.status(n).get("phase") == R.STAGING)
    kq_bed.kubectl("patch", "tj", name, "-n", kq_bed.ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    s = kq_bed.wait_phase(name, R.SUSPENDED)
    kq_bed.step(f"{name} suspend: true -> {s['phase']} ({condition(s, R.COND_SUSPENDED)['reason']})")
    assert kq_bed.workload_of(name)["spec"]["active"] is False
    time.sleep(3)  # Kueue would unsuspend an admitted Job within this if only the Job's suspend had been set
    assert kq_bed.status(name)["phase"] == R.SUSPENDED
    kq_bed.kubectl("patch", "tj", name, "-n", kq_bed.ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    s = kq_bed.wait_phase(name, R.STAGING)
    kq_bed.step(f"{name} suspend: false -> handed back to Kueue, admitted, {s['phase']}")
    assert kq_bed.workload_of(name)["spec"]["active"] is True and s["kueue"]["admitted"] is True


def test_a_multi_node_gang_is_admitted_whole_or_not_at_all(kq_bed: Bed):
    """A 2-node TrainingJob of 8 GPUs per node in a ClusterQueue of 8 GPUs (room for one of its pods): Kueue sees
    one podset of 2 pods and holds it Queued; the Indexed Job stays suspended and no pod is created."""
    bed = kq_bed
    tj = trainingjob("gang", queueName=QUEUE, resources={"nodes": 2, "gpus": 8, "cpu": "2", "memory": "4Gi"},
                     training={"epochs": 1, "imgsz": 320, "batch": 16})  # fmt: skip
    apply(bed.kubectl, bed.ns, tj)
    st = bed.wait_phase("gang", R.QUEUED)

    def considered() -> dict[str, Any] | None:  # Kueue tried and found no room: its reason is in the Workload
        wl = bed.workload_of("gang")
        conds = {c["type"]: c for c in (wl.get("status") or {}).get("conditions") or ()}
        held = conds.get("QuotaReserved", {})
        return wl if held.get("status") == "False" and held.get("message") else None

    wl = wait_for(considered, 60, what=f"Kueue to consider the gang\n{bed.snapshot()}")
    (podset,) = wl["spec"]["podSets"]
    assert podset["count"] == 2, podset  # one podset: the whole gang, admitted at once or not at all
    held = next(c for c in wl["status"]["conditions"] if c["type"] == "QuotaReserved")
    bed.step(f"gang held: QuotaReserved=False {held['reason']}: {held['message']}")
    st = bed.status("gang")
    assert st["phase"] == R.QUEUED and condition(st, "Suspended")["reason"] == R.REASON_QUEUED, st
    job = json.loads(bed.kubectl("get", "job", st["jobName"], "-n", bed.ns, "-o", "json").stdout)
    assert job["spec"]["suspend"] is True and job["spec"]["completionMode"] == "Indexed"
    pods = json.loads(bed.kubectl("get", "pods", "-n", bed.ns, "-l", "yolo-operator.io/training-job=gang",
                                  "-o", "json").stdout)["items"]  # fmt: skip
    assert pods == [], [p["metadata"]["name"] for p in pods]
    print(f"KUEUE-FIGURE gang of 2 pods x 8 GPUs, ClusterQueue room for 1: phase {st['phase']}, Job suspended, "
          f"0 pods; Workload podSets[0].count={podset['count']}, QuotaReserved=False {held['reason']}: "
          f"{held['message']}")
    print("$ kubectl get tj,jobs,workloads -o wide\n" + bed.kubectl("get", "tj,jobs,workloads", "-n", bed.ns,
                                                                    "-o", "wide").stdout)  # fmt: skip
    bed.kubectl("delete", "tj", "gang", "-n", bed.ns, "--wait=true")


def test_without_kueue_the_operator_works_as_before(tmp_path):
    """No Kueue CRD in the cluster: the Workload watch is idle (kopf only warns that it cannot serve it) and a
    TrainingJob without queueName gets its Job and status as before; one with queueName waits Queued."""
    t0 = time.monotonic()
    # the Job controller marks the queued Job Suspended; nothing here runs pods
    with ThrowawayCluster(
        tmp_path, components=("kube-controller-manager",), name=f"nokueue-{int(time.time()) % 100000}"
    ) as cluster:
        ns = "plain"
        cluster.kubectl("create", "namespace", ns)
        install_crd(cluster.kubectl)
        op = OperatorProcess(cluster.kubeconfig, [ns], tmp_path / "operator.log").start()
        try:
            apply(cluster.kubectl, ns, trainingjob("plain"), trainingjob("queued", queueName=QUEUE))

            def recorded(name: str) -> dict[str, Any] | None:
                s = status_of(cluster.kubectl, ns, name)
                return s if s.get("jobName") and s.get("phase") else None

            plain = wait_for(lambda: recorded("plain"), 60, what="plain's Job in its status")
            queued = wait_for(lambda: recorded("queued"), 60, what="queued's Job in its status")
            print(f"[{time.monotonic() - t0:6.1f} s] without Kueue: plain {plain['phase']}, queued {queued['phase']}")
            job = json.loads(cluster.kubectl("get", "job", plain["jobName"], "-n", ns, "-o", "json").stdout)
            assert job["spec"]["suspend"] is False and "kueue" not in plain
            assert wait_for(
                lambda: status_of(cluster.kubectl, ns, "queued").get("phase") == R.QUEUED, 30, what="Queued"
            )
            problems = operator_problems(op.logs())
            assert not problems, problems
            assert "Unresolved resources cannot be served" in op.logs()  # the Workload watch, idle
        finally:
            op.stop()
