"""Disruptions of a training pod, end to end on the bed's real node: evictions, a lost node and a
preemption-style SIGTERM with a short grace period. Each time the Job's replacement pod must resume from the
last checkpoint in S3, the disruption must not count as a failure, and the TrainingJob must end Succeeded with
every epoch done.

Who plays what:
- the real kube-apiserver (Eviction API, pod deletion), kube-scheduler (places replacements), Job controller
  (podFailurePolicy, replacement pods) and pod garbage collector (PodGC: a deleted node's pods are marked
  Failed with the DisruptionTarget condition and removed), from the shared test bed;
- the real node (hack/node.sh): its kubelet sends SIGTERM, waits the deletion's grace period and SIGKILLs,
  and runs the trainer image under containerd; the operator runs in-cluster on the same node;
- a lost node: `hack/node.sh poweroff` (kubelet, containerd, kube-proxy and every container SIGKILLed, nothing
  more reported), then the test deletes the Node object, as the cloud node controller does once the machine is
  gone, and the machine comes back (`hack/node.sh start`: a fresh kubelet registers a new Node). The operator,
  which ran there too, is rescheduled with everything else.

The TrainingJobs run with backoffLimit 0: a single disruption counted as a failure would fail the Job.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from yolo_dev import kueue, testbed
from yolo_dev.stack import REAL_NODE, Stack

pytestmark = [pytest.mark.fault, pytest.mark.e2e]

GROUP, VERSION, PLURAL = "yolo-operator.io", "v1alpha1", "trainingjobs"
LABEL_TRAINING_JOB = "yolo-operator.io/training-job"
PREEMPTION_GRACE_SECONDS = 3


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(bed, real_node):
    return Stack()


@pytest.fixture
def k8s(kubeconfig):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield client.CoreV1Api(api), client.CustomObjectsApi(api), client.BatchV1Api(api)
    api.close()


@dataclass
class RealNode:
    """The bed's one real node, which a test may power off and bring back."""

    stack: Stack
    name: str = REAL_NODE

    def lose(self) -> None:
        """The node dies: everything on it SIGKILLed, nothing reported; then the Node object is deleted."""
        testbed.node_command("poweroff")
        self.stack.kubectl("delete", "node", self.name, "--wait=false")

    def come_back(self) -> None:
        """The machine boots again: a fresh kubelet registers the node (a new Node object)."""
        testbed.node_command("start")

    def ensure_ready(self) -> None:
        ready = self.stack.kubectl("get", "node", self.name, "-o",
                                   "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)  # fmt: skip
        if ready.stdout != "True":
            self.come_back()


@pytest.fixture
def node(stack):
    n = RealNode(stack)
    n.ensure_ready()
    yield n
    n.ensure_ready()  # a test that failed between poweroff and start leaves the bed's node usable


@pytest.fixture
def operator(stack, namespace):
    stack.install_chart([namespace])


KUEUE_QUEUE = "team-queue"


@pytest.fixture
def kueue_on_bed(stack, namespace, tmp_path) -> Iterator[kueue.KueueProcess]:
    """Kueue's manager against the shared bed, with a ClusterQueue of ONE GPU (the real node has 4) so that a
    second TrainingJob must preempt the first; its webhooks and cluster-scoped objects removed afterwards.
    Requested before ``scenario``, so the operator starts with Kueue's CRDs present."""

    def kubectl(*args: str, timeout: float | None = None, **kw: Any):
        return stack.kubectl(*args, **kw)

    objects = kueue.kueue_objects(namespace, KUEUE_QUEUE, gpus=1)
    with kueue.KueueProcess(testbed.KUBECONFIG, tmp_path, kubectl) as kq:
        stack.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        active = "jsonpath={.status.conditions[?(@.type=='Active')].status}"
        stack.wait(lambda: stack.kubectl("get", "clusterqueue", "gpus", "-o", active, check=False).stdout == "True",
                   60, what="ClusterQueue gpus Active")  # fmt: skip
        try:
            yield kq
        finally:
            print(stack.kubectl("get", "tj,workloads", "-n", namespace, "-o", "wide", check=False).stdout)
            print("--- kueue log (tail) ---\n" + kq.logs()[-3000:])
            for o in reversed(objects):
                stack.kubectl("delete", o["kind"], o["metadata"]["name"], "-n", namespace, "--ignore-not-found",
                              "--wait=false", check=False)  # fmt: skip


# --- observers -----------------------------------------------------------------------------------------------


class PodWatch:
    """The last state of every pod of a TrainingJob, from a watch (so a pod that fails and is deleted within
    milliseconds is still seen Failed, with its exit code and conditions)."""

    def __init__(self, core, namespace: str, tj_name: str):
        self.core, self.namespace = core, namespace
        self.selector = f"{LABEL_TRAINING_JOB}={tj_name}"
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> last object seen
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.rv = core.list_namespaced_pod(namespace, label_selector=self.selector).metadata.resource_version
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            try:
                # Bookmarks keep our resourceVersion recent while our pods are quiet (a lost node's pod is, for
                # a minute): others' pod churn would otherwise age it out of the watch cache (410 Gone).
                for ev in watch.Watch().stream(
                    self.core.list_namespaced_pod, self.namespace, label_selector=self.selector,
                    resource_version=self.rv, allow_watch_bookmarks=True, timeout_seconds=20,
                ):  # fmt: skip
                    obj = ev["raw_object"]
                    self.rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        self._record(obj)
                    if self.stop.is_set():
                        return
            except Exception:  # 410 Gone all the same, or the API server hiccuped: carry on from a fresh list
                time.sleep(0.5)
                with contextlib.suppress(Exception):
                    self._relist()

    def _relist(self) -> None:
        resp = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector, _preload_content=False)
        listed = json.loads(resp.data)
        for obj in listed["items"]:
            self._record(obj)
        self.rv = listed["metadata"]["resourceVersion"]

    def _record(self, obj: dict[str, Any]) -> None:
        with self.lock:
            self.pods[obj["metadata"]["uid"]] = obj

    def get(self, uid: str) -> dict[str, Any]:
        with self.lock:
            return self.pods[uid]

    def running(self, exclude: set[str]) -> dict[str, Any] | None:
        with self.lock:
            pods = [
                p for uid, p in self.pods.items()
                if uid not in exclude and p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
            ]  # fmt: skip
        return max(pods, key=lambda p: p["metadata"]["creationTimestamp"]) if pods else None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


