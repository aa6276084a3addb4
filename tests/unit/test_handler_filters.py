"""kopf evaluates a handler's ``when=`` filter on every event of every object before running any handler, so a
filter that raises on a stored object of the wrong shape keeps that object's validation from ever running
(tests/fault/test_stored_garbage.py saw no InvalidSpec for a string spec)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from yolo_operator import reasons as R
from yolo_operator.handlers import _stored_status_is_garbage, _waiting_on_ca_bundle

pytestmark = pytest.mark.unit

CA = {"caBundle": {"configMapName": "ca", "key": "ca.crt"}}


def waiting(raw: dict[str, Any]) -> bool:
    return _waiting_on_ca_bundle(body=kopf.Body(raw))


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
    # ensure writes the status at once for these: the API server refuses kopf's own patch while it is stored
    body = {"spec": {}} if status is None else {"spec": {}, "status": status}
    assert _stored_status_is_garbage(body) is garbage
