"""The operator under faults.

* SIGKILLed at random moments while TrainingJobs are created, edited and deleted: afterwards exactly one Job
  per live TrainingJob, none for deleted ones, and every status converges (FAULT-FIGURE operator-kill).
* Its API server restarted (a throwaway kwokctl cluster, never the shared bed's): the watches recover by
  themselves, no status update is lost, and /healthz fails while the watches cannot work for longer than
  the grace period, then recovers (FAULT-FIGURE apiserver-restart).
* yolo_operator.runtime.health, the liveness verdict, as pure functions (unit).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from yolo_operator.runtime import health

from tests.fault.kwok_cluster import ThrowawayCluster
from tests.integration import test_operator_lifecycle as lifecycle
from tests.operator_fixtures import (
    OperatorProcess,
    apply,
    condition,
    get,
    install_crd,
    patch_pod_status,
    status_of,
    terminate_pod,
    trainingjob,
    wait_for,
    wait_phase,
)

LABEL = lifecycle.LABEL
NOWHERE = lifecycle.NOWHERE
crd_installed = lifecycle.crd_installed  # fixtures shared with the lifecycle tests
start_operator = lifecycle.start_operator

# --- health.py, pure ---------------------------------------------------------------------------------------


@pytest.mark.fault
@pytest.mark.unit
def test_watch_health_fails_only_after_the_grace_period():
    h = health.WatchHealth(grace_seconds=60)
    assert h.problems(0, {}) == []
    h.record(100, "MaxRetryError: connection refused")
    h.record(130, "MaxRetryError: connection refused (again)")
    assert h.problems(160, {}) == []  # 60 s since the first failure: still within the grace
    (problem,) = h.problems(161, {})
    assert "61s" in problem and "(again)" in problem
    h.record(170, None)  # one success resets the clock
    assert h.problems(1000, {}) == [] and h.failing_for(1000) == 0
    h.record(2000, "ApiException: (503)")
    assert h.problems(2060, {}) == [] and h.problems(2061, {})


@pytest.mark.fault
@pytest.mark.unit
def test_dead_watcher_fails_at_once_cancelled_one_does_not():
    async def scenario() -> tuple[dict[str, str], int]:
        gate = asyncio.Event()

        async def fails() -> None:
            await gate.wait()
            raise RuntimeError("APIServerError 503 after 9 attempts")

        async def runs() -> None:
            await asyncio.Event().wait()

        async def returns() -> None:
            await gate.wait()

        tasks = [
            asyncio.create_task(fails(), name="watcher for pods.v1@ns"),
            asyncio.create_task(runs(), name="watcher for jobs.v1.batch@ns"),
            asyncio.create_task(runs(), name="watcher for trainingjobs.v1alpha1.yolo-operator.io@ns"),
            asyncio.create_task(returns(), name="watcher for configmaps.v1@ns"),
            asyncio.create_task(fails(), name="peering keep-alive for x"),  # not a watcher
        ]
        watchers = health.WatcherTasks()
        watchers.scan(asyncio.all_tasks())
        assert watchers.running() == 4 and watchers.dead() == {}
        tasks[2].cancel()  # kopf stops a watcher on purpose (shutdown, CRD deleted)
        gate.set()
        await asyncio.wait(tasks, timeout=5)
        watchers.scan(asyncio.all_tasks())  # done tasks are no longer listed: they stay remembered
        dead, running = watchers.dead(), watchers.running()
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return dead, running

    dead, running = asyncio.run(scenario())
    assert dead == {
        "watcher for pods.v1@ns": "RuntimeError: APIServerError 503 after 9 attempts",
        "watcher for configmaps.v1@ns": "returned",
    }
    assert running == 1
    problems = health.WatchHealth(grace_seconds=60).problems(0, dead)
    assert len(problems) == 2 and "watcher for pods.v1@ns has ended (RuntimeError" in problems[1]


@pytest.mark.fault
@pytest.mark.unit
def test_grace_from_env():
    assert health.grace_from_env({}) == health.DEFAULT_GRACE_SECONDS == 60
    assert health.grace_from_env({health.GRACE_ENV: "12.5"}) == 12.5


# --- SIGKILL at random moments -----------------------------------------------------------------------------

N_TRAININGJOBS = 50
N_KILLS = 6
GC_LEFT = "Job(s) left for a deleted TrainingJob"  # the garbage collector's part, not the operator's
JOB_CONTROLLER = " [the Job controller is behind]"  # its Suspended condition does not show the Job's spec yet


def _seed() -> int:
    """FAULT_SEED=<n> replays a run's sequence of operations and kill points (the timing still varies)."""
    return int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(2**31))


