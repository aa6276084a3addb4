"""Smoke tests proving the local test bed is real: real scheduling, admission, CEL and S3 auth."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from yolo_dev import testbed
from yolo_dev.testbed import wait_until

pytestmark = pytest.mark.integration




def get_json(kubectl, *args, namespace=None):
    return json.loads(kubectl("get", *args, "-o", "json", namespace=namespace).stdout)


def test_control_plane_binaries_report_the_pinned_version():
    versions = dict(
        line.split("=", 1)
        for line in (testbed.ROOT / "hack/versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    out = subprocess.run(
        [str(testbed.bin_dir() / "kube-apiserver"), "--version"], capture_output=True, text=True
    )
    assert out.stdout.strip() == f"Kubernetes {versions['KUBE_VERSION']}"


def test_gpu_node_advertises_gpus(kubectl):
    nodes = {n["metadata"]["name"]: n for n in get_json(kubectl, "nodes")["items"]}
    assert nodes["gpu-node-0"]["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert "nvidia.com/gpu" not in nodes["cpu-node-0"]["status"]["allocatable"]
    ready = {c["type"]: c["status"] for c in nodes["gpu-node-0"]["status"]["conditions"]}
    assert ready["Ready"] == "True"


def test_gpu_job_is_scheduled_onto_the_gpu_node_and_completes(kubectl, namespace):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "gpu-smoke"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "example.invalid/never-pulled:1",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(job), namespace=namespace)
    kubectl("wait", "--for=condition=Complete", "job/gpu-smoke", "--timeout=90s", namespace=namespace)
    pods = get_json(kubectl, "pods", "-l", "job-name=gpu-smoke", namespace=namespace)["items"]
    assert len(pods) == 1
    assert pods[0]["spec"]["nodeName"] == "gpu-node-0"
    assert pods[0]["status"]["phase"] == "Succeeded"


def test_pod_asking_for_more_gpus_than_any_node_has_stays_pending(kubectl, namespace):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-many-gpus"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "example.invalid/never-pulled:1",
                    "resources": {"limits": {"nvidia.com/gpu": "9"}},
                }
            ]
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod), namespace=namespace)

    def unschedulable():
        status = get_json(kubectl, "pod", "too-many-gpus", namespace=namespace)["status"]
        conds = [c for c in status.get("conditions", []) if c["type"] == "PodScheduled"]
        return conds and conds[0]["status"] == "False" and conds[0]["reason"] == "Unschedulable" and status

    status = wait_until(unschedulable, timeout=60, what="PodScheduled=False/Unschedulable")
    assert status["phase"] == "Pending"
    events = get_json(
        kubectl, "events", "--field-selector", "involvedObject.name=too-many-gpus", namespace=namespace
    )["items"]
    failed = [e for e in events if e["reason"] == "FailedScheduling"]
    assert failed and "nvidia.com/gpu" in failed[0]["message"]


def test_restricted_namespace_rejects_a_privileged_pod(kubectl, restricted_namespace):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "example.invalid/never-pulled:1",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    proc = kubectl("apply", "-f", "-", input=json.dumps(pod), namespace=restricted_namespace, check=False)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted' in proc.stderr
    assert "privileged" in proc.stderr


CEL_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.yolo-operator.io
spec:
  group: smoke.yolo-operator.io
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              imgsz: {type: integer}
            x-kubernetes-validations:
            - rule: "self.imgsz % 32 == 0"
              message: "spec.imgsz must be a multiple of 32"
"""


def test_crd_with_a_cel_rule_rejects_a_bad_object(kubectl, namespace):
    kubectl("apply", "-f", "-", input=CEL_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.yolo-operator.io", "--timeout=30s")

    def widget(imgsz):
        return json.dumps(
            {
                "apiVersion": "smoke.yolo-operator.io/v1",
                "kind": "Widget",
                "metadata": {"name": f"w{imgsz}"},
                "spec": {"imgsz": imgsz},
            }
        )

    # The CRD may need a moment before the API server serves it.
    wait_until(
        lambda: (
            kubectl("apply", "-f", "-", input=widget(64), namespace=namespace, check=False).returncode == 0
        ),
        timeout=30,
        what="Widget served",
    )
    bad = kubectl("apply", "-f", "-", input=widget(65), namespace=namespace, check=False)
    assert bad.returncode != 0
    assert "spec.imgsz must be a multiple of 32" in bad.stderr


def test_s3_round_trip_and_wrong_secret_is_refused(s3_env, s3_client, s3_bucket):
    import boto3
    from botocore.exceptions import ClientError

    body = uuid.uuid4().bytes * 1000
    s3_client.put_object(Bucket=s3_bucket, Key="a/b.bin", Body=body)
    assert s3_client.get_object(Bucket=s3_bucket, Key="a/b.bin")["Body"].read() == body

    intruder = boto3.client(
        "s3",
        endpoint_url=s3_env.endpoint,
        region_name=s3_env.region,
        aws_access_key_id=s3_env.access_key,
        aws_secret_access_key="wrong-" + s3_env.secret_key,
    )
    with pytest.raises(ClientError) as denied:
        intruder.get_object(Bucket=s3_bucket, Key="a/b.bin")
    assert denied.value.response["Error"]["Code"] in (
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidAccessKeyId",
    )
    anonymous = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{s3_env.endpoint}/{s3_bucket}/a/b.bin"],
        capture_output=True,
        text=True,
    )
    assert anonymous.stdout in ("401", "403")


def _bed_pids() -> set[int]:
    pid_files = [*testbed.TESTBED.glob("pids/*.pid"), *testbed.TESTBED.glob("kwok/clusters/*/pids/*.pid")]
    return {int(p.read_text().strip()) for p in pid_files if p.read_text().strip()}


def test_nothing_listens_beyond_loopback_and_the_node_link(bed):
    """On this machine the bed listens on loopback and on the node link's host address (S3, the API server's
    forwarder) only; inside the real node's network namespace, on its loopback and its end of the link only."""
    pids = _bed_pids()
    assert len(pids) >= 6, f"expected etcd, apiserver, controller-manager, scheduler, kwok, weed; got {pids}"
    loopback = ("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ours = [line for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)]
    assert ours, "the bed's processes listen on nothing?"
    host_ip = testbed.node_setting("HOST_IP")
    assert any(line.split()[3].startswith(f"{host_ip}:") for line in ours), "S3 and the forwarder are on the link"
    for line in ours:
        assert line.split()[3].startswith((*loopback, f"{host_ip}:")), line
    netns = testbed.node_setting("NODE_NETNS")
    inside = subprocess.run(["ip", "netns", "exec", netns, "ss", "-ltnH"], capture_output=True, text=True,
                            check=True).stdout.splitlines()  # fmt: skip
    node_ip = testbed.node_setting("NODE_IP")
    assert any(line.split()[3] == f"{node_ip}:10250" for line in inside), inside  # the kubelet
    for line in inside:
        assert line.split()[3].startswith((*loopback, f"{node_ip}:")), line
