"""Kueue's manager (sigs.k8s.io/kueue/cmd/kueue, built by hack/build-kueue.sh) as a local process against a
cluster: its CRDs from the same module version, its batch/v1 Job and kueue.x-k8s.io webhooks registered with
``url: https://127.0.0.1:<port>/...`` and a CA generated here, and no Deployment, Service or Secret.

    with KueueProcess(cluster.kubeconfig, tmp_path, kubectl=cluster.kubectl) as kueue:
        ...                                  # CRDs installed, webhooks registered, manager ready

What differs from Kueue's own install (config/default): internalCertManagement is off (Kueue's cert rotator
wants a Service and a Secret in kueue-system), so the webhook server's certificate is the one generated here;
the manager reads its metrics certificate from the fixed path /etc/kueue/metrics/certs, so it runs in a private
mount namespace (``unshare -m``) whose /etc is an overlay holding that certificate (root only; the host's /etc
is untouched); only the webhooks for batch/v1 Jobs and Kueue's own kinds are registered (the other frameworks
are not enabled); no leader election; the visibility API server (VisibilityOnDemand) is off.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from yolo_dev.certs import generate_certs
from yolo_dev.testbed import free_port, go_module_dir, readyz, stop_session, versions, wait_for

ROOT = Path(__file__).resolve().parents[3]  # dev/src/yolo_dev/kueue.py
BUILD = ROOT / "hack" / "build-kueue.sh"
CONFIG_API = "config.kueue.x-k8s.io/v1beta2"
#: Webhook paths registered: batch/v1 Jobs (defaulting: suspend a queued Job; validation of its Kueue labels)
#: and Kueue's own kinds. Others (pods, deployments, ...) belong to frameworks that are not enabled.
WEBHOOK_PATH_PARTS = ("-batch-v1-job", "-kueue-x-k8s-io-")


def _build(*args: str, timeout: float = 3600) -> str:
    proc = subprocess.run([str(BUILD), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"hack/build-kueue.sh {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip()


def binary() -> Path:
    """The manager binary (built on the first call, minutes; cached in ~/.cache/yolo-operator/kueue-<version>)."""
    return Path(_build())


def crd_dir() -> Path:
    return Path(_build("--crds", timeout=600))


def module_dir() -> Path:
    return crd_dir().parents[3]  # <module>/config/components/crd/bases


def webhook_configurations(port: int, ca_pem: bytes, suffix: str) -> list[dict[str, Any]]:
    """Kueue's webhook configurations (config/components/webhook/manifests.yaml of the same module), the Job
    and Kueue-kind webhooks only, pointing at the local manager by URL."""
    docs = [d for d in yaml.safe_load_all((module_dir() / "config/components/webhook/manifests.yaml").read_text()) if d]
    out = []
    for d in docs:
        hooks = []
        for w in d.get("webhooks") or ():
            path = w["clientConfig"]["service"]["path"]
            if not any(p in path for p in WEBHOOK_PATH_PARTS):
                continue
            ca = base64.b64encode(ca_pem).decode()
            w["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
            hooks.append(w)
        if hooks:
            d["metadata"] = {"name": f"kueue-{d['metadata']['name']}-{suffix}"}
            d["webhooks"] = hooks
            out.append(d)
    return out


def kwok_stages_without_pod_complete() -> list[dict[str, Any]]:
    """kwokctl's default Stages but pod-complete, which ends a Job's pods a second after they run: node
    initialisation and lease heartbeat, pod-ready and pod-delete, from the pinned kwok module's kustomize/."""
    stage = go_module_dir("sigs.k8s.io/kwok", versions()["KWOK_VERSION"]) / "kustomize" / "stage"
    files = [stage / "node/fast/node-initialize.yaml", *sorted((stage / "node/heartbeat-with-lease").glob("*.yaml")),
             stage / "pod/fast/pod-ready.yaml", stage / "pod/fast/pod-delete.yaml"]  # fmt: skip
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d and d.get("kind") == "Stage"]
    assert not any(d["metadata"]["name"] == "pod-complete" for d in docs)
    return docs


