"""The chart's values.schema.json refuses the trainer environment the contract reserves (one list, checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from yolo_contract.trainer_config import RESERVED_ENV, RESERVED_ENV_PREFIXES

pytestmark = pytest.mark.unit
SCHEMA = Path(__file__).resolve().parents[2] / "charts" / "yolo-operator" / "values.schema.json"


def test_reserved_trainer_env_matches_the_contract():
    name = json.loads(SCHEMA.read_text())["properties"]["trainer"]["properties"]["env"]["items"]["properties"]["name"]
    enum, prefix = name["not"]["anyOf"]
    assert enum == {"enum": list(RESERVED_ENV)}, "values.schema.json: trainer.env reserved names differ"
    assert prefix == {"pattern": f"^({'|'.join(RESERVED_ENV_PREFIXES)})"}


def test_scratch_size_schema_is_the_apis_quantity():
    from yolo_operator.api.types import QUANTITY, ZERO_QUANTITY

    prop = json.loads(SCHEMA.read_text())["properties"]["trainer"]["properties"]["scratchSize"]
    assert prop["pattern"] == f"^({QUANTITY[1:-1]})?$", "values.schema.json: trainer.scratchSize differs from api"
    assert prop["not"] == {"pattern": ZERO_QUANTITY}


def test_default_scratch_size_reaches_the_operator_config():
    from yolo_operator.runtime.config import OperatorConfig

    assert OperatorConfig.from_env({"YOLO_OPERATOR_DEFAULT_SCRATCH_SIZE": "20Gi"}).default_scratch_size == "20Gi"
    assert OperatorConfig.from_env({"YOLO_OPERATOR_DEFAULT_SCRATCH_SIZE": ""}).default_scratch_size is None