def _plan(rng: random.Random) -> list[dict[str, Any]]:
    """Steps of create/edit/delete/re-create over N_TRAININGJOBS TrainingJobs. Each step is one kubectl apply
    (new and edited TrainingJobs) and maybe one kubectl delete; `want` after a step is the desired state."""
    names = [f"tj-{i:02d}" for i in range(N_TRAININGJOBS)]
    want: dict[str, dict[str, Any]] = {}
    deleted: list[str] = []
    steps = []
    while names or len(steps) < 12:
        apply_now: dict[str, dict[str, Any]] = {}
        for n in names[: rng.randint(4, 9)]:
            apply_now[n] = {"suspend": rng.random() < 0.5, "activeDeadlineSeconds": rng.randrange(600, 7200)}
            names.remove(n)
        live = sorted(set(want) - set(apply_now))
        for n in rng.sample(live, min(len(live), rng.randint(0, 6))):
            spec = dict(want[n])
            if rng.random() < 0.5:
                spec["suspend"] = not spec["suspend"]
            else:
                spec["activeDeadlineSeconds"] = rng.randrange(600, 7200)
            apply_now[n] = spec
        if deleted and rng.random() < 0.3:  # the same name again: a new uid while the old Job may still exist
            n = deleted.pop(rng.randrange(len(deleted)))
            apply_now[n] = {"suspend": rng.random() < 0.5, "activeDeadlineSeconds": rng.randrange(600, 7200)}
        want.update(apply_now)
        delete = [n for n in sorted(set(want) - set(apply_now)) if rng.random() < 0.06]
        for n in delete:
            del want[n]
            deleted.append(n)
        steps.append({"apply": apply_now, "delete": delete, "want": copy.deepcopy(want)})
    return steps


