"""The generated CRD in the real kube-apiserver: invalid TrainingJobs are rejected at `kubectl apply` with a
message naming the field, the examples are accepted, and the spec is immutable except the mutable fields."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.operator_fixtures import apply, get, install_crd, trainingjob

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def crd_installed(kubectl):
    install_crd(kubectl)


def with_spec(path: str, value, base: dict | None = None) -> dict:
    """A valid TrainingJob with spec.<path> (dotted) set to value (None deletes it)."""
    tj = copy.deepcopy(base or trainingjob("invalid"))
    node = tj["spec"]
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return tj


LONG = "a" * 70
# (case id, manifest, the field path the message must name, a snippet of the message)
INVALID = [
    ("dataset-relative-without-connection", with_spec("dataset", "helmets/"), "spec.dataset",
     "a key in the bucket of spec.s3.dataConnection"),
    ("data-connection-and-endpoint", with_spec("s3", {"dataConnection": {"name": "conn"},
                                                      "endpoint": "http://minio:9000"}), "spec.s3",
     "leave spec.s3.endpoint and spec.s3.credentialsSecretRef unset"),
    ("env-reserved", with_spec("env", [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]), "spec.env[0]",
     "the operator sets this variable"),
    ("env-reserved-prefix", with_spec("env", [{"name": "YOLO_TRAINER_X", "value": "x"}]), "spec.env[0]",
     "the operator sets this variable"),
    ("env-value-and-from", with_spec("env", [{"name": "A", "value": "x", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}}}]), "spec.env[0]", "value or valueFrom, not both"),
    ("env-from-two", with_spec("env", [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"},
        "configMapKeyRef": {"name": "c", "key": "k"}}}]), "spec.env[0].valueFrom", "exactly one of"),
    ("pull-secret-name", with_spec("imagePullSecrets", [{"name": "Not_A_Name"}]), "spec.imagePullSecrets[0].name",
     "should match"),
    ("sa-annotation-key", with_spec("serviceAccountAnnotations", {"not a key": "x"}), "spec.serviceAccountAnnotations",
     "qualified names"),
    ("hyperparameter-owned", with_spec("training.hyperparameters", {"pretrained": False}),
     "spec.training.hyperparameters", 'unknown field "pretrained"'),
    ("hyperparameter-type", with_spec("training.hyperparameters", {"cos_lr": "yes"}),
     "spec.training.hyperparameters.cos_lr", "boolean"),
    ("model-none", with_spec("model", {}), "spec.model", "exactly one of hub, uri, yaml or fromTrainingJob"),
    (
        "model-two",
        with_spec("model", {"hub": "yolov8n.pt", "uri": "s3://m/w.pt"}),
        "spec.model",
        "exactly one",
    ),
    ("model-hub-pattern", with_spec("model", {"hub": "yolov8n"}), "spec.model.hub", "should match"),
    (
        "model-uri-scheme",
        with_spec("model", {"uri": "ftp://host/w.pt"}),
        "spec.model.uri",
        "s3:// or https://",
    ),
    (
        "model-uri-not-pt",
        with_spec("model", {"uri": "s3://models/w.onnx"}),
        "spec.model.uri",
        ".pt weights file",
    ),
    ("model-yaml-ext", with_spec("model", {"yaml": "yolov8n.json"}), "spec.model.yaml", "should match"),
    (
        "model-from-bad-name",
        with_spec("model", {"fromTrainingJob": "Bad_Name"}),
        "spec.model.fromTrainingJob",
        "",
    ),
    ("dataset-missing", with_spec("dataset", None), "dataset", "required"),  # kubectl's schema check or server
    (
        "dataset-scheme",
        with_spec("dataset", "https://example.com/d.zip"),
        "spec.dataset",
        "must be an s3:// URI",
    ),
    ("dataset-bucket", with_spec("dataset", "s3://A_B/prefix/"), "spec.dataset", "must be an s3:// URI"),
    (
        "dataset-archive",
        with_spec("dataset", "s3://datasets/d.rar"),
        "spec.dataset",
        ".zip, .tar, .tar.gz, .tgz",
    ),
    ("output-scheme", with_spec("output", "/tmp/out"), "spec.output", "must be an s3:// URI"),
    ("imgsz-multiple", with_spec("training.imgsz", 100), "spec.training.imgsz", "multiple of 32"),
    (
        "imgsz-negative",
        with_spec("training.imgsz", -32),
        "spec.training.imgsz",
        "greater than or equal to 32",
    ),
    ("epochs-zero", with_spec("training.epochs", 0), "spec.training.epochs", "greater than or equal to 1"),
    ("freeze-range", with_spec("training.freeze", 30), "spec.training.freeze", "less than or equal to 24"),
    ("batch-zero", with_spec("training.batch", 0), "spec.training.batch", "must be a whole number 1-1024, -1"),
    ("batch-fraction-over-one", with_spec("training.batch", 1.5), "spec.training.batch", "must be a whole number"),
    ("batch-below-autobatch", with_spec("training.batch", -2), "spec.training.batch", "greater than or equal to -1"),
    ("autobatch-on-cpu", with_spec("resources.gpus", 0, with_spec("training.batch", -1)), "spec.training.batch",
     "needs spec.resources.gpus 1"),
    ("autobatch-with-ddp", with_spec("resources.gpus", 2, with_spec("training.batch", 0.7)),
     "spec.training.batch", "needs spec.resources.gpus 1"),
    ("negative-loss-gain", with_spec("training.hyperparameters", {"box": -7.5}),
     "spec.training.hyperparameters.box", "greater than or equal to 0"),
    ("negative-time-budget", with_spec("training.hyperparameters", {"time": -1}),
     "spec.training.hyperparameters.time", "greater than or equal to 0"),
    ("negative-warmup", with_spec("training.hyperparameters", {"warmup_epochs": -1}),
     "spec.training.hyperparameters.warmup_epochs", "greater than or equal to 0"),
    (
        "optimizer-enum",
        with_spec("training.optimizer", "Lion"),
        "spec.training.optimizer",
        "Unsupported value",
    ),
    (
        "hyperparameters-reserved",
        with_spec("training.hyperparameters", {"epochs": 5}),
        "spec.training.hyperparameters",
        "",
    ),
    ("gpus-negative", with_spec("resources.gpus", -1), "spec.resources.gpus", "greater than or equal to 0"),
    (
        "gpu-resource-name",
        with_spec("resources.gpuResourceName", "nvidia.com/gpu/x"),
        "spec.resources.gpuResourceName",
        "should match",
    ),
    ("memory-quantity", with_spec("resources.memory", "lots"), "spec.resources.memory", "should match"),
    ("shm-quantity", with_spec("resources.shmSize", "-1Gi"), "spec.resources.shmSize", "should match"),
    ("endpoint-url", with_spec("s3.endpoint", "minio:9000"), "spec.s3.endpoint", "http:// or https:// URL"),
    (
        "secret-name",
        with_spec("s3.credentialsSecretRef", {"name": "Not_A_Name"}),
        "spec.s3.credentialsSecretRef.name",
        "should match",
    ),
    (
        "toleration-exists-value",
        with_spec("scheduling", {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
        "spec.scheduling.tolerations[0]",
        "value must be empty when operator is Exists",
    ),
    (
        "toleration-effect",
        with_spec("scheduling", {"tolerations": [{"key": "k", "effect": "Sometimes"}]}),
        "spec.scheduling.tolerations[0].effect",
        "Unsupported value",
    ),
    (
        "node-selector-size",
        with_spec("scheduling", {"nodeSelector": {f"k{i}": "v" for i in range(40)}}),
        "spec.scheduling.nodeSelector",
        "must have at most 32 items",
    ),
    ("backoff-negative", with_spec("backoffLimit", -1), "spec.backoffLimit", "greater than or equal to 0"),
    (
        "deadline-zero",
        with_spec("activeDeadlineSeconds", 0),
        "spec.activeDeadlineSeconds",
        "greater than or equal",
    ),
    ("queue-name", with_spec("queueName", "GPU Queue"), "spec.queueName", "should match"),
    ("export-format", with_spec("exportFormats", ["gif"]), "spec.exportFormats[0]", "Unsupported value"),
    (
        "export-duplicate",
        with_spec("exportFormats", ["onnx", "onnx"]),
        "spec.exportFormats[1]",
        "Duplicate value",
    ),
    ("image-too-long", with_spec("image", "r/" + "x" * 600), "spec.image", "may not be more than 512"),
    ("unknown-field", with_spec("learningRate", 0.1), "learningRate", "unknown field"),
    (
        "name-too-long",
        {**trainingjob(LONG), "metadata": {"name": LONG}},
        "metadata.name",
        "at most 63 characters",
    ),
]


def test_at_least_twenty_invalid_cases():
    assert len(INVALID) >= 20


@pytest.mark.parametrize(("case", "manifest", "field", "snippet"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_trainingjob_rejected(crd_installed, kubectl, namespace, case, manifest, field, snippet):
    proc = apply(kubectl, namespace, manifest, check=False)
    assert proc.returncode != 0, f"{case}: accepted but should be rejected:\n{proc.stdout}"
    err = proc.stderr
    assert field in err, f"{case}: message does not name {field}:\n{err}"
    assert snippet.lower() in err.lower(), f"{case}: expected {snippet!r} in:\n{err}"
    assert get(kubectl, namespace, "trainingjob", manifest["metadata"]["name"]) is None


def test_data_connection_with_keys_in_its_bucket_accepted(crd_installed, kubectl, namespace):
    tj = with_spec("s3", {"dataConnection": {"name": "aws-connection-minio"}})
    tj["spec"].update(dataset="datasets/helmets.zip", output="runs/")
    tj["metadata"]["name"] = "dc"
    apply(kubectl, namespace, tj)
    assert get(kubectl, namespace, "trainingjob", "dc")["spec"]["dataset"] == "datasets/helmets.zip"


@pytest.mark.parametrize("batch", [-1, 0.6])
def test_autobatch_accepted_on_one_gpu(crd_installed, kubectl, namespace, batch):
    tj = with_spec("training.batch", batch)  # the fixture asks for one GPU
    tj["metadata"]["name"] = f"autobatch-{str(batch).replace('.', '-').lstrip('-')}"
    apply(kubectl, namespace, tj)
    assert get(kubectl, namespace, "trainingjob", tj["metadata"]["name"])["spec"]["training"]["batch"] == batch


def test_hyperparameter_passthrough_accepted(crd_installed, kubectl, namespace):
    hp = {"lr0": 0.01, "mosaic": 0.5, "cos_lr": True, "degrees": 10.5, "cache": "ram"}
    tj = with_spec("training.hyperparameters", hp)
    tj["metadata"]["name"] = "hp"
    apply(kubectl, namespace, tj)
    got = get(kubectl, namespace, "trainingjob", "hp")
    assert got["spec"]["training"]["hyperparameters"] == {
        "lr0": 0.01,
        "mosaic": 0.5,
        "cos_lr": True,
        "degrees": 10.5,
        "cache": "ram",
    }


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_accepted(crd_installed, kubectl, namespace, path):
    kubectl("apply", "-f", str(path), namespace=namespace)
    names = [
        d["metadata"]["name"]
        for d in __import__("yaml").safe_load_all(path.read_text())
        if d and d["kind"] == "TrainingJob"
    ]
    for name in names:
        tj = get(kubectl, namespace, "trainingjob", name)
        assert tj is not None
        # scalar defaults are applied by the API server
        assert tj["spec"]["backoffLimit"] == 3 or "backoffLimit" in path.read_text()
        assert tj["spec"]["suspend"] is False


def test_short_name_and_category(crd_installed, kubectl, namespace):
    apply(kubectl, namespace, trainingjob("listed"))
    assert "listed" in kubectl("get", "tj", namespace=namespace).stdout
    out = kubectl("get", "yolo", namespace=namespace).stdout
    assert "listed" in out
    header = out.splitlines()[0].split()
    assert header[:5] == ["NAME", "PHASE", "EPOCH", "MAP50-95", "BEST"]


def test_spec_immutable_except_mutable_fields(crd_installed, kubectl, namespace):
    apply(kubectl, namespace, trainingjob("immut"))
    for patch, field in (
        ({"spec": {"dataset": "s3://datasets/other/"}}, "spec.dataset"),
        ({"spec": {"training": {"epochs": 99}}}, "spec.training"),
        ({"spec": {"model": {"hub": "yolov8s.pt"}}}, "spec.model"),
        (
            {"spec": {"scheduling": {"priorityClassName": "high"}}},
            "spec.scheduling",
        ),  # adding an optional field
        ({"spec": {"queueName": "q"}}, "spec.queueName"),
    ):
        proc = kubectl(
            "patch", "tj", "immut", "--type=merge", "-p", json.dumps(patch), namespace=namespace, check=False
        )
        assert proc.returncode != 0, f"{field} change was accepted"
        assert f"{field} is immutable" in proc.stderr, proc.stderr
    for patch in (
        {"spec": {"suspend": True}},
        {"spec": {"activeDeadlineSeconds": 600}},
        {"spec": {"ttlSecondsAfterFinished": 60}},
    ):
        kubectl("patch", "tj", "immut", "--type=merge", "-p", json.dumps(patch), namespace=namespace)
    spec = get(kubectl, namespace, "tj", "immut")["spec"]
    assert (spec["suspend"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (
        True,
        600,
        60,
    )
    assert spec["dataset"] == "s3://datasets/helmets/"


def test_trainer_status_merge_patch_accepted(crd_installed, kubectl, namespace):
    """The trainer's TrainerReport.to_patch() goes through the status subresource unchanged."""
    from yolo_contract.progress import Artifacts, Checkpoint, Metrics, Progress, TrainerReport

    apply(kubectl, namespace, trainingjob("report"))
    report = TrainerReport(
        stage="Training",
        progress=Progress(
            epoch=7,
            epochs=50,
            epoch_display="7/50",
            metrics=Metrics(map50_95=0.41, map50=0.6),
            best_map50_95=0.45,
            best_epoch=6,
            eta_seconds=120,
            updated_at="2026-01-01T00:00:00Z",
        ),
        last_checkpoint=Checkpoint(epoch=7, uri="s3://runs/ns/report/checkpoints/last.pt"),
        artifacts=Artifacts(best_weights="s3://runs/ns/report/weights/best.pt", exports=["s3://runs/x.onnx"]),
    )
    kubectl(
        "patch",
        "tj",
        "report",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(report.to_patch()),
        namespace=namespace,
    )
    status = get(kubectl, namespace, "tj", "report")["status"]
    assert status == report.to_patch()["status"]  # nothing pruned
    row = kubectl("get", "tj", "report", "--no-headers", namespace=namespace).stdout.split()
    assert row[1:5] == ["7/50", "0.41", "0.45", row[4]] and row[4] != ""
