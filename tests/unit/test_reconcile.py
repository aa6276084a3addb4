"""The reconciler: decide (pure) on snapshots, and one controller reconcile against a fake API server."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from yolo_operator.api import reasons as R
from yolo_operator.controller.act import Controller
from yolo_operator.controller.build import ANNOTATION_MODEL, job_name
from yolo_operator.controller.decide import (
    CA_BUNDLE_RECHECK_SECONDS,
    WAIT_FOR_SOURCE_SECONDS,
    Snapshot,
    decide,
    decide_status,
)
from yolo_operator.controller.derive import job_view, pod_view, trainingjob_view
from yolo_operator.controller.kueue import kueue_unsupported, served_versions
from yolo_operator.runtime.config import OperatorConfig
from yolo_operator.runtime.indexes import Observed
from yolo_operator.runtime.kube import ApiError

pytestmark = pytest.mark.unit
NOW = "2026-01-01T00:00:00Z"
CONFIG = OperatorConfig(trainer_image="registry.invalid/trainer:test")


def body(name: str = "helmets", status: dict | None = None, **spec: Any) -> dict:
    base = {
        "model": {"hub": "yolov8n.pt"},
        "dataset": "s3://datasets/helmets/",
        "output": "s3://runs/",
        "s3": {"endpoint": "http://minio:9000", "credentialsSecretRef": {"name": "s3-keys"}},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": "yolo-operator.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "ns", "uid": "uid-tj", "generation": 1, "resourceVersion": "10"},
        "spec": base,
        "status": status or {},
    }


def snapshot(b: dict, **kw: Any) -> Snapshot:
    return Snapshot("ns", b["metadata"]["name"], trainingjob_view(b), body=b, now=NOW, **kw)


def made_job(b: dict, model: str | None = "yolov8n.pt", **spec: Any) -> dict:
    """A Job the operator made (the model annotation it writes); ``model=None``: one of the previous release,
    which wrote none and carried the model only in its trainer's configuration."""
    env = [{"name": "YOLO_TRAINER_CONFIG", "value": json.dumps({"model": "yolov8n.pt"})}]
    return job_view({
        "metadata": {"name": job_name(b["metadata"]["name"]), "namespace": "ns", "uid": "uid-job",
                     "ownerReferences": [{"uid": b["metadata"]["uid"]}],
                     "annotations": {ANNOTATION_MODEL: model} if model else {}},
        "spec": {"template": {"spec": {"containers": [{"name": "trainer", "env": env}]}}, "suspend": False, **spec},
    })  # fmt: skip


def recorded(b: dict) -> dict:
    return {**b["status"], "jobName": job_name(b["metadata"]["name"]), "model": "yolov8n.pt", "phase": R.PENDING}


def test_a_new_trainingjob_gets_its_rbac_then_its_job():
    plan = decide(snapshot(body()), CONFIG)
    assert [o["kind"] for o in plan.create] == ["ServiceAccount", "Role", "RoleBinding", "Job"]
    assert plan.model == "yolov8n.pt" and plan.status == {} and plan.requeue_after is None


def test_the_job_as_created_is_recorded_in_status():
    b = body()
    patch = decide_status(snapshot(b, job=made_job(b)))
    assert patch["jobName"] == "helmets-train" and patch["model"] == "yolov8n.pt" and patch["phase"] == R.PENDING
    types = {c["type"]: c["status"] for c in patch["conditions"]}
    assert types[R.JOB_CREATED] == "True" and types[R.MODEL_RESOLVED] == "True"


def test_a_job_is_recorded_even_while_the_pod_watch_lags_behind_it():
    """Under a burst the status that records the Job is written after its pod exists: the Job counts the pod
    before the pod watch shows it. The Job is recorded (jobName, Pending) and the rest follows the pod's event."""
    b = body()
    job = made_job(b)
    job["status"] = {"active": 1}
    patch = decide_status(snapshot(b, job=job))
    assert patch["jobName"] == "helmets-train" and patch["phase"] == R.PENDING and patch["model"] == "yolov8n.pt"
    recorded_already = body(status=recorded(b))
    assert decide_status(snapshot(recorded_already, job=job)) == {}  # recorded: nothing until the pod is seen


