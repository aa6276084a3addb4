"""A throwaway control plane for fault tests that must do what the shared bed cannot take (install a different
TrainingJob CRD, kill and restart the API server, ...): ``kwokctl create cluster --runtime binary`` with the
bed's cached binaries, on 127.0.0.1, its own work directory, deleted afterwards (by kwokctl, then by pid).

    with ThrowawayCluster(tmp_path) as cluster:   # etcd + kube-apiserver only, unless components= says more
        cluster.kubectl("get", "ns")
        cluster.stop_apiserver(); cluster.start_apiserver()   # a crash and a restart from kwokctl's command line
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from yolo_dev import testbed

from tests.operator_fixtures import free_port, wait_for

#: Components kwokctl can start besides etcd and kube-apiserver.
OPTIONAL_COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok-controller")


class ThrowawayCluster:
    def __init__(self, workdir: Path, components: tuple[str, ...] = (), name: str | None = None,
                 extra_config: list[dict[str, Any]] | None = None):  # fmt: skip
        self.name = name or f"fault-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir / self.name
        self.kubeconfig = self.workdir / "kubeconfig"
        self.components = components
        self.extra_config = extra_config or []  # more documents for kwokctl's config file (kwok Stages, ...)
        self.bin = testbed.bin_dir()
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "KWOK_WORKDIR": str(self.workdir / "kwok"),
            "KUBECONFIG": str(self.kubeconfig),
        }
        self.dir = self.workdir / "kwok" / "clusters" / self.name  # kwokctl's: pids/, logs/, kwok.yaml
        # kwokctl hands out ports counting down from 32767, so a cluster another test creates while this one's
        # API server is down would take its freed port: this one comes from the kernel's range above that,
        # and is held while the kube-apiserver is down.
        self.apiserver_port = free_port()
        self.hold: socket.socket | None = None
        self.started: list[subprocess.Popen] = []  # kube-apiservers started by start_apiserver

    def _kwokctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["kwokctl", "--name", self.name, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip

    def create(self) -> ThrowawayCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kube_version = testbed.versions()["KUBE_VERSION"]
        config: dict[str, Any] = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeApiserverPort": self.apiserver_port,
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
            # A kube-controller-manager that loses its leader lease (API server down) exits, and nothing here
            # restarts it (a real control plane's kubelet would): without leader election it rides it out.
            "componentsPatches": [
                {"name": "kube-controller-manager", "extraArgs": [{"key": "leader-elect", "value": "false"}]}
            ],
        }
        cfg = self.workdir / "kwokctl.yaml"
        cfg.write_text(yaml.safe_dump_all([config, *self.extra_config]))
        proc = self._kwokctl("-c", str(cfg), "create", "cluster", "--kubeconfig", str(self.kubeconfig),
                             "--wait", "3m")  # fmt: skip
        if proc.returncode != 0:
            self.delete()
            raise AssertionError(f"kwokctl create cluster {self.name} failed:\n{proc.stdout}\n{proc.stderr}")
        return self

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, namespace: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:  # fmt: skip
        """The same call shape as the ``kubectl`` fixture, against this cluster."""
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), *(["-n", namespace] if namespace else []), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def ready(self) -> bool:
        return self.kubectl("get", "--raw", "/readyz", "--request-timeout=3s", check=False, timeout=10).returncode == 0

    # --- the API server's crash and restart ----------------------------------------------------------------

    def _apiserver(self) -> dict[str, Any]:
        docs = yaml.safe_load_all((self.dir / "kwok.yaml").read_text())
        conf = next(d for d in docs if d and d.get("kind") == "KwokctlConfiguration")
        return next(c for c in conf["components"] if c["name"] == "kube-apiserver")

    def stop_apiserver(self) -> None:
        pid = int((self.dir / "pids" / "kube-apiserver.pid").read_text())
        os.kill(pid, signal.SIGKILL)  # a crash, not a graceful shutdown
        wait_for(lambda: not _alive(pid), 10, what="kube-apiserver to exit")
        # Bound but not listening: connections are refused as by a dead server, and a cluster created meanwhile
        # cannot take the port. The killed server's accepted connections take a moment to close (EADDRINUSE
        # until then); if they never do, go on without the hold, which only guards against that race.
        deadline = time.monotonic() + 15
        while True:
            hold = socket.socket()
            hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past its connections in TIME_WAIT
            try:
                hold.bind(("127.0.0.1", self.apiserver_port))
            except OSError as e:
                hold.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                if time.monotonic() > deadline:
                    print(f"port {self.apiserver_port} still in use 15 s after the kill: not held")
                    break
                time.sleep(0.2)
                continue
            self.hold = hold
            break

    def start_apiserver(self) -> None:
        """Starts the kube-apiserver again with the command line kwokctl recorded for it."""
        comp = self._apiserver()
        if self.hold:
            self.hold.close()
            self.hold = None
        env = {**os.environ, **{e["name"]: e["value"] for e in comp.get("envs") or ()}}
        with (self.dir / "logs" / "kube-apiserver.log").open("ab") as log:
            proc = subprocess.Popen([comp["binary"], *comp.get("args", [])], cwd=comp.get("workDir") or self.dir,
                                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        self.started.append(proc)
        (self.dir / "pids" / "kube-apiserver.pid").write_text(str(proc.pid))
        try:
            wait_for(lambda: proc.poll() is None and self.ready(), 120, interval=0.5, what="kube-apiserver")
        except AssertionError:
            log_tail = (self.dir / "logs" / "kube-apiserver.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the restarted kube-apiserver (pid {proc.pid}, exit code {proc.poll()}) is not "
                                 f"ready after 120 s; its log ends:\n{log_tail}") from None  # fmt: skip

    # --- teardown --------------------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        out = []
        for f in (self.dir / "pids").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                out.append(int(f.read_text().strip()))
        return out

    def delete(self) -> None:
        """kwokctl delete cluster, then SIGTERM/SIGKILL whatever it started and left behind (by pid: kwokctl
        does not know the kube-apiserver start_apiserver started). The components' logs are kept beside the
        work directory for a post-mortem (``delete cluster`` removes the cluster's directory)."""
        if self.hold:
            self.hold.close()
            self.hold = None
        pids = [pid for pid in self.pids() if self._ours(pid)]
        if (self.dir / "logs").is_dir():
            shutil.copytree(self.dir / "logs", self.workdir.parent / f"{self.name}-logs", dirs_exist_ok=True)
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._kwokctl("delete", "cluster", timeout=120)
        finally:
            for p in self.started:
                p.kill()
                p.wait(30)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for pid in pids:
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.2)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _ours(self, pid: int) -> bool:
        """The pid still runs one of this cluster's components (not a process that reused the number)."""
        try:
            return str(self.dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False

    def __enter__(self) -> ThrowawayCluster:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False
