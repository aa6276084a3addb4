"""The local pod runner: a stand-in for a kubelet and container runtime, for the local test bed only.

It registers a node (by default ``local-runner-0``, advertising ``nvidia.com/gpu``, tainted so that only
pods that tolerate it land there) and plays that node's kubelet: for each pod the real kube-scheduler
binds to it, it runs the pod's (single) container as a local process and reports the pod's status back
through the real API server (Running, then Succeeded or Failed with the exit code and termination message).

What it does like a kubelet: env (values, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``), volumes
mounted at their mountPaths inside a private mount namespace (``emptyDir`` as a directory, ``medium: Memory``
as a tmpfs of its ``sizeLimit``; ``configMap``; the projected service-account token from the TokenRequest
API, bound to the pod), a non-root UID with group 0 when ``runAsNonRoot`` is set without ``runAsUser`` (as
OpenShift's restricted-v2 would), SIGTERM then SIGKILL after the deletion's grace period when the pod is
deleted or evicted, ``KUBERNETES_SERVICE_HOST``/``PORT`` pointing at the API server.

For fault tests: ``--pool NAME`` labels and taints the node ``yolo-operator.io/runner-pool=NAME`` so that
only pods placed there on purpose (``pool_placement``) run on it; SIGUSR1 plays a lost node (power off):
every pod process is SIGKILLed and the runner exits without another word to the API server, leaving the
Node object and its pods for the control plane to deal with.

What it does not: images. The container's ``command`` (or, without one, ``--default-command``, the trainer
image's entrypoint) runs from this checkout's virtualenv. One container per pod, no init containers, no
probes, no restarts (``restartPolicy: Never`` pods only), no resource enforcement beyond the shm tmpfs.
The termination message is read from ``$YOLO_TERMINATION_LOG`` (a directory of the pod's mounted at
``/run/yolo-podrunner``) because ``/dev/termination-log`` cannot be created on this host.

    python -m tests.podrunner --kubeconfig .testbed/kubeconfig
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[1]
LABEL = "yolo-operator.io/local-runner"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
POOL_LABEL = "yolo-operator.io/runner-pool"
# The UID OpenShift's restricted-v2 would pick from a namespace's range; group 0 as OpenShift runs images.
ARBITRARY_UID = 1000680000
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TERMINATION_DIR = "/run/yolo-podrunner"
IMAGE_STAGING = "/run/yolo-podrunner-image"

log = logging.getLogger("podrunner")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(float(q))


def node_manifest(name: str, gpus: int, gpu_resource: str, pool: str | None = None) -> dict[str, Any]:
    """The runner's Node. With ``pool`` it also carries label and taint ``POOL_LABEL=<pool>``: only pods that
    select and tolerate that pool land there (fault tests that lose a node keep other tests' pods off it)."""
    capacity = {"cpu": str(os.cpu_count() or 2), "memory": "16Gi", "pods": "10", gpu_resource: str(gpus)}
    labels = {
        LABEL: "true",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "nvidia.com/gpu.present": "true",
    }
    taints = [TAINT]
    if pool:
        labels[POOL_LABEL] = pool
        taints.append({"key": POOL_LABEL, "value": pool, "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def pool_placement(pool: str) -> dict[str, Any]:
    """nodeSelector and tolerations for pods that must run on the runner nodes of ``pool`` only."""
    return {
        "nodeSelector": {LABEL: "true", POOL_LABEL: pool},
        "tolerations": [
            {"key": LABEL, "operator": "Exists", "effect": "NoSchedule"},
            {"key": POOL_LABEL, "operator": "Equal", "value": pool, "effect": "NoSchedule"},
        ],
    }


def ready_conditions(ready: bool) -> list[dict[str, Any]]:
    t = now()
    status = "True" if ready else "False"
    return [{"type": c, "status": status, "lastTransitionTime": t} for c in ("Ready", "ContainersReady")] + [
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
    ]


def shadows_a_source(mount: tuple[str, str, str | None], mounts: list[tuple[str, str, str | None]]) -> bool:
    """True when mounting at this target would hide another mount's source (a checkout under /tmp and an
    emptyDir at /tmp, say): such mounts go last."""
    target = mount[1].rstrip("/") + "/"
    return any(src.startswith(target) for src, _, size in mounts if size is None and (src, _, size) != mount)


class PodProcess:
    """One pod's container, run as a local process in its own mount namespace."""

    def __init__(self, runner: LocalPodRunner, pod: Any):
        self.runner = runner
        self.pod = pod
        self.uid = pod.metadata.uid
        self.dir = runner.workdir / "pods" / self.uid
        self.proc: subprocess.Popen | None = None
        self.killed_at: float | None = None

    # -- kubelet work ---------------------------------------------------------------------------------
    def prepare(self) -> tuple[list[str], dict[str, str], list[tuple[str, str, str | None]]]:
        spec = self.pod.spec
        container = spec.containers[0]
        (self.dir / "volumes").mkdir(parents=True, exist_ok=True)
        sources: dict[str, tuple[str, str | None]] = {}  # volume name -> (host dir, tmpfs size)
        for vol in spec.volumes or []:
            path = self.dir / "volumes" / vol.name
            path.mkdir(exist_ok=True)
            size = None
            if vol.empty_dir is not None and vol.empty_dir.medium == "Memory":
                size = str(quantity_bytes(vol.empty_dir.size_limit)) if vol.empty_dir.size_limit else "64m"
            elif vol.config_map is not None:
                self._write_config_map(vol.config_map, path)
            elif vol.projected is not None:
                self._write_token(path)
            os.chmod(path, 0o2775)  # group 0 may write, as with fsGroup-less emptyDirs under OpenShift
            sources[vol.name] = (str(path), size)
        mounts = [(*sources[m.name], m.mount_path) for m in container.volume_mounts or []]
        mounts = [(src, mp, size) for src, size, mp in mounts]
        termination = self.dir / "termination"
        termination.mkdir(exist_ok=True)
        (termination / "termination-log").touch()
        (termination / "termination-log").chmod(0o666)  # the kubelet, too, makes it writable for the container
        mounts.append((str(termination), TERMINATION_DIR, None))
        snapshot = list(mounts)  # CPython empties a list while sorting it: keys must not read it
        mounts.sort(key=lambda m: shadows_a_source(m, snapshot))
        env = self._env(container)
        command = (container.command or self.runner.default_command) + (container.args or [])
        return command, env, mounts

    def _write_config_map(self, ref: Any, path: Path) -> None:
        cm = self.runner.core.read_namespaced_config_map(ref.name, self.pod.metadata.namespace)
        items = ref.items or [client.V1KeyToPath(key=k, path=k) for k in (cm.data or {})]
        for item in items:
            (path / item.path).write_text((cm.data or {})[item.key])

    def _write_token(self, path: Path) -> None:
        pod = self.pod
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=3600,
                bound_object_ref=client.V1BoundObjectReference(
                    kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
                ),
            )
        )
        token = self.runner.core.create_namespaced_service_account_token(
            pod.spec.service_account_name or "default", pod.metadata.namespace, request
        )
        (path / "token").write_text(token.status.token)
        (path / "namespace").write_text(pod.metadata.namespace)
        shutil.copy(self.runner.ca_file, path / "ca.crt")
        for f in path.iterdir():
            f.chmod(0o644)

    def _env(self, container: Any) -> dict[str, str]:
        ns = self.pod.metadata.namespace
        env = {
            "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOSTNAME": self.pod.metadata.name,
            "KUBERNETES_SERVICE_HOST": self.runner.api_host,
            "KUBERNETES_SERVICE_PORT": self.runner.api_port,
            "YOLO_TERMINATION_LOG": f"{TERMINATION_DIR}/termination-log",
            **self.runner.extra_env,
        }
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from and var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                secret = self.runner.core.read_namespaced_secret(ref.name, ns)
                env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
            elif var.value_from and var.value_from.config_map_key_ref:
                ref = var.value_from.config_map_key_ref
                env[var.name] = self.runner.core.read_namespaced_config_map(ref.name, ns).data[ref.key]
            elif var.value_from and var.value_from.field_ref:
                field = var.value_from.field_ref.field_path
                env[var.name] = {
                    "metadata.name": self.pod.metadata.name,
                    "metadata.namespace": ns,
                    "spec.nodeName": self.runner.node,
                    "status.podIP": "127.0.0.1",
                }.get(field, "")
        return env

    def _uid(self) -> int | None:
        ctx = self.pod.spec.containers[0].security_context
        pod_ctx = self.pod.spec.security_context
        run_as = (ctx and ctx.run_as_user) or (pod_ctx and pod_ctx.run_as_user)
        if run_as is not None:
            return run_as
        non_root = (ctx and ctx.run_as_non_root) or (pod_ctx and pod_ctx.run_as_non_root)
        return ARBITRARY_UID if non_root and os.geteuid() == 0 else None

    def start(self) -> None:
        command, env, mounts = self.prepare()
        # In a private mount namespace: tmpfs or bind mounts at each mountPath, then drop to the pod's UID.
        script = ["set -e"]
        # The checkout's virtualenv is the "image": if a volume (an emptyDir at /tmp, say) would hide it, keep
        # it reachable through a staging mount and put it back in place after the volumes.
        image = shlex.quote(str(ROOT))
        hidden = any(str(ROOT).startswith(mp.rstrip("/") + "/") for _, mp, _ in mounts)
        if hidden:
            script += [f"mkdir -p {IMAGE_STAGING}", f"mount --bind {image} {IMAGE_STAGING}"]
        for src, mount_path, size in mounts:
            script.append(f"mkdir -p {shlex.quote(mount_path)}")
            if size:
                script.append(f"mount -t tmpfs -o size={size},mode=1777 tmpfs {shlex.quote(mount_path)}")
            else:
                script.append(f"mount --bind {shlex.quote(src)} {shlex.quote(mount_path)}")
        if hidden:
            script += [f"mkdir -p {image}", f"mount --bind {IMAGE_STAGING} {image}"]
        uid = self._uid()
        drop = ["setpriv", f"--reuid={uid}", "--regid=0", "--clear-groups"] if uid is not None else []
        script.append('exec "$@"')
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "\n".join(script),
            "pod",
            *drop,
            *command,
        ]
        logf = open(self.dir / "container.log", "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            argv, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True
        )
        logf.close()
        (self.dir / "pid").write_text(str(self.proc.pid))  # its process group, for cleanup after a crash
        log.info(
            "started pod %s/%s pid %d: %s",
            self.pod.metadata.namespace,
            self.pod.metadata.name,
            self.proc.pid,
            shlex.join(command),
        )
        self.started_at = now()
        self.runner.patch_pod_status(
            self.pod,
            {
                "phase": "Running",
                "startTime": self.started_at,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": ready_conditions(True),
                "containerStatuses": [
                    self._container_status({"running": {"startedAt": self.started_at}}, ready=True)
                ],
            },
        )

    def _container_status(self, state: dict[str, Any], ready: bool) -> dict[str, Any]:
        c = self.pod.spec.containers[0]
        return {
            "name": c.name,
            "image": c.image,
            "imageID": f"local://{c.image}",
            "ready": ready,
            "started": ready,
            "restartCount": 0,
            "state": state,
            "containerID": f"local://{self.proc.pid}",
        }

    def stop(self, grace: int) -> None:
        """SIGTERM now, SIGKILL after the grace period (from the reaper thread). A second deletion with a
        shorter grace period moves the SIGKILL earlier, as the kubelet does."""
        if not self.proc or self.proc.poll() is not None:
            return
        deadline = time.monotonic() + grace
        if self.killed_at is None:
            log.info("terminating pod %s (grace %ss)", self.pod.metadata.name, grace)
            self.killed_at = deadline
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        elif deadline < self.killed_at:
            log.info("grace period of pod %s shortened to %ss", self.pod.metadata.name, grace)
            self.killed_at = deadline

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self) -> None:
        assert self.proc is not None
        while self.proc.poll() is None:
            if self.killed_at is not None and time.monotonic() > self.killed_at:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        code = self.proc.returncode
        code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, as a runtime reports it
        message = self._termination_message(code)
        state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": self.started_at,
                "finishedAt": now(),
                "containerID": f"local://{self.proc.pid}",
            }
        }
        if message:
            state["terminated"]["message"] = message
        log.info("pod %s exited %d: %s", self.pod.metadata.name, code, message)
        self.runner.patch_pod_status(
            self.pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": ready_conditions(False),
                "containerStatuses": [self._container_status(state, ready=False)],
            },
        )

    def _termination_message(self, code: int) -> str:
        path = self.dir / "termination" / "termination-log"
        message = path.read_text(errors="replace").strip() if path.exists() else ""
        if not message and code != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            lines = (self.dir / "container.log").read_text(errors="replace").splitlines()
            message = "\n".join(lines[-20:])
        return message[-4096:]


