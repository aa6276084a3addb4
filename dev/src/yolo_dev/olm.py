"""OLM v1 in the test bed: catalogd and operator-controller (github.com/operator-framework/operator-controller at
OLMV1_VERSION, built by hack/build-olmv1.sh) as processes of the bed's real node, against its API server.

    with OLMv1(kubectl, workdir) as olm:         # CRDs installed, both managers ready, catalogd's webhook registered
        olm.apply(cluster_catalog("yolo-operator", "10.213.255.1:7500/...@sha256:..."))

What differs from upstream's install (config/, kustomize, cert-manager), and why:

* They run like the node's kubelet: host processes inside the node's network namespace (``nsenter --net``), so
  every port they open (catalogd's catalog server, its webhook server, which binds all addresses, the probes) is
  on the bed's own link, never on this machine's interfaces. They log in with the node's kubeconfig (the bed's
  admin) instead of their ServiceAccounts and upstream's RBAC; what they *install* is done as the
  ClusterExtension's ServiceAccount, as upstream.
* TLS from a CA made here (no cert-manager): catalogd serves catalogs on ``https://NODE_IP:CATALOG_PORT`` (its
  ``--external-address``, which ClusterCatalog.status.urls.base names), operator-controller trusts that CA
  (``--catalogd-cas-dir``), and catalogd's mutating webhook is registered by URL with that CA.
* Both pull catalog and bundle images from the bed's registry over plain HTTP: their ``HOME`` holds a
  containers-registries.conf(5) that marks it insecure, and a signature policy that accepts any image (upstream's
  own fallback when no policy file exists).
* The kinds the yolo-operator bundle holds beyond Kubernetes' own get their real CRDs: the OpenShift console's
  (github.com/openshift/api) and the ServiceMonitor (prometheus-operator), from pinned Go modules.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from yolo_dev import testbed
from yolo_dev.certs import generate_certs

ROOT = testbed.ROOT
BUILD = ROOT / "hack" / "build-olmv1.sh"
MODULE = "github.com/operator-framework/operator-controller"
SYSTEM_NAMESPACE = "olmv1-system"
API = "olm.operatorframework.io/v1"
#: Ports inside the node's network namespace (only the kubelet and kube-proxy listen there besides these).
CATALOG_PORT, WEBHOOK_PORT, CATALOGD_PROBE_PORT, CONTROLLER_PROBE_PORT = 8443, 9443, 8081, 8082
CATALOGD_WEBHOOK_PATH = "/mutate-olm-operatorframework-io-v1-clustercatalog"
#: (module, version key in hack/versions.env, CRD files in it): the kinds of the bundle OLM must be able to create.
EXTRA_CRDS = (
    ("github.com/openshift/api", "OPENSHIFT_API_VERSION",
     ("console/v1/zz_generated.crd-manifests/00_consolequickstarts.crd.yaml",
      "console/v1/zz_generated.crd-manifests/00_consoleyamlsamples.crd.yaml",
      "console/v1/zz_generated.crd-manifests/90_consoleplugins.crd.yaml")),
    ("github.com/prometheus-operator/prometheus-operator", "PROMETHEUS_OPERATOR_VERSION",
     ("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",)),
)  # fmt: skip
OLM_CRDS = (
    "config/base/catalogd/crd/bases/olm.operatorframework.io_clustercatalogs.yaml",
    "config/base/operator-controller/crd/bases/olm.operatorframework.io_clusterextensions.yaml",
)


def binaries() -> Path:
    """The directory holding operator-controller and catalogd (built on the first call, minutes; then cached)."""
    proc = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=3600, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"hack/build-olmv1.sh failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def crd_files() -> list[Path]:
    """OLM's CRDs (ClusterCatalog, ClusterExtension) and those of the bundle's console and monitoring kinds."""
    versions = testbed.versions()
    olm = testbed.go_module_dir(MODULE, versions["OLMV1_VERSION"])
    extra = [testbed.go_module_dir(m, versions[key]) / f for m, key, files in EXTRA_CRDS for f in files]
    return [*(olm / f for f in OLM_CRDS), *extra]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == kind), {})


def registries_conf(registry: str) -> str:
    """containers-registries.conf(5): the bed's registry speaks plain HTTP."""
    return f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n'


def webhook_configuration(name: str, url: str, ca_pem: bytes) -> dict[str, Any]:
    """catalogd's mutating webhook (its kubebuilder marker in internal/catalogd/webhook), by URL: it labels every
    ClusterCatalog with its name (olm.operatorframework.io/metadata.name), which catalog selectors match on."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject-metadata-name.olm.operatorframework.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "rules": [{"apiGroups": ["olm.operatorframework.io"], "apiVersions": ["v1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["clustercatalogs"]}],
        }],
    }  # fmt: skip


def cluster_catalog(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ClusterCatalog", "metadata": {"name": name},
            "spec": {"source": {"type": "Image", "image": {"ref": image}}}}  # fmt: skip


def cluster_extension(name: str, package: str, namespace: str, service_account: str,
                      channels: list[str]) -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": API, "kind": "ClusterExtension", "metadata": {"name": name},
            "spec": {"namespace": namespace, "serviceAccount": {"name": service_account},
                     "source": {"sourceType": "Catalog",
                                "catalog": {"packageName": package, "channels": channels}}}}  # fmt: skip


def installer_rbac(namespace: str, service_account: str) -> list[dict[str, Any]]:
    """The ServiceAccount a ClusterExtension installs as: cluster-admin here (OLM's docs derive a narrower role
    from the bundle; the bundle's own RBAC is what the operator gets)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{namespace}-{service_account}"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]},
    ]  # fmt: skip


