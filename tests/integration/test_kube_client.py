"""yolo_operator.runtime.kube against the bed's real kube-apiserver: answers, errors and a rotated token."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
import yaml
from yolo_operator.runtime import kube

pytestmark = pytest.mark.integration


@pytest.fixture
def client(kubeconfig, monkeypatch) -> kube.Client:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return kube.Client(pool_size=2)


def test_get_create_patch_and_errors(client, namespace):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace},
          "data": {"a": "1"}}  # fmt: skip
    coll = kube.path("v1", "configmaps", namespace)

    async def scenario():
        try:
            assert await client.get_or_none(kube.path("v1", "configmaps", namespace, "c")) is None
            assert (await client.create(coll, cm))["data"] == {"a": "1"}
            with pytest.raises(kube.ApiError) as e:
                await client.create(coll, cm)
            assert e.value.status == 409 and "already exists" in e.value.message
            patched = await client.merge_patch(kube.path("v1", "configmaps", namespace, "c"), {"data": {"b": "2"}})
            assert patched["data"] == {"a": "1", "b": "2"}
            assert [i["metadata"]["name"] for i in (await client.get(coll, limit=1))["items"]] == ["c"]
            with pytest.raises(kube.ApiError) as e:
                await client.create(coll, {**cm, "metadata": {"name": "Not_A_Name", "namespace": namespace}})
            assert e.value.status == 422 and "Not_A_Name" in e.value.message
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_401_reads_the_credentials_again_once(kubectl, kubeconfig, namespace, tmp_path, monkeypatch):
    """A projected ServiceAccount token rotates under a running operator: the next request logs in again."""
    sa = f"sa-{uuid.uuid4().hex[:6]}"
    kubectl("create", "serviceaccount", sa, namespace=namespace)
    kubectl("create", "rolebinding", "view", "--clusterrole=view", f"--serviceaccount={namespace}:{sa}",
            namespace=namespace)  # fmt: skip
    admin = yaml.safe_load(kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    with open(cluster["certificate-authority"], "rb") as f:
        ca = base64.b64encode(f.read()).decode()

    def write(token: str):
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": cluster["server"], "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        }))  # fmt: skip
        return path

    monkeypatch.setenv("KUBECONFIG", str(write("expired-token")))
    client = kube.Client(pool_size=2)

    async def scenario():
        try:
            with pytest.raises(kube.ApiError) as e:  # the credentials read again are still bad: one retry, then 401
                await client.get(kube.path("v1", "configmaps", namespace))
            assert e.value.status == 401
            write(kubectl("create", "token", sa, namespace=namespace).stdout.strip())  # the kubelet rotated it
            assert (await client.get(kube.path("v1", "configmaps", namespace)))["kind"] == "ConfigMapList"
        finally:
            await client.close()

    asyncio.run(scenario())
