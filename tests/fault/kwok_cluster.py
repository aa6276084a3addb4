"""A throwaway control plane for fault tests that must do what the shared bed cannot take (install a different
TrainingJob CRD, stop the API server, ...): ``kwokctl create cluster --runtime binary`` with the bed's cached
binaries, on 127.0.0.1, its own work directory, deleted afterwards (by kwokctl, then by pid).

    with ThrowawayCluster(tmp_path) as cluster:   # etcd + kube-apiserver only, unless components= says more
        cluster.kubectl("get", "ns")
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from tests import testbed

#: Components kwokctl can start besides etcd and kube-apiserver.
OPTIONAL_COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok-controller")


class ThrowawayCluster:
    def __init__(self, workdir: Path, components: tuple[str, ...] = (), name: str | None = None):
        self.name = name or f"fault-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir / self.name
        self.kubeconfig = self.workdir / "kubeconfig"
        self.components = components
        self.bin = testbed.bin_dir()
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "KWOK_WORKDIR": str(self.workdir / "kwok"),
            "KUBECONFIG": str(self.kubeconfig),
        }

    def _kwokctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["kwokctl", "--name", self.name, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    def create(self) -> ThrowawayCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kube_version = testbed.read_env_file(testbed.ROOT / "hack" / "versions.env")["KUBE_VERSION"]
        config = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeVersion": kube_version,
                "kubeApiserverBinary": str(self.bin / "kube-apiserver"),
                "kubeControllerManagerBinary": str(self.bin / "kube-controller-manager"),
                "kubeSchedulerBinary": str(self.bin / "kube-scheduler"),
                "kubectlBinary": str(self.bin / "kubectl"),
                "etcdBinary": str(self.bin / "etcd"),
                "kwokControllerBinary": str(self.bin / "kwok"),
                "quietPull": True,
                "disable": [c for c in OPTIONAL_COMPONENTS if c not in self.components],
            },
        }
        cfg = self.workdir / "kwokctl.yaml"
        cfg.write_text(yaml.safe_dump(config))
        proc = self._kwokctl("-c", str(cfg), "create", "cluster", "--kubeconfig", str(self.kubeconfig),
                             "--wait", "3m")  # fmt: skip
        if proc.returncode != 0:
            self.delete()
            raise AssertionError(f"kwokctl create cluster {self.name} failed:\n{proc.stdout}\n{proc.stderr}")
        return self

    def pids(self) -> list[int]:
        out = []
        for f in (self.workdir / "kwok" / "clusters" / self.name / "pids").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                out.append(int(f.read_text().strip()))
        return out

    def delete(self) -> None:
        """kwokctl delete cluster, then SIGTERM/SIGKILL whatever it started and left behind (by pid)."""
        pids = self.pids()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._kwokctl("delete", "cluster", timeout=120)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, namespace: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:  # fmt: skip
        """The same call shape as the ``kubectl`` fixture, against this cluster."""
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), *(["-n", namespace] if namespace else []), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def __enter__(self) -> ThrowawayCluster:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