class StatusLog:
    """Polls the TrainingJob's status; keeps every distinct (phase, epoch, lastCheckpoint, restartCount)."""

    def __init__(self, custom, namespace: str, name: str):
        self.custom, self.namespace, self.name = custom, namespace, name
        self.seen: list[tuple[Any, ...]] = []
        self.status: dict[str, Any] = {}
        self.suspended: list[tuple[str, str, str]] = []  # distinct (phase, reason, message) while Suspended

    def poll(self) -> dict[str, Any]:
        tj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        self.status = tj.get("status") or {}
        s = self.status
        row = (
            s.get("phase"),
            (s.get("progress") or {}).get("epoch"),
            (s.get("lastCheckpoint") or {}).get("epoch"),
            s.get("restartCount"),
        )
        if not self.seen or self.seen[-1] != row:
            self.seen.append(row)
        cond = next((c for c in s.get("conditions") or () if c.get("type") == "Suspended"), None)
        if cond and cond.get("status") == "True":
            entry = (s.get("phase"), cond.get("reason"), cond.get("message"))
            if entry not in self.suspended:
                self.suspended.append(entry)
        return s

    @property
    def phases(self) -> list[str]:
        out: list[str] = []
        for phase, *_ in self.seen:
            if phase and (not out or out[-1] != phase):
                out.append(phase)
        return out

    @property
    def checkpoint_epochs(self) -> set[int]:
        return {c for _, _, c, _ in self.seen if c is not None}


