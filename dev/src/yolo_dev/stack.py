"""The whole system on the local test bed, as users install it, for the e2e tests and `make demo`.

Real control plane and S3 (hack/testbed.sh), the chart installed with the real `helm`, the operator running
in-cluster as the chart's Deployment from the image `make images` built (logging in with its ServiceAccount
through the `kubernetes` Service), and the trainer's pods on the bed's real node (containerd + kubelet,
hack/node.sh) from the trainer image.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_dev import testbed

RELEASE = "yolo-operator"
OPERATOR_NAMESPACE = "yolo-operator"
OPERATOR_DEPLOYMENT = "yolo-operator"
REAL_NODE = testbed.node_setting("NODE_NAME")
_NODE_LABEL = testbed.node_setting("NODE_LABEL")
#: hack/images.sh push-bed's record: what the bed's registry holds of each image `make images` built, by digest.
REGISTRY_RECORD = testbed.TESTBED / "registry" / "pushed.json"
# Only pods that select and tolerate the real node land there (kwok's fake nodes take everything else).
REAL_NODE_PLACEMENT = {
    "nodeSelector": {_NODE_LABEL: "true"},
    "tolerations": [{"key": _NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}


def table_row(header: str, line: str) -> dict[str, str]:
    """One row of kubectl's table output, by column (columns may be blank, so split on header offsets)."""
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): line[a:b].strip() for a, b in zip(starts, bounds, strict=True)}