class OLMv1:
    """catalogd and operator-controller on the bed's real node; ``kubectl`` runs the bed's kubectl
    (``kubectl(*args, input=..., check=...) -> CompletedProcess``)."""

    def __init__(self, kubectl: Callable[..., subprocess.CompletedProcess], workdir: Path) -> None:
        self.kubectl = kubectl
        self.dir = workdir / "olmv1"
        self.node_ip = testbed.node_setting("NODE_IP")
        self.netns = testbed.node_setting("NODE_NETNS")
        registry_host = testbed.node_setting("HOST_IP")
        self.registry = f"{registry_host}:{testbed.node_setting('REGISTRY_PORT')}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.webhook_name = "catalogd-mutating-webhook-configuration"

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> OLMv1:
        self.dir.mkdir(parents=True, exist_ok=True)
        bin_dir = binaries()
        self.kubectl("apply", "--server-side", "--force-conflicts", *(a for f in crd_files() for a in ("-f", str(f))))
        self.kubectl("wait", "--for=condition=Established", "crd", "clustercatalogs.olm.operatorframework.io",
                     "clusterextensions.olm.operatorframework.io", "--timeout=120s")  # fmt: skip
        self.kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
        ca, crt, key = generate_certs(self.dir / "certs", ips=(self.node_ip, "127.0.0.1"), ca_name="olmv1-test-ca")
        cas = self.dir / "catalogd-cas"
        cas.mkdir(exist_ok=True)
        (cas / "ca.crt").write_bytes(ca.read_bytes())
        home = self.dir / "home"
        conf = home / ".config" / "containers"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "registries.conf").write_text(registries_conf(self.registry))
        (conf / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        kubeconfig = testbed.TESTBED / "node" / "kubeconfig"  # the API server through the node's link
        common = [f"--kubeconfig={kubeconfig}", f"--system-namespace={SYSTEM_NAMESPACE}"]
        self._spawn("catalogd", [
            str(bin_dir / "catalogd"), *common,
            f"--cache-dir={self.dir / 'catalogd-cache'}",
            f"--tls-cert={crt}", f"--tls-key={key}",
            f"--external-address={self.node_ip}:{CATALOG_PORT}",
            f"--catalogs-server-addr={self.node_ip}:{CATALOG_PORT}",
            f"--metrics-bind-address={self.node_ip}:7443",
            f"--health-probe-bind-address={self.node_ip}:{CATALOGD_PROBE_PORT}",
            f"--webhook-server-port={WEBHOOK_PORT}",
        ], home)  # fmt: skip
        self._spawn("operator-controller", [
            str(bin_dir / "operator-controller"), *common,
            f"--cache-path={self.dir / 'operator-controller-cache'}",
            f"--catalogd-cas-dir={cas}",
            f"--health-probe-bind-address={self.node_ip}:{CONTROLLER_PROBE_PORT}",
        ], home)  # fmt: skip
        try:
            for name, port in (("catalogd", CATALOGD_PROBE_PORT), ("operator-controller", CONTROLLER_PROBE_PORT)):
                testbed.wait_for(lambda n=name, p=port: self._ready(n, p), timeout, interval=1,
                                 what=f"{name}'s /readyz on {self.node_ip}:{port}")  # fmt: skip
            url = f"https://{self.node_ip}:{WEBHOOK_PORT}{CATALOGD_WEBHOOK_PATH}"
            self.apply(webhook_configuration(self.webhook_name, url, ca.read_bytes()))
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cmd: list[str], home: Path) -> None:
        env = {**os.environ, "HOME": str(home)}
        with (self.dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "--", *cmd], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True, cwd=self.dir,
            )  # fmt: skip

    def _ready(self, name: str, port: int) -> bool:
        return testbed.readyz(self.procs[name], f"http://{self.node_ip}:{port}/readyz", name, lambda: self.log(name))

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.kubectl("delete", "mutatingwebhookconfiguration", self.webhook_name, "--ignore-not-found", check=False)
        for proc in self.procs.values():
            testbed.stop_session(proc)

    def uninstall(self) -> None:
        """What start() added to the cluster: OLM's CRDs, the bundle's console and monitoring kinds' (a later chart
        install renders what their APIs offer) and OLM's namespace (its Helm release records)."""
        self.kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=120s",
                     *(a for f in crd_files() for a in ("-f", str(f))), check=False)  # fmt: skip
        self.kubectl("delete", "namespace", SYSTEM_NAMESPACE, "--ignore-not-found", "--wait=false", check=False)

    def __enter__(self) -> OLMv1:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- objects -----------------------------------------------------------------------------------------
    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        proc = self.kubectl("get", kind, name, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}

    def diagnostics(self) -> str:
        """Both managers' last log lines, for a failure message."""
        return "\n".join(f"--- {n} ---\n" + "\n".join(self.log(n).splitlines()[-40:]) for n in self.procs)