class LogFollower:
    """`kubectl logs -f --timestamps` of every pod of the TrainingJob from when it runs: a pod that is evicted or
    lost is deleted (and its log with it) right after it stops, so its log is kept as it streamed."""

    def __init__(self, stack: Stack, namespace: str):
        self.stack, self.namespace = stack, namespace
        self.lines: dict[str, list[tuple[datetime, str]]] = {}  # pod uid -> (timestamp, line)
        self.readers: dict[str, threading.Thread] = {}
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def follow(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid in self.lines:
                return
            self.lines[uid] = []
        cmd = ["kubectl", "logs", "-f", "--timestamps", "-n", self.namespace, pod["metadata"]["name"]]
        proc = subprocess.Popen(cmd, env=self.stack.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)  # fmt: skip
        self.procs.append(proc)
        self.readers[uid] = threading.Thread(target=self._read, args=(uid, proc), daemon=True)
        self.readers[uid].start()

    def wait_ended(self, pod: dict[str, Any], timeout: float = 60) -> None:
        """Until the pod's log stream has ended (the container stopped and kubectl drained it), so that its
        last lines are in; a stream the node's loss cut off ends when its connection does."""
        reader = self.readers.get(pod["metadata"]["uid"])
        if reader is not None:
            reader.join(timeout)

    def _read(self, uid: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamp, _, text = line.rstrip("\n").partition(" ")
            m = re.fullmatch(r"([\d-]+T[\d:]+)(?:\.(\d+))?Z", stamp)  # RFC 3339 with up to 9 digits
            if m:
                at = datetime.fromisoformat(f"{m.group(1)}.{(m.group(2) or '0')[:6]:0<6}+00:00")
                with self.lock:
                    self.lines[uid].append((at, text))

    def events(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """The trainer's JSON event lines (start, resume, epoch, interrupted, done), each with its log time."""
        with self.lock:
            lines = list(self.lines.get(pod["metadata"]["uid"], ()))
        out = []
        for at, text in lines:
            if text.startswith('{"event"'):
                with contextlib.suppress(ValueError):
                    out.append({**json.loads(text), "_at": at})
        return out

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


def epochs_logged(events: list[dict[str, Any]]) -> list[int]:
    return [e["epoch"] for e in events if e["event"] == "epoch"]


def resumed_from(events: list[dict[str, Any]]) -> int | None:
    return next((e["fromEpoch"] for e in events if e["event"] == "resume"), None)


def disruption_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in pod["status"].get("conditions") or () if c["type"] == "DisruptionTarget"), None)


def exit_code(pod: dict[str, Any]) -> int | None:
    for cs in pod["status"].get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return term["exitCode"]
    return None


# --- the scenario --------------------------------------------------------------------------------------------


@dataclass
class Disruption:
    kind: str  # evict | lose-node | preempt
    pod: dict[str, Any]  # the disrupted pod, as last seen before the disruption
    disrupted_at: datetime | None = None  # when the test asked for the disruption (this machine's clock)
    epochs_before: int = 0  # epochs the disrupted pod had completed (its own log), at the end
    final: dict[str, Any] | None = None  # the disrupted pod's last state (watch)
    interrupted: dict[str, Any] | None = None  # its trainer's 'interrupted' event, if it had the chance
    checkpoint: tuple[int, int] | None = None  # (state.json's epoch, the epoch inside the last.pt it names)
    replacement: dict[str, Any] | None = None
    resumed_from: int | None = None

    @property
    def epochs_redone(self) -> int:
        return max(0, self.epochs_before - (self.resumed_from or 0))


class Scenario:
    def __init__(self, stack: Stack, k8s, node: RealNode, namespace: str, s3_client, epochs: int):
        self.stack, self.node, self.namespace, self.s3 = stack, node, namespace, s3_client
        self.core, self.custom, self.batch = k8s
        self.epochs = epochs
        self.name = f"disrupt-{uuid.uuid4().hex[:6]}"
        self.bucket = f"fault-{uuid.uuid4().hex[:8]}"
        self.disruptions: list[Disruption] = []
        self.done: set[str] = set()  # uids of disrupted pods

    def start(self, **spec: Any) -> None:
        self.dataset = self.stack.upload_dataset(self.bucket, "datasets/shapes", images=16)
        self.stack.s3_secret(self.namespace)
        body = self.training_job(self.name, self.epochs, **spec)
        self.watch = PodWatch(self.core, self.namespace, self.name)
        self.logs = LogFollower(self.stack, self.namespace)
        self.status = StatusLog(self.custom, self.namespace, self.name)
        self.stack.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(body))

    def training_job(self, name: str, epochs: int, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
        body = self.stack.training_job(name, self.dataset, f"s3://{self.bucket}/runs/", epochs=epochs, **spec)
        body["spec"]["backoffLimit"] = 0  # a disruption counted as a failure would fail the Job at once
        if labels:
            body["metadata"]["labels"] = labels
        return body

    def close(self) -> None:
        self.watch.close()
        self.logs.close()

    @property
    def job_prefix(self) -> str:
        """The TrainingJob's run-scoped prefix: its outputs and checkpoints live under its metadata.uid."""
        tj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        return f"runs/{self.namespace}/{self.name}/{tj['metadata']['uid']}"

    def _check_not_finished(self) -> None:
        phase = self.status.poll().get("phase")
        assert phase not in ("Failed", "Succeeded"), f"{self.name} is {phase} mid-scenario: {self.status.status}"

    def wait_training(self, min_own_epochs: int = 2, timeout: float = 480) -> dict[str, Any]:
        """The current pod, once status shows it completed ``min_own_epochs`` epochs beyond where it started."""

        def ready():
            self._check_not_finished()
            pod = self.watch.running(self.done)
            if pod is None:
                return None
            self.logs.follow(pod)
            events = self.logs.events(pod)
            start = resumed_from(events) or 0
            epoch = (self.status.status.get("progress") or {}).get("epoch") or 0
            return pod if len(epochs_logged(events)) >= min_own_epochs and epoch >= start + min_own_epochs else None

        return self.stack.wait(ready, timeout, interval=0.5, what=f"{self.name} to train on a fresh pod")

    def disrupt(self, kind: str, action: Callable[[], None] | None = None) -> Disruption:
        """``kind`` evict, preempt or lose-node; or any other name with ``action`` doing the disruption."""
        pod = self.wait_training()
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        d = Disruption(kind, pod, disrupted_at=datetime.now().astimezone())
        if kind == "evict":  # what `kubectl drain` does
            from kubernetes import client

            body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=self.namespace))
            self.core.create_namespaced_pod_eviction(name, self.namespace, body)
        elif kind == "preempt":  # a plain DELETE with a short grace period: no DisruptionTarget condition
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=PREEMPTION_GRACE_SECONDS)
        elif kind == "lose-node":
            self.node.lose()
        elif action is not None:
            action()
        else:
            raise ValueError(kind)
        self.done.add(uid)
        self.disruptions.append(d)

        # The disrupted pod ends Failed (its kubelet, or PodGC for a lost node, reports it), and is replaced.
        d.final = self.stack.wait(
            lambda: (p := self.watch.get(uid))["status"].get("phase") == "Failed" and p,
            240, interval=0.5, what=f"{kind}: pod {name} to end Failed",
        )  # fmt: skip
        if kind == "lose-node":
            self.node.come_back()
        self.logs.wait_ended(pod)
        events = self.logs.events(pod)
        d.epochs_before = max(epochs_logged(events), default=0)
        d.interrupted = next((e for e in events if e["event"] == "interrupted"), None)
        d.checkpoint = self.load_checkpoint()  # before the replacement can have moved it on

        def resumed():
            self._check_not_finished()
            new = self.watch.running(self.done)
            if new is None:
                return None
            self.logs.follow(new)
            ev = self.logs.events(new)
            return (new, ev) if any(e["event"] in ("resume", "epoch") for e in ev) else None

        d.replacement, new_events = self.stack.wait(resumed, 420, interval=0.5, what=f"{kind}: a replacement pod")
        d.resumed_from = resumed_from(new_events)
        return d

    def load_checkpoint(self) -> tuple[int, int]:
        """The committed checkpoint in S3: state.json's epoch and the epoch stored in the last.pt it names,
        which must load (torch.load, as Ultralytics' resume does)."""
        import tempfile

        import torch

        key = f"{self.job_prefix}/checkpoints/state.json"
        state = json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        bucket, ckpt_key = state["uri"].removeprefix("s3://").split("/", 1)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "last.pt"
            self.s3.download_file(bucket, ckpt_key, str(path))
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        assert ckpt.get("ema") is not None and ckpt.get("optimizer") is not None, sorted(ckpt)  # resumable
        return state["epoch"], ckpt["epoch"] + 1

    def wait_finished(self, timeout: float = 300) -> dict[str, Any]:
        return self.stack.wait(
            lambda: self.status.poll().get("phase") in ("Succeeded", "Failed") and self.status.status,
            timeout, interval=1, what=f"{self.name} to finish",
        )  # fmt: skip

    # --- checks ----------------------------------------------------------------------------------------------

    def check_replacement(self, d: Disruption) -> None:
        new = d.replacement
        assert new is not None
        where = f"{d.kind} of {d.pod['metadata']['name']}"
        assert d.resumed_from is not None, f"{where}: the replacement did not resume from a checkpoint"
        assert new["spec"]["nodeName"] == REAL_NODE, f"{where}: replacement off the real node"
        limits = new["spec"]["containers"][0]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == "1", f"{where}: replacement without a GPU: {limits}"
        assert d.checkpoint is not None and d.checkpoint[0] == d.checkpoint[1], f"{where}: {d.checkpoint}"
        assert d.resumed_from == d.checkpoint[0], f"{where}: resumed from {d.resumed_from}, S3 had {d.checkpoint}"
        if d.kind == "lose-node":
            # SIGKILL without warning: at most the epoch whose upload was in flight is lost.
            assert d.resumed_from >= d.epochs_before - 1, f"{where}: {d}"
        else:
            # SIGTERM: the trainer flushed the checkpoint of its last finished epoch before exiting 75.
            assert d.interrupted is not None, f"{where}: the trainer logged no 'interrupted' event"
            assert d.interrupted["flushed"] is True, f"{where}: {d.interrupted}"
            assert d.interrupted["checkpointEpoch"] >= d.epochs_before, f"{where}: {d.interrupted}, {d}"
            assert d.resumed_from == d.interrupted["checkpointEpoch"], f"{where}: {d}"
            assert exit_code(d.final) == 75, f"{where}: {json.dumps(d.final['status'], indent=1)}"
        assert d.resumed_from in self.status.checkpoint_epochs, (
            f"{where}: status.lastCheckpoint never showed epoch {d.resumed_from}: {self.status.seen}"
        )

    def check_succeeded(self, status: dict[str, Any]) -> None:
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        assert "Failed" not in self.status.phases, self.status.phases
        assert status["progress"]["epoch"] == self.epochs and status["progress"]["epochs"] == self.epochs
        job = self.batch.read_namespaced_job_status(status["jobName"], self.namespace).status
        assert not job.failed, f"the Job counted {job.failed} failed pod(s): disruptions spent the backoff"
        assert job.succeeded == 1
        assert status.get("restartCount") == len(self.disruptions), (status.get("restartCount"), self.status.seen)
        # Every epoch ran, once each in the surviving history: the resumed runs continued the checkpoint's
        # results.csv (a restart from scratch, or a skipped epoch, would show here).
        results = self.s3.get_object(Bucket=self.bucket, Key=f"{self.job_prefix}/results.csv")["Body"].read()
        rows = results.decode().strip().splitlines()[1:]
        assert [int(float(r.split(",")[0])) for r in rows] == list(range(1, self.epochs + 1)), rows
        metrics = json.loads(
            self.s3.get_object(Bucket=self.bucket, Key=f"{self.job_prefix}/metrics.json")["Body"].read()
        )
        assert metrics["epochs"] == self.epochs, metrics
        assert metrics["resumedFromEpoch"] == self.disruptions[-1].resumed_from, metrics

    def figure(self) -> str:
        """epochs-redone: epochs the disrupted pods had completed beyond the checkpoint their replacement
        resumed from, summed over all disruptions."""
        redone = sum(d.epochs_redone for d in self.disruptions)
        return (
            f"epochs-redone={redone} restarts={self.status.status.get('restartCount')}"
            f" (disrupted after epochs {[d.epochs_before for d in self.disruptions]},"
            f" resumed from {[d.resumed_from for d in self.disruptions]}, of {self.epochs})"
        )