def test_a_job_of_the_previous_release_is_recorded_with_the_model_its_spec_resolves_to():
    """A Job made before the model annotation (the previous release) is adopted without reading its trainer's
    configuration: a hub/uri/yaml spec says the model; a fromTrainingJob one its source's weights."""
    b = body(model={"uri": "s3://models/base.pt"})
    assert decide_status(snapshot(b, job=made_job(b, model=None)))["model"] == "s3://models/base.pt"
    child = body(model={"fromTrainingJob": "prev"})
    prev = body("prev", status={"phase": R.SUCCEEDED, "artifacts": {"bestWeights": "s3://runs/ns/prev/u/weights/best.pt"}})
    assert decide_status(snapshot(child, job=made_job(child, model=None), source=prev))["model"] == (
        "s3://runs/ns/prev/u/weights/best.pt")  # fmt: skip
    assert decide_status(snapshot(child, job=made_job(child, model=None))) == {}  # the source not read yet


def test_a_recorded_job_in_sync_makes_an_empty_plan():
    b = body()
    s = snapshot(b, job=made_job(b))
    b["status"] = {**decide_status(s)}
    plan = decide(snapshot(b, job=made_job(b)), CONFIG)
    assert plan.idle and plan.requeue_after is None, plan


def test_an_invalid_spec_fails_for_good_with_a_warning():
    b = body(training={"epochs": "ten"})
    plan = decide(snapshot(b), CONFIG)
    assert plan.status["phase"] == R.FAILED and not plan.create
    conds = {c["type"]: c for c in plan.status["conditions"]}
    assert set(conds) == {R.COND_FAILED, R.COND_FINISHED}, conds  # Finished follows Failed (kubectl wait)
    for cond in conds.values():
        assert cond["reason"] == "InvalidSpec" and "spec.training.epochs" in cond["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    assert plan.requeue_after is None and not plan.status_must_land


def test_a_garbage_spec_fails_naming_spec():
    b = body()
    b["spec"] = "train me"
    plan = decide(snapshot(b), CONFIG)
    assert plan.status["phase"] == R.FAILED and "spec" in plan.status["conditions"][0]["message"]


def test_a_job_deleted_before_it_finished_fails_the_trainingjob():
    b = body(status={"jobName": "helmets-train", "model": "yolov8n.pt", "phase": R.TRAINING})
    plan = decide(snapshot(b), CONFIG)  # the controller confirmed with a GET
    assert plan.status["phase"] == R.FAILED and not plan.create
    assert ("Warning", R.REASON_JOB_DELETED) in [(e.type, e.reason) for e in plan.events]


def test_a_job_of_a_deleted_namesake_is_waited_for():
    b = body()
    other = made_job(b)
    other["metadata"]["ownerReferences"] = [{"uid": "someone-else"}]
    plan = decide(snapshot(b, job=other), CONFIG)
    assert plan.idle and plan.requeue_after == 5


def test_waiting_for_the_source_trainingjob_is_looked_at_again():
    b = body(model={"fromTrainingJob": "base"})
    plan = decide(snapshot(b), CONFIG)
    assert plan.status["phase"] == R.PENDING and not plan.create
    assert plan.status["conditions"][0]["reason"] == "SourceTrainingJobNotFound"
    assert [e.reason for e in plan.events] == [R.EVENT_WAITING_FOR_MODEL]
    assert plan.requeue_after == WAIT_FOR_SOURCE_SECONDS
    # the same reason again: no second event
    b["status"] = plan.status
    assert decide(snapshot(b), CONFIG).events == ()
    source = {"metadata": {"name": "base"}, "status": {"phase": R.SUCCEEDED, "artifacts": {"bestWeights": "s3://w.pt"}}}
    plan = decide(snapshot(b, source=source), CONFIG)
    assert plan.model == "s3://w.pt" and plan.create[-1]["kind"] == "Job"


def test_mutable_fields_follow_the_spec():
    b = body(status=recorded(body()), suspend=True, activeDeadlineSeconds=600)
    plan = decide(snapshot(b, job=made_job(b, suspend=False)), CONFIG)
    assert plan.job_patch == {"spec": {"activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": None, "suspend": True}}
    assert "JobUpdated" in [e.reason for e in plan.events]


def test_with_kueue_suspend_goes_to_the_workload_not_the_job():
    b = body(status=recorded(body()), suspend=True, queueName="q")
    workload = {"metadata": {"name": "job-helmets-train-x", "ownerReferences": []}, "spec": {"active": True}}
    plan = decide(snapshot(b, job=made_job(b, suspend=False), workload=workload), CONFIG)
    assert plan.job_patch is None
    assert plan.workload_patch == {"spec": {"active": False}}


def test_a_pending_trainingjob_with_a_ca_bundle_is_looked_at_again():
    ca = {"endpoint": "https://s3", "credentialsSecretRef": {"name": "k"}, "caBundle": {"name": "ca", "key": "ca.crt"}}
    b = body(s3=ca)
    b["status"] = recorded(b)
    plan = decide(snapshot(b, job=made_job(b)), CONFIG)
    assert plan.requeue_after == CA_BUNDLE_RECHECK_SECONDS
    b["status"].update(phase=R.TRAINING, stage=R.TRAINING)
    meta = {"name": "p", "ownerReferences": [{"uid": "uid-job"}]}
    running = pod_view({"metadata": meta, "status": {"phase": "Running"}})
    assert decide(snapshot(b, job=made_job(b), pods=(running,)), CONFIG).requeue_after is None


def test_another_instances_trainingjob_is_left_alone():
    b = body()
    b["metadata"]["labels"] = {"yolo-operator.io/operator-instance": "other"}
    assert decide(snapshot(b), CONFIG).idle


def test_a_job_whose_pod_the_api_server_refuses_is_stalled_with_its_message():
    b = body()
    b["status"] = recorded(b)
    refused = 'Error creating: pods "helmets-train-x" is forbidden: exceeded quota: q, requested: limits.cpu=4'
    plan = decide(snapshot(b, job=made_job(b), refused=refused), CONFIG)
    stalled = next(c for c in plan.status["conditions"] if c["type"] == R.STALLED)
    assert stalled["reason"] == R.REASON_POD_REFUSED and stalled["message"].endswith(refused)
    assert plan.status.get("phase", R.PENDING) == R.PENDING and not plan.create


# --- Kueue: the Workload version the cluster serves (read at start) ---------------------------------------------


def test_served_versions_come_from_the_api_group_discovery_document():
    group = {"kind": "APIGroup", "name": "kueue.x-k8s.io",
             "versions": [{"groupVersion": "kueue.x-k8s.io/v1beta1", "version": "v1beta1"}]}  # fmt: skip
    assert served_versions(group) == ("v1beta1",)
    assert served_versions(None) is None  # 404: no Kueue


@pytest.mark.parametrize(
    ("served", "refused"),
    [(None, False), (("v1beta2",), False), (("v1beta2", "v1beta1"), False), (("v1beta1",), True), ((), True)],
)
def test_only_a_kueue_without_v1beta2_is_refused(served, refused):
    why = kueue_unsupported(served)
    assert (why is not None) == refused
    if refused:
        assert "Kueue v0.15 or newer" in why and "kueue.x-k8s.io/v1beta2" in why
    if served == ("v1beta1",):
        assert "serves kueue.x-k8s.io/v1beta1" in why


def test_an_older_kueue_stalls_a_queued_trainingjob_without_creating_its_job():
    b = body(queueName="team-a")
    plan = decide(snapshot(b, kueue_served=("v1beta1",)), CONFIG)
    assert not plan.create and plan.status["phase"] == R.PENDING
    (stalled,) = plan.status["conditions"]
    assert (stalled["type"], stalled["status"]) == (R.STALLED, "True")
    assert stalled["reason"] == R.REASON_KUEUE_VERSION_UNSUPPORTED and "v1beta1" in stalled["message"]
    b["status"] = plan.status
    assert decide(snapshot(b, kueue_served=("v1beta1",)), CONFIG).idle  # said once


def test_without_kueue_or_without_queue_name_the_job_is_created_as_before():
    queued = decide(snapshot(body(queueName="team-a")), CONFIG)  # no Kueue: created suspended, shows Queued
    assert queued.create[-1]["kind"] == "Job" and queued.create[-1]["spec"]["suspend"] is True
    plain = decide(snapshot(body(), kueue_served=("v1beta1",)), CONFIG)
    assert plain.create[-1]["kind"] == "Job"
    current = decide(snapshot(body(queueName="team-a"), kueue_served=("v1beta2", "v1beta1")), CONFIG)
    assert current.create[-1]["kind"] == "Job"


# --- one reconcile against a fake API server ---------------------------------------------------------------


class FakeApi:
    """Answers the controller's requests as the API server would, and records them."""

    def __init__(self, tj: dict):
        self.tj = tj
        self.calls: list[tuple[str, str]] = []
        self.refuse_job: int | None = None
        self.in_flight: list[str] = []
        self.most_in_flight = 0

    async def create(self, path: str, obj: dict) -> dict:
        self.calls.append(("POST", path))
        self.in_flight.append(obj["kind"])
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        await asyncio.sleep(0)  # a round trip: other requests of the reconcile may start meanwhile
        self.in_flight.remove(obj["kind"])
        if obj["kind"] == "Job" and self.refuse_job:
            raise ApiError(self.refuse_job, "Invalid", json.dumps({"message": "affinity: Invalid value"}))
        return {**obj, "metadata": {**obj["metadata"], "uid": f"uid-{obj['kind']}"}}

    async def merge_patch(self, path: str, patch: dict) -> dict:
        self.calls.append(("PATCH", path))
        rv = str(int(self.tj["metadata"]["resourceVersion"]) + 1)
        self.tj = {**self.tj, "metadata": {**self.tj["metadata"], "resourceVersion": rv},
                   "status": {**self.tj["status"], **patch["status"]}}  # fmt: skip
        return self.tj

    async def get_or_none(self, path: str) -> dict | None:
        self.calls.append(("GET", path))
        return None

    async def close(self) -> None:
        pass


def reconcile_new(api_tj: dict, refuse_job: int | None = None) -> tuple[FakeApi, Controller]:
    api = FakeApi(api_tj)
    api.refuse_job = refuse_job
    c = Controller(CONFIG, api)  # type: ignore[arg-type]
    key = ("ns", api_tj["metadata"]["name"])
    c.observed = Observed(tj_idx={key: [trainingjob_view(api_tj)]}, body_idx={key: [api_tj]}, job_idx={},
                          pod_idx={}, overlay=c.overlay)  # type: ignore[arg-type]  # fmt: skip
    asyncio.run(c.reconcile(key))
    return api, c


def test_the_reconcile_that_creates_the_job_writes_the_status_that_records_it():
    api, c = reconcile_new(body())
    writes = [(m, p.rsplit("/", 2)[-2:] if m == "PATCH" else p.rsplit("/", 1)[-1]) for m, p in api.calls]
    assert writes[:4] == [("POST", "serviceaccounts"), ("POST", "roles"), ("POST", "rolebindings"),
                          ("POST", "jobs")]  # fmt: skip
    assert writes[4:6] == [("PATCH", ["helmets", "status"]), ("POST", "events")]  # JobCreated, once recorded
    assert api.most_in_flight == 3  # the RBAC side by side; the Job only once all three exist
    assert api.tj["status"]["jobName"] == "helmets-train" and api.tj["status"]["phase"] == R.PENDING
    # the next reconcile (the watch has not shown any of it yet) finds nothing to do, without a request
    n = len(api.calls)
    asyncio.run(c.reconcile(("ns", "helmets")))
    assert len(api.calls) == n


def test_under_a_burst_the_job_is_created_first_and_its_status_written_behind_the_waiting_keys():
    """Other TrainingJobs wait for their Jobs: this reconcile creates the Job and queues its key again, behind
    them, for the status that records it and the JobCreated event (create throughput under a burst); that next
    run writes both, once."""
    b = body()
    api = FakeApi(b)
    c = Controller(CONFIG, api)  # type: ignore[arg-type]
    key, other = ("ns", "helmets"), ("ns", "waiting")
    c.observed = Observed(tj_idx={key: [trainingjob_view(b)]}, body_idx={key: [b]}, job_idx={}, pod_idx={},
                          overlay=c.overlay)  # type: ignore[arg-type]  # fmt: skip

    async def burst() -> None:
        updated = ("ns", "only-a-status-update")
        c.queue.add(updated)
        await c.reconcile(key)  # a key waiting for an update only: not a burst of creations
        assert [m for m, _ in api.calls].count("PATCH") == 1
        c.observed = Observed(tj_idx={key: [trainingjob_view(b)]}, body_idx={key: [b]}, job_idx={}, pod_idx={},
                              overlay=c.overlay)  # type: ignore[arg-type]  # fmt: skip
        c.overlay.forget(*key)
        api.calls.clear()
        api.tj = b
        c.queue.add(other, first=True)
        await c.reconcile(key)
        assert [m for m, _ in api.calls] == ["POST"] * 4  # no status, no event yet
        assert [p.rsplit("/", 1)[-1] for _, p in api.calls] == ["serviceaccounts", "roles", "rolebindings", "jobs"]
        assert c.queue.waiting(key) and list(c.queue._first) == [other] and list(c.queue._ready) == [updated, key]
        c.queue._first.clear()
        c.queue._ready.clear()
        c.queue._queued.clear()
        api.calls.clear()
        await c.reconcile(key)  # its turn, nothing else waiting: the status that records the Job, no second Job

    asyncio.run(burst())
    # the RBAC that came with the Job is not made sure of again
    assert [(m, p.rsplit("/", 1)[-1]) for m, p in api.calls] == [("PATCH", "status"), ("POST", "events")]
    assert api.tj["status"]["jobName"] == "helmets-train" and api.tj["status"]["phase"] == R.PENDING
    assert not c.deferred_events and not c.children_made


def test_a_job_of_the_previous_release_is_adopted_with_its_fromtrainingjob_sources_weights():
    """The previous release wrote no model annotation on its Jobs: one made just before the upgrade, not yet
    recorded in status, is adopted with the model its spec resolves to (the source is read), not with what its
    trainer's configuration says."""
    best = "s3://runs/ns/prev/uid-prev/weights/best.pt"
    prev = body("prev", status={"phase": R.SUCCEEDED, "artifacts": {"bestWeights": best}})

    class WithSource(FakeApi):
        async def get_or_none(self, path: str) -> dict | None:
            self.calls.append(("GET", path))
            return copy.deepcopy(prev) if path.endswith("/trainingjobs/prev") else None

    b = body(model={"fromTrainingJob": "prev"})
    api = WithSource(b)
    c = Controller(CONFIG, api)  # type: ignore[arg-type]
    key = ("ns", "helmets")
    c.observed = Observed(tj_idx={key: [trainingjob_view(b)]}, body_idx={key: [b]},
                          job_idx={key: [made_job(b, model=None)]}, pod_idx={},
                          overlay=c.overlay)  # type: ignore[arg-type]  # fmt: skip
    asyncio.run(c.reconcile(key))
    assert ("GET", "/apis/yolo-operator.io/v1alpha1/namespaces/ns/trainingjobs/prev") in api.calls
    assert not [p for m, p in api.calls if m == "POST" and p.endswith("/jobs")]  # adopted, not made again
    assert api.tj["status"]["jobName"] == "helmets-train" and api.tj["status"]["model"] == best


def test_a_job_the_api_server_refuses_fails_the_trainingjob():
    api, _ = reconcile_new(body(), refuse_job=422)
    assert api.tj["status"]["phase"] == R.FAILED
    assert "the API server refused the Job" in api.tj["status"]["conditions"][0]["message"]


def test_a_status_write_that_lost_a_race_is_decided_again_from_a_fresh_read():
    class Racing(FakeApi):
        conflicts = 1

        async def merge_patch(self, path: str, patch: dict) -> dict:
            if self.conflicts:
                self.conflicts -= 1
                self.calls.append(("PATCH", path))
                self.tj = {**self.tj, "metadata": {**self.tj["metadata"], "resourceVersion": "11"}}  # the trainer
                raise ApiError(409, "Conflict", "{}")
            return await super().merge_patch(path, patch)

        async def get_or_none(self, path: str) -> dict | None:
            self.calls.append(("GET", path))
            return copy.deepcopy(self.tj) if "/trainingjobs/" in path else None

    b = body()
    api = Racing(b)
    c = Controller(CONFIG, api)  # type: ignore[arg-type]
    key = ("ns", "helmets")
    c.observed = Observed(tj_idx={key: [trainingjob_view(b)]}, body_idx={key: [b]}, job_idx={}, pod_idx={},
                          overlay=c.overlay)  # type: ignore[arg-type]  # fmt: skip
    asyncio.run(c.reconcile(key))
    jobs = [p for m, p in api.calls if m == "POST" and p.endswith("/jobs")]
    assert len(jobs) == 1  # the Job made by the first attempt is adopted by the second, not made again
    assert api.tj["status"]["jobName"] == "helmets-train" and api.tj["metadata"]["resourceVersion"] == "12"
    # its JobCreated event, kept across the conflict, is posted once, after the status that landed
    writes = [m for m, p in api.calls if (m == "POST" and p.endswith("/events")) or m == "PATCH"]
    assert writes[-2:] == ["PATCH", "POST"]
    assert len([p for _, p in api.calls if p.endswith("/events")]) == 1 and not c.deferred_events


def test_the_served_kueue_versions_are_read_at_start():
    class Discovery(FakeApi):
        group: dict | None = {"versions": [{"groupVersion": "kueue.x-k8s.io/v1beta1", "version": "v1beta1"}]}

        async def get_or_none(self, path: str) -> dict | None:
            self.calls.append(("GET", path))
            return self.group

    api = Discovery(body())
    c = Controller(CONFIG, api)  # type: ignore[arg-type]
    asyncio.run(c.detect_kueue())
    assert c.kueue_served == ("v1beta1",) and api.calls == [("GET", "/apis/kueue.x-k8s.io")]
    api.group = None
    asyncio.run(c.detect_kueue())
    assert c.kueue_served is None