class LocalPodRunner:
    def __init__(
        self,
        kubeconfig: str,
        node: str = "local-runner-0",
        gpus: int = 1,
        gpu_resource: str = "nvidia.com/gpu",
        workdir: str | None = None,
        default_command: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        pool: str | None = None,
    ):
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.node, self.gpus, self.gpu_resource, self.pool = node, gpus, gpu_resource, pool
        self.workdir = Path(workdir or ROOT / ".testbed" / "podrunner" / node)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.default_command = default_command or ["yolo-trainer"]
        self.extra_env = extra_env or {}
        host = self.api.configuration.host.removeprefix("https://").removeprefix("http://")
        self.api_host, self.api_port = host.rsplit(":", 1)
        self.ca_file = self.api.configuration.ssl_ca_cert
        self.pods: dict[str, PodProcess] = {}
        self.stopping = threading.Event()
        self.lost = False  # the node lost power: no more writes to the API server

    def patch_pod_status(self, pod: Any, status: dict[str, Any]) -> None:
        if self.lost:
            return
        try:
            self.core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": status}
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def register_node(self) -> None:
        body = node_manifest(self.node, self.gpus, self.gpu_resource, self.pool)
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(self.node, {"metadata": body["metadata"], "spec": body["spec"]})
        self.heartbeat()

    def heartbeat(self) -> None:
        if self.lost:
            return
        t = now()
        body = node_manifest(self.node, self.gpus, self.gpu_resource, self.pool)["status"]
        body["conditions"] = [
            {
                "type": "Ready",
                "status": "True",
                "reason": "LocalPodRunnerReady",
                "message": "the local pod runner plays this node's kubelet",
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }
        ]
        body["addresses"] = [{"type": "InternalIP", "address": "127.0.0.1"}]
        body["nodeInfo"] = {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "local-runner",
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "local://",
            "osImage": "",
            "kernelVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        }
        self.core.patch_node_status(self.node, {"status": body})

    def _heartbeats(self) -> None:
        while not self.stopping.wait(20):
            try:
                self.heartbeat()
            except Exception:  # a missed beat is retried; the node stays Ready for minutes
                log.exception("node heartbeat failed")

    def handle(self, pod: Any) -> None:
        uid = pod.metadata.uid
        running = self.pods.get(uid)
        if self.lost:
            return
        if pod.metadata.deletion_timestamp is not None:
            if running:  # the deletion's grace period (eviction, kubectl delete --grace-period), as kubelets use
                grace = pod.metadata.deletion_grace_period_seconds
                running.stop(grace if grace is not None else pod.spec.termination_grace_period_seconds or 30)
            else:  # never started or already finished: let the deletion complete, as a kubelet would
                self._finalize_delete(pod)
            return
        if running or pod.status.phase in ("Succeeded", "Failed"):
            return
        proc = PodProcess(self, pod)
        self.pods[uid] = proc
        threading.Thread(
            target=self._run_pod, args=(proc,), daemon=True, name=f"pod-{pod.metadata.name}"
        ).start()

    def _run_pod(self, proc: PodProcess) -> None:
        try:
            proc.start()
            proc.wait()
        except Exception as e:
            log.exception("pod %s failed to run", proc.pod.metadata.name)
            self.patch_pod_status(
                proc.pod, {"phase": "Failed", "reason": "LocalPodRunnerError", "message": str(e)}
            )
        if proc.killed_at is not None:
            self._finalize_delete(proc.pod)

    def _finalize_delete(self, pod: Any) -> None:
        if self.lost:
            return
        try:
            self.core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.metadata.uid)
                ),
            )
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("could not finish deleting pod %s: %s", pod.metadata.name, e.reason)

    def lock(self) -> None:
        """One runner per node: two would each start every pod (and the pid file lets testbed down stop us)."""
        import fcntl

        self._lock = open(self.workdir / "runner.lock", "w")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another local pod runner already plays node {self.node}") from None
        pids = ROOT / ".testbed" / "pids"
        pids.mkdir(parents=True, exist_ok=True)
        (pids / f"podrunner-{self.node}.pid").write_text(str(os.getpid()))

    def run(self) -> None:
        self.lock()
        self.register_node()
        threading.Thread(target=self._heartbeats, daemon=True).start()
        log.info("local pod runner playing the kubelet of node %s", self.node)
        while not self.stopping.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={self.node}",
                    timeout_seconds=60,
                ):
                    self.handle(event["object"])
                    if self.stopping.is_set():
                        break
            except Exception:  # API server restarts: watch again
                log.exception("pod watch broke; watching again")
                time.sleep(1)

    def shutdown(self, grace: float = 5) -> None:
        self.stopping.set()
        procs = list(self.pods.values())
        for proc in procs:
            proc.stop(int(grace))
        deadline = time.monotonic() + grace
        while any(p.proc and p.proc.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in procs:  # our pods must not outlive us
            proc.kill()
        with contextlib.suppress(Exception):
            self.core.delete_node(self.node)

    def power_off(self) -> None:
        """The node dies (power loss, kernel panic): every pod's processes die at once, and nothing is reported
        any more - no pod status, no heartbeat, no node deletion. The control plane has to notice by itself."""
        self.lost = True
        self.stopping.set()
        alive = [p for p in self.pods.values() if p.proc and p.proc.poll() is None]
        for proc in alive:
            proc.kill()
        log.warning("node %s lost power: killed %d pod(s), reporting nothing more", self.node, len(alive))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", default=str(ROOT / ".testbed" / "kubeconfig"))
    p.add_argument("--node", default="local-runner-0")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--default-command", default="yolo-trainer", help="run when a container has no command")
    p.add_argument("--pool", help=f"also label and taint the node {POOL_LABEL}=POOL (see pool_placement)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s podrunner %(levelname)s %(message)s")
    runner = LocalPodRunner(
        args.kubeconfig,
        node=args.node,
        gpus=args.gpus,
        default_command=shlex.split(args.default_command),
        pool=args.pool,
    )
    signal.signal(signal.SIGTERM, lambda *_: (runner.shutdown(), sys.exit(0)))
    # SIGUSR1: the node is lost (fault tests); exit at once, leaving the Node object as a dead node leaves it.
    signal.signal(signal.SIGUSR1, lambda *_: (runner.power_off(), os._exit(0)))
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.shutdown()


if __name__ == "__main__":
    main()
