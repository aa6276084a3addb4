"""The whole product on the local test bed as users install it: the chart via real helm, the operator in-cluster
from its image, the trainer image in a pod on the bed's real node (containerd + kubelet), real S3. A TrainingJob
trains to Succeeded in a `restricted` namespace under an arbitrary UID; a second continues from it."""

from __future__ import annotations

import json
import random
import threading
import uuid

import pytest
from yolo_dev import testbed
from yolo_dev.stack import REAL_NODE, Stack, table_row
from yolo_operator.controller.build import quantity_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(bed, real_node):
    return Stack()


def assign_arbitrary_uid(stack: Stack, namespace: str) -> int:
    """What OpenShift's restricted-v2 SCC does to every pod: a UID from the namespace's range, chosen by the
    platform, not the image. Played by a MutatingAdmissionPolicy (GA in Kubernetes 1.36) on this namespace."""
    uid = random.randint(1_000_000_000, 1_999_999_999)
    name = f"arbitrary-uid-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["CREATE"], "resources": ["pods"]}]},
            "failurePolicy": "Fail", "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression":
                f"Object{{spec: Object.spec{{securityContext: Object.spec.securityContext{{runAsUser: {uid}}}}}}}"}}],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "matchResources": {"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    }  # fmt: skip
    manifest = {"apiVersion": "v1", "kind": "List", "items": [policy, binding]}
    stack.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    return uid


class PhaseRecorder:
    """Records every phase the TrainingJob passes through (from a watch, so none is missed) and what
    `kubectl get tj` (its printer columns) showed meanwhile."""

    def __init__(self, stack: Stack, namespace: str, name: str):
        from kubernetes import client, config

        self.stack, self.namespace, self.name = stack, namespace, name
        self.phases: list[str] = []
        self.table_rows: list[dict[str, str]] = []
        self.stop = threading.Event()
        self.api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(testbed.KUBECONFIG)))
        # Watching from this resourceVersion replays every change made after now, however late the thread runs.
        self.resource_version = self._list()["metadata"]["resourceVersion"]
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._watch, self._poll_table)]
        for t in self.threads:
            t.start()

    def _list(self, **kwargs):
        return self.api.list_namespaced_custom_object(
            "yolo-operator.io", "v1alpha1", self.namespace, "trainingjobs",
            field_selector=f"metadata.name={self.name}", **kwargs,
        )  # fmt: skip

    def _watch(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            for event in watch.Watch().stream(self._list, resource_version=self.resource_version, timeout_seconds=2):
                self.resource_version = event["object"]["metadata"]["resourceVersion"]
                phase = event["object"].get("status", {}).get("phase")
                if phase and (not self.phases or self.phases[-1] != phase):
                    self.phases.append(phase)

    def _poll_table(self) -> None:
        while not self.stop.wait(0.3):
            proc = self.stack.kubectl("get", "tj", self.name, "-n", self.namespace, check=False)
            lines = proc.stdout.splitlines()
            if proc.returncode == 0 and len(lines) == 2:
                self.table_rows.append(table_row(*lines))

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_trainingjob_trains_to_succeeded_and_a_second_continues_from_it(stack, restricted_namespace, s3_client):
    namespace = restricted_namespace
    # Watching only this namespace keeps the operators other tests run on the shared bed out of each other's way.
    stack.install_chart([namespace])
    helm_test = stack.helm_test()
    print(helm_test)
    assert "Phase:          Succeeded" in helm_test and "Established" in helm_test, helm_test
    operator_pod = stack.operator_pod()
    assert operator_pod["spec"]["nodeName"] == REAL_NODE
    uid = assign_arbitrary_uid(stack, namespace)
    bucket = f"e2e-{uuid.uuid4().hex[:8]}"
    dataset = stack.upload_dataset(bucket, "datasets/shapes", images=32)
    stack.s3_secret(namespace)
    first = stack.training_job("shapes-v1", dataset, f"s3://{bucket}/runs/", epochs=6)
    recorder = PhaseRecorder(stack, namespace, "shapes-v1")
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(first))

    def finished(name):
        status = stack.get("tj", name, "-n", namespace).get("status", {})
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    try:
        status = stack.wait(lambda: finished("shapes-v1"), 600, interval=1, what="shapes-v1 to finish")
    finally:
        recorder.close()
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    phases = recorder.phases
    assert phases[0] == "Pending" and phases[-1] == "Succeeded", phases
    assert "Training" in phases and phases.index("Training") < phases.index("Succeeded"), phases
    assert "Staging" in phases and phases.index("Staging") < phases.index("Training"), phases
    # While it trained, `kubectl get tj` showed the epoch and a mAP.
    training_rows = [r for r in recorder.table_rows if r["PHASE"] == "Training"]
    seen = sorted({(r["PHASE"], r["EPOCH"], r["MAP50-95"]) for r in recorder.table_rows})
    assert any(r["EPOCH"] in ("1/6", "2/6", "3/6", "4/6", "5/6") and r["MAP50-95"] for r in training_rows), seen
    assert status["progress"]["epoch"] == 6 and status["progress"]["epochs"] == 6
    assert status["progress"]["metrics"]["map50-95"] is not None

    # The weights are in S3 where the status says.
    best = status["artifacts"]["bestWeights"]
    uid1 = stack.get("trainingjob", "shapes-v1", "-n", namespace)["metadata"]["uid"]
    assert best == f"s3://{bucket}/runs/{namespace}/shapes-v1/{uid1}/weights/best.pt"
    head = s3_client.head_object(Bucket=bucket, Key=best.split("/", 3)[3])
    assert head["ContentLength"] > 100_000

    # The trainer ran on the real node, from inside its container: the platform's UID in group 0, and /dev/shm
    # a tmpfs of the size the operator put on the Job (a Memory emptyDir, within the pod's memory limit).
    pods = stack.get("pods", "-n", namespace, "-l", "yolo-operator.io/training-job=shapes-v1")["items"]
    assert pods and all(p["spec"]["nodeName"] == REAL_NODE for p in pods)
    pod = pods[0]
    trainer_log = stack.pod_log(namespace, pod["metadata"]["name"])
    start = next(json.loads(line) for line in trainer_log.splitlines() if line.startswith('{"event": "start"'))
    shm_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "shm")
    shm_limit = quantity_bytes(shm_volume["emptyDir"]["sizeLimit"])
    memory_limit = quantity_bytes(pod["spec"]["containers"][0]["resources"]["limits"]["memory"])
    print(f"trainer container: uid={start['uid']} gid={start['gid']} groups={start['groups']} "
          f"/dev/shm={start['shmBytes']} bytes (sizeLimit {shm_limit}, memory limit {memory_limit})")
    assert (start["uid"], start["gid"]) == (uid, 0), start
    assert start["shmBytes"] == shm_limit < memory_limit, (start, shm_limit, memory_limit)

    second = stack.training_job("shapes-v2", dataset, f"s3://{bucket}/runs/", epochs=2)
    second["spec"]["model"] = {"fromTrainingJob": "shapes-v1"}
    second["spec"]["training"]["freeze"] = 10
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(second))
    status2 = stack.wait(lambda: finished("shapes-v2"), 600, interval=1, what="shapes-v2 to finish")
    assert status2["phase"] == "Succeeded", json.dumps(status2, indent=1)
    job2 = stack.get("job", status2["jobName"], "-n", namespace)
    config_env = next(e for e in job2["spec"]["template"]["spec"]["containers"][0]["env"]
                      if e["name"] == "YOLO_TRAINER_CONFIG")  # fmt: skip
    model = json.loads(config_env["value"])["model"]  # typed: the parent's weights, and which job they are
    assert (model["kind"], model["uri"], model["name"]) == ("fromTrainingJob", best, "shapes-v1")
    uid2 = stack.get("trainingjob", "shapes-v2", "-n", namespace)["metadata"]["uid"]
    s3_client.head_object(Bucket=bucket, Key=f"runs/{namespace}/shapes-v2/{uid2}/weights/best.pt")

    # No secret value anywhere the system wrote: status, Jobs, pods, events, operator and trainer logs.
    s3 = testbed.s3_env()
    written = {
        "trainingjobs": stack.kubectl("get", "tj", "-n", namespace, "-o", "json").stdout,
        "jobs+pods": stack.kubectl("get", "jobs,pods", "-n", namespace, "-o", "json").stdout,
        "events": stack.kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "operator log": stack.operator_log(),
        "trainer logs": "".join(
            stack.pod_log(namespace, p["metadata"]["name"]) for p in stack.get("pods", "-n", namespace)["items"]
        ),
    }
    assert "shapes-v2" in written["operator log"] and "epoch" in written["trainer logs"], "scanned the wrong files"
    for where, text in written.items():
        assert s3.secret_key not in text, f"the S3 secret key leaked into {where}"