def _not_converged(kubectl, ns: str, want: dict[str, dict[str, Any]]) -> list[str]:
    """What still differs from the converged state; [] when converged. Two kubectl calls."""
    tjs = {t["metadata"]["name"]: t for t in get(kubectl, ns, "trainingjobs")["items"]}
    jobs: dict[str, list[dict]] = {}
    for j in get(kubectl, ns, "jobs", "-l", LABEL)["items"]:
        jobs.setdefault(j["metadata"]["labels"][LABEL], []).append(j)
    assert sorted(tjs) == sorted(want), "the API server lost or kept a TrainingJob: a test bug"
    out = []
    for n, spec in sorted(want.items()):
        tj, st = tjs[n], tjs[n].get("status") or {}
        phase = "Suspended" if spec["suspend"] else "Pending"
        if st.get("phase") != phase:
            susp = [c.get("status") for j in jobs.get(n, []) for c in j["status"].get("conditions") or ()
                    if c["type"] == "Suspended"]  # fmt: skip
            behind = (susp != ["True"]) if spec["suspend"] else ("True" in susp)
            out.append(f"{n}: phase {st.get('phase')} (want {phase}; Job condition Suspended: {susp})"
                       + (JOB_CONTROLLER if behind else ""))  # fmt: skip
        if st.get("jobName") != f"{n}-train":
            out.append(f"{n}: jobName {st.get('jobName')}")
        if st.get("observedGeneration") != tj["metadata"]["generation"]:
            out.append(f"{n}: observedGeneration {st.get('observedGeneration')} of {tj['metadata']['generation']}")
        mine = jobs.get(n, [])
        if len(mine) != 1 or mine[0]["metadata"]["ownerReferences"][0]["uid"] != tj["metadata"]["uid"]:
            owners = [j["metadata"]["ownerReferences"][0]["uid"] for j in mine]
            out.append(f"{n}: {len(mine)} Job(s), owned by {owners} (TrainingJob {tj['metadata']['uid']})")
        elif {k: mine[0]["spec"].get(k) for k in spec} != spec:
            out.append(f"{n}: Job has {({k: mine[0]['spec'].get(k) for k in spec})}, spec {spec}")
    out += [f"{n}: {GC_LEFT}" for n in sorted(set(jobs) - set(want))]
    return out


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_operator_sigkilled_at_random_moments_converges(kubectl, namespace, start_operator):
    ns = namespace
    seed = _seed()
    print(f"FAULT seed {seed} (replay: FAULT_SEED={seed})")
    rng = random.Random(seed)
    steps = _plan(rng)
    kill_after = set(rng.sample(range(len(steps) - 1), N_KILLS))
    op = start_operator(ns)
    kills, stay_down = 0, False
    for i, step in enumerate(steps):
        if op.proc.poll() is not None and not stay_down:
            op = start_operator(ns)
        stay_down = False
        if step["apply"]:
            apply(kubectl, ns, *(trainingjob(n, scheduling=NOWHERE, **spec) for n, spec in step["apply"].items()))
        if step["delete"]:
            kubectl("delete", "trainingjob", *step["delete"], "--wait=false", namespace=ns)
        if i in kill_after:
            if op.proc.poll() is not None:  # this step happened while it was down
                op = start_operator(ns)
            time.sleep(rng.uniform(0, 2.0))  # somewhere in the middle of the reconciles this step started
            op.kill()
            kills += 1
            stay_down = rng.random() < 0.5  # the next step happens while the operator is down
    want = steps[-1]["want"]
    op.kill()  # right after the last change, if it is running: the last start has all the work to do
    assert kills >= 5

    restart = time.monotonic()
    op = start_operator(ns)
    healthy_s = time.monotonic() - restart
    problems: list[str] = []

    history: list[tuple[float, list[str]]] = []  # what was left, whenever that changed
    live_done: list[float] = []  # when the live TrainingJobs had converged (the GC may still be at work)
    jc_done: list[float] = []  # when the Job controller had caught up with every Job's suspend

    def converged() -> bool:
        problems[:] = _not_converged(kubectl, ns, want)
        if not history or history[-1][1] != problems:
            history.append((time.monotonic() - restart, list(problems)))
        live_left = [p for p in problems if not p.endswith(GC_LEFT)]
        if live_left:
            live_done.clear()
        elif not live_done:
            live_done.append(time.monotonic() - restart)
        if any(p.endswith(JOB_CONTROLLER) for p in problems):
            jc_done.clear()
        elif not jc_done:
            jc_done.append(time.monotonic() - restart)
        return not problems

    try:
        wait_for(converged, 240, interval=1, what="convergence")
    except AssertionError:
        raise AssertionError(f"not converged after 240 s ({len(problems)} left): {problems[:20]}") from None
    converge_s = time.monotonic() - restart
    for at, left in history[-4:-1]:
        print(f"  {at:5.1f} s after the last restart, {len(left)} left: {left[:6]}")
    print(
        f"FAULT-FIGURE operator-kill: {kills} SIGKILLs during {len(steps)} create/edit/delete steps over "
        f"{N_TRAININGJOBS} TrainingJobs ({len(want)} live at the end, seed {seed}); after the last restart "
        f"/healthz answered in {healthy_s:.1f} s, the statuses and Jobs of all {len(want)} live ones had "
        f"converged {live_done[0]:.1f} s after it started (the Job controller's Suspended conditions had caught "
        f"up after {jc_done[0]:.1f} s), and the garbage collector had removed the Jobs of the deleted ones after "
        f"{converge_s:.1f} s"
    )


# --- API server restart (a throwaway cluster: the shared bed's API server is never touched) -----------------

GRACE_S = 15  # the operator's YOLO_OPERATOR_WATCH_GRACE_SECONDS here; 60 by default
RUNNING_POD_STATUS = {
    "phase": "Running",
    "containerStatuses": [
        {
            "name": "trainer",
            "image": "registry.invalid/yolo-trainer:test",
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "started": True,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        }
    ],
}


@pytest.fixture
def own_cluster(bed) -> Iterator[ThrowawayCluster]:
    # Not under tmp_path: parallel pytest sessions of the same user may prune each other's old tmp dirs.
    workdir = Path(tempfile.mkdtemp(prefix="yolo-fault-"))
    # No scheduler: the test's pods stay unscheduled; the Job controller creates them, kwok plays the nodes.
    cluster = ThrowawayCluster(workdir, components=("kube-controller-manager", "kwok-controller")).create()
    try:
        yield cluster
    finally:
        cluster.delete()
        shutil.rmtree(cluster.workdir, ignore_errors=True)
        print(f"kwokctl cluster {cluster.name} deleted; its logs are in {workdir}/")