@pytest.fixture
def scenario(stack, k8s, node, namespace, s3_client, operator):
    made: list[Scenario] = []

    def make(epochs: int, **spec: Any) -> Scenario:
        s = Scenario(stack, k8s, node, namespace, s3_client, epochs)
        made.append(s)
        s.start(**spec)
        return s

    yield make
    for s in made:
        s.close()
        # Shown by pytest only when the test failed: what the control plane did, and the status history.
        print(stack.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout)
        print("status history (phase, epoch, lastCheckpoint, restartCount):", s.status.seen)


# --- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.timeout(1200)
def test_two_evictions_and_a_lost_node_resume_from_the_checkpoint_and_succeed(scenario):
    s = scenario(epochs=14)
    evictions = [s.disrupt("evict"), s.disrupt("evict")]
    for d in evictions:
        cond = disruption_condition(d.final)
        assert cond and cond["status"] == "True" and cond["reason"] == "EvictionByEvictionAPI", d.final["status"]
    lost = s.disrupt("lose-node")
    cond = disruption_condition(lost.final)  # PodGC removed the pod of the deleted node
    assert cond and cond["status"] == "True" and cond["reason"] == "DeletionByPodGC", lost.final["status"]
    status = s.wait_finished()
    for d in s.disruptions:
        s.check_replacement(d)
    s.check_succeeded(status)
    print(f"FAULT-FIGURE disruptions: evictions=2 node-losses=1 {s.figure()}")


