"""The chart's values.schema.json refuses the trainer environment the contract reserves (one list, checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from yolo_contract.trainer_config import RESERVED_ENV, RESERVED_ENV_PREFIX

pytestmark = pytest.mark.unit
SCHEMA = Path(__file__).resolve().parents[2] / "charts" / "yolo-operator" / "values.schema.json"


def test_reserved_trainer_env_matches_the_contract():
    name = json.loads(SCHEMA.read_text())["properties"]["trainer"]["properties"]["env"]["items"]["properties"]["name"]
    enum, prefix = name["not"]["anyOf"]
    assert enum == {"enum": list(RESERVED_ENV)}, "values.schema.json: trainer.env reserved names differ"
    assert prefix == {"pattern": f"^{RESERVED_ENV_PREFIX}"}
