"""The overlay of the operator's own status writes on its TrainingJob index (yolo_operator.observed)."""

from __future__ import annotations

import pytest
from yolo_operator import observed
from yolo_operator.observed import Observed

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


def seen(index_view: dict | None) -> dict | None:
    """What a handler reads while the watch (the index) shows ``index_view``."""
    index = {(NS, NAME): [index_view]} if index_view else {}
    got = Observed(tj_idx=index).trainingjob(NS, NAME)  # type: ignore[arg-type]
    return got and {"rv": got["metadata"]["resourceVersion"], **got["status"]}


@pytest.fixture(autouse=True)
def clean():
    observed.forget(NS, NAME)
    yield
    observed.forget(NS, NAME)


def test_our_write_is_read_until_the_watch_shows_it():
    observed.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    assert seen(tj("10", phase="Pending")) == {"rv": "11", "phase": "Staging"}
    assert seen(tj("11", phase="Staging")) == {"rv": "11", "phase": "Staging"}
    assert seen(tj("10", phase="Pending")) == {"rv": "10", "phase": "Pending"}  # overlay gone once confirmed


def test_a_later_write_by_the_trainer_is_not_hidden_by_our_older_one():
    # kopf batches watch events: the index may go from our base straight to the trainer's next patch,
    # never showing our write's own resourceVersion. The trainer's stage must show through.
    observed.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    assert seen(tj("12", phase="Staging", stage="Training")) == {"rv": "12", "phase": "Staging", "stage": "Training"}


def test_writes_on_top_of_unseen_writes_stay_until_the_watch_gets_past_all_of_them():
    observed.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    observed.wrote(NS, NAME, tj("12", phase="Training"), based_on="11")
    assert seen(tj("10"))["rv"] == "12"
    assert seen(tj("11", phase="Staging"))["rv"] == "12"
    assert seen(tj("13", phase="Training", stage="Uploading"))["rv"] == "13"


def test_a_write_based_on_a_fresh_get_forgets_older_unseen_writes():
    observed.wrote(NS, NAME, tj("11", phase="Staging"), based_on="10")
    observed.wrote(NS, NAME, tj("21", phase="Training"), based_on="20")  # after a 409 and a GET
    assert seen(tj("20"))["rv"] == "21"
    assert seen(tj("11"))["rv"] == "11"  # not a predecessor of the write: the overlay is dropped, at worst a 409
