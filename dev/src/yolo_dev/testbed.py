"""Access to the local test bed (hack/testbed.sh): its kubeconfig, S3 settings and binaries."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[3]  # dev/src/yolo_dev/testbed.py
TESTBED = ROOT / ".testbed"
KUBECONFIG = TESTBED / "kubeconfig"
S3_ENV = TESTBED / "s3.env"


@dataclass(frozen=True)
class S3Env:
    endpoint: str
    region: str
    access_key: str
    secret_key: str

    def as_environ(self) -> dict[str, str]:
        """The variables a process (trainer, boto3, s5cmd) reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def bring_up() -> None:
    """Starts the bed, or reuses a healthy running one (hack/testbed.sh holds a lock).

    ``YOLO_TESTBED_ROOT=/path/to/clone``: use the bed that clone runs (a git worktree of this repository
    sharing it) instead of starting this checkout's own: the bed's network namespaces are machine-wide."""
    other = os.environ.get("YOLO_TESTBED_ROOT")
    if other and Path(other).resolve() != ROOT:
        subprocess.run([str(Path(other) / "hack" / "testbed.sh"), "up"], check=True, cwd=other)
        return
    subprocess.run([str(ROOT / "hack" / "testbed.sh"), "up"], check=True, cwd=ROOT)


def node_setting(name: str) -> str:
    """A constant of the real node (hack/node.sh's top-level ``NAME=value``), e.g. NODE_NAME, HOST_IP."""
    import re

    text = (ROOT / "hack" / "node.sh").read_text()
    m = re.search(rf"^{name}=(?:\$\{{[A-Z_]+:-)?([^\s}}]+)", text, re.MULTILINE)
    if not m:
        raise KeyError(f"hack/node.sh sets no {name}")
    return m.group(1)


def cluster_dns() -> tuple[str, str]:
    """The cluster DNS that pods on the real node use: (nameserver address, cluster domain). CoreDNS runs on the
    node link's host address (hack/testbed.sh), which the kubelet's clusterDNS names."""
    return node_setting("HOST_IP"), node_setting("CLUSTER_DOMAIN")


def node_command(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """hack/node.sh SUBCOMMAND (poweroff, start, leftovers) on the bed's real node."""
    return subprocess.run([str(ROOT / "hack" / "node.sh"), *args], check=check, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def bin_dir() -> Path:
    """The bed's binaries: this checkout's bed's, else the YOLO_TESTBED_ROOT clone's bed's, else the cache
    hack/build-binaries.sh fills (which builds nothing when it is already there)."""
    other = os.environ.get("YOLO_TESTBED_ROOT")
    for bed in (TESTBED, *([Path(other) / ".testbed"] if other else [])):
        if (bed / "bin").is_file():
            return Path((bed / "bin").read_text().strip())
    out = subprocess.run([str(ROOT / "hack" / "build-binaries.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def versions() -> dict[str, str]:
    """The bed's pinned versions (hack/versions.env)."""
    return read_env_file(ROOT / "hack" / "versions.env")


def go_module_dir(module: str, version: str) -> Path:
    """A Go module's source in Go's module cache (``go mod download``: fetched once, then read from the cache),
    for what a pinned module ships beside its code (CRDs, kwok's stages)."""
    import json

    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    proc = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True,
                          env=env, timeout=600, cwd="/")  # fmt: skip
    info = json.loads(proc.stdout or "{}")
    if proc.returncode or "Dir" not in info:
        raise AssertionError(f"go mod download {module}@{version} failed: {info.get('Error') or proc.stderr}")
    return Path(info["Dir"])


def s3_env() -> S3Env:
    env = read_env_file(S3_ENV)
    return S3Env(
        env["S3_ENDPOINT"], env["AWS_REGION"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    )


def tool_path() -> str:
    """PATH with the bed's binaries (kubectl, helm, kwokctl) first."""
    return f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn: Callable[[], T], timeout: float = 30, interval: float = 0.3, what: str = "condition") -> T:
    """Polls fn until it returns something truthy; fails with the last value (or exception) on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def wait_until(predicate: Callable[[], T], timeout: float = 60, interval: float = 0.5, what: str = "condition") -> T:
    """Polls predicate until it returns something truthy, which is returned; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def readyz(proc: subprocess.Popen, url: str, what: str, log: Callable[[], str]) -> bool:
    """Whether a manager the tests run (Kueue, OLM's) answers 200 on its health ``url``; fails at once, with the
    end of ``log()``, when its process has exited."""
    import urllib.request

    if proc.poll() is not None:
        raise AssertionError(f"{what} exited ({proc.returncode}):\n{log()[-4000:]}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop_session(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process's session (started with start_new_session), SIGKILL after ``grace`` seconds."""
    import contextlib
    import signal

    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def die_with_parent() -> None:
    """preexec_fn for helper processes (operator, pod runner): SIGTERM them when the test process dies."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
