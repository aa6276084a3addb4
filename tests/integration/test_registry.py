"""The bed's container registry (hack/testbed.sh registry: Debian's docker-registry, the CNCF distribution 2.8, on
the node link's host address): an image pushed there runs on the real node by digest, and a rebuild that changed
one layer moves only that layer, into the registry (its blob store) and onto the node (the registry's access log
names every blob the node's containerd fetched). The images are made here: two builds on the operator image that
differ in their last, small layer."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from yolo_dev import testbed

from tests.integration.test_real_node import run_pod

pytestmark = pytest.mark.integration

IMAGES_SH = str(testbed.ROOT / "hack/images.sh")
REGISTRY = f"{testbed.node_setting('HOST_IP')}:{testbed.node_setting('REGISTRY_PORT')}"
NODE_IP = testbed.node_setting("NODE_IP")
REGISTRY_DIR = testbed.TESTBED.resolve() / "registry"
ACCESS_LOG = testbed.TESTBED.resolve() / "logs" / "registry.log"
BLOB_GET = re.compile(r'^(\S+) .* "GET /v2/(\S+)/blobs/(sha256:[a-f0-9]{64}) HTTP/[\d.]+" 200 ')


def sh(*cmd: str, input: str | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def blobs() -> set[str]:
    """Every blob the registry stores (layers, configs and manifests), by digest."""
    root = REGISTRY_DIR / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in root.glob("*/*") if (p / "data").is_file()}


def manifest(ref: str) -> dict:
    return json.loads(sh("skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"))


def digest(ref: str) -> str:
    return sh("skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}").strip()


def node_blob_gets(since: int) -> set[str]:
    """Blobs the real node fetched from the registry after byte ``since`` of its access log."""
    with ACCESS_LOG.open("rb") as f:
        f.seek(since)
        lines = f.read().decode(errors="replace").splitlines()
    return {m.group(3) for line in lines if (m := BLOB_GET.match(line)) and m.group(1) == NODE_IP}


@pytest.fixture(scope="module")
def registry() -> str:
    proc = subprocess.run(["curl", "-sf", "--max-time", "5", f"http://{REGISTRY}/v2/"], capture_output=True)
    assert proc.returncode == 0, f"no registry on {REGISTRY}: hack/testbed.sh registry starts it on a running bed"
    return REGISTRY


def build_and_push(tmp: Path, tag: str, marker: str, target: str) -> None:
    """An image on the operator image with one more small layer, /marker, pushed to ``target``."""
    base = sh(IMAGES_SH, "names").split()[0]
    ctx = tmp / tag
    ctx.mkdir()
    (ctx / "marker").write_text(marker)
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY marker /marker\n")
    local = f"localhost/yolo-registry-test/app:{tag}"
    sh(IMAGES_SH, "docker", "build", "--network=none", "-q", "-t", local, str(ctx))
    try:
        sh(IMAGES_SH, "push-image", local, target)
    finally:
        subprocess.run([IMAGES_SH, "docker", "rmi", local], capture_output=True)


def run_image(kubectl, namespace: str, name: str, image: str) -> dict:
    """The image's /marker, printed by a pod on the real node that pulls the image (IfNotPresent), and the image
    ID the node ran."""
    log = run_pod(kubectl, namespace, name, image, "print(open('/marker').read())", timeout=300,
                  container={"imagePullPolicy": "IfNotPresent"})  # fmt: skip
    image_id = kubectl("get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].imageID}",
                       namespace=namespace).stdout  # fmt: skip
    return {"log": log.strip(), "imageID": image_id}


def test_a_rebuilt_image_moves_only_its_new_layer(registry, kubectl, namespace, tmp_path):
    run = uuid.uuid4().hex[:8]
    repo = f"{registry}/yolo-registry-test/app-{run}"
    # Markers of this run only: the registry stores blobs by content across repositories, so an earlier run's
    # identical layer would already be there and nothing new would move.
    one, two = f"one {run}", f"two {run}"
    build_and_push(tmp_path, "v1", one, f"{repo}:v1")
    v1 = f"{repo}@{digest(f'{repo}:v1')}"
    before = blobs()
    build_and_push(tmp_path, "v2", two, f"{repo}:v2")
    v2 = f"{repo}@{digest(f'{repo}:v2')}"
    m1, m2 = manifest(v1), manifest(v2)
    layers1, layers2 = [x["digest"] for x in m1["layers"]], [x["digest"] for x in m2["layers"]]
    assert layers2[:-1] == layers1[:-1] and layers2[-1] != layers1[-1], "the rebuild differs in its last layer"
    # Into the registry: the new layer, the new config and the new manifest; nothing of the base.
    assert blobs() - before == {layers2[-1], m2["config"]["digest"], v2.split("@")[1]}

    first = run_image(kubectl, namespace, "by-digest-v1", v1)
    assert first["log"] == one
    assert first["imageID"].endswith(v1.split("@")[1]), first["imageID"]

    # Onto the node: the pull of v2 by digest fetches its config and its one new layer, none of v1's.
    mark = ACCESS_LOG.stat().st_size
    second = run_image(kubectl, namespace, "by-digest-v2", v2)
    assert second["log"] == two
    assert second["imageID"].endswith(v2.split("@")[1]), second["imageID"]
    assert node_blob_gets(mark) == {layers2[-1], m2["config"]["digest"]}


def test_the_node_resolves_the_default_image_names_from_the_registry(registry):
    """The node's containerd has the bed's registry as the mirror of ghcr.io (plain HTTP), so the chart's default
    names resolve there; hack/images.sh push-bed recorded what it pushed by digest for the chart values."""
    hosts = testbed.TESTBED.resolve() / "node" / "registry-hosts"
    for host in (registry, testbed.node_setting("MIRRORED_REGISTRY")):
        assert f'server = "http://{registry}"' in (hosts / host / "hosts.toml").read_text()
    assert f'config_path = "{hosts}"' in (testbed.TESTBED.resolve() / "node" / "containerd.toml").read_text()
    record = json.loads((REGISTRY_DIR / "pushed.json").read_text())
    for name in sh(IMAGES_SH, "names").split()[:2]:
        ref = record[name]["ref"]
        assert ref.startswith(f"{registry}/") and "@sha256:" in ref, ref
        assert digest(ref) == ref.split("@")[1], f"the registry serves {ref}"
