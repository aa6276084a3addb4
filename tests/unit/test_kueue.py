"""controller/kueue.py: the Job labels Kueue reads, the Workload's owner, and its conditions -> status pieces.

served_versions, kueue_unsupported (test_reconcile), workload_active_patch (test_builders), workload_view and
the Queued phase as derive_status writes it (test_status) have their tests beside their callers."""

from __future__ import annotations

import pytest
from yolo_operator.api import reasons as R
from yolo_operator.controller import kueue

pytestmark = pytest.mark.unit


def wl(*conds: tuple[str, str, str, str], **status) -> dict:
    return {
        "metadata": {"name": "job-helmets-train-1", "ownerReferences": [
            {"kind": "Job", "name": "helmets-train", "uid": "j1"}, {"kind": "Other", "name": "x", "uid": "o"}]},
        "status": {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds],
                   **status},
    }  # fmt: skip


def test_the_job_carries_the_queue_and_starts_suspended_only_with_a_queue():
    assert kueue.job_labels("gpu-queue") == {"kueue.x-k8s.io/queue-name": "gpu-queue"}
    assert kueue.job_labels(None) == {} and kueue.job_labels("") == {}
    assert kueue.suspended_at_creation(False, "gpu-queue") is True
    assert kueue.suspended_at_creation(True, None) is True and kueue.suspended_at_creation(False, None) is False
    assert kueue.is_kueue_label(kueue.LABEL_KUEUE_PRIORITY) and not kueue.is_kueue_label("team")


def test_a_workloads_jobs_are_its_job_owner_references():
    assert kueue.workload_jobs(wl()) == [{"kind": "Job", "name": "helmets-train", "uid": "j1"}]
    assert kueue.workload_jobs({"metadata": {}}) == []


def test_kueue_status_shows_the_newest_thing_kueue_says():
    assert kueue.kueue_status(None) is None
    assert kueue.kueue_status(wl())["reason"] == "Pending"  # not considered yet
    admitted = wl(("QuotaReserved", "True", "QuotaReserved", "ok"), ("Admitted", "True", "Admitted", "in"),
                  admission={"clusterQueue": "gpus"})  # fmt: skip
    assert kueue.kueue_status(admitted) == {"workload": "job-helmets-train-1", "admitted": True,
                                            "reason": "Admitted", "message": "in", "clusterQueue": "gpus"}  # fmt: skip
    long = wl(("QuotaReserved", "False", "Pending", "x" * 5000))
    assert len(kueue.kueue_status(long)["message"]) == kueue.MAX_KUEUE_MESSAGE


def test_the_status_patch_nulls_what_kueue_no_longer_says_and_is_none_when_unchanged():
    now = {"workload": "w", "admitted": False, "reason": "Pending"}
    stored = {"workload": "w", "admitted": True, "reason": "Admitted", "clusterQueue": "gpus"}
    patch = kueue.kueue_status_patch(now, stored)
    assert patch["clusterQueue"] is None and patch["admitted"] is False and set(patch) == set(kueue.KUEUE_KEYS)
    assert kueue.kueue_status_patch(now, {**now, "clusterQueue": None}) is None
    assert kueue.kueue_status_patch(None, stored) is None


def test_the_queued_condition_names_the_queue_and_a_preemption():
    pending = wl(("QuotaReserved", "False", "Pending", "no quota"))
    reason, message = kueue.queued_condition("q", kueue.kueue_status(pending), pending)
    assert reason == R.REASON_QUEUED and message == "waiting for Kueue to admit it to queue q: Pending: no quota"
    evicted = wl(("Evicted", "True", "Preempted", "for another"))
    assert kueue.kueue_preempted(evicted)
    reason, message = kueue.queued_condition("q", kueue.kueue_status(evicted), evicted)
    assert reason == R.REASON_PREEMPTED and message.startswith("preempted by Kueue and requeued to queue q")
    assert kueue.queued_condition("q", None, None) == (R.REASON_QUEUED, "waiting for Kueue to admit it to queue q")
