"""The local pod runner plays a kubelet honestly enough for e2e tests: scheduling, status, volumes."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_testbed import get_json
from tests.testbed import wait_until

pytestmark = pytest.mark.integration

RUNNER_PLACEMENT = {
    "nodeSelector": {"yolo-operator.io/local-runner": "true"},
    "tolerations": [{"key": "yolo-operator.io/local-runner", "operator": "Exists", "effect": "NoSchedule"}],
}


def test_runner_runs_the_pod_with_its_volumes_uid_and_token_and_reports_the_exit(
    kubectl, namespace, pod_runner
):
    script = (
        "set -e; id -u; id -g; df -k /dev/shm | tail -1 | awk '{print $2}'; "
        "test -s /var/run/secrets/kubernetes.io/serviceaccount/token; echo token-ok; "
        "touch /tmp/writable; echo $POD_NAMESPACE; "
        "echo 'Boom: the test asked for exit 3' > $YOLO_TERMINATION_LOG; exit 3"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {
            **RUNNER_PLACEMENT,
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": "local/shell:1",
                    "command": ["sh", "-c", script],
                    "env": [
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        }
                    ],
                    "volumeMounts": [
                        {"name": "shm", "mountPath": "/dev/shm"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "96Mi"}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod), namespace=namespace)

    def finished():
        p = get_json(kubectl, "pod", "probe", namespace=namespace)
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None

    done = wait_until(finished, timeout=60, what="the probe pod to finish")
    assert done["spec"]["nodeName"] == pod_runner
    assert done["status"]["phase"] == "Failed"
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["message"] == "Boom: the test asked for exit 3"
    log = (pod_log_dir := _pod_dir(done)) / "container.log"
    out = log.read_text().split()
    assert out[0] != "0" and out[1] == "0", "runs as a non-root UID with group 0"
    assert out[2] == str(96 * 1024), "/dev/shm is a tmpfs of the emptyDir's sizeLimit"
    assert out[3] == "token-ok" and out[4] == namespace
    assert (pod_log_dir / "volumes" / "tmp" / "writable").exists()


def test_deleting_a_running_pod_sends_sigterm_within_the_grace_period(kubectl, namespace, pod_runner):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {
            **RUNNER_PLACEMENT,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 20,
            "containers": [
                {
                    "name": "main",
                    "image": "local/shell:1",
                    "command": [
                        "sh",
                        "-c",
                        "trap 'echo got-term; exit 75' TERM; while :; do sleep 0.1; done",
                    ],
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod), namespace=namespace)
    wait_until(
        lambda: get_json(kubectl, "pod", "sleeper", namespace=namespace)["status"].get("phase") == "Running",
        timeout=60,
        what="sleeper Running",
    )
    running = get_json(kubectl, "pod", "sleeper", namespace=namespace)
    kubectl("delete", "pod", "sleeper", "--wait=true", "--timeout=30s", namespace=namespace)
    assert "got-term" in (_pod_dir(running) / "container.log").read_text()


def _pod_dir(pod):
    from tests import testbed

    return testbed.TESTBED / "podrunner" / pod["spec"]["nodeName"] / "pods" / pod["metadata"]["uid"]
