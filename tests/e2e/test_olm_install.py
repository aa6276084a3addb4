"""OLM v1 installs the operator from a catalog in the bed's registry, as a user's cluster would from theirs.

The user's steps (docs/install.md, "OLM"): `make bundle bundle-build bundle-push catalog catalog-build
catalog-push` of the images `make images` pushed to the bed's registry, pinned by digest; a ClusterCatalog of that
catalog image; a ClusterExtension with an installer ServiceAccount. OLM v1 (catalogd and operator-controller
v1.2.0, yolo_dev.olm) serves the catalog, installs the bundle (the CRD, the RBAC from the CSV, the Deployment,
the console and monitoring objects) and the operator it installed runs a TrainingJob on the real node. While that
job trains, the next release is built the same way (VERSION one patch up), the catalog grows by it and the
ClusterCatalog is pointed at the new catalog image: OLM upgrades the extension, the TrainingJob keeps its
identity, its Job and its pod, goes on reporting epochs and ends Succeeded. Prints OLM-FIGURE lines.

The bed's chart install owns the TrainingJob CRD, and a CRD has one owner: this module uninstalls that release
and its CRD first (every TrainingJob in the bed goes with it), so it runs after the tests that share them
(marker ``owns_crd``), and removes what OLM installed afterwards.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from yolo_dev import olm, testbed
from yolo_dev.stack import OPERATOR_NAMESPACE, REAL_NODE, REAL_NODE_PLACEMENT, RELEASE, Stack
from yolo_operator.gen import bundle

pytestmark = [pytest.mark.e2e, pytest.mark.owns_crd, pytest.mark.timeout(1800)]

INSTALL_NAMESPACE = "yolo-operator-olm"
INSTALLER = "yolo-operator-installer"
EXTENSION = CATALOG = bundle.PACKAGE
CRD_NAME = "trainingjobs.yolo-operator.io"
#: Never reached: the job trains until spec.stop, set once the upgraded operator has shown it runs it.
EPOCHS = 100


def next_patch(version: str) -> str:
    major, minor, patch = version.split("-")[0].split("+")[0].split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def make(*args: str) -> str:
    """`make ARGS` in the repository, as a user runs the bundle and catalog targets."""
    env = {**os.environ, "PATH": testbed.tool_path()}
    proc = subprocess.run(["make", "-C", str(testbed.ROOT), "--no-print-directory", *args], capture_output=True,
                          text=True, timeout=900, env=env)  # fmt: skip
    if proc.returncode:
        raise AssertionError(f"make {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")  # fmt: skip
    return proc.stdout + proc.stderr


def figure(line: str) -> None:
    print(f"OLM-FIGURE {line}", flush=True)


@pytest.fixture(scope="module")
def stack(bed, real_node) -> Stack:
    return Stack()


@pytest.fixture(scope="module")
def images(stack) -> dict[str, str]:
    """The operator and trainer images `make images` pushed to the bed's registry, by digest."""
    values = stack.chart_images()
    assert values, f"no record of the images in the bed's registry ({testbed.TESTBED / 'registry'}): make images"
    return {k: f"{v['repository']}@{v['tag']}" for k, v in values.items()}


