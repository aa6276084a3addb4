"""The ConsolePlugin an OLM-installed operator applies: built from the bundle's template with the operator's own
namespace, applied by the leader with server-side apply, and never a reason for the operator to stop."""

from __future__ import annotations

import asyncio
import logging

import pytest
from yolo_operator.runtime import console_plugin, kube, wiring
from yolo_operator.runtime.config import OperatorConfig

pytestmark = pytest.mark.unit

SERVICE = {"name": "svc", "port": 9443, "basePath": "/"}
TEMPLATE = {"metadata": {"name": "yolo-operator-console-plugin", "labels": {"app.kubernetes.io/part-of": "x"},
                         "namespace": "ignored"},
            "spec": {"displayName": "YOLO operator", "backend": {"type": "Service", "service": SERVICE}}}  # fmt: skip


class RecordingClient:
    """Stands for kube.Client: records requests; answers with ``status`` (200: the object)."""

    def __init__(self, status: int = 200):
        self.status, self.requests = status, []

    async def request(self, method, path, body=None, **kw):
        self.requests.append((method, path, body, kw))
        if self.status >= 400:
            raise kube.ApiError(self.status, "Err", '{"message": "denied"}')
        return body

    async def close(self) -> None:
        pass


def test_build_points_the_backend_at_the_operators_namespace():
    cp = console_plugin.build(TEMPLATE, "olm-ns")
    assert cp["apiVersion"] == "console.openshift.io/v1" and cp["kind"] == "ConsolePlugin"
    assert cp["metadata"] == {"name": "yolo-operator-console-plugin", "labels": {"app.kubernetes.io/part-of": "x"}}
    assert cp["spec"]["backend"]["service"] == {"name": "svc", "port": 9443, "basePath": "/", "namespace": "olm-ns"}
    assert "namespace" not in TEMPLATE["spec"]["backend"]["service"]  # the template is not changed


@pytest.mark.parametrize("bad", [{"spec": TEMPLATE["spec"]}, {"metadata": {"name": "p"}, "spec": {}}])
def test_build_refuses_a_template_without_name_or_service(bad):
    with pytest.raises(ValueError, match=r"metadata\.name and spec\.backend\.service"):
        console_plugin.build(bad, "ns")


def test_a_template_that_cannot_be_built_fails_the_operators_start_naming_the_variable():
    with pytest.raises(ValueError, match=r"console_plugin[\s\S]*YOLO_OPERATOR_CONSOLE_PLUGIN needs metadata\.name"):
        OperatorConfig.from_env({"YOLO_OPERATOR_CONSOLE_PLUGIN": '{"metadata": {"name": "p"}, "spec": {}}'})


def test_apply_is_one_server_side_apply_of_the_built_object():
    client = RecordingClient()
    assert asyncio.run(console_plugin.apply(client, TEMPLATE, "olm-ns")) is True  # type: ignore[arg-type]
    ((method, path, body, kw),) = client.requests
    assert (method, path) == ("PATCH", "/apis/console.openshift.io/v1/consoleplugins/yolo-operator-console-plugin")
    assert kw["content_type"] == "application/apply-patch+yaml"
    assert kw["query"] == {"fieldManager": "yolo-operator", "force": "true"}
    assert body == console_plugin.build(TEMPLATE, "olm-ns")


@pytest.mark.parametrize("status", [404, 403, 500])
def test_apply_failing_is_logged_never_raised(status, caplog):
    caplog.set_level(logging.INFO, logger="yolo_operator.console_plugin")
    client = RecordingClient(status)
    assert asyncio.run(console_plugin.apply(client, TEMPLATE, "olm-ns")) is False  # type: ignore[arg-type]
    assert "yolo-operator-console-plugin" in caplog.text


def test_only_the_leader_applies_it_and_only_when_the_bundle_set_it(tmp_path, monkeypatch):
    """lead() starts the workers and applies the ConsolePlugin in the pod's namespace; without the setting
    (the Helm chart) or outside a pod it makes no request."""
    from yolo_operator.controller.act import Controller

    ns_file = tmp_path / "namespace"
    ns_file.write_text("olm-ns\n")
    monkeypatch.setattr(OperatorConfig, "pod_namespace", staticmethod(lambda: ns_file.read_text().strip()))

    async def main(config: OperatorConfig) -> list:
        client = RecordingClient()
        wiring.CONTROLLER = Controller(config, client)  # type: ignore[arg-type]
        try:
            wiring.lead(config)
            await asyncio.sleep(0.05)
            assert wiring.CONTROLLER.queue._workers
        finally:
            await wiring.cleanup()
        return client.requests

    requests = asyncio.run(main(OperatorConfig(console_plugin=TEMPLATE)))
    assert [(m, p) for m, p, *_ in requests] == [
        ("PATCH", "/apis/console.openshift.io/v1/consoleplugins/yolo-operator-console-plugin")]
    assert requests[0][2]["spec"]["backend"]["service"]["namespace"] == "olm-ns"
    assert asyncio.run(main(OperatorConfig())) == []
