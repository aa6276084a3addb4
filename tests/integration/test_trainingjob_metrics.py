"""Training curves where users watch, end to end on the bed: a real trainer process trains a few CPU epochs and
reports to the bed's real API server; the operator (run locally, as in test_operator_lifecycle) exports the
yolo_trainingjob_* series from that status; a real Prometheus scrapes it; the chart's own console dashboard
queries (read from its rendered ConfigMap) return the job's curve; status.history holds every epoch.

The TrainingJob is suspended, so the operator creates its Job but no pod: the trainer runs here, against the
bed's S3 (the trainer tests' way), and nothing else reports for it."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from yolo_dev import testbed
from yolo_operator.gen import crd
from yolo_trainer.testing import upload_dir, write_yolo_dataset

from tests.operator_fixtures import OperatorProcess, apply, get, install_crd, trainingjob, wait_for
from tests.prometheus import Prometheus
from tests.trainer_fixtures import TrainerRunner

pytestmark = pytest.mark.integration

EPOCHS = 3
CHART = testbed.ROOT / "charts" / "yolo-operator"


@pytest.fixture
def history_namespace(kubectl) -> Iterator[str]:
    name = f"history-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def dashboard_queries() -> tuple[list[tuple[str, str]], dict[str, str]]:
    """((panel title, PromQL), variables) of the chart's console dashboard, rendered by the pinned helm."""
    out = subprocess.run([str(testbed.ROOT / "hack" / "build-binaries.sh")], capture_output=True, text=True,
                         check=True, timeout=1800).stdout  # fmt: skip
    helm = Path(out.strip().splitlines()[-1]) / "helm"
    rendered = subprocess.run(
        [str(helm), "template", "yolo-operator", str(CHART), "--api-versions", "console.openshift.io/v1",
         "-s", "templates/monitoring.yaml"], capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    (cm,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ConfigMap"]
    (text,) = cm["data"].values()
    board = json.loads(text)
    queries = [(p["title"], t["expr"]) for row in board["rows"] for p in row["panels"] for t in p["targets"]]
    return queries, {v["name"]: v["query"] for v in board["templating"]["list"]}


def test_a_training_runs_curves_reach_prometheus_through_the_dashboards_queries(
    kubectl, kubeconfig, s3_env, s3_client, bucket, history_namespace, tmp_path
):
    ns, name = history_namespace, "curves"
    write_yolo_dataset(tmp_path / "ds", n_train=8, n_val=4)
    upload_dir(s3_client, bucket, "ds", tmp_path / "ds")
    install_crd(kubectl)
    tj = trainingjob(name, dataset=f"s3://{bucket}/ds/", output=f"s3://{bucket}/out/", suspend=True,
                     s3={"endpoint": s3_env.endpoint, "credentialsSecretRef": {"name": "s3-keys"}})  # fmt: skip
    apply(kubectl, ns, tj)
    operator = OperatorProcess(kubeconfig, [ns], tmp_path / "operator.log").start()
    prom = Prometheus(tmp_path, [f"127.0.0.1:{operator.metrics_port}"]).start()
    try:
        start = time.time()
        runner = TrainerRunner(s3_env, tmp_path)
        cfg = runner.config(name, "yolov8n.yaml", f"s3://{bucket}/ds/", f"s3://{bucket}/out/", epochs=EPOCHS)
        cfg["namespace"] = cfg["status"]["namespace"] = ns
        res = runner.run(cfg, KUBECONFIG=str(kubeconfig))
        assert res.rc == 0, res.stderr[-4000:]
        job = {"trainingjob_namespace": ns, "trainingjob": name}
        sel = f'{{trainingjob_namespace="{ns}",trainingjob="{name}"}}'
        wait_for(lambda: [float(r["value"][1]) for r in prom.query(f"yolo_trainingjob_epoch{sel}")] == [EPOCHS],
                 30, what="Prometheus scraping the last epoch")  # fmt: skip
        end = time.time()

        # the dashboard's variables and queries, as the console would send them
        queries, variables = dashboard_queries()
        for var, query in variables.items():  # label_values(<selector>, <label>): the label values API
            selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", query).groups()
            selector = selector.replace("$namespace", ns)
            values = prom.api(f"label/{label}/values", **{"match[]": selector})
            print(f"PROMQL variable {var}: {query} -> {values}")
            assert {"namespace": ns, "trainingjob": name}[var] in values
        curves: dict[str, list[tuple[float, float]]] = {}
        for title, expr in queries:
            promql = expr.replace("$namespace", ns).replace("$trainingjob", name)
            result = prom.query_range(promql, start, end, 0.5)
            assert all(r["metric"].items() >= job.items() for r in result), result  # that job only
            points = [(float(t), float(v)) for r in result for t, v in r["values"]]
            curves[promql.split("{")[0]] = points
            changes = [p for i, p in enumerate(points) if i == 0 or p[1] != points[i - 1][1]]
            print(f"PROMQL [{title}] {promql} -> {len(points)} points, values as they changed: "
                  f"{[round(v, 5) for _, v in changes]}")  # fmt: skip
        served = get(kubectl, None, "crd", crd.CRD_NAME)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert "history" in served["properties"]["status"]["properties"], (
            "the served CRD lacks status.history, so the API server pruned it (and the lr and GPU series, read from "
            "its latest point): a test from another checkout re-applied its CRD on this shared bed; run again"
        )
        epochs = {v for _, v in curves["yolo_trainingjob_epoch"]}
        assert len(epochs) >= 2, f"the epoch curve shows {epochs}"
        epoch_at = dict(curves["yolo_trainingjob_epoch"])
        for series in ("yolo_trainingjob_map50_95", "yolo_trainingjob_box_loss", "yolo_trainingjob_learning_rate"):
            seen = {epoch_at[t] for t, _ in curves[series] if t in epoch_at}
            assert len(seen) >= 2, f"{series}: points of epochs {seen} only"
        assert curves["yolo_trainingjob_gpu_utilization_percent"] == []  # CPU: no GPU series at all

        # status.history, through the real API server (the CRD's schema keeps it): every epoch, short keys. On a
        # shared bed, a CRD applied by a concurrent test from another checkout (without history) prunes it.
        history = get(kubectl, ns, "trainingjob", name)["status"]["history"]
        assert [p["epoch"] for p in history] == list(range(1, EPOCHS + 1))
        assert {"map50-95", "boxLoss", "lr"} <= set(history[-1]) and "gpuUtil" not in history[-1]  # CPU
        shown = kubectl("get", "tj", name, "-o", "jsonpath={.status.history[-1:]}", namespace=ns).stdout
        print(f"HISTORY-LAST kubectl get tj {name} -o jsonpath='{{.status.history[-1:]}}': {shown}")

        # deleted: its series go from the operator's /metrics
        kubectl("delete", "trainingjob", name, "--wait=true", namespace=ns)
        wait_for(lambda: f'trainingjob="{name}"' not in operator.metrics(), 30, what="the job's series removed")
    finally:
        prom.stop()
        operator.stop()