@pytest.fixture(scope="module")
def releases(stack, images, tmp_path_factory):
    """Builds one release's bundle and grows the catalog by it: (version) -> the catalog image by digest."""
    work = tmp_path_factory.mktemp("olm")
    registry = f"{testbed.node_setting('HOST_IP')}:{testbed.node_setting('REGISTRY_PORT')}"
    run = uuid.uuid4().hex[:6]
    tags: list[str] = []

    def release(version: str) -> str:
        catalog_image = f"{registry}/yolo-operator/yolo-operator-catalog:v{version}-{run}"
        bundle_image = f"{registry}/yolo-operator/yolo-operator-bundle:v{version}-{run}"
        tags.extend((bundle_image, catalog_image))
        # What this bed needs of the operator and its trainers, carried in the bundle (OLM v1 has no
        # Subscription.spec.config): the real node's placement; GPUs simulated, no internet. The release's
        # annotation changes the operator's pod template from one release to the next, as a new image would: the
        # upgrade replaces the operator's pod while the TrainingJob trains.
        values = work / f"values-{version}.yaml"
        values.write_text(yaml.safe_dump({"replicaCount": 1, **REAL_NODE_PLACEMENT,
                                          "podAnnotations": {"yolo-operator.io/test-release": version},
                                          "trainer": {"offline": True, "simulatedGpus": True}}))  # fmt: skip
        start = time.monotonic()
        make("bundle", "bundle-build", "bundle-push", "catalog", "catalog-build", "catalog-push",
             f"IMG={images['operator']}", f"TRAINER_IMG={images['trainer']}", f"VERSION={version}",
             f"BUNDLE_VALUES={values}", f"BUNDLE_DIR={work / ('bundle-' + version)}", f"CATALOG_DIR={work / 'catalog'}",
             f"BUNDLE_IMG={bundle_image}",
             f"CATALOG_IMG={catalog_image}", "REGISTRY_TLS_VERIFY=false", "PIN=0")  # fmt: skip
        pinned = bundle.resolve_digest(catalog_image, tls_verify=False)
        figure(f"release {version}: bundle and catalog built and pushed in {time.monotonic() - start:.0f} s: {pinned}")
        return pinned

    yield release
    # The registry keeps what was pushed (the bed's, gone at teardown); docker's tags of it go now.
    subprocess.run([str(testbed.ROOT / "hack" / "images.sh"), "docker", "rmi", *tags], capture_output=True,
                   timeout=120, check=False)  # fmt: skip


def clear_the_chart(stack: Stack) -> None:
    """The chart's release and its CRD (kept by `helm uninstall`), so that OLM owns the CRD it installs."""
    stack.run("helm", "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout", "3m",
              check=False)  # fmt: skip
    stack.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", "--timeout=300s")


