"""The overlay of the operator's own status writes on its TrainingJob index (yolo_operator.runtime.indexes)."""

from __future__ import annotations

import asyncio

import pytest
from yolo_operator.runtime.indexes import (
    MAX_REFUSAL_MESSAGE,
    Observed,
    Overlay,
    is_pod_refusal,
    refusal_index,
    refusal_view,
)

pytestmark = pytest.mark.unit
NS, NAME = "ns", "tj"


def tj(rv: str, **status) -> dict:
    return {
        "apiVersion": "yolo-operator.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": NAME, "namespace": NS, "uid": "u1", "resourceVersion": rv},
        "spec": {},
        "status": status,
    }


@pytest.fixture
def overlay() -> Overlay:
    return Overlay()


def seen(overlay: Overlay, index_view: dict | None) -> dict | None:
    """What the controller reads while the watch (the index) shows ``index_view``."""
    index = {(NS, NAME): [index_view]} if index_view else {}
    got = Observed(tj_idx=index, overlay=overlay).trainingjob(NS, NAME)  # type: ignore[arg-type]
    return got and {"rv": got["metadata"]["resourceVersion"], **got["status"]}


def test_our_write_is_read_until_the_watch_shows_it(overlay):
    overlay.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    assert seen(overlay, tj("10", phase="Pending")) == {"rv": "11", "phase": "Staging"}
    assert seen(overlay, tj("11", phase="Staging")) == {"rv": "11", "phase": "Staging"}
    assert seen(overlay, tj("10", phase="Pending")) == {"rv": "10", "phase": "Pending"}  # overlay gone once confirmed


def test_a_later_write_by_the_trainer_is_not_hidden_by_our_older_one(overlay):
    # kopf batches watch events: the index may go from our base straight to the trainer's next patch,
    # never showing our write's own resourceVersion. The trainer's stage must show through.
    overlay.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    got = seen(overlay, tj("12", phase="Staging", stage="Training"))
    assert got == {"rv": "12", "phase": "Staging", "stage": "Training"}


def test_writes_on_top_of_unseen_writes_stay_until_the_watch_gets_past_all_of_them(overlay):
    overlay.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    overlay.wrote(NS, NAME, tj("12", phase="Training"), based_on="11")
    assert seen(overlay, tj("10"))["rv"] == "12"
    assert seen(overlay, tj("11", phase="Staging"))["rv"] == "12"
    assert seen(overlay, tj("13", phase="Training", stage="Uploading"))["rv"] == "13"


def test_a_write_based_on_a_fresh_get_forgets_older_unseen_writes(overlay):
    overlay.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    overlay.wrote(NS, NAME, tj("21", phase="Training"), based_on="20")  # after a 409 and a GET
    assert seen(overlay, tj("20"))["rv"] == "21"
    # not a predecessor of the write: the overlay is dropped, at worst a 409
    assert seen(overlay, tj("11"))["rv"] == "11"


def test_a_created_job_is_seen_until_the_index_shows_it(overlay):
    job = {"metadata": {"name": "tj-train", "namespace": NS, "uid": "j1", "ownerReferences": [{"uid": "u1"}]}}
    overlay.created_job(NS, NAME, job)
    assert Observed(job_idx={}, overlay=overlay).job(NS, NAME, "u1")["metadata"]["uid"] == "j1"  # type: ignore[arg-type]
    indexed = {(NS, NAME): [{**job, "status": {"active": 1}}]}
    assert Observed(job_idx=indexed, overlay=overlay).job(NS, NAME, "u1")["status"] == {"active": 1}  # type: ignore[arg-type]
    assert not overlay.created  # the watch caught up: the overlay is gone
    overlay.created_job(NS, NAME, job)
    overlay.forget(NS, NAME)
    assert Observed(job_idx={}, overlay=overlay).job(NS, NAME, "u1") is None  # type: ignore[arg-type]


def test_a_trainingjob_the_index_no_longer_has_is_gone_with_its_overlay(overlay):
    # a reconcile that wrote after the DELETED event must not keep the TrainingJob alive in the overlay
    overlay.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    overlay.created_job(NS, NAME, {"metadata": {"name": "tj-train", "uid": "j1", "ownerReferences": [{"uid": "u1"}]}})
    assert seen(overlay, None) is None
    assert not overlay.written and not overlay.created


def test_a_created_job_of_a_deleted_namesake_is_dropped(overlay):
    overlay.created_job(NS, NAME, {"metadata": {"name": "tj-train", "uid": "j1", "ownerReferences": [{"uid": "u1"}]}})
    assert Observed(job_idx={}, overlay=overlay).job(NS, NAME, "u2") is None  # type: ignore[arg-type]
    assert not overlay.created


# --- FailedCreate Events of the operator's Jobs (refusal_index) ------------------------------------------------


def failed_create(message: str, when: str, uid: str = "uid-job", kind: str = "Job") -> dict:
    return {
        "metadata": {"name": "helmets-train.1", "creationTimestamp": when},
        "involvedObject": {"kind": kind, "name": "helmets-train", "uid": uid},
        "reason": "FailedCreate",
        "message": message,
        "lastTimestamp": when,
    }


def test_only_a_jobs_failed_create_event_is_a_pod_refusal():
    assert is_pod_refusal(failed_create("quota", "t"))
    assert not is_pod_refusal(failed_create("quota", "t", kind="ReplicaSet"))
    assert not is_pod_refusal({**failed_create("x", "t"), "reason": "SuccessfulCreate"})


def test_the_newest_refusal_of_the_jobs_own_uid_is_read():
    key = ("ns", "helmets")
    views = [refusal_view(failed_create("old quota", "2026-01-01T00:00:01Z")),
             refusal_view(failed_create("new quota", "2026-01-01T00:00:09Z")),
             refusal_view(failed_create("a namesake's", "2026-01-01T00:01:00Z", uid="uid-gone"))]  # fmt: skip
    obs = Observed(refusal_idx={key: views})  # type: ignore[arg-type]
    assert obs.refusal("ns", "helmets", "uid-job") == "new quota"
    assert obs.refusal("ns", "helmets", "uid-other") is None
    assert Observed().refusal("ns", "helmets", "uid-job") is None  # no index yet


def test_a_refusal_is_kept_small():
    view = refusal_view(failed_create("x" * 100_000, "t"))
    assert len(view["message"]) == MAX_REFUSAL_MESSAGE and set(view) == {"uid", "time", "message"}


def test_only_the_refusals_of_this_instances_jobs_are_indexed():
    job_idx = {("ns", "helmets"): [{"metadata": {"name": "helmets-train", "uid": "uid-job"}}]}
    ours = asyncio.run(refusal_index(body=failed_create("q", "t"), namespace="ns", job_index=job_idx))
    assert ours == {("ns", "helmets"): refusal_view(failed_create("q", "t"))}
    theirs = failed_create("q", "t", uid="uid-not-ours")
    assert asyncio.run(refusal_index(body=theirs, namespace="ns", job_index=job_idx)) == {}