@pytest.mark.timeout(900)
def test_preemption_with_a_short_grace_period_flushes_the_checkpoint_in_time(scenario):
    s = scenario(epochs=8)
    d = s.disrupt("preempt")
    # Exited 75 within the 3 s grace period (so before the SIGKILL), with no DisruptionTarget condition:
    # only the trainer's exit code kept this from counting as a failure (backoffLimit 0).
    assert exit_code(d.final) == 75 and disruption_condition(d.final) is None, d.final["status"]
    # From the DELETE to the trainer's last line (its 'interrupted' event, just before exit), as the kubelet's
    # log timestamps show it: an upper bound of SIGTERM-to-exit, since the kubelet signals after the DELETE.
    assert d.interrupted is not None, d
    took = (d.interrupted["_at"] - d.disrupted_at).total_seconds()
    assert took < PREEMPTION_GRACE_SECONDS, f"DELETE to exit took {took:.1f}s"
    # The checkpoint of the last finished epoch was flushed, is committed in S3 and loads (check_replacement).
    assert d.interrupted and d.interrupted["checkpointEpoch"] == d.checkpoint[0] >= d.epochs_before, d
    s.check_replacement(d)
    status = s.wait_finished()
    s.check_succeeded(status)
    print(f"FAULT-FIGURE preemption: grace={PREEMPTION_GRACE_SECONDS}s delete-to-exit={took:.2f}s {s.figure()}")