def _healthz(op: OperatorProcess, body: dict | None = None) -> int:
    """The status of /healthz; its JSON into body if given."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=10) as r:
            if body is not None:
                body.update(json.loads(r.read()))
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(480)
def test_apiserver_restart_watches_recover_and_healthz_follows(own_cluster, tmp_path):
    c, ns = own_cluster, "faults"
    install_crd(c.kubectl)
    c.kubectl("create", "namespace", ns)
    op = OperatorProcess(c.kubeconfig, [ns], tmp_path / "operator.log", YOLO_OPERATOR_WATCH_GRACE_SECONDS=str(GRACE_S))
    try:
        op.start()
        apply(c.kubectl, ns, trainingjob("running", scheduling=NOWHERE), trainingjob("paused", suspend=True))
        pod = wait_for(lambda: c.kubectl("get", "pods", "-l", f"{LABEL}=running", "-o", "name", namespace=ns).stdout,
                       60, what="the pod of 'running'").strip().removeprefix("pod/")  # fmt: skip
        patch_pod_status(c.kubectl, ns, pod, RUNNING_POD_STATUS)  # the kubelet reports it running
        wait_phase(c.kubectl, ns, "running", "Staging", 60)
        wait_phase(c.kubectl, ns, "paused", "Suspended", 60)
        # health.py recognises kopf's real watcher tasks: TrainingJobs, Jobs and pods in the namespace
        # (kopf caches probe results for 10 s, the first ones from before the watchers started)
        body: dict[str, Any] = {}
        wait_for(lambda: _healthz(op, body) == 200 and body["watches"]["watchers"] >= 3, 30, interval=1,
                 what="/healthz to count the 3 watchers")  # fmt: skip

        # API server down: /healthz stays 200 within the grace period, then fails; the process lives on
        c.stop_apiserver()
        down = time.monotonic()
        assert _healthz(op) == 200, "a short outage must not fail the liveness probe"
        wait_for(lambda: _healthz(op) == 500, GRACE_S + 60, interval=1, what="/healthz to fail")
        unhealthy_s = time.monotonic() - down
        assert unhealthy_s > GRACE_S
        assert op.proc.poll() is None

        c.start_apiserver()
        up = time.monotonic()
        outage_s = up - down
        # Changes right after it is back, while kopf's watches are still reconnecting (its backoff is up to
        # 21 s): every one must reach a status through the resumed watches of pods, Jobs and TrainingJobs.
        terminate_pod(c.kubectl, ns, pod, 11, "DatasetInvalid: data.yaml not found")
        c.kubectl("patch", "tj", "paused", "--type=merge", "-p", '{"spec":{"suspend":false}}', namespace=ns)
        apply(c.kubectl, ns, trainingjob("after", suspend=True))
        wait_for(lambda: _healthz(op) == 200, 60, interval=1, what="/healthz to recover")
        healthy_s = time.monotonic() - up

        targets = {"running": "Failed", "paused": "Pending", "after": "Suspended"}
        reached: dict[str, float] = {}  # seconds after the API server was back

        def caught_up() -> bool:
            if "job" not in reached and get(c.kubectl, ns, "job", "after-train"):
                reached["job"] = time.monotonic() - up  # the operator saw the new TrainingJob
            for n, phase in targets.items():
                if n not in reached and status_of(c.kubectl, ns, n).get("phase") == phase:
                    reached[n] = time.monotonic() - up
            return len(reached) == len(targets) + 1

        try:
            wait_for(caught_up, 180, interval=0.5, what="statuses to catch up")
        except AssertionError as e:
            raise AssertionError(f"{e}; caught up so far: {reached}") from None
        assert condition(status_of(c.kubectl, ns, "running"), "Failed")["reason"] == "DatasetInvalid"
        assert get(c.kubectl, ns, "job", "paused-train")["spec"]["suspend"] is False
        assert status_of(c.kubectl, ns, "after")["jobName"] == "after-train"
        assert op.proc.poll() is None, "the operator was not restarted: its watches recovered by themselves"
        assert not re.search(r"Watcher for .* has failed", op.logs())  # kopf's message for a dead watcher
        print(
            f"FAULT-FIGURE apiserver-restart: kube-apiserver SIGKILLed for {outage_s:.0f} s (grace {GRACE_S} s): "
            f"/healthz 500 after {unhealthy_s:.1f} s down, 200 again {healthy_s:.1f} s after it was back; "
            f"changes made right after it was back reached the statuses after (s) "
            f"{ {k: round(v, 1) for k, v in reached.items()} } "
            "(job: the new TrainingJob's Job created); same process, watches resumed by themselves"
        )
    finally:
        op.stop()
        print("--- operator log (tail) ---\n" + op.logs()[-5000:])
