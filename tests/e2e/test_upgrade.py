"""`helm upgrade` of the operator while TrainingJobs train, on the bed's real node.

The previous release (PREVIOUS_RELEASE in hack/versions.env, the commit before the level-triggered reconciler;
hack/previous-release.sh exports its chart and builds its operator image) is installed with its own chart and CRD;
two TrainingJobs train under it; once both report an epoch, today's chart is applied with `helm upgrade`. The
trainer pods go on untouched (same pods, no restart, same Jobs), the CRD is today's and the stored TrainingJobs read
back with the spec they had, a TrainingJob created while no operator ran gets its Job from the new one, and the new
operator takes both training jobs to Succeeded (the Finished condition is written only by today's code).
Prints UPGRADE-FIGURE lines (docs/install.md, "Upgrading").
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from yolo_dev import testbed
from yolo_dev.stack import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, REAL_NODE_PLACEMENT, RELEASE, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

TRAINING = ("upgrade-a", "upgrade-b")
PROBE = "upgrade-probe"
CRD_NAME = "trainingjobs.yolo-operator.io"
# Never reached: each job trains until spec.stop (set once the new operator has shown it runs them), so the
# upgrade falls inside training however fast or slow the bed is.
EPOCHS = 100


def previous_release(what: str) -> str:
    """hack/previous-release.sh WHAT (build/import: once per pinned commit, then seconds). Tried three times: on a
    shared machine another checkout's hack/images.sh may stop the dockerd this one is using."""
    for _ in range(3):
        proc = subprocess.run([str(testbed.ROOT / "hack" / "previous-release.sh"), what], capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        if proc.returncode == 0:
            return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        print(f"hack/previous-release.sh {what} failed:\n{proc.stderr}")
        time.sleep(5)
    raise AssertionError(f"hack/previous-release.sh {what} failed:\n{proc.stdout}\n{proc.stderr}")


def placement_values(namespace: str) -> list[str]:
    settings = {"watchNamespaces": [namespace], **REAL_NODE_PLACEMENT}
    return [a for k, v in settings.items() for a in ("--set-json", f"{k}={json.dumps(v)}")]


def crd_schema(crd: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """The CRD's schemas flattened: {(version, key, key, ...): leaf value (lists whole)}."""
    flat: dict[tuple[str, ...], Any] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, (*path, k))
        else:
            flat[path] = node

    for v in crd["spec"]["versions"]:
        walk(v["schema"]["openAPIV3Schema"], (v["name"],))
    return flat


_ABSENT = object()


def assert_crd_is(live: dict[str, Any], wanted: dict[str, Any], other: dict[str, Any], what: str) -> None:
    """The live CRD has all of ``wanted``'s schema and nothing of ``other``'s that ``wanted`` lacks. Other fields
    are tolerated: on the shared bed other checkouts `kubectl apply` their own CRD now and then."""
    have, want, unwanted = crd_schema(live), crd_schema(wanted), crd_schema(other)
    missing = sorted("/".join(p) for p, v in want.items() if have.get(p, _ABSENT) != v)
    left = sorted("/".join(p) for p, v in unwanted.items() if want.get(p, _ABSENT) != v and have.get(p) == v)
    assert not missing and not left, f"the CRD is not {what}'s: lacks {missing[:10]}, still has {left[:10]}"
    extra = sorted("/".join(p) for p in have.keys() - want.keys())
    if extra:
        print(f"the CRD also has {extra[:5]} (another checkout's CRD applied on the shared bed)")


def start_from_the_previous_crd(stack: Stack, old_crd: dict[str, Any]) -> None:
    """The CRD exactly as the previous release ships it, owned by the release, before that release is installed:
    on a shared bed it may already exist (today's, from another test's chart or `kubectl apply`), and helm would
    only merge the old schema into it. Replaced whole (PUT), with helm's ownership so the install adopts it."""
    live = stack.kubectl("get", "crd", CRD_NAME, "-o", "json", check=False)
    if live.returncode:
        return  # the previous chart creates it
    crd = json.loads(json.dumps(old_crd))
    meta = crd["metadata"]
    meta["resourceVersion"] = json.loads(live.stdout)["metadata"]["resourceVersion"]
    meta.setdefault("annotations", {}).update(
        {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": OPERATOR_NAMESPACE}
    )
    meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
    stack.kubectl("replace", "-f", "-", input=json.dumps(crd))


class StatusLog:
    """Every change of the namespace's TrainingJobs (a watch, so none is missed), with when it was seen."""

    def __init__(self, namespace: str):
        from kubernetes import client, config

        self.namespace = namespace
        self.changes: list[tuple[float, str, dict[str, Any]]] = []  # (monotonic time, name, status)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(testbed.KUBECONFIG)))
        self.resource_version = self._list()["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _list(self, **kwargs):
        return self.api.list_namespaced_custom_object("yolo-operator.io", "v1alpha1", self.namespace, "trainingjobs",
                                                      **kwargs)  # fmt: skip

    def _watch(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            try:
                # _request_timeout: a connection the API server's restart left hanging would block forever
                for event in watch.Watch().stream(self._list, resource_version=self.resource_version,
                                                  timeout_seconds=2, _request_timeout=10):  # fmt: skip
                    obj = event["object"]
                    self.resource_version = obj["metadata"]["resourceVersion"]
                    self.changes.append((time.monotonic(), obj["metadata"]["name"], obj.get("status") or {}))
            except Exception as e:  # the API server restarting is not this test's subject: watch again
                self.errors.append(f"{type(e).__name__} {getattr(e, 'status', '')} {getattr(e, 'reason', '')}")
                time.sleep(0.5)
                try:  # 410 Gone (the version expired), or any failure: go on from a fresh list
                    listed = self._list()
                    now = time.monotonic()
                    for obj in listed["items"]:
                        self.changes.append((now, obj["metadata"]["name"], obj.get("status") or {}))
                    self.resource_version = listed["metadata"]["resourceVersion"]
                except Exception as again:  # the API server is still away
                    self.errors.append(f"{type(again).__name__} {getattr(again, 'status', '')}")

    def largest_gap_figure(self, names: tuple[str, ...], start: float, end: float) -> str:
        gap = max(self.largest_gap(n, start, end) for n in names)
        failed = f" (the watch failed {len(self.errors)} times: {self.errors[-1]})" if self.errors else ""
        return f"{gap:.1f} s{failed}"

    def largest_gap(self, name: str, start: float, end: float) -> float:
        """The longest time without a status change of ``name`` that overlaps [start, end]."""
        times = [t for t, n, _ in self.changes if n == name]
        before = [t for t in times if t <= start][-1:]
        after = [t for t in times if t >= end][:1]
        inside = sorted(before + [t for t in times if start < t < end] + after)
        return max((b - a for a, b in itertools.pairwise(inside)), default=end - start)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def startup_times(log: str) -> str:
    """When the operator's log says it began, fell back from listing namespaces (kopf retries the 403 of a
    namespaced install for about a minute first) and first reconciled."""
    marks = {"first line": lambda line: True,
             "namespace listing given up": lambda line: "Not enough permissions to list namespaces" in line,
             "first reconcile": lambda line: " ensure: " in line}  # fmt: skip
    found = {}
    for what, match in marks.items():
        line = next((line for line in log.splitlines() if match(line)), "")
        found[what] = line[:23] or "never"
    return ", ".join(f"{k} {v}" for k, v in found.items())


def epochs(stack: Stack, namespace: str) -> dict[str, int]:
    """The training jobs' status.progress.epoch, read now."""
    tjs = {t["metadata"]["name"]: t for t in stack.get("tj", "-n", namespace)["items"]}
    return {n: ((tjs.get(n, {}).get("status") or {}).get("progress") or {}).get("epoch") or 0 for n in TRAINING}


def restarts(pod: dict[str, Any]) -> set[int]:
    return {c.get("restartCount", 0) for c in (pod.get("status") or {}).get("containerStatuses") or []}


def unexplained(before: Any, after: Any, schema: dict[str, Any] | None, path: str = "spec") -> list[str]:
    """How ``after`` differs from ``before`` beyond fields the new ``schema`` defaults: a stored object read
    through an upgraded CRD gains those, and must keep everything else as it was."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [] if before == after else [f"{path}: {before!r} -> {after!r}"]
    props = (schema or {}).get("properties") or {}
    out = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            out.append(f"{path}.{key} lost")
        elif key not in before:
            if "default" not in (props.get(key) or {}):
                out.append(f"{path}.{key} added without a default in the new schema: {after[key]!r}")
        else:
            out += unexplained(before[key], after[key], props.get(key), f"{path}.{key}")
    return out


def snapshot(stack: Stack, namespace: str) -> dict[str, Any]:
    """What must not change across the upgrade: the TrainingJobs' specs, their Jobs and the trainer pods."""
    snap: dict[str, Any] = {"tj": {}, "jobs": {}, "pods": {}}
    for t in stack.get("tj", "-n", namespace)["items"]:
        snap["tj"][t["metadata"]["name"]] = {"uid": t["metadata"]["uid"], "spec": t["spec"]}
    for j in stack.get("jobs", "-n", namespace)["items"]:
        meta = j["metadata"]
        snap["jobs"][meta["name"]] = {"uid": meta["uid"], "generation": meta["generation"],
                                      "template": j["spec"]["template"]}  # fmt: skip
    for p in stack.get("pods", "-n", namespace)["items"]:
        snap["pods"][p["metadata"]["name"]] = {"uid": p["metadata"]["uid"], "restarts": restarts(p)}
    return snap


def test_helm_upgrade_from_the_previous_release_while_jobs_train(bed, real_node, namespace):
    stack = Stack()
    ns = namespace
    # -- the previous release: its chart, its operator image (built once per pinned commit), its CRD --------
    t0 = time.monotonic()
    previous_release("import")
    old_chart = Path(previous_release("chart"))
    old_image = previous_release("image")
    print(f"UPGRADE-FIGURE previous release {old_image} built (or found) and on the node in "
          f"{time.monotonic() - t0:.1f} s")  # fmt: skip
    old_crd = yaml.safe_load(stack.run("helm", "template", RELEASE, str(old_chart), "--namespace", OPERATOR_NAMESPACE,
                                       "--show-only", "templates/crd.yaml").stdout)  # fmt: skip
    new_crd = yaml.safe_load((testbed.ROOT / "charts/yolo-operator/files/crd/trainingjobs.yaml").read_text())
    assert crd_schema(old_crd) != crd_schema(new_crd), "the previous release's CRD is today's: nothing to upgrade"
    start_from_the_previous_crd(stack, old_crd)
    stack.run(
        "helm", "upgrade", "--install", RELEASE, str(old_chart), "--namespace", OPERATOR_NAMESPACE,
        "--create-namespace", "--wait", "--timeout", "3m", *placement_values(ns),
        "--set-json", f"operator.image.tag={json.dumps(old_image.rsplit(':', 1)[1])}",
        "--set-json", 'trainer={"offline": true}',
    )  # fmt: skip
    stack.kubectl("rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE, "--timeout=180s")
    old_pod = stack.operator_pod()
    assert old_pod["spec"]["containers"][0]["image"] == old_image
    assert_crd_is(stack.get("crd", CRD_NAME), old_crd, new_crd, "the previous release")

    # -- two TrainingJobs train under it --------------------------------------------------------------------
    stack.s3_secret(ns)
    bucket = f"upgrade-{ns}"
    dataset = stack.upload_dataset(bucket, "datasets/shapes", images=16)
    status_log = StatusLog(ns)
    try:
        for name in TRAINING:
            tj = stack.training_job(name, dataset, f"s3://{bucket}/runs/", epochs=EPOCHS)
            # On CPU: today's trainer refuses a GPU it cannot see, and the previous chart cannot simulate one.
            # Two such pods share the node's 2 cores.
            tj["spec"]["resources"].update(gpus=0, cpu="500m")
            stack.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(tj))
        stack.wait(lambda: all(e >= 1 for e in epochs(stack, ns).values()), 600, interval=1,
                   what="both TrainingJobs to report epoch 1 under the previous operator")  # fmt: skip
        before = snapshot(stack, ns)
        assert len(before["jobs"]) == 2 and len(before["pods"]) == 2, before
        epoch_at_upgrade = epochs(stack, ns)

        # -- helm upgrade to today's chart and image; a TrainingJob created while the operator is down ------
        upgrade_start = time.monotonic()
        upgrade_error: list[BaseException] = []

        def helm_upgrade() -> None:
            try:
                stack.install_chart([ns])  # helm upgrade --install of today's chart, then the rollout's status
            except BaseException as e:  # asserted by the test's thread
                upgrade_error.append(e)

        upgrade = threading.Thread(target=helm_upgrade, daemon=True)
        upgrade.start()

        def old_operator_running() -> bool:
            pods = stack.get("pods", "-n", OPERATOR_NAMESPACE)["items"]
            return any(p["metadata"]["uid"] == old_pod["metadata"]["uid"] for p in pods)  # terminating counts

        stack.wait(lambda: not old_operator_running(), 180, interval=0.3, what="the previous operator to stop")
        old_gone = time.monotonic()
        probe = stack.training_job(PROBE, dataset, f"s3://{bucket}/runs/", epochs=1, suspend=True)
        probe["spec"]["resources"].update(gpus=0, cpu="500m")
        stack.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(probe))
        probe_created = time.monotonic()
        upgrade.join(300)
        assert not upgrade.is_alive(), "helm upgrade did not finish in 5 min"
        upgrade_end = time.monotonic()
        new_pod = stack.operator_pod()
        assert new_pod["metadata"]["uid"] != old_pod["metadata"]["uid"]
        assert not upgrade_error, upgrade_error
        # Today's image as install_chart names it: by digest from the bed's registry, else the default tag.
        assert new_pod["spec"]["containers"][0]["image"] == stack.operator_image()
        # The new operator reconciles only once kopf gave up listing namespaces (about a minute in a namespaced
        # install) after Python started: over 3 min on the shared 2-core bed under load.
        stack.wait(lambda: stack.get("tj", PROBE, "-n", ns).get("status", {}).get("jobName"), 600, interval=0.3,
                   what="the TrainingJob created during the upgrade to get its Job")  # fmt: skip
        probe_job = time.monotonic()

        # -- the CRD is today's; the stored TrainingJobs read back as they were ----------------------------
        assert_crd_is(stack.get("crd", CRD_NAME), new_crd, old_crd, "today's chart")
        after = snapshot(stack, ns)
        spec_schema = new_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        for name in TRAINING:
            b, a = before["tj"][name], after["tj"][name]
            assert a["uid"] == b["uid"], (name, b, a)
            # Read through the new schema, a stored object gains the new fields' defaults (the API server fills
            # them in on read); nothing it held changes or goes.
            assert not unexplained(b["spec"], a["spec"], spec_schema), (name, unexplained(b["spec"], a["spec"],
                                                                                          spec_schema), b, a)
        # The same Jobs (not recreated, not patched) and the same pods, never restarted; the probe's Job is new
        # and suspended (no pod).
        assert {k: v for k, v in after["jobs"].items() if k in before["jobs"]} == before["jobs"]
        assert len(after["jobs"]) == 3, sorted(after["jobs"])
        assert after["pods"].keys() == before["pods"].keys(), (sorted(before["pods"]), sorted(after["pods"]))
        for name, pod in after["pods"].items():
            assert pod["uid"] == before["pods"][name]["uid"] and pod["restarts"] == {0}, (name, pod)

        # -- training goes on and the new operator runs it to the end -----------------------------------
        stack.wait(lambda: all(e > epoch_at_upgrade[n] for n, e in epochs(stack, ns).items()), 600, interval=1,
                   what="both TrainingJobs to report a later epoch after the upgrade")  # fmt: skip
        epoch_after = epochs(stack, ns)
        for name in TRAINING:
            stack.kubectl("patch", "tj", name, "-n", ns, "--type=merge", "-p", '{"spec": {"stop": true}}')

        def finished(name):
            status = stack.get("tj", name, "-n", ns).get("status", {})
            return status if status.get("phase") in ("Succeeded", "Failed") else None

        final = {n: stack.wait(lambda n=n: finished(n), 600, interval=1, what=f"{n} to finish") for n in TRAINING}
    finally:
        status_log.close()
    for name, status in final.items():
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        conditions = {c["type"]: c for c in status["conditions"]}
        # Finished is written only by today's operator (the previous release has no such condition).
        assert conditions["Finished"]["status"] == "True", status["conditions"]
        assert conditions["Succeeded"]["reason"] == "StopRequested", status["conditions"]
        assert status["progress"]["epoch"] >= epoch_after[name] > epoch_at_upgrade[name], status["progress"]
    end = snapshot(stack, ns)
    for name, pod in end["pods"].items():
        assert pod["uid"] == before["pods"][name]["uid"] and pod["restarts"] == {0}, (name, pod)
    log = stack.operator_log()
    assert all(f"{ns}/{n} ensure" in log for n in (*TRAINING, PROBE)), log[-3000:]
    started = new_pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    print(f"UPGRADE-FIGURE the new operator's container started {started}; its log: {startup_times(log)}")

    gap = status_log.largest_gap_figure(TRAINING, upgrade_start, upgrade_end)
    print(f"UPGRADE-FIGURE helm upgrade (--wait, today's chart and image) took {upgrade_end - upgrade_start:.1f} s; "
          f"the previous operator stopped {old_gone - upgrade_start:.1f} s into it")  # fmt: skip
    print(f"UPGRADE-FIGURE a TrainingJob created while no operator ran got its Job {probe_job - probe_created:.1f} s "
          f"later ({probe_job - old_gone:.1f} s after the previous operator stopped)")  # fmt: skip
    print(f"UPGRADE-FIGURE longest gap in the training jobs' status updates across the upgrade: {gap} "
          "(the trainers write progress themselves)")  # fmt: skip
    at_end = {n: s["progress"]["epoch"] for n, s in final.items()}
    print(f"UPGRADE-FIGURE epochs at the upgrade {epoch_at_upgrade}, after it {epoch_after}, at the end {at_end}; "
          "trainer pods restarted: 0, Jobs recreated: 0")  # fmt: skip
