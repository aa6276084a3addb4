"""What the reconciler reads from a TrainingJob before it validates it runs on every event of every object, so
it must not raise on a stored object of the wrong shape: that would keep the object's validation from ever
running (tests/fault/test_stored_garbage.py saw no InvalidSpec for a string spec)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from yolo_operator.api import reasons as R
from yolo_operator.controller.decide import waiting_on_ca_bundle
from yolo_operator.controller.derive import needs_children, trainingjob_view

pytestmark = pytest.mark.unit

CA = {"caBundle": {"configMapName": "ca", "key": "ca.crt"}}


def waiting(raw: dict[str, Any]) -> bool:
    return waiting_on_ca_bundle(kopf.Body(raw))


@pytest.mark.parametrize(
    "raw",
    [
        {"spec": "train me"},
        {},
        {"spec": [1, 2]},
        {"spec": {"s3": "x"}},
        {"spec": {"s3": None}},
        {"spec": None, "status": {"phase": R.PENDING}},
    ],
)
def test_a_garbage_spec_is_not_waiting_and_does_not_raise(raw):
    assert waiting(raw) is False


@pytest.mark.parametrize("status", ["weird", [1], {"phase": ["x"]}])
def test_garbage_in_status_does_not_raise(status):
    # A status the operator has not rewritten yet: no phase to go by, so a CA-bundle job counts as Pending.
    assert waiting({"spec": {"s3": CA}, "status": status}) is (not isinstance(status, dict))


@pytest.mark.parametrize(
    ("status", "expected"),
    [(None, True), ({}, True), ({"phase": R.PENDING}, True), ({"phase": R.TRAINING}, False), ({"phase": 7}, False)],
)
def test_a_ca_bundle_job_is_rechecked_only_while_pending(status, expected):
    raw = {"spec": {"s3": CA}} | ({"status": status} if status is not None else {})
    assert waiting(raw) is expected
    assert waiting({"spec": {"s3": {}}} | ({"status": status} if status is not None else {})) is False


@pytest.mark.parametrize(
    ("status", "garbage"),
    [
        (None, False),
        ({}, False),
        ({"phase": R.PENDING, "conditions": [{"type": R.JOB_CREATED, "status": "True"}]}, False),
        ({"conditions": [None]}, True),
        ({"phase": "Exploded"}, True),
        ("weird", True),
    ],
)
def test_garbage_in_status_is_what_the_cleaned_view_drops(status, garbage):
    # The reconciler decides from the cleaned view: a new TrainingJob with garbage in status still needs its Job,
    # and the reconcile that creates it writes the status, which replaces the garbage at once.
    body = {"spec": {}} if status is None else {"spec": {}, "status": status}
    view = trainingjob_view(body)
    assert (view["status"] != (status or {})) is garbage
    assert needs_children(view)