class KueueProcess:
    """Kueue's manager against the cluster behind ``kubeconfig``; ``kubectl`` is that cluster's
    (``ThrowawayCluster.kubectl``: ``kubectl(*args, input=..., check=...)``)."""

    def __init__(self, kubeconfig: Path, workdir: Path, kubectl: Callable[..., subprocess.CompletedProcess],
                 namespace: str = "kueue-system") -> None:  # fmt: skip
        self.kubeconfig = kubeconfig
        self.dir = workdir / "kueue"
        self.kubectl = kubectl
        self.namespace = namespace
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log_path = self.dir / "kueue.log"
        self.proc: subprocess.Popen | None = None
        self.webhooks: list[dict[str, Any]] = []

    def install_crds(self) -> None:
        # server-side: the Workload CRD is larger than client-side apply's last-applied annotation allows
        self.kubectl("apply", "--server-side", "-f", str(crd_dir()), timeout=180)
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s")

    def configuration(self) -> dict[str, Any]:
        return {
            "apiVersion": CONFIG_API,
            "kind": "Configuration",
            "namespace": self.namespace,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.metrics_port}"},
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port, "certDir": str(self.dir / "certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
        }

    def start(self, timeout: float = 180) -> KueueProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        ca, crt, key = generate_certs(self.dir / "certs", ca_name="kueue-test-ca")
        self.install_crds()
        self.kubectl("create", "namespace", self.namespace, check=False)
        cfg = self.dir / "config.yaml"
        cfg.write_text(yaml.safe_dump(self.configuration()))
        up, work = self.dir / "etc-upper", self.dir / "etc-work"
        (up / "kueue" / "metrics" / "certs").mkdir(parents=True, exist_ok=True)
        work.mkdir(exist_ok=True)
        shutil.copy(crt, up / "kueue" / "metrics" / "certs" / "tls.crt")
        shutil.copy(key, up / "kueue" / "metrics" / "certs" / "tls.key")
        script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={up},workdir={work} /etc && "
                  f'exec "$0" "$@"')  # fmt: skip
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(binary()),
               f"--config={cfg}", f"--kubeconfig={self.kubeconfig}", "--feature-gates=VisibilityOnDemand=false",
               "--zap-log-level=2"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # fmt: skip
        try:
            wait_for(self.ready, timeout, interval=1, what=f"Kueue's /readyz on :{self.health_port}")
            # Registered once the webhook server answers: before that the API server would reject every Job.
            self.webhooks = webhook_configurations(self.webhook_port, ca.read_bytes(), uuid.uuid4().hex[:8])
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.webhooks))
            wait_for(self._webhook_answers, 60, interval=1, what="Kueue's webhook server")
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        assert self.proc is not None, "kueue was not started"
        return readyz(self.proc, f"http://127.0.0.1:{self.health_port}/readyz", "kueue", self.logs)

    def _webhook_answers(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.dir / "certs" / "ca.crt"))
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{self.webhook_port}/healthz", timeout=2, context=ctx)
        except urllib.error.HTTPError:
            return True  # TLS worked; the path is not a webhook
        except OSError:
            return False
        return True

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Unregisters the webhooks (a stopped manager would block every Job in the cluster), then stops it."""
        for w in self.webhooks:
            self.kubectl("delete", w["kind"], w["metadata"]["name"], "--ignore-not-found", check=False)
        self.webhooks = []
        if self.proc is not None:
            stop_session(self.proc)  # its own session: unshare, sh (exec'd) and the manager

    def __enter__(self) -> KueueProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kueue_objects(namespace: str, queue: str, gpus: int = 8) -> list[dict[str, Any]]:
    """The example of docs/kueue.md: a ResourceFlavor, a ClusterQueue ``gpus`` with ``gpus`` GPUs of quota (and
    enough CPU, memory and ephemeral storage not to be the limit) that preempts lower priorities, a LocalQueue
    ``queue`` and two WorkloadPriorityClasses (research-low 100, production-high 10000)."""
    covered = ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]
    quota = {"cpu": "64", "memory": "512Gi", "ephemeral-storage": "4Ti", "nvidia.com/gpu": str(gpus)}
    v = "kueue.x-k8s.io/v1beta2"
    flavor = {"name": "gpu", "resources": [{"name": r, "nominalQuota": quota[r]} for r in covered]}
    cq_spec = {
        "namespaceSelector": {},
        "preemption": {"withinClusterQueue": "LowerPriority"},
        "resourceGroups": [{"coveredResources": covered, "flavors": [flavor]}],
    }
    return [
        {"apiVersion": v, "kind": "ResourceFlavor", "metadata": {"name": "gpu"}},
        {"apiVersion": v, "kind": "ClusterQueue", "metadata": {"name": "gpus"}, "spec": cq_spec},
        {
            "apiVersion": v,
            "kind": "LocalQueue",
            "metadata": {"name": queue, "namespace": namespace},
            "spec": {"clusterQueue": "gpus"},
        },
        {"apiVersion": v, "kind": "WorkloadPriorityClass", "metadata": {"name": "research-low"}, "value": 100},
        {"apiVersion": v, "kind": "WorkloadPriorityClass", "metadata": {"name": "production-high"}, "value": 10000},
    ]


def wait_seconds(start: float) -> str:
    return f"{time.monotonic() - start:6.1f}s"
