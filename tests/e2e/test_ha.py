"""High availability on the real node: the chart's default two operator replicas with leader election, and the
leader's process SIGKILLed (``kill -9`` of the container's process on the node, found through the node's
containerd: no pod delete, no SIGTERM, no Lease release) during a burst of 200 TrainingJobs.

The standby takes the Lease over once it has gone unrenewed for leaseDurationSeconds (15 s) and reconciles
every TrainingJob: each has exactly one Job (and one ServiceAccount, Role and RoleBinding), owned by it, and
a status naming it; no JobCreated or Succeeded event is posted twice, and no phase goes back. Printed:
``HA-FIGURE takeover_s=... first_job_s=... all_jobs_s=...`` (seconds from the kill to the new leader's
acquireTime, to the first Job created after it, to the last of the 200).

The TrainingJobs' pods run on kwok's fake nodes (CPU only, done at once): the real node runs only the two
operator pods. ``YOLO_E2E_OPERATOR_TAG``: test another build of the operator image (a tag the node has).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

import pytest
from yolo_dev import testbed
from yolo_dev.stack import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, Stack

from tests.operator_fixtures import install_crd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
LABEL = "yolo-operator.io/training-job"
BURST = 200
KILL_AT_JOBS = 20  # the leader is killed once it has made this many of the 200 Jobs
CREATE_PAUSE = 0.1  # seconds between creates: the burst lasts 20 s or more, so creates go on across the kill
SETTLE_TIMEOUT = 300  # bound for every TrainingJob to have its Job and to have Succeeded


@pytest.fixture(scope="module")
def stack(bed, real_node):
    return Stack()


@pytest.fixture
def ha_namespace(stack):
    with stack.namespace("ha") as name:  # its 200 TrainingJobs go while later tests run
        yield name


def trainingjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
        "spec": {"model": {"hub": "yolov8n.pt"}, "dataset": "s3://datasets/ha/", "output": "s3://runs/",
                 "s3": {"endpoint": "http://127.0.0.1:7333", "credentialsSecretRef": {"name": "s3-keys"}},
                 "training": {"epochs": 1, "imgsz": 64, "batch": 2, "workers": 0},
                 "resources": {"gpus": 0, "cpu": "10m", "memory": "64Mi"}},
    }  # fmt: skip


def container_pid(pod: dict[str, Any]) -> int:
    """The host PID of the pod's operator container (its task in the real node's containerd)."""
    (status,) = pod["status"]["containerStatuses"]
    cid = status["containerID"].split("://", 1)[1]
    sock = f"{testbed.node_setting('run_dir')}/containerd.sock"
    out = subprocess.run(["ctr", "--address", sock, "--namespace", "k8s.io", "tasks", "ls"], capture_output=True,
                         text=True, check=True, timeout=30).stdout  # fmt: skip
    (pid,) = [int(line.split()[1]) for line in out.splitlines()[1:] if line.split()[0] == cid]
    return pid


def micro_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Recorder:
    """Watches the namespace's Jobs (when each first arrived) and TrainingJobs (every phase each passed)."""

    def __init__(self, namespace: str):
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(testbed.KUBECONFIG))
        self.batch, self.custom = client.BatchV1Api(api), client.CustomObjectsApi(api)
        self.namespace = namespace
        self.job_seen: dict[str, float] = {}
        self.phases: dict[str, list[str]] = defaultdict(list)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._jobs, self._tjs)]
        for t in self.threads:
            t.start()

    def _stream(self, list_fn, on_event) -> None:
        """Lists (each object as an event), then watches from the list's resourceVersion; lists again when
        the watch answers 410 Gone, retries on 429 and 5xx. ``list_fn`` is a lambda, so the watch yields plain
        dicts."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    listed = json.loads(list_fn(_preload_content=False).data)
                    for obj in listed["items"]:
                        on_event(obj)
                    rv = listed["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(list_fn, resource_version=rv, timeout_seconds=2):
                    rv = event["object"]["metadata"]["resourceVersion"]
                    on_event(event["object"])
            except ApiException as e:
                if e.status == 410:  # too old: list again
                    rv = None
                elif e.status == 429 or e.status >= 500:  # the busy bed's API server: the same watch again
                    time.sleep(1)
                else:
                    raise

    def _jobs(self) -> None:
        self._stream(lambda **kw: self.batch.list_namespaced_job(self.namespace, **kw),
                     lambda job: self.job_seen.setdefault(job["metadata"]["name"], time.time()))  # fmt: skip

    def _tjs(self) -> None:
        def on_event(tj: dict[str, Any]) -> None:
            phase = (tj.get("status") or {}).get("phase")
            seen = self.phases[tj["metadata"]["name"]]
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)

        self._stream(lambda **kw: self.custom.list_namespaced_custom_object(
            "yolo-operator.io", "v1alpha1", self.namespace, "trainingjobs", **kw), on_event)  # fmt: skip

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_standby_takes_over_from_a_sigkilled_leader_without_duplicates(stack: Stack, ha_namespace: str):
    ns = ha_namespace
    # This checkout's CRD, as the integration tests apply it: the chart leaves a CRD it does not own alone, and
    # on a shared bed another checkout's may be there (its new fields would make every TrainingJob InvalidSpec).
    install_crd(lambda *a, **kw: stack.kubectl(*a, **kw))
    values: dict[str, Any] = {"replicaCount": 2, "leaderElection": {"enabled": True}}
    if os.environ.get("YOLO_E2E_OPERATOR_TAG"):
        values["operator"] = {"image": {"tag": os.environ["YOLO_E2E_OPERATOR_TAG"], "pullPolicy": "Never"}}
    stack.install_chart([ns], values)
    leader = stack.operator_pod(timeout=120)  # waits for a holder among the chart's pods (an old one may expire)
    pods = stack.operator_pods()
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    (standby,) = [p for p in pods if p["metadata"]["name"] != leader["metadata"]["name"]]
    old_holder = stack.lease_holder()
    print(f"leader {leader['metadata']['name']} ({old_holder}), standby {standby['metadata']['name']}")
    pid = container_pid(leader)

    rec = Recorder(ns)
    names = [f"burst-{i:03d}" for i in range(BURST)]
    created: list[str] = []

    def create_all() -> None:
        for name in names:
            rec.custom.create_namespaced_custom_object("yolo-operator.io", "v1alpha1", ns, "trainingjobs",
                                                       trainingjob(name))  # fmt: skip
            created.append(name)
            time.sleep(CREATE_PAUSE)

    creator = threading.Thread(target=create_all, daemon=True)
    try:
        creator.start()
        stack.wait(lambda: len(rec.job_seen) >= KILL_AT_JOBS, 120, interval=0.05, what=f"{KILL_AT_JOBS} Jobs")
        os.kill(pid, signal.SIGKILL)
        t_kill = time.time()
        at_kill = (len(created), len(rec.job_seen))
        print(f"SIGKILL to the leader's process {pid}: {at_kill[0]} TrainingJobs created, {at_kill[1]} Jobs")
        assert at_kill[1] < BURST, "the leader had made every Job before the kill: it must land mid-burst"

        new_holder = stack.wait(lambda: (h := stack.lease_holder()) and h != old_holder and h, 120, interval=0.1,
                                what="a new Lease holder")  # fmt: skip
        creator.join(120)
        lease = stack.get("lease", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE)["spec"]  # named like the Deployment
        takeover = micro_time(lease["acquireTime"]) - t_kill

        def settled() -> bool:
            tjs = stack.get("trainingjobs", "-n", ns)["items"]
            invalid = [c["message"] for t in tjs for c in (t.get("status") or {}).get("conditions") or ()
                       if c.get("reason") == "InvalidSpec"]  # fmt: skip
            assert not invalid, f"InvalidSpec: does the bed's CRD match this checkout's? {invalid[0]}"
            return len(tjs) == BURST and all((t.get("status") or {}).get("phase") == "Succeeded" for t in tjs)

        stack.wait(settled, SETTLE_TIMEOUT, interval=2, what=f"all {BURST} TrainingJobs Succeeded")
    finally:
        rec.close()
        print(stack.kubectl("get", "pods,lease", "-n", OPERATOR_NAMESPACE, "-o", "wide", check=False).stdout)

    # 0 missing, 0 duplicates: one Job (and one of each child) per TrainingJob, owned by it, named in its status
    tjs = {t["metadata"]["name"]: t for t in stack.get("trainingjobs", "-n", ns)["items"]}
    assert sorted(tjs) == names
    jobs = stack.get("jobs", "-n", ns)["items"]
    per_tj = Counter(j["metadata"]["labels"][LABEL] for j in jobs)
    assert [n for n in names if per_tj[n] != 1] == [], "TrainingJobs without exactly one Job"
    for j in jobs:
        tj = tjs[j["metadata"]["labels"][LABEL]]
        assert j["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"]
        assert tj["status"]["jobName"] == j["metadata"]["name"]
    for kind in ("serviceaccounts", "roles", "rolebindings"):
        owned = [o for o in stack.get(kind, "-n", ns)["items"] if o["metadata"].get("ownerReferences")]
        assert len(owned) == BURST, kind
    # no event announced twice, no phase going back
    events = stack.get("events", "-n", ns, "--field-selector", "involvedObject.kind=TrainingJob")["items"]
    announced = Counter((e["involvedObject"]["name"], e["reason"]) for e in events)
    twice = {k: n for k, n in announced.items() if k[1] in ("JobCreated", "Succeeded") and n > 1}
    assert twice == {}, twice
    back = {n: p for n, p in rec.phases.items() if "Succeeded" in p and p[-1] != "Succeeded"}
    assert back == {}, back

    # the new leader: another process (the standby, or the killed pod's restarted container) holding the Lease
    assert new_holder != old_holder
    after_kill = sorted(t - t_kill for t in rec.job_seen.values() if t > t_kill + takeover)
    first_job = after_kill[0] if after_kill else float("nan")  # none: the old leader had made every Job
    all_jobs = max(rec.job_seen.values()) - t_kill
    who = "the standby" if new_holder.startswith(standby["metadata"]["name"] + "_") else "the restarted pod"
    created_events = sum(n for k, n in announced.items() if k[1] == "JobCreated")
    print(f"new leader {new_holder} ({who}); JobCreated events: {created_events}")
    print(
        f"HA-FIGURE takeover_s={takeover:.1f} first_job_s={first_job:.1f} all_jobs_s={all_jobs:.1f} "
        f"burst={BURST} killed_after_jobs={at_kill[1]} lease_duration_s=15"
    )
