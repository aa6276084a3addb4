"""charts/yolo-operator/README.md is generated from values.yaml's `# --` comments (yolo_operator.gen.chart_readme):
it fails here when values.yaml or README.md.gotmpl changed without
`python -m yolo_operator.gen.chart_readme --write`."""

from __future__ import annotations

import pytest
import yaml
from yolo_operator.gen import chart_readme
from yolo_operator.gen.crd import REPO_ROOT

pytestmark = pytest.mark.unit
VALUES = (REPO_ROOT / chart_readme.CHART / "values.yaml").read_text()


def test_committed_readme_is_current():
    committed = (REPO_ROOT / chart_readme.README_PATH).read_text()
    assert committed == chart_readme.render(), "run: python -m yolo_operator.gen.chart_readme --write (make crds)"


def test_every_documented_value_is_a_row_with_its_default():
    readme = (REPO_ROOT / chart_readme.README_PATH).read_text()
    docs = chart_readme.documented(VALUES)
    assert {"replicaCount", "crd.install", "trainer.simulatedGpus", "operator.resources"} <= set(docs)
    for path in docs:
        assert f"| `{path}` |" in readme
    assert '| `operator.logLevel` | string | `"INFO"` |' in readme


def test_a_values_change_changes_the_table():
    edited = VALUES.replace("logLevel: INFO", "logLevel: DEBUG")
    assert edited != VALUES
    assert chart_readme.values_table(edited) != chart_readme.values_table(VALUES)


def test_a_value_without_a_comment_is_refused():
    with pytest.raises(ValueError, match="no '# --' comment on undocumented"):
        chart_readme.values_table(VALUES + "\nundocumented: 1\n")
    # A parent's comment covers its children (operator.resources.requests.cpu, ...).
    assert yaml.safe_load(VALUES)["operator"]["resources"]["requests"]["cpu"] == "50m"


def test_multi_line_comments_and_the_uninstall_warning():
    docs = chart_readme.documented("a:\n  # -- first line\n  # second line\n  b: 1\n\n# plain comment\nc: 2\n")
    assert docs == {"a.b": "first line second line"}
    readme = (REPO_ROOT / chart_readme.README_PATH).read_text()
    assert "kubectl delete -k manifests/" in readme and "deletes every TrainingJob in the cluster" in readme
