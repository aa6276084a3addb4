"""Operator benchmark on the local control plane: TrainingJob -> Job latency against kube-controller-manager's
Job -> Pod latency, TrainingJob -> Job throughput against the API server's ceiling for the same writes, operator
memory with many TrainingJobs, idle CPU, and API requests per TrainingJob.

    .venv/bin/python bench/operator_latency.py [--n 200] [--rss-n 1000] [--rss-done-n 4000] [--idle 30]
        [--life-n 20] [--ceiling-concurrency 8,32,128]

Method
- The operator runs as a local process (`python -m yolo_operator`, watching only this benchmark's namespaces)
  against the API server through a counting reverse proxy (bench/common.py: plain HTTP on 127.0.0.1, TLS
  with the admin certificate upstream). Every request it makes is recorded: method, path, time.
- Latency: N TrainingJobs are created at once (8 client threads); the client-side time each create call
  returns is the start; a watch on Jobs (opened before the first create) records when each Job arrives.
  The baseline does the same with N plain batch/v1 Jobs and a watch on Pods: kube-controller-manager's
  Job controller with its default client rate limits (20 QPS, burst 30). Pods target a node label that no node
  has, so they stay Pending in both runs (nothing else churns).
- Ceiling: the same N TrainingJobs created the same way, but labelled for an operator instance that does not
  exist; instead a plain client (asyncio + aiohttp, through the same counting proxy, no watch, no kopf) makes
  for each one, as soon as its create returns, exactly the writes the operator must make: ServiceAccount, Role,
  RoleBinding, Job (the operator's own builders) and one status merge-patch. Throughput is measured the same way
  (N / first create to last Job arrival on a watch). Its concurrency is the best of `--ceiling-concurrency`
  in a short sweep (N/2 each) before the rounds. The rounds alternate (TJ, Job, ceiling; ceiling, Job, TJ ...).
- Lifecycle: `--life-n` TrainingJobs that run to completion on kwok's fake nodes (kwok moves pods of Jobs to
  Succeeded), then are deleted; requests counted from the first create until the proxy is quiet.
- Memory: RSS (psutil) of the operator with `--rss-n` TrainingJobs (and their Jobs and Pending pods) present,
  and again once `--rss-done-n` more have run to completion on kwok's nodes (Succeeded; their Jobs and pods
  kept): the cost of completed TrainingJobs.
- Idle CPU: the operator's CPU time over `--idle` seconds once everything is settled.
- `--tracemalloc`: the operator runs under tracemalloc (slower, more memory: not for the figures above) and
  writes where its Python memory grew between startup and the `--rss-n` TrainingJobs (tracemalloc.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    CountingProxy,
    Row,
    bed_up,
    fmt_ratio,
    free_port,
    log,
    median,
    percentile,
    testbed,
)

GROUP, VERSION, PLURAL = "yolo-operator.io", "v1alpha1", "trainingjobs"
LABEL_TJ = "yolo-operator.io/training-job"
LABEL_BENCH = "bench.yolo-operator.io/run"
# Other operators may run on the same bed (other people's tests): this benchmark's TrainingJobs carry an instance
# label that only its own operator (YOLO_OPERATOR_INSTANCE) handles, so no other operator touches them.
LABEL_INSTANCE = "yolo-operator.io/operator-instance"
INSTANCE = f"bench-{uuid.uuid4().hex[:6]}"
NOWHERE = {"bench.yolo-operator.io/no-such-node": "true"}  # pods stay Pending
CREATE_THREADS = 8
CEILING_INSTANCE = f"{INSTANCE}-ceiling"  # no operator handles these: the ceiling client makes the writes
# Runs the operator with a SIGUSR2 handler: the first signal takes a tracemalloc snapshot (one frame per
# allocation: deeper stacks slow the operator down several times), the second writes to $BENCH_TRACEMALLOC_OUT
# the growth since then by file and line, the live objects by type, and how much RSS malloc_trim() gives back
# (memory that is free inside the process but not returned to the system).
TRACEMALLOC_BOOT = """
import collections, ctypes, gc, os, signal, sys, tracemalloc
import yolo_operator.runtime.wiring  # imports untraced: faster, and not what this is about
tracemalloc.start(1)
snaps = []
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
def dump(*_):
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    snaps.append(snap)
    if len(snaps) < 2:
        return
    cur, peak = tracemalloc.get_traced_memory()
    out = [f"traced {cur / 2**20:.1f} MiB (peak {peak / 2**20:.1f}), RSS {rss():.1f} MiB"]
    for key, n in (("filename", 25), ("lineno", 40)):
        out.append(f"--- growth by {key} ---")
        for st in snap.compare_to(snaps[0], key)[:n]:
            out.append(f"{st.size_diff / 2**20:+8.2f} MiB {st.count_diff:+8d} blocks  {st.traceback[-1]}")
    out.append("--- live objects by type ---")
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    out.extend(f"{n:9d} {t}" for t, n in types.most_common(25))
    del snaps[:], snap
    tracemalloc.stop()
    before = rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    out.append(f"RSS {before:.1f} MiB without tracemalloc, {rss():.1f} MiB after malloc_trim(0)")
    with open(os.environ["BENCH_TRACEMALLOC_OUT"], "w") as f:
        f.write("\\n".join(out) + "\\n")
