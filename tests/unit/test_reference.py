import pytest
from yolo_operator.gen import reference
from yolo_operator.gen.crd import REPO_ROOT

pytestmark = pytest.mark.unit


def test_committed_reference_matches_the_models():
    committed = (REPO_ROOT / reference.REFERENCE_PATH).read_text()
    assert committed == reference.render(), "docs/reference.md is stale: python -m yolo_operator.gen.reference --write"


def test_reference_documents_every_spec_field_with_its_rules():
    text = reference.render()
    for path in ("spec.training.imgsz", "spec.training.freeze", "spec.resources.gpus", "status.progress.epoch"):
        assert f"| `{path}` |" in text
    assert "multiple of `32`" in text
