"""The Ultralytics hyperparameter table (yolo_contract.hyperparameters): generated, committed, not stale."""

from __future__ import annotations

import pytest
from yolo_contract import hyperparameters
from yolo_contract._ultralytics_args import ARGS, ULTRALYTICS_VERSION

pytestmark = pytest.mark.unit


def test_committed_table_matches_the_pinned_ultralytics():
    import ultralytics

    assert ultralytics.__version__ == ULTRALYTICS_VERSION
    assert hyperparameters.TABLE_FILE.read_text() == hyperparameters.render_table(), (
        "stale: python -m yolo_contract.hyperparameters --write"
    )


def test_reserved_keys_are_absent_and_every_entry_documented():
    assert not (set(hyperparameters.TYPED_FIELDS) | set(hyperparameters.TRAINER_OWNED)) & set(ARGS)
    assert len(ARGS) > 50
    for key, arg in ARGS.items():
        assert arg["description"].endswith("."), key
        assert hyperparameters.problems({key: None}) == []  # null: dropped by the API server, default applies


def test_crd_schema_has_one_typed_property_per_entry():
    schema = hyperparameters.crd_schema()
    assert set(schema["properties"]) == set(ARGS)
    for key, node in schema["properties"].items():
        assert "type" in node or node.get("x-kubernetes-int-or-string"), key