signal.signal(signal.SIGUSR2, dump)
from yolo_operator.__main__ import main
sys.exit(main())
"""


def admin_client():
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(str(testbed.KUBECONFIG), client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


def trainingjob(name: str, pending: bool, instance: str = INSTANCE) -> dict[str, Any]:
    s3 = testbed.s3_env()
    spec: dict[str, Any] = {
        "model": {"yaml": "yolov8n.yaml"},
        "dataset": "s3://bench-datasets/none/",
        "output": "s3://bench-runs/",
        "s3": {"endpoint": s3.endpoint, "region": s3.region, "credentialsSecretRef": {"name": "s3-credentials"}},
        "training": {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0},
        "resources": {"gpus": 0, "cpu": "10m", "memory": "64Mi"},
    }
    if pending:
        spec["scheduling"] = {"nodeSelector": NOWHERE}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
            "metadata": {"name": name, "labels": {LABEL_BENCH: "1", LABEL_INSTANCE: instance}},
            "spec": spec}  # fmt: skip


def plain_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {LABEL_BENCH: "1"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {LABEL_BENCH: "1"}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": NOWHERE,
                    "containers": [{"name": "c", "image": "localhost/none:0",
                                    "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}}],
                },
            },
        },
    }  # fmt: skip



def install_crd() -> None:
    """The generated CRD, as the chart would install it: a fresh bed has none (the tests install their own)."""
    from yolo_operator.gen import crd

    env = {**os.environ, "PATH": testbed.tool_path(), "KUBECONFIG": str(testbed.KUBECONFIG)}
    for args, stdin in ((["apply", "-f", "-"], crd.render()),
                        (["wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s"], None)):
        subprocess.run(["kubectl", *args], input=stdin, text=True, env=env, check=True, capture_output=True)

class ArrivalWatch:
    """Watches a namespace's Jobs or Pods (opened before the creates) and records when each key first arrives."""

    def __init__(self, api, namespace: str, kind: str, key_label: str, label_selector: str):
        from kubernetes import client

        self.seen: dict[str, float] = {}
        self.late = 0
        self.kind, self.key_label = kind, key_label
        if kind == "jobs":
            self._list = client.BatchV1Api(api).list_namespaced_job
        else:
            self._list = client.CoreV1Api(api).list_namespaced_pod
        self.namespace, self.selector = namespace, label_selector
        rv = self._list(namespace, label_selector=label_selector).metadata.resource_version
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self._thread.start()

    def _run(self, rv: str) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(self._list, self.namespace, label_selector=self.selector,
                                   resource_version=rv, timeout_seconds=60, allow_watch_bookmarks=False):  # fmt: skip
                    t = time.monotonic()
                    obj = ev["object"]
                    rv = obj.metadata.resource_version
                    key = (obj.metadata.labels or {}).get(self.key_label)
                    if ev["type"] == "ADDED" and key and key not in self.seen:
                        self.seen[key] = t
                    if self._stop.is_set():
                        w.stop()
            except Exception as e:
                if getattr(e, "status", None) == 410:  # the resourceVersion was compacted: list again
                    rv = self._relist()
                    continue
                log(f"watch {self.kind} reopened: {e}")  # a dropped watch: re-open from the last resourceVersion
                time.sleep(0.5)

    def _relist(self) -> str:
        """After a 410 (a quiet namespace whose resourceVersion aged out): what arrived meanwhile is recorded
        at the time of the list, later than it really arrived (counted in ``late``)."""
        items = self._list(self.namespace, label_selector=self.selector)
        t = time.monotonic()
        for obj in items.items:
            key = (obj.metadata.labels or {}).get(self.key_label)
            if key and key not in self.seen:
                self.seen[key] = t
                self.late += 1
        log(f"watch {self.kind}: resourceVersion expired, re-listed ({self.late} arrivals recorded late so far)")
        return items.metadata.resource_version

    def wait_for(self, names: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if names <= self.seen.keys():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self._stop.set()


class CeilingClient:
    """The writes the operator makes per TrainingJob, made directly: for each created TrainingJob its
    ServiceAccount, Role, RoleBinding and Job (the operator's builders) and one status merge-patch (with the
    resourceVersion precondition the operator sends), by ``concurrency`` coroutines on one aiohttp session."""

    def __init__(self, server: str, concurrency: int):
        import asyncio

        self.server, self.concurrency = server, concurrency
        self.errors: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="ceiling")
        self._thread.start()
        self.queue = self._call(self._setup())

    def _call(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _setup(self):
        import asyncio

        import aiohttp
        from yolo_operator.runtime.config import OperatorConfig

        self.config = OperatorConfig.from_env({"YOLO_OPERATOR_TRAINER_IMAGE": "localhost/yolo-operator-trainer:bench",
                                               "YOLO_OPERATOR_INSTANCE": CEILING_INSTANCE,
                                               "YOLO_OPERATOR_OFFLINE": "true"})  # fmt: skip
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency))
        queue: asyncio.Queue = asyncio.Queue()
        self.workers = [asyncio.ensure_future(self._worker(queue)) for _ in range(self.concurrency)]
        return queue

    def submit(self, tj: dict[str, Any]) -> None:
        """Thread-safe: called by the creating threads with each TrainingJob as its create returned it."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, tj)

    async def _request(self, method: str, path: str, body: dict[str, Any], ctype: str = "application/json") -> None:
        headers = {"Content-Type": ctype, "Accept": "application/json"}
        data = json.dumps(body).encode()
        async with self.session.request(method, self.server + path, data=data, headers=headers) as r:
            await r.read()
            if r.status >= 400 and r.status != 409:
                self.errors.append(f"{method} {path}: {r.status}")

    async def _worker(self, queue) -> None:
        from yolo_operator.api.types import TrainingJob
        from yolo_operator.controller import build as builders
        from yolo_operator.controller.derive import job_created_status
        from yolo_operator.runtime import kube

        plural = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings", "Job": "jobs"}
        while True:
            tj = await queue.get()
            try:
                t = TrainingJob.from_body(tj)
                model = builders.static_model(t.spec.model)  # the bench's TrainingJobs name a model YAML
                assert model is not None
                for obj in (builders.build_service_account(t, self.config), builders.build_role(t),
                            builders.build_role_binding(t), builders.build_job(t, self.config, model)):  # fmt: skip
                    await self._request("POST", kube.path(obj["apiVersion"], plural[obj["kind"]], t.namespace), obj)
                status = job_created_status(tj, builders.job_name(t.name), model.text)
                await self._request(
                    "PATCH",
                    kube.path(f"{GROUP}/{VERSION}", PLURAL, t.namespace, t.name, "status"),
                    {"metadata": {"resourceVersion": tj["metadata"]["resourceVersion"]}, "status": status},
                    "application/merge-patch+json",
                )
            except Exception as e:  # counted, not fatal: the figure says how many
                self.errors.append(f"{type(e).__name__}: {e}")

    def close(self) -> None:
        async def stop():
            for w in self.workers:
                w.cancel()
            await self.session.close()

        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def create_all(create, bodies: list[dict[str, Any]], then=None) -> dict[str, float]:
    """Creates the objects from CREATE_THREADS threads; returns name -> time the create call returned.
    ``then``, if given, is called with each created object as the API server returned it."""
    done: dict[str, float] = {}

    def one(body: dict[str, Any]) -> None:
        created = create(body)
        done[body["metadata"]["name"]] = time.monotonic()
        if then is not None:
            then(created)

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(one, bodies))
    return done


def latencies(created: dict[str, float], seen: dict[str, float]) -> dict[str, float]:
    lat = [seen[k] - created[k] for k in created if k in seen]
    t0 = min(created.values())
    span = max(seen[k] for k in created) - t0
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat),
            "throughput": len(created) / span, "n": len(lat)}  # fmt: skip


class Bench:
    def __init__(self, args: argparse.Namespace):
        from kubernetes import client

        self.args = args
        self.api = admin_client()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        run = uuid.uuid4().hex[:6]
        self.ns = {k: f"bench-{k}-{run}" for k in ("tj0", "tj1", "job0", "job1", "life", "rss", "done")}
        # the ceiling's namespaces: not watched by the operator, not counted in its memory figure
        self.ceiling_ns = [f"bench-ceil{i}-{run}" for i in range(8)]
        self._ceiling_next = iter(self.ceiling_ns)
        self.workdir = testbed.TESTBED / "bench" / f"operator-{run}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proxy = CountingProxy.for_bed().start()
        self.operator: subprocess.Popen | None = None
        self.results: dict[str, Any] = {}

    # -- setup / teardown ----------------------------------------------------------------------------------
    def wait_for_earlier_runs(self, timeout: float = 900) -> None:
        """An earlier run's namespaces are deleted in the background: the garbage collector and the Job
        controller are busy with its objects for minutes (1,000 TrainingJobs), which would slow the baseline."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            left = self.core.list_namespace(label_selector=LABEL_BENCH).items
            if not left:
                break
            if int(time.monotonic() - start) % 30 == 0:
                log(f"waiting for {len(left)} namespaces of an earlier run to be deleted")
            time.sleep(1)
        else:
            log(f"earlier runs' namespaces still there after {timeout:.0f} s: measuring anyway")

    def start(self) -> None:
        install_crd()
        self.wait_for_earlier_runs()
        for ns in [*self.ns.values(), *self.ceiling_ns]:
            self.core.create_namespace({"metadata": {"name": ns, "labels": {LABEL_BENCH: "1"}}})
        health = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.proxy.kubeconfig(self.workdir / "proxy.kubeconfig")),
            "YOLO_OPERATOR_NAMESPACES": ",".join(self.ns.values()),
            "YOLO_OPERATOR_INSTANCE": INSTANCE,
            "YOLO_OPERATOR_BIND_ADDRESS": "127.0.0.1",
            "YOLO_OPERATOR_TRAINER_IMAGE": "localhost/yolo-operator-trainer:bench",
            "YOLO_OPERATOR_OFFLINE": "true",
            "YOLO_OPERATOR_HEALTH_PORT": str(health),
            "YOLO_OPERATOR_METRICS_PORT": str(free_port()),
        }
        cmd = [sys.executable, "-m", "yolo_operator"]
        if self.args.tracemalloc:
            env["BENCH_TRACEMALLOC_OUT"] = str(self.workdir / "tracemalloc.txt")
            cmd = [sys.executable, "-c", TRACEMALLOC_BOOT]
        logf = open(self.workdir / "operator.log", "ab")  # noqa: SIM115 - the child holds it
        self.operator = subprocess.Popen(cmd, env=env, cwd=testbed.ROOT,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        logf.close()
        deadline = time.monotonic() + (300 if self.args.tracemalloc else 90)
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise RuntimeError(f"operator exited; see {self.workdir / 'operator.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError("operator not healthy in time")
        self.wait_quiet()
        self.rss_boot = self.rss_mib()
        self.tracemalloc_mark()
        log(f"operator pid {self.operator.pid} up ({self.rss_boot:.0f} MiB RSS); "
            f"namespaces {', '.join(self.ns.values())}")

    def close(self) -> None:
        if self.operator and self.operator.poll() is None:
            self.operator.terminate()
            try:
                self.operator.wait(20)
            except subprocess.TimeoutExpired:
                self.operator.kill()
        for ns in [*self.ns.values(), *self.ceiling_ns]:
            try:
                self.core.delete_namespace(ns)
            except Exception as e:  # already gone
                log(f"delete namespace {ns}: {e}")
        self.proxy.stop()

    def wait_quiet(self, quiet: float = 3.0, timeout: float = 240.0) -> float:
        """Waits until the operator has sent no request for `quiet` seconds; returns the last request's time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reqs = self.proxy.snapshot()
            last = reqs[-1].t if reqs else 0.0
            if time.monotonic() - last >= quiet:
                return last
            time.sleep(0.25)
        log("operator did not go quiet within the timeout")
        return time.monotonic()

    def tracemalloc_mark(self) -> None:
        """With --tracemalloc: the operator takes a snapshot (first call) or writes the growth (second)."""
        if not self.args.tracemalloc:
            return
        import signal

        self._marks = getattr(self, "_marks", 0) + 1
        self.operator.send_signal(signal.SIGUSR2)
        out = self.workdir / "tracemalloc.txt"
        deadline = time.monotonic() + 300
        while self._marks == 2 and not out.exists() and time.monotonic() < deadline:
            time.sleep(1)
        if self._marks == 2:
            log(f"tracemalloc profile: {out}")

    def rss_mib(self) -> float:
        import psutil

        p = psutil.Process(self.operator.pid)
        return (p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))) / 2**20

    # -- phases --------------------------------------------------------------------------------------------
    def tj_latency(self, ns: str, n: int) -> dict[str, float]:
        watch = ArrivalWatch(self.api, ns, "jobs", LABEL_TJ, LABEL_TJ)
        names = [f"tj-{i:05d}" for i in range(n)]
        t0 = time.monotonic()
        created = create_all(
            lambda b: self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, b),
            [trainingjob(x, pending=True) for x in names],
        )
        ok = watch.wait_for(set(names), 600)
        watch.stop()
        if not ok:
            log(f"only {len(watch.seen)}/{n} Jobs appeared")
        res = latencies(created, watch.seen)
        last = self.wait_quiet()
        res["requests_per_tj"] = self.proxy.count(t0 - 0.5, last + 0.001) / n
        res["breakdown"] = {k: v / n for k, v in self.proxy.breakdown(t0 - 0.5, last + 0.001).most_common()}
        res["created_by_us"] = self.proxy.breakdown(t0 - 0.5, last + 0.001)["create jobs"]
        log(f"TJ->Job  n={n}: p50 {res['p50']:.3f}s p99 {res['p99']:.3f}s {res['throughput']:.1f}/s, "
            f"{res['requests_per_tj']:.1f} requests/TJ")  # fmt: skip
        return res

    def ceiling(self, ns: str, n: int, concurrency: int) -> dict[str, float]:
        """The same N TrainingJobs, their writes made by CeilingClient instead of the operator."""
        watch = ArrivalWatch(self.api, ns, "jobs", LABEL_TJ, LABEL_TJ)
        names = [f"tj-{i:05d}" for i in range(n)]
        client = CeilingClient(self.proxy.url, concurrency)
        t0 = time.monotonic()
        try:
            created = create_all(
                lambda b: self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, b),
                [trainingjob(x, pending=True, instance=CEILING_INSTANCE) for x in names],
                then=client.submit,
            )
            deadline = time.monotonic() + 600
            while not (ok := watch.wait_for(set(names), 5)) and time.monotonic() < deadline:
                if client.errors:  # a broken ceiling client must fail the run, not wait it out
                    raise RuntimeError(f"ceiling client: {len(client.errors)} errors, e.g. {client.errors[0]}")
        finally:
            watch.stop()
            client.close()
        if not ok:
            log(f"ceiling: only {len(watch.seen)}/{n} Jobs appeared")
        res = latencies(created, watch.seen)
        last = self.wait_quiet(quiet=2)
        res["requests_per_tj"] = self.proxy.count(t0 - 0.5, last + 0.001) / n
        res["concurrency"], res["errors"] = concurrency, len(client.errors)
        if client.errors:
            log(f"ceiling: {len(client.errors)} errors, e.g. {client.errors[0]}")
        log(f"ceiling  n={n} c={concurrency}: p50 {res['p50']:.3f}s p99 {res['p99']:.3f}s {res['throughput']:.1f}/s, "
            f"{res['requests_per_tj']:.1f} requests/TJ")  # fmt: skip
        time.sleep(2)
        return res

    def ceiling_sweep(self, n: int, concurrencies: list[int]) -> int:
        """The ceiling client's concurrency that gets the most objects/s out of the API server (N each)."""
        best = max((self.ceiling(next(self._ceiling_next), n, c)["throughput"], c) for c in concurrencies)
        log(f"ceiling sweep: best concurrency {best[1]} ({best[0]:.1f}/s)")
        return best[1]

    def job_latency(self, ns: str, n: int) -> dict[str, float]:
        watch = ArrivalWatch(self.api, ns, "pods", "batch.kubernetes.io/job-name", LABEL_BENCH)
        names = [f"job-{i:05d}" for i in range(n)]
        created = create_all(lambda b: self.batch.create_namespaced_job(ns, b), [plain_job(x) for x in names])
        ok = watch.wait_for(set(names), 600)
        watch.stop()
        if not ok:
            log(f"only {len(watch.seen)}/{n} pods appeared")
        res = latencies(created, watch.seen)
        log(f"Job->Pod n={n}: p50 {res['p50']:.3f}s p99 {res['p99']:.3f}s {res['throughput']:.1f}/s")
        self.wait_quiet()  # our operator reacts to nothing here; this only lets the bed settle
        time.sleep(2)
        return res

    def lifecycle(self, n: int) -> dict[str, Any]:
        """n TrainingJobs that kwok runs to completion, then deleted: requests per TrainingJob over its life."""
        ns = self.ns["life"]
        names = [f"life-{i:03d}" for i in range(n)]
        t0 = time.monotonic()
        create_all(lambda b: self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, b),
                   [trainingjob(x, pending=False) for x in names])  # fmt: skip
        deadline = time.monotonic() + 180
        phases: dict[str, int] = {}
        while time.monotonic() < deadline:
            items = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            phases = {}
            for it in items:
                ph = (it.get("status") or {}).get("phase", "-")
                phases[ph] = phases.get(ph, 0) + 1
            if phases.get("Succeeded", 0) + phases.get("Failed", 0) == n:
                break
            time.sleep(1)
        last = self.wait_quiet()
        life = self.proxy.breakdown(t0 - 0.5, last + 0.001)
        t1 = time.monotonic()
        for x in names:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, x)
        time.sleep(2)
        last = self.wait_quiet(timeout=60)
        deletion = self.proxy.breakdown(t1, last + 0.001)
        res = {
            "phases": phases,
            "requests_per_tj": sum(life.values()) / n,
            "breakdown": {k: round(v / n, 2) for k, v in life.most_common()},
            "delete_requests_per_tj": sum(deletion.values()) / n,
            "delete_breakdown": {k: round(v / n, 2) for k, v in deletion.most_common()},
        }
        log(f"lifecycle n={n}: final phases {phases}; {res['requests_per_tj']:.1f} requests/TJ "
            f"(+{res['delete_requests_per_tj']:.1f} on delete)")  # fmt: skip
        return res

    def rss_and_idle(self, n: int, idle: float) -> dict[str, Any]:
        import psutil

        ns = self.ns["rss"]
        rss0 = self.rss_mib()
        watch = ArrivalWatch(self.api, ns, "jobs", LABEL_TJ, LABEL_TJ)
        names = [f"rss-{i:05d}" for i in range(n)]
        t0 = time.monotonic()
        created = create_all(lambda b: self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, b),
                             [trainingjob(x, pending=True) for x in names])  # fmt: skip
        watch.wait_for(set(names), 900)
        watch.stop()
        lat = latencies(created, watch.seen)
        last = self.wait_quiet(quiet=5)
        reqs = self.proxy.count(t0 - 0.5, last + 0.001) / n
        rss = self.rss_mib()
        self.tracemalloc_mark()
        proc = psutil.Process(self.operator.pid)
        c0, r0, w0 = proc.cpu_times(), self.proxy.count(), time.monotonic()
        time.sleep(idle)
        c1, r1, w1 = proc.cpu_times(), self.proxy.count(), time.monotonic()
        cpu = (c1.user + c1.system - c0.user - c0.system) / (w1 - w0)
        rss_after = self.rss_mib()
        held = sum(len(self.custom.list_namespaced_custom_object(GROUP, VERSION, x, PLURAL)["items"])
                   for x in self.ns.values())  # fmt: skip
        res = {"n": n, "jobs_seen": len(watch.seen), "held": held, "rss_boot_mib": self.rss_boot,
               "rss_start_mib": rss0, "rss_mib": max(rss, rss_after),
               "idle_cpu_fraction": cpu, "idle_requests": r1 - r0, "idle_seconds": w1 - w0,
               "requests_per_tj": reqs, "p99": lat["p99"], "throughput": lat["throughput"]}  # fmt: skip
        log(f"RSS with {n} TJs: {res['rss_mib']:.0f} MiB (start {rss0:.0f}); idle CPU {cpu * 100:.2f}% of a core, "
            f"{r1 - r0} requests in {w1 - w0:.0f}s")  # fmt: skip
        return res

    def rss_done(self, n: int, timeout: float = 3600) -> dict[str, Any]:
        """n more TrainingJobs that kwok runs to completion (their Jobs and pods kept); RSS once all are done, or
        after ``timeout`` seconds with whatever phases they reached (the phases are in the result)."""
        from kubernetes import client

        ns = self.ns["done"]
        names = [f"done-{i:05d}" for i in range(n)]
        t0 = time.monotonic()
        create_all(lambda b: self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, b),
                   [trainingjob(x, pending=False) for x in names])  # fmt: skip
        rss_created = self.rss_mib()  # all created, most still waiting for their pods
        log(f"RSS with {n} more TJs just created: {rss_created:.0f} MiB")
        phases: dict[str, int] = {}
        while time.monotonic() - t0 < timeout:
            phases = {}
            try:
                items = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            except client.ApiException as e:  # an API server starved by a loaded machine answers 504: ask again
                if e.status is None or e.status < 500:
                    raise
                log(f"listing the completed TrainingJobs failed ({e.status}); asking again")
                time.sleep(10)
                continue
            for it in items:
                ph = (it.get("status") or {}).get("phase", "-")
                phases[ph] = phases.get(ph, 0) + 1
            if phases.get("Succeeded", 0) + phases.get("Failed", 0) == n:
                break
            log(f"completed TrainingJobs: {phases}")
            time.sleep(10)
        seconds = time.monotonic() - t0
        last = self.wait_quiet(quiet=5)
        reqs = self.proxy.count(t0 - 0.5, last + 0.001) / n
        time.sleep(5)
        rss = self.rss_mib()
        held = sum(len(self.custom.list_namespaced_custom_object(GROUP, VERSION, x, PLURAL)["items"])
                   for x in self.ns.values())  # fmt: skip
        res = {"n": n, "held": held, "rss_mib": rss, "rss_created_mib": rss_created, "phases": phases,
               "requests_per_tj": reqs, "seconds": seconds}  # fmt: skip
        log(f"RSS with {held} TJs, {n} of them completed: {rss:.0f} MiB")
        return res


