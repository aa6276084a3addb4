"""The whole system on the local test bed, for the e2e tests and `make demo`.

Real control plane and S3 (hack/testbed.sh), the chart installed with the real `helm`, the operator run as a
local process authenticated with the chart's ServiceAccount token (so it has exactly the chart's RBAC),
and the trainer run by the local pod runner (tests/podrunner.py) on its GPU node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests import testbed

RELEASE = "yolo-operator"
OPERATOR_NAMESPACE = "yolo-operator"
OPERATOR_SA = "yolo-operator"
RUNNER_NODE = "local-runner-0"
RUNNER_PLACEMENT = {
    "nodeSelector": {"yolo-operator.io/local-runner": "true"},
    "tolerations": [{"key": "yolo-operator.io/local-runner", "operator": "Exists", "effect": "NoSchedule"}],
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table_row(header: str, line: str) -> dict[str, str]:
    """One row of kubectl's table output, by column (columns may be blank, so split on header offsets)."""
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): line[a:b].strip() for a, b in zip(starts, bounds, strict=True)}



def stop_process_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process's group (it was started in a session of its own), SIGKILL after ``grace`` s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

@dataclass
class Stack:
    """Starts what the bed lacks for a whole-system run; `close()` stops what it started."""

    workdir: Path = field(default_factory=lambda: testbed.TESTBED / "e2e")
    processes: list[subprocess.Popen] = field(default_factory=list)
    health_port: int = 0

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

    # -- parts ------------------------------------------------------------------------------------------
    def install_chart(self) -> None:
        """`helm upgrade --install` of charts/yolo-operator; the Deployment is scaled to 0 because no image
        can run here: the operator runs as a local process with the chart's ServiceAccount instead."""
        self.run(
            "helm", "upgrade", "--install", RELEASE, str(testbed.ROOT / "charts" / "yolo-operator"),
            "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "2m",
            "--set", "replicaCount=0",
        )  # fmt: skip

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest token)."""
        token = self.kubectl("create", "token", OPERATOR_SA, "-n", OPERATOR_NAMESPACE, "--duration=4h").stdout
        admin = yaml.safe_load(testbed.KUBECONFIG.read_text())
        cluster = admin["clusters"][0]["cluster"]
        if "certificate-authority" in cluster:  # inline it: the path is relative to the admin kubeconfig
            ca = Path(cluster["certificate-authority"])
            ca = ca if ca.is_absolute() else testbed.KUBECONFIG.parent / ca
            import base64

            cluster = {
                "server": cluster["server"],
                "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
            }
        path = self.workdir / "operator.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "operator",
            "clusters": [{"name": "bed", "cluster": cluster}],
            "users": [{"name": OPERATOR_SA, "user": {"token": token.strip()}}],
            "contexts": [{"name": "operator", "context": {"cluster": "bed", "user": OPERATOR_SA}}],
        }))  # fmt: skip
        path.chmod(0o600)
        return path

    def start_operator(self, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        self.health_port = free_port()
        env = {
            **self.env,
            "KUBECONFIG": str(self.operator_kubeconfig()),
            "YOLO_OPERATOR_TRAINER_IMAGE": "localhost/yolo-operator-trainer:dev",
            "YOLO_OPERATOR_OFFLINE": "true",
            "YOLO_OPERATOR_BIND_ADDRESS": "127.0.0.1",  # not a pod: nothing listens beyond loopback
            "YOLO_OPERATOR_HEALTH_PORT": str(self.health_port),
            "YOLO_OPERATOR_METRICS_PORT": str(free_port()),
            **(extra_env or {}),
        }
        log = open(self.workdir / "operator.log", "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen([sys.executable, "-m", "yolo_operator"], env=env, cwd=testbed.ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=testbed.die_with_parent)  # fmt: skip
        log.close()
        self.processes.append(proc)
        self.wait(lambda: self._healthy(proc), 60, what="the operator's /healthz")
        return proc

    def _healthy(self, proc: subprocess.Popen) -> bool:
        import urllib.request

        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited {proc.returncode}; see {self.workdir / 'operator.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start_pod_runner(self, node: str = RUNNER_NODE, pool: str | None = None) -> subprocess.Popen:
        """A local pod runner playing node ``node`` (in runner pool ``pool``, see podrunner.pool_placement)."""
        name = "podrunner.log" if node == RUNNER_NODE else f"podrunner-{node}.log"
        log = open(self.workdir / name, "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "tests.podrunner", "--node", node, *(["--pool", pool] if pool else [])]
        proc = subprocess.Popen(cmd, cwd=testbed.ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True, preexec_fn=testbed.die_with_parent)  # fmt: skip
        log.close()
        self.processes.append(proc)
        self.kubectl("wait", "--for=condition=Ready", f"node/{node}", "--timeout=60s", check=False)
        self.wait(lambda: self.kubectl("get", "node", node, check=False).returncode == 0, 60, what="runner node")
        return proc

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
            "resources": {"gpus": 1, "cpu": "1", "memory": "2Gi"},
            "scheduling": RUNNER_PLACEMENT,
            **spec,
        }
        return {"apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
                "spec": body}  # fmt: skip

    wait = staticmethod(testbed.wait_until)

    def close(self) -> None:
        for proc in reversed(self.processes):
            stop_process_group(proc)
        self.processes.clear()
