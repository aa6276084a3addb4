"""The bed's real node (hack/node.sh): containerd + a Go-built kubelet and kube-proxy running the project's images
in a network namespace of its own. What the e2e tests rely on is checked here in seconds, each against the real
kubelet: GPU scheduling onto it, /dev/shm sizing, the `kubernetes` Service and S3 from a pod, and no route off
the machine. `make testbed-down` leaving nothing behind is tests/integration/test_testbed_teardown.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from yolo_dev import testbed
from yolo_dev.stack import REAL_NODE_PLACEMENT
from yolo_operator.controller.build import quantity_bytes

pytestmark = pytest.mark.integration

TRAINER_IMAGE, OPERATOR_IMAGE = (
    subprocess.run([str(testbed.ROOT / "hack/images.sh"), "names"], capture_output=True, text=True, check=True)
    .stdout.split()[:2][::-1]
)


def run_pod(kubectl, namespace: str, name: str, image: str, script: str, timeout: float = 120, **spec) -> str:
    """A pod on the real node running ``python -c script`` as the image's non-root user; returns its log.
    ``container``: fields that override the container's, ``spec``: the pod spec's."""
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never", **REAL_NODE_PLACEMENT,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never", "command": ["python", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                **spec.pop("container", {}),
            }],
            **spec,
        },
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(pod), namespace=namespace)
    testbed.wait_until(
        lambda: kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}", namespace=namespace).stdout
        in ("Succeeded", "Failed"),
        timeout, interval=1, what=f"pod {name} to finish",
    )  # fmt: skip
    log = kubectl("logs", name, namespace=namespace).stdout
    phase = kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}", namespace=namespace).stdout
    assert phase == "Succeeded", log
    return log


def test_real_node_is_ready_tainted_and_advertises_gpus(kubectl):
    node = json.loads(kubectl("get", "node", testbed.node_setting("NODE_NAME"), "-o", "json").stdout)
    assert node["status"]["nodeInfo"]["kubeletVersion"] == testbed.read_env_file(
        testbed.ROOT / "hack/versions.env")["KUBE_VERSION"]  # fmt: skip
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == testbed.node_setting("NODE_GPUS")
    assert {t["key"] for t in node["spec"]["taints"]} == {testbed.node_setting("NODE_LABEL")}
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


def test_gpu_pod_runs_the_trainer_image_with_a_memory_backed_dev_shm(kubectl, restricted_namespace):
    """/dev/shm is a tmpfs of the emptyDir's sizeLimit; the memory limit caps it (so the operator adds shm to
    the limit), and the container runs as the image's numeric non-root user in group 0."""
    script = "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize, os.getuid(), os.getgid())"
    shm = {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "300Mi"}}
    mount = {"name": "shm", "mountPath": "/dev/shm"}
    limits = {"nvidia.com/gpu": "1", "memory": "512Mi"}
    log = run_pod(kubectl, restricted_namespace, "shm-sized", TRAINER_IMAGE, script, volumes=[shm],
                  container={"volumeMounts": [mount], "resources": {"limits": limits}})  # fmt: skip
    size, uid, gid = (int(x) for x in log.split())
    assert size == quantity_bytes("300Mi")
    assert (uid, gid) == (1001, 0)
    capped = run_pod(kubectl, restricted_namespace, "shm-capped", TRAINER_IMAGE, script,
                     volumes=[{**shm, "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}],
                     container={"volumeMounts": [mount], "resources": {"limits": limits}})  # fmt: skip
    assert int(capped.split()[0]) == quantity_bytes("512Mi"), "a Memory emptyDir is capped by the memory limit"


def test_pod_reaches_the_api_server_through_the_kubernetes_service_and_s3_on_the_link(kubectl, namespace, s3_env):
    """The operator image, as a pod: TLS to the `kubernetes` Service verified with the ServiceAccount's CA (the
    API server's certificate names the Service IP), and S3 at the address in .testbed/s3.env."""
    script = (
        "import json, os, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "url = f\"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}/version\"\n"
        "req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "print(json.load(urllib.request.urlopen(req, context=ctx, timeout=20))['gitVersion'])\n"
        f"try:\n    urllib.request.urlopen('{s3_env.endpoint}/', timeout=20)\n"
        "except urllib.error.HTTPError as e:\n    print('s3', e.code)\n"
    )  # fmt: skip
    log = run_pod(kubectl, namespace, "reach", OPERATOR_IMAGE, script)
    version, s3 = log.splitlines()[-2:]
    assert version == testbed.versions()["KUBE_VERSION"]
    assert s3 == "s3 403", "S3 answered (and refused an unsigned request)"


def test_pods_have_no_route_off_the_machine():
    """Asked of the node's routing table (no packet is sent): only the bed's link and the pod bridge route."""
    netns = testbed.node_setting("NODE_NETNS")
    for outside in ("192.0.2.1", "8.8.8.8", "10.1.2.3"):
        proc = subprocess.run(["ip", "-n", netns, "route", "get", outside], capture_output=True, text=True)
        assert proc.returncode != 0 and "unreachable" in proc.stderr.lower(), (outside, proc.stdout)
    routes = subprocess.run(["ip", "-n", netns, "route"], capture_output=True, text=True, check=True).stdout
    assert "default" not in routes, routes
