"""First-hour settings on the bed's real node with the in-cluster operator: S3 settings from an OpenShift AI data
connection Secret (shaped as the dashboard writes it), a CPU job that sees no GPU, and a missing CA bundle
ConfigMap reported as Stalled until it is created."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from yolo_dev import testbed
from yolo_dev.stack import REAL_NODE, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(bed, real_node):
    return Stack()


def data_connection(name: str, bucket: str) -> dict:
    """An S3 data connection as the OpenShift AI dashboard writes it."""
    s3 = testbed.s3_env()
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"aws-connection-{name}",
                     "labels": {"opendatahub.io/dashboard": "true", "opendatahub.io/managed": "true"},
                     "annotations": {"opendatahub.io/connection-type": "s3", "openshift.io/display-name": name}},
        "stringData": {"AWS_S3_ENDPOINT": s3.endpoint, "AWS_DEFAULT_REGION": s3.region, "AWS_S3_BUCKET": bucket,
                       "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
    }  # fmt: skip


def phase_of(stack: Stack, namespace: str, name: str) -> dict:
    return stack.get("tj", name, "-n", namespace).get("status", {})


def test_data_connection_and_a_cpu_job(stack, restricted_namespace, s3_client):
    ns = restricted_namespace
    stack.install_chart([ns])
    bucket = f"odh-{uuid.uuid4().hex[:8]}"
    stack.upload_dataset(bucket, "datasets/shapes", images=16)
    stack.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(data_connection("minio", bucket)))
    tj = stack.training_job("odh", "datasets/shapes/", "runs/", epochs=1)
    tj["spec"]["s3"] = {"dataConnection": {"name": "aws-connection-minio"}}
    tj["spec"]["resources"]["gpus"] = 0
    stack.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(tj))
    status = stack.wait(lambda: (s := phase_of(stack, ns, "odh")).get("phase") in ("Succeeded", "Failed") and s,
                        600, interval=1, what="odh to finish")  # fmt: skip
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    uid = stack.get("trainingjob", "odh", "-n", ns)["metadata"]["uid"]
    assert status["artifacts"]["bestWeights"] == f"s3://{bucket}/runs/{ns}/odh/{uid}/weights/best.pt"
    s3_client.head_object(Bucket=bucket, Key=f"runs/{ns}/odh/{uid}/weights/best.pt")

    job = stack.get("job", status["jobName"], "-n", ns)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    print(json.dumps({"resources": container["resources"], "env": [
        e for e in container["env"] if e["name"] != "YOLO_TRAINER_CONFIG"]}, indent=1))  # the closing note's excerpt
    # A CPU job: no GPU requested, and the NVIDIA runtime told to expose none (the image says "all").
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
    assert not any("gpu" in k for k in container["resources"].get("limits", {}))
    # Every data-connection key reached the pod through secretKeyRef; none as a value.
    for key in ("AWS_S3_ENDPOINT", "AWS_DEFAULT_REGION", "AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "aws-connection-minio", key
    assert testbed.s3_env().secret_key not in json.dumps(job)


def test_a_gpu_job_whose_pod_sees_no_gpu_fails_at_once(stack, namespace):
    """The product's default (the chart's trainer.simulatedGpus off): a pod that holds nvidia.com/gpu but sees
    no CUDA device (the bed's node advertises GPUs it does not have) fails in the preflight with GPUNotVisible,
    exit 22, not retried, naming the node; it never trains on CPU."""
    stack.install_chart([namespace], {"trainer": {"simulatedGpus": False}})
    stack.s3_secret(namespace)
    bucket = f"nogpu-{uuid.uuid4().hex[:8]}"
    dataset = stack.upload_dataset(bucket, "datasets/shapes", images=8)
    tj = stack.training_job("nogpu", dataset, f"s3://{bucket}/runs/", epochs=1)
    assert tj["spec"]["resources"]["gpus"] == 1
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(tj))
    status = stack.wait(lambda: (s := phase_of(stack, namespace, "nogpu")).get("phase") in ("Succeeded", "Failed")
                        and s, 300, interval=1, what="nogpu to finish")  # fmt: skip
    failed = {c["type"]: c for c in status.get("conditions", [])}.get("Failed")
    print(json.dumps(failed, indent=1))  # the closing note's excerpt
    assert status["phase"] == "Failed" and failed and failed["reason"] == "GPUNotVisible", json.dumps(status)
    assert "sees no CUDA device" in failed["message"] and REAL_NODE in failed["message"], failed
    pods = stack.get("pods", "-n", namespace, "-l", "yolo-operator.io/training-job=nogpu")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]  # not retried
    (cs,) = pods[0]["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["exitCode"] == 22, cs
    assert not status.get("lastCheckpoint") and not status.get("artifacts"), status  # nothing trained or published


def test_missing_ca_bundle_is_stalled_until_created(stack, namespace):
    stack.install_chart([namespace])
    stack.s3_secret(namespace)
    bucket = f"ca-{uuid.uuid4().hex[:8]}"
    dataset = stack.upload_dataset(bucket, "datasets/shapes", images=8)
    tj = stack.training_job("ca", dataset, f"s3://{bucket}/runs/", epochs=1)
    tj["spec"]["s3"]["caBundle"] = {"name": "object-store-ca", "key": "ca.crt"}
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(tj))

    def stalled():
        conds = {c["type"]: c for c in phase_of(stack, namespace, "ca").get("conditions", [])}
        c = conds.get("Stalled")
        return c if c and c["status"] == "True" else None

    try:
        c = stack.wait(stalled, 240, interval=1, what="Stalled")
    except AssertionError:
        explain_ca_wait(stack, namespace, "ca")
        raise
    print(json.dumps(c, indent=1))
    assert c["reason"] == "CABundleMissing" and "object-store-ca" in c["message"], c
    pods = stack.get("pods", "-n", namespace, "-l", "yolo-operator.io/training-job=ca")["items"]
    assert pods and pods[0]["spec"]["nodeName"] == REAL_NODE

    # The fix: create the ConfigMap. The kubelet mounts it, the pod starts, Stalled clears.
    import certifi  # any real PEM bundle (the bed's S3 is plain http)

    data = Path(certifi.where()).read_text()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "object-store-ca"}, "data": {"ca.crt": data}}
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(cm))

    def recovered():
        conds = {c["type"]: c for c in phase_of(stack, namespace, "ca").get("conditions", [])}
        return conds.get("Stalled", {}).get("status") == "False" and conds["Stalled"]

    print(json.dumps(stack.wait(recovered, 300, interval=2, what="Stalled to clear"), indent=1))


def explain_ca_wait(stack: Stack, namespace: str, name: str) -> None:
    """What the operator had to go on, printed when the test fails: the status, the pods' container states,
    the namespace's events and the operator's log."""
    print("status:", json.dumps(phase_of(stack, namespace, name), indent=1))
    for p in stack.get("pods", "-n", namespace, "-l", f"yolo-operator.io/training-job={name}")["items"]:
        st = p.get("status") or {}
        print("pod", p["metadata"]["name"], st.get("phase"), json.dumps(st.get("containerStatuses"), indent=1),
              json.dumps(st.get("initContainerStatuses")))  # fmt: skip
    print(stack.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout)
    print("--- operator log (tail) ---\n" + stack.operator_log()[-8000:])
