"""yolo_operator.kube: REST paths and error messages (pure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from yolo_operator import kube


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("v1", "pods", "ns"), "/api/v1/namespaces/ns/pods"),
        (("v1", "pods"), "/api/v1/pods"),
        (("batch/v1", "jobs", "ns", "j"), "/apis/batch/v1/namespaces/ns/jobs/j"),
        (("yolo-operator.io/v1alpha1", "trainingjobs", "ns", "t", "status"),
         "/apis/yolo-operator.io/v1alpha1/namespaces/ns/trainingjobs/t/status"),
        (("rbac.authorization.k8s.io/v1", "roles", "ns"), "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles"),
    ],
)
def test_path(args, expected):
    assert kube.path(*args) == expected


def test_api_error_message_is_the_status_message_else_the_body():
    status = {"kind": "Status", "message": 'jobs.batch "x" is forbidden: ...', "code": 403}
    assert kube.ApiError(403, "Forbidden", json.dumps(status)).message == status["message"]
    assert kube.ApiError(502, "Bad Gateway", "<html>proxy</html>").message == "<html>proxy</html>"
    assert kube.ApiError(504, "Gateway Timeout", "").message == "Gateway Timeout"
    assert "(409) Conflict" in str(kube.ApiError(409, "Conflict", "{}"))


def test_the_operator_process_never_imports_the_kubernetes_package():
    """It is installed here (the trainer and the tests use it); the operator must run without it (~40 MiB)."""
    code = (
        "import sys, yolo_operator.__main__, yolo_operator.handlers, yolo_operator.health\n"
        "assert sys.modules['kubernetes'] is None, sys.modules['kubernetes']\n"
        "assert not [m for m in sys.modules if m.startswith('kubernetes.')]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("host", "server"),
    [("10.96.0.1", "https://10.96.0.1:6443"), ("fd00::1", "https://[fd00::1]:6443"), (None, "https://kubernetes.default.svc")],
)
def test_in_a_pod_the_service_address_comes_from_the_environment(monkeypatch, host, server):
    import kopf

    def service_account(**_):
        return kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t")

    monkeypatch.setattr(kopf, "login_with_service_account", service_account)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    if host:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = kube.login()
    assert info.server == server and info.token == "t"