@dataclass
class Stack:
    """The tools and steps of a whole-system run on the bed (it starts no processes of its own)."""

    workdir: Path = field(default_factory=lambda: testbed.TESTBED / "e2e")

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PATH": testbed.tool_path(), "KUBECONFIG": str(testbed.KUBECONFIG)}

    # -- tools ------------------------------------------------------------------------------------------
    def run(self, *cmd: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env, timeout=300)
        if check and proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return self.run("kubectl", *args, input=input, check=check)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    @contextlib.contextmanager
    def namespace(self, prefix: str) -> Iterator[str]:
        """A fresh namespace ``<prefix>-<random>``, deleted afterwards without waiting: the namespace controller
        removes what it holds (TrainingJobs and, by owner references, their children) while later tests run; the
        operator puts no finalizer that could stall it."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)

    # -- parts ------------------------------------------------------------------------------------------
    def image_names(self) -> tuple[str, str]:
        """(operator, trainer) as `make images` tagged them (the chart's defaults)."""
        out = self.run(str(testbed.ROOT / "hack" / "images.sh"), "names").stdout.split()
        return out[0], out[1]

    def chart_images(self) -> dict[str, dict[str, str]]:
        """The chart's image values: the bed's registry's references by digest of the images `make images` built
        (hack/images.sh push-bed, run by `make images` and hack/testbed.sh up), as a user installs from their
        registry; the default tags (imported into the node) where the registry holds no such record."""
        try:
            record = json.loads(REGISTRY_RECORD.read_text())
        except (OSError, ValueError):
            return {}
        values = {}
        for key, name in zip(("operator", "trainer"), self.image_names(), strict=True):
            ref = record.get(name, {}).get("ref", "")
            if "@" in ref:
                repository, digest = ref.split("@", 1)
                values[key] = {"repository": repository, "tag": digest}
        return values if len(values) == 2 else {}

    def operator_image(self) -> str:
        """The operator image install_chart's pods run."""
        image = self.chart_images().get("operator")
        return f"{image['repository']}@{image['tag']}" if image else self.image_names()[0]

    def install_chart(self, namespaces: list[str], values: dict[str, Any] | None = None) -> None:
        """`helm upgrade --install` of charts/yolo-operator: the operator Deployment on the real node, watching
        only ``namespaces`` (other tests' operators own the bed's other namespaces); waits until it is Ready."""
        settings = {
            # One replica (leader election still on) unless a test asks for more: the chart's default of two
            # doubles every rollout on the bed's 2 cores; tests/e2e/test_ha.py installs two.
            "replicaCount": 1,
            "watchNamespaces": namespaces,
            "nodeSelector": REAL_NODE_PLACEMENT["nodeSelector"],
            "tolerations": REAL_NODE_PLACEMENT["tolerations"],
            **(values or {}),
        }
        for key, image in self.chart_images().items():
            settings[key] = {**settings.get(key, {}), "image": {**image, **settings.get(key, {}).get("image", {})}}
        # The bed's nodes advertise nvidia.com/gpu without having one: its GPU jobs train on CPU.
        settings["trainer"] = {"offline": True, "simulatedGpus": True, **settings.get("trainer", {})}
        self.run(
            "helm", "upgrade", "--install", RELEASE, str(testbed.ROOT / "charts" / "yolo-operator"),
            "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "3m",
            *(a for k, v in settings.items() for a in ("--set-json", f"{k}={json.dumps(v)}")),
        )  # fmt: skip
        self.kubectl("rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE,
                     "--timeout=180s")  # fmt: skip

    def operator_pods(self) -> list[dict[str, Any]]:
        pods = self.get("pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=yolo-operator")["items"]
        # `helm test`'s pod carries the chart's labels too and outlives the run that made it (a later HA test
        # counted it as a third replica)
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and "helm.sh/hook" not in (p["metadata"].get("annotations") or {})]  # fmt: skip

    def lease_holder(self) -> str:
        """The leader's identity (``<pod>_<random>``) in the chart's Lease; "" when none holds it."""
        proc = self.kubectl("get", "lease", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
        if proc.returncode:
            return ""
        return (json.loads(proc.stdout).get("spec") or {}).get("holderIdentity") or ""

    def operator_pod(self, timeout: float = 60) -> dict[str, Any]:
        """The operator pod that reconciles: the Lease holder among the chart's pods (with leader election, the
        chart's default, the others only stand by), else the newest pod (one replica without election)."""

        def leader() -> dict[str, Any] | None:
            pods = self.operator_pods()
            env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0].get("env", [])} if pods else {}
            if pods and env.get("YOLO_OPERATOR_LEADER_ELECTION") != "true":
                return max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
            holder = self.lease_holder().split("_")[0]
            return next((p for p in pods if p["metadata"]["name"] == holder), None)

        return self.wait(leader, timeout, what="the operator's leader pod")

    def operator_log(self) -> str:
        pod = self.operator_pod()["metadata"]["name"]
        return self.kubectl("logs", "-n", OPERATOR_NAMESPACE, pod, "--tail=-1").stdout

    def pod_log(self, namespace: str, pod: str) -> str:
        return self.kubectl("logs", "-n", namespace, pod, "--tail=-1", check=False).stdout

    def helm_test(self) -> str:
        return self.run("helm", "test", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--logs", "--timeout", "3m").stdout

    def s3_secret(self, namespace: str, name: str = "s3-credentials") -> None:
        s3 = testbed.s3_env()
        self.kubectl("create", "secret", "generic", name, "-n", namespace,
                     f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                     f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}")  # fmt: skip

    def upload_dataset(self, bucket: str, prefix: str, images: int = 24, seed: int = 0) -> str:
        """A generated YOLO dataset (coloured shapes) uploaded to s3://bucket/prefix/; returns its URI."""
        import boto3
        from yolo_trainer import testing

        s3 = testbed.s3_env()
        client = boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region,
                              aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)  # fmt: skip
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        with tempfile.TemporaryDirectory() as tmp:
            testing.write_yolo_dataset(Path(tmp), n_train=images, n_val=max(4, images // 4), seed=seed)
            testing.upload_dir(client, bucket, prefix, tmp)
        return f"s3://{bucket}/{prefix.rstrip('/')}/"

    def training_job(
        self, name: str, dataset: str, output: str, epochs: int = 3, **spec: Any
    ) -> dict[str, Any]:
        s3 = testbed.s3_env()
        body: dict[str, Any] = {
            "model": {"yaml": "yolov8n.yaml"},
            "dataset": dataset,
            "output": output,
            "s3": {
                "endpoint": s3.endpoint,
                "region": s3.region,
                "credentialsSecretRef": {"name": "s3-credentials"},
            },
            "training": {"epochs": epochs, "imgsz": 64, "batch": 8, "workers": 0},
            # The kubelet enforces the limit: torch + Ultralytics need ~1.5 GiB on CPU (plus /dev/shm).
            "resources": {"gpus": 1, "cpu": "1", "memory": "3Gi"},
            "scheduling": REAL_NODE_PLACEMENT,
            **spec,
        }
        return {"apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
                "spec": body}  # fmt: skip

    wait = staticmethod(testbed.wait_until)
