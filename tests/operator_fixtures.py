"""Helpers for the operator's integration tests: run ``python -m yolo_operator`` as a subprocess against the
test bed, install the generated CRD, build TrainingJob manifests and poll the API through kubectl."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from yolo_dev.testbed import free_port, wait_for
from yolo_operator.gen import crd

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
Kubectl = Callable[..., subprocess.CompletedProcess]


INSTANCE_LABEL = "yolo-operator.io/operator-instance"


class OperatorProcess:
    """``python -m yolo_operator`` watching the given namespaces, with its own metrics/health ports.

    Its instance name (YOLO_OPERATOR_INSTANCE) is the first namespace, and ``apply`` labels TrainingJobs
    with their namespace: another operator running cluster-wide on the shared test bed (a demo, an e2e run)
    leaves these TrainingJobs alone, and this one leaves everybody else's alone."""

    def __init__(self, kubeconfig: Path, namespaces: list[str], log_path: Path, **env: str):
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.log_path = log_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.extra_env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "YOLO_OPERATOR_NAMESPACES": ",".join(self.namespaces),
            "YOLO_OPERATOR_INSTANCE": self.namespaces[0],
            "YOLO_OPERATOR_TRAINER_IMAGE": "registry.invalid/yolo-trainer:test",
            "YOLO_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "YOLO_OPERATOR_HEALTH_PORT": str(self.health_port),
            "YOLO_OPERATOR_BIND_ADDRESS": "127.0.0.1",
            "YOLO_OPERATOR_LOG_LEVEL": "DEBUG",
            **self.extra_env,
        }
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "yolo_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()
        wait_for(self.healthy, timeout, what=f"operator /healthz on :{self.health_port}\n{self.logs()[-3000:]}")
        return self

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited ({self.proc and self.proc.returncode}):\n{self.logs()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
            return r.status == 200

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a node failure or OOM kill."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def install_crd(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=crd.render())
    # kubectl wait fails at once on a CRD the API server has not given any condition yet (a loaded machine)
    wait_for(lambda: kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s",
                             check=False).returncode == 0, 120, interval=1, what=f"crd/{crd.CRD_NAME} Established")


def trainingjob(name: str, **spec: Any) -> dict[str, Any]:
    """A valid TrainingJob; keyword arguments replace top-level spec fields."""
    base: dict[str, Any] = {
        "model": {"hub": "yolov8n.pt"},
        "dataset": "s3://datasets/helmets/",
        "output": "s3://runs/",
        "s3": {"endpoint": "http://127.0.0.1:7333", "credentialsSecretRef": {"name": "s3-keys"}},
        "training": {"epochs": 3, "imgsz": 320, "batch": 4, "workers": 2},
        "resources": {"gpus": 1, "cpu": "2", "memory": "4Gi"},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": "yolo-operator.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": base,
    }


def apply(
    kubectl: Kubectl, namespace: str, *objs: dict[str, Any], check: bool = True, instance: str | None = ""
) -> subprocess.CompletedProcess:
    """kubectl apply; TrainingJobs get the operator-instance label of the namespace's test operator
    (instance="" means the namespace; None means no label)."""
    objs = tuple(copy.deepcopy(o) for o in objs)
    for o in objs:
        if o.get("kind") == "TrainingJob" and instance is not None:
            o["metadata"].setdefault("labels", {})[INSTANCE_LABEL] = instance or namespace
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
    return kubectl("apply", "-f", "-", input=json.dumps(doc), namespace=namespace, check=check)


def get(kubectl: Kubectl, namespace: str, *what: str) -> Any:
    """kubectl get -o json; None when not found."""
    proc = kubectl("get", *what, "-o", "json", namespace=namespace, check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def items(kubectl: Kubectl, namespace: str, kind: str, selector: str) -> list[dict[str, Any]]:
    return get(kubectl, namespace, kind, "-l", selector)["items"]


def status_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    tj = get(kubectl, namespace, "trainingjob", name)
    return (tj or {}).get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c.get("type") == type_), None)


def wait_phase(kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 180) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status_of(kubectl, namespace, name)).get("phase") == phase and s,
        timeout,
        what=f"TrainingJob {namespace}/{name} phase {phase}",
    )


def wait_condition(
    kubectl: Kubectl, namespace: str, name: str, type_: str, status: str = "True", timeout: float = 180
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        c = condition(status_of(kubectl, namespace, name), type_)
        return c if c and c["status"] == status else None

    return wait_for(check, timeout, what=f"TrainingJob {namespace}/{name} condition {type_}={status}")


def events_for(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    evs = get(kubectl, namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e for e in evs if e["involvedObject"].get("kind") == "TrainingJob"]


def patch_pod_status(kubectl: Kubectl, namespace: str, pod: str, status: dict[str, Any]) -> None:
    """Writes a pod's status as its kubelet would (merge patch on the status subresource)."""
    kubectl("patch", "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
            namespace=namespace)  # fmt: skip


def terminate_pod(
    kubectl: Kubectl,
    namespace: str,
    pod: str,
    exit_code: int,
    message: str = "",
    conditions: list | None = None,
) -> None:
    """Plays the kubelet: marks the pod Failed with the trainer container terminated with exit_code."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status: dict[str, Any] = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "trainer",
                "image": "registry.invalid/yolo-trainer:test",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error",
                        "message": message,
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ],
    }
    if conditions:
        status["conditions"] = conditions
    patch_pod_status(kubectl, namespace, pod, status)


def set_pod_waiting(kubectl: Kubectl, namespace: str, pod: str, reason: str, message: str) -> None:
    status = {
        "containerStatuses": [
            {
                "name": "trainer",
                "image": "registry.invalid/yolo-trainer:test",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ]
    }
    patch_pod_status(kubectl, namespace, pod, status)