def run(
    n: int = 200,
    rss_n: int = 1000,
    idle: float = 30,
    life_n: int = 20,
    rounds: int = 2,
    tracemalloc: bool = False,
    rss_done_n: int = 0,
    ceiling_concurrency: tuple[int, ...] = (8, 32, 128),
    rss_done_timeout: float = 3600,
) -> list[Row]:
    args = argparse.Namespace(n=n, rss_n=rss_n, idle=idle, life_n=life_n, tracemalloc=tracemalloc)
    bed_up()
    b = Bench(args)
    tj: list[dict] = []
    job: list[dict] = []
    ceil: list[dict] = []
    done = None
    try:
        b.start()
        conc = b.ceiling_sweep(max(n // 2, 1), list(ceiling_concurrency)) if len(ceiling_concurrency) > 1 else None
        conc = conc or ceiling_concurrency[0]
        for r in range(rounds):  # ABBA: TJ, Job, ceiling; ceiling, Job, TJ
            order = ("tj", "job", "ceil") if r % 2 == 0 else ("ceil", "job", "tj")
            for kind in order:
                if kind == "tj":
                    tj.append(b.tj_latency(b.ns[f"tj{r % 2}"], n))
                elif kind == "ceil":
                    ceil.append(b.ceiling(next(b._ceiling_next), n, conc))
                else:
                    job.append(b.job_latency(b.ns[f"job{r % 2}"], n))
            # the next round's namespaces are fresh; remove this round's objects in the background
        life = b.lifecycle(life_n) if life_n else None
        mem = b.rss_and_idle(rss_n, idle)
        done = b.rss_done(rss_done_n, rss_done_timeout) if rss_done_n else None
    finally:
        b.close()
    b.results = {"tj": tj, "job": job, "ceiling": ceil, "life": life, "mem": mem, "done": done}
    (b.workdir / "results.json").write_text(json.dumps(b.results, indent=2, default=str))
    return rows(b.results, n, rounds)


def rows(res: dict[str, Any], n: int, rounds: int) -> list[Row]:
    tj, job, life, mem, ceil, done = res["tj"], res["job"], res["life"], res["mem"], res["ceiling"], res["done"]
    p50 = median([x["p50"] for x in tj]), median([x["p50"] for x in job])
    p99 = median([x["p99"] for x in tj]), median([x["p99"] for x in job])
    thr = median([x["throughput"] for x in tj]), median([x["throughput"] for x in job])
    note = f"N={n} created at once, {rounds} rounds interleaved (TJ,Job,Job,TJ), medians"
    out = [
        Row("create -> Job p50 (ours: TrainingJob->Job; baseline: Job->Pod by kube-controller-manager)",
            f"{p50[0]:.2f} s", f"{p50[1]:.2f} s", fmt_ratio(*p50), "-", "n/a", note),
        Row("create -> Job p99 (same)", f"{p99[0]:.2f} s", f"{p99[1]:.2f} s", fmt_ratio(*p99),
            "ours <= baseline", "yes" if p99[0] <= p99[1] else "no", note),
        Row("throughput, objects/s (same)", f"{thr[0]:.1f}/s", f"{thr[1]:.1f}/s", fmt_ratio(*thr), "-", "n/a"),
    ]  # fmt: skip
    if ceil:
        cthr = median([x["throughput"] for x in ceil])
        out.append(Row(
            "TrainingJob -> Job throughput vs the API server's ceiling (a plain client making the same writes: "
            "SA, Role, RoleBinding, Job, one status patch)",
            f"{thr[0]:.1f}/s", f"{cthr:.1f}/s (concurrency {ceil[0]['concurrency']})", fmt_ratio(thr[0], cthr),
            ">= 1.0x", "yes" if cthr and thr[0] / cthr >= 1.0 else "no",
            f"N={n}, {rounds} rounds interleaved (TJ, Job, ceiling; ceiling, Job, TJ), medians; ceiling "
            f"p99 {median([x['p99'] for x in ceil]):.2f} s, {median([x['requests_per_tj'] for x in ceil]):.1f} "
            f"requests/TJ, {sum(x['errors'] for x in ceil)} errors; each round: "
            + ", ".join(f"{a['throughput']:.1f} vs {c['throughput']:.1f}/s" for a, c in zip(tj, ceil, strict=False)),
        ))  # fmt: skip
    out += [
        Row(f"operator RSS with {mem['held']} TrainingJobs (+ their Jobs, Pending pods, RBAC)",
            f"{mem['rss_mib']:.0f} MiB", f"{mem['rss_boot_mib']:.0f} MiB (same operator at startup, 0 objects)",
            fmt_ratio(mem["rss_mib"], mem["rss_boot_mib"]), "< 150 MiB with 1,000",
            "yes" if mem["rss_mib"] < 150 and mem["held"] >= 1000 else "no",
            f"{mem['rss_start_mib']:.0f} MiB before the last {mem['n']} were created; "
            f"those {mem['n']}: Job p99 {mem['p99']:.1f} s, {mem['throughput']:.1f}/s"),
        Row(f"operator CPU while idle ({mem['idle_seconds']:.0f} s, {mem['jobs_seen']} TrainingJobs present)",
            f"{mem['idle_cpu_fraction'] * 100:.2f}% of a core", "-", "-", "< 1% of a core",
            "yes" if mem["idle_cpu_fraction"] < 0.01 else "no",
            f"{mem['idle_requests']} API requests while idle"),
    ]  # fmt: skip
    if done:
        out.append(Row(
            f"operator RSS with {done['held']} TrainingJobs, {done['n']} of them completed (Succeeded, Jobs and "
            "pods kept)",
            f"{done['rss_mib']:.0f} MiB", f"{mem['rss_mib']:.0f} MiB with {mem['held']}",
            f"{(done['rss_mib'] - mem['rss_mib']) / max(done['held'] - mem['held'], 1) * 1024:.1f} KiB per "
            "completed TrainingJob", "<= 200 MiB with 5,000",
            "yes" if done["rss_mib"] <= 200 and done["held"] >= 5000 else "no",
            f"RSS {done['rss_created_mib']:.0f} MiB once the last was created; final phases {done['phases']}; "
            f"{done['requests_per_tj']:.1f} requests/TJ over their lives, "
            f"{done['seconds']:.0f} s to complete them all"),
        )  # fmt: skip
    out += [
        Row("API requests per TrainingJob, create until settled (Job created, pod Pending)",
            f"{median([x['requests_per_tj'] for x in tj]):.1f} (N={n}); {mem['requests_per_tj']:.1f} (N={mem['n']})",
            "-", "-", "small constant, independent of N", "see note",
            "per-TJ breakdown: " + ", ".join(f"{k} {v:.2f}" for k, v in list(tj[0]["breakdown"].items())[:8])),
    ]  # fmt: skip
    if life:
        out.append(Row(
            "API requests per TrainingJob over its whole life (created, Running, Succeeded; then deleted)",
            f"{life['requests_per_tj']:.1f} + {life['delete_requests_per_tj']:.1f} on delete", "-", "-",
            "small constant; no polling", "see note",
            f"final phases {life['phases']}; " + ", ".join(f"{k} {v}" for k, v in life["breakdown"].items()),
        ))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="TrainingJobs (and plain Jobs) created at once")
    ap.add_argument("--rss-n", type=int, default=1000, help="TrainingJobs present for the memory figure")
    ap.add_argument("--idle", type=float, default=30, help="seconds of idle CPU measurement")
    ap.add_argument("--life-n", type=int, default=20, help="TrainingJobs run to completion (0 = skip)")
    ap.add_argument("--rounds", type=int, default=2, help="latency rounds (alternating order)")
    ap.add_argument("--tracemalloc", action="store_true", help="profile the operator's memory (slows it down)")
    ap.add_argument("--rss-done-n", type=int, default=0, help="TrainingJobs run to completion, then RSS again")
    ap.add_argument("--ceiling-concurrency", default="8,32,128", help="the ceiling client's concurrencies to sweep")
    ap.add_argument("--rss-done-timeout", type=float, default=3600,
                    help="seconds to wait for the --rss-done-n TrainingJobs to complete before measuring anyway")
    a = ap.parse_args(argv)
    conc = tuple(int(x) for x in a.ceiling_concurrency.split(","))
    rs = run(a.n, a.rss_n, a.idle, a.life_n, a.rounds, a.tracemalloc, a.rss_done_n, conc, a.rss_done_timeout)
    for r in rs:
        print(r.line())
    return rs


if __name__ == "__main__":
    main()