@pytest.mark.timeout(1200)
def test_kueue_preemption_flushes_the_checkpoint_requeues_and_resumes(kueue_on_bed, scenario):
    """Kueue for real on the real node: a low-priority TrainingJob trains in a ClusterQueue of one GPU; a
    production-high one arrives, Kueue evicts the first (its Job suspended, the pod SIGTERMed by its kubelet),
    whose trainer flushes its last checkpoint and exits 75. It shows Queued/PreemptedByKueue, never Failed, while
    the urgent one trains to Succeeded; then Kueue readmits it and it resumes from that checkpoint, no retry
    spent (backoffLimit 0)."""
    t0 = time.monotonic()
    low = {"kueue.x-k8s.io/priority-class": "research-low", "example.com/cost-centre": "ml-research"}
    s = scenario(epochs=8, queueName=KUEUE_QUEUE, labels=low)
    urgent = f"urgent-{uuid.uuid4().hex[:4]}"

    def submit_urgent() -> None:
        body = s.training_job(urgent, 2, queueName=KUEUE_QUEUE,
                              labels={"kueue.x-k8s.io/priority-class": "production-high"})  # fmt: skip
        s.stack.kubectl("apply", "-n", s.namespace, "-f", "-", input=json.dumps(body))

    def step(what: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {what}", flush=True)

    d = s.disrupt("kueue-preempt", submit_urgent)
    flushed_after = (d.interrupted["_at"] - d.disrupted_at).total_seconds() if d.interrupted else None
    step(f"{s.name} preempted after epoch {d.epochs_before}: exit {exit_code(d.final)}, 'interrupted' logged "
         f"{flushed_after}s after {urgent} was submitted: {d.interrupted}")  # fmt: skip
    urgent_status = s.stack.wait(
        lambda: (x := s.custom.get_namespaced_custom_object_status(GROUP, VERSION, s.namespace, PLURAL, urgent)
                 .get("status") or {}).get("phase") == "Succeeded" and x,
        300, interval=1, what=f"{urgent} to succeed",
    )  # fmt: skip
    step(f"{urgent} Succeeded ({urgent_status['progress']['epochDisplay']})")
    s.check_replacement(d)
    step(f"{s.name} readmitted, resumed from epoch {d.resumed_from}")
    # While the urgent job trained, this one was Queued because Kueue preempted it: never Failed.
    assert ("Queued", "PreemptedByKueue") in {(p, r) for p, r, _ in s.status.suspended}, s.status.suspended
    for entry in s.status.suspended:
        step(f"{s.name} while held: {entry}")
    status = s.wait_finished()
    s.check_succeeded(status)
    step(f"{s.name} Succeeded; kueue status {status.get('kueue')}")
    assert status["kueue"]["preemptions"] >= 1 and d.epochs_redone <= 1, (status.get("kueue"), d)
    job = s.batch.read_namespaced_job(status["jobName"], s.namespace)
    assert job.metadata.labels.get("example.com/cost-centre") == "ml-research"  # the user's label propagated
    print(f"FAULT-FIGURE kueue-preemption: {s.figure()}")