@pytest.fixture(scope="module")
def olmv1(stack, tmp_path_factory):
    clear_the_chart(stack)
    manager = olm.OLMv1(stack.kubectl, tmp_path_factory.mktemp("olmv1"))
    manager.start()
    try:
        yield manager
    finally:
        stack.kubectl("delete", "clusterextension", EXTENSION, "--ignore-not-found", "--wait=true",
                      "--timeout=180s", check=False)  # fmt: skip
        stack.kubectl("delete", "clustercatalog", CATALOG, "--ignore-not-found", "--wait=true", "--timeout=60s",
                      check=False)  # fmt: skip
        manager.stop()
        stack.kubectl("delete", "consoleplugin", bundle.CONSOLE_PLUGIN, "--ignore-not-found", check=False)
        # Leftovers of a failed run, then the kinds this module added to the bed.
        stack.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", "--timeout=300s", check=False)
        stack.kubectl("delete", "namespace", INSTALL_NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
        manager.uninstall()


def served_catalog(base_url: str, ca: Path) -> list[dict[str, Any]]:
    """What catalogd serves of the catalog (``<status.urls.base>/api/v1/all``, JSON lines), over its TLS."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"{base_url}/api/v1/all", context=ctx, timeout=30) as r:
        return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


def wait_condition(stack: Stack, olmv1: olm.OLMv1, kind: str, name: str, cond: str, timeout: float,
                   check: Any = None) -> dict[str, Any]:  # fmt: skip
    def met() -> dict[str, Any] | None:
        obj = olmv1.get(kind, name)
        ok = olm.condition(obj, cond).get("status") == "True" and (check is None or check(obj))
        return obj if ok else None

    try:
        return stack.wait(met, timeout, interval=1, what=f"{kind} {name}: {cond}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{json.dumps(olmv1.get(kind, name).get('status'), indent=1)}\n"
                             f"{olmv1.diagnostics()}") from None  # fmt: skip


def rollout(stack: Stack) -> None:
    """The operator's Deployment rolled out; on failure, what its pods and their events say."""
    proc = stack.kubectl("rollout", "status", "deployment/yolo-operator", "-n", INSTALL_NAMESPACE, "--timeout=240s",
                         check=False)  # fmt: skip
    if proc.returncode:
        pods = stack.kubectl("get", "pods", "-n", INSTALL_NAMESPACE, "-o", "wide", check=False).stdout
        described = stack.kubectl("describe", "pods", "-n", INSTALL_NAMESPACE, check=False).stdout
        raise AssertionError(f"the operator OLM installed did not roll out: {proc.stdout}{proc.stderr}\n{pods}\n"
                             f"{described[-6000:]}")  # fmt: skip


def installed_version(obj: dict[str, Any]) -> str:
    return (((obj.get("status") or {}).get("install") or {}).get("bundle") or {}).get("version", "")


def operator_pods(stack: Stack) -> list[dict[str, Any]]:
    pods = stack.get("pods", "-n", INSTALL_NAMESPACE, "-l", "app.kubernetes.io/name=yolo-operator")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def epoch(stack: Stack, namespace: str, name: str) -> int:
    status = stack.get("tj", name, "-n", namespace).get("status") or {}
    return (status.get("progress") or {}).get("epoch") or 0


def trainer_pods(stack: Stack, namespace: str) -> dict[str, tuple[str, set[int]]]:
    pods = stack.get("pods", "-n", namespace)["items"]
    return {p["metadata"]["name"]: (p["metadata"]["uid"], {c.get("restartCount", 0) for c in
            (p.get("status") or {}).get("containerStatuses") or []}) for p in pods}  # fmt: skip


@pytest.fixture
def training_namespace(stack):
    with stack.namespace("olm") as name:
        yield name


def test_olm_installs_the_bundle_runs_a_trainingjob_and_upgrades_it(stack, images, releases, olmv1,
                                                                    training_namespace):  # fmt: skip
    chart = yaml.safe_load((testbed.ROOT / bundle.CHART / "Chart.yaml").read_text())
    first, second = chart["appVersion"], next_patch(chart["appVersion"])

    # -- the catalog served -------------------------------------------------------------------------------
    catalog_v1 = releases(first)
    olmv1.apply(*olm.installer_rbac(INSTALL_NAMESPACE, INSTALLER), olm.cluster_catalog(CATALOG, catalog_v1))
    start = time.monotonic()
    served = wait_condition(stack, olmv1, "clustercatalog", CATALOG, "Serving", 300)
    base = served["status"]["urls"]["base"]
    docs = served_catalog(base, olmv1.dir / "certs" / "ca.crt")
    channels = [d for d in docs if d["schema"] == "olm.channel"]
    bundles = [d for d in docs if d["schema"] == "olm.bundle"]
    assert [d["name"] for d in docs if d["schema"] == "olm.package"] == [bundle.PACKAGE], docs
    assert [e["name"] for e in channels[0]["entries"]] == [f"{bundle.PACKAGE}.v{first}"], channels
    assert {i["image"] for i in bundles[0]["relatedImages"]} >= {images["operator"], images["trainer"]}, bundles
    labels = served["metadata"].get("labels") or {}
    assert labels.get("olm.operatorframework.io/metadata.name") == CATALOG, labels  # catalogd's webhook ran
    figure(f"ClusterCatalog {CATALOG} Serving after {time.monotonic() - start:.0f} s at {base}: package "
           f"{bundle.PACKAGE}, channel {channels[0]['name']} {[e['name'] for e in channels[0]['entries']]}, bundle "
           f"image {bundles[0]['image']}")  # fmt: skip

    # -- the ClusterExtension installed -------------------------------------------------------------------
    olmv1.apply(olm.cluster_extension(EXTENSION, bundle.PACKAGE, INSTALL_NAMESPACE, INSTALLER, [bundle.CHANNEL]))
    start = time.monotonic()
    ext = wait_condition(stack, olmv1, "clusterextension", EXTENSION, "Installed", 300,
                         check=lambda o: installed_version(o) == first)  # fmt: skip
    rollout(stack)
    (pod,) = operator_pods(stack)
    assert pod["spec"]["nodeName"] == REAL_NODE, pod["spec"].get("nodeName")
    assert pod["spec"]["containers"][0]["image"] == images["operator"], pod["spec"]["containers"][0]["image"]
    crd = stack.get("crd", CRD_NAME)
    assert crd["metadata"]["labels"].get("olm.operatorframework.io/owner-name") == EXTENSION, crd["metadata"]
    # OLM creates no ConsolePlugin from a bundle: the operator it installed applied the bundle's, pointing at the
    # plugin's Service where OLM put it.
    plugin = stack.wait(lambda: olmv1.get("consoleplugin", bundle.CONSOLE_PLUGIN), 120, interval=2,
                        what="the ConsolePlugin the operator applies")  # fmt: skip
    assert plugin["spec"]["backend"]["service"]["namespace"] == INSTALL_NAMESPACE, plugin["spec"]
    stack.get("service", plugin["spec"]["backend"]["service"]["name"], "-n", INSTALL_NAMESPACE)
    figure(f"ClusterExtension {EXTENSION} Installed {ext['status']['install']['bundle']} after "
           f"{time.monotonic() - start:.0f} s; operator pod {pod['metadata']['name']} on {pod['spec']['nodeName']} "
           f"running {images['operator']}")  # fmt: skip
    print(stack.kubectl("get", "clustercatalogs,clusterextensions", "-o", "wide").stdout)

    # -- a TrainingJob trains under it on the real node ----------------------------------------------------
    ns = training_namespace
    stack.s3_secret(ns)
    dataset = stack.upload_dataset(ns, "shapes")
    tj = stack.training_job("across", dataset, f"s3://{ns}/runs/across", epochs=EPOCHS)
    stack.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(tj))
    stack.wait(lambda: epoch(stack, ns, "across") >= 1, 600, interval=2, what="the TrainingJob's first epoch")
    before = stack.get("tj", "across", "-n", ns)
    (job,) = stack.get("jobs", "-n", ns)["items"]
    pods_before = trainer_pods(stack, ns)
    assert pods_before and all(r == {0} for _, r in pods_before.values()), pods_before

    # -- the next release: the catalog grows, OLM upgrades --------------------------------------------------
    catalog_v2 = releases(second)
    epoch_at_upgrade = epoch(stack, ns, "across")
    start = time.monotonic()
    olmv1.apply(olm.cluster_catalog(CATALOG, catalog_v2))
    ext = wait_condition(stack, olmv1, "clusterextension", EXTENSION, "Installed", 300,
                         check=lambda o: installed_version(o) == second)  # fmt: skip
    upgraded_s = time.monotonic() - start
    rollout(stack)
    operator_after = [p["metadata"]["name"] for p in operator_pods(stack)]
    assert pod["metadata"]["name"] not in operator_after, operator_after  # the operator itself was upgraded
    entries = [e for d in served_catalog(base, olmv1.dir / "certs" / "ca.crt") if d["schema"] == "olm.channel"
               for e in d["entries"]]  # fmt: skip
    assert entries == [{"name": f"{bundle.PACKAGE}.v{first}"},
                       {"name": f"{bundle.PACKAGE}.v{second}", "replaces": f"{bundle.PACKAGE}.v{first}"}], entries
    after = stack.get("tj", "across", "-n", ns)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"] == before["spec"], (before["spec"], after["spec"])
    assert [j["metadata"]["uid"] for j in stack.get("jobs", "-n", ns)["items"]] == [job["metadata"]["uid"]]
    assert stack.get("crd", CRD_NAME)["metadata"]["uid"] == crd["metadata"]["uid"]  # upgraded in place
    stack.wait(lambda: epoch(stack, ns, "across") > epoch_at_upgrade + 1, 600, interval=2,
               what="epochs reported after the upgrade")  # fmt: skip
    figure(f"upgrade {first} -> {second}: ClusterExtension Installed {ext['status']['install']['bundle']} "
           f"{upgraded_s:.0f} s after the ClusterCatalog named the new catalog; TrainingJob across kept its uid, "
           f"spec, Job and pod; epoch {epoch_at_upgrade} at the upgrade, {epoch(stack, ns, 'across')} after it; "
           f"operator pods {pod['metadata']['name']} -> {', '.join(operator_after)}")  # fmt: skip

    stack.kubectl("patch", "tj", "across", "-n", ns, "--type=merge", "-p", '{"spec": {"stop": true}}')

    def finished() -> dict[str, Any] | None:
        status = stack.get("tj", "across", "-n", ns).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = stack.wait(finished, 600, interval=2, what="the TrainingJob to finish")
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    pods_after = trainer_pods(stack, ns)
    assert {n: v[0] for n, v in pods_after.items()} == {n: v[0] for n, v in pods_before.items()}, pods_after
    assert all(r == {0} for _, r in pods_after.values()), pods_after
    figure(f"TrainingJob across {status['phase']} at epoch {status['progress']['epoch']} under {second}, "
           f"its pod never restarted")  # fmt: skip
    print(stack.kubectl("get", "tj,jobs,pods", "-n", ns, "-o", "wide").stdout)
