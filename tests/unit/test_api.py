"""The TrainingJob pydantic models: defaults, field constraints, the hyperparameter table, status reuse.

Rules that need CEL are enforced by the API server alone (tests/integration/test_operator_validation.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from yolo_contract.hyperparameters import TRAINER_OWNED, TYPED_FIELDS
from yolo_contract.progress import TrainerReport
from yolo_operator.api.types import (
    MUTABLE_SPEC_FIELDS,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
)
from yolo_operator.runtime.config import OperatorConfig

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = {
    "model": {"hub": "yolov8n.pt"},
    "dataset": "s3://datasets/helmets/",
    "output": "s3://runs/",
}


def spec(**overrides) -> dict:
    s = copy.deepcopy(BASE)
    for path, value in overrides.items():
        node = s
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return s


def example_trainingjobs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "TrainingJob":
                out.append((path.name, doc))
    return out


def test_examples_exist():
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {
        "finetune-frozen-backbone.yaml",
        "continue-from-previous.yaml",
        "from-scratch.yaml",
        "zip-dataset.yaml",
        "multi-gpu.yaml",
        "multi-node.yaml",
        "kueue.yaml",
        "s3-secret.yaml",
        "private-ca.yaml",
    } <= names


def test_examples_work_together():
    """Every Secret and ConfigMap an example TrainingJob names is created by s3-secret.yaml or its own file."""
    shared = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all((EXAMPLES / "s3-secret.yaml").read_text())}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        defined = shared | {(d["kind"], d["metadata"]["name"]) for d in docs}
        for tj in (d for d in docs if d["kind"] == "TrainingJob"):
            s3 = tj["spec"].get("s3") or {}
            if "credentialsSecretRef" in s3:
                assert ("Secret", s3["credentialsSecretRef"]["name"]) in defined, path.name
            if "caBundle" in s3:
                assert ("ConfigMap", s3["caBundle"]["name"]) in defined, path.name


@pytest.mark.parametrize(("name", "doc"), example_trainingjobs(), ids=lambda x: x if isinstance(x, str) else "")
def test_examples_parse(name, doc):
    tj = TrainingJob.model_validate(doc)
    assert tj.spec.dataset.startswith("s3://")


def test_defaults():
    s = TrainingJobSpec.model_validate(BASE)
    assert (s.training.epochs, s.training.imgsz, s.training.batch) == (100, 640, 16)
    assert s.resources.gpus == 1
    assert s.resources.gpu_resource_name == "nvidia.com/gpu"
    assert s.backoff_limit == 3
    assert s.suspend is False
    assert s.training.freeze is None


def test_camel_case_aliases_round_trip():
    s = TrainingJobSpec.model_validate(
        spec(
            s3={"credentialsSecretRef": {"name": "keys"}, "insecureSkipTLSVerify": True},
            resources={
                "gpuResourceName": "amd.com/gpu",
                "shmSize": "2Gi",
                "scratchSize": "100Gi",
                "scratchStorageClassName": "local-nvme",
            },
            ttlSecondsAfterFinished=60,
        )
    )
    assert s.s3.credentials_secret_ref.access_key_id_key == "AWS_ACCESS_KEY_ID"
    assert s.s3.credentials_secret_ref.secret_access_key_key == "AWS_SECRET_ACCESS_KEY"
    dumped = s.model_dump(by_alias=True, exclude_none=True)
    assert dumped["s3"]["insecureSkipTLSVerify"] is True
    assert dumped["resources"]["shmSize"] == "2Gi"
    assert dumped["resources"]["scratchSize"] == "100Gi"
    assert dumped["resources"]["scratchStorageClassName"] == "local-nvme"
    assert dumped["ttlSecondsAfterFinished"] == 60


def test_retry_budget_and_dataset_limits_are_spec_fields():
    # The knobs users need are fields, not YOLO_* environment (which spec.env refuses).
    s = TrainingJobSpec.model_validate(
        spec(s3={"retryBudgetSeconds": 600}, resources={"maxDatasetSize": "500Gi", "maxDatasetFiles": 20_000_000})
    )
    dumped = s.model_dump(by_alias=True, exclude_none=True)
    assert dumped["s3"]["retryBudgetSeconds"] == 600
    assert dumped["resources"]["maxDatasetSize"] == "500Gi"
    assert dumped["resources"]["maxDatasetFiles"] == 20_000_000


INVALID = [
    ("hub not .pt", spec(model={"hub": "yolov8n"}), "hub"),
    ("yaml not yaml", spec(model={"yaml": "yolov8n.json"}), "yaml"),
    ("fromTrainingJob bad name", spec(model={"fromTrainingJob": "Bad_Name"}), "fromTrainingJob"),
    ("imgsz not multiple of 32", spec(training__imgsz=100), "multiple of 32"),
    ("imgsz zero", spec(training__imgsz=0), "imgsz"),
    ("epochs zero", spec(training__epochs=0), "epochs"),
    ("freeze too large", spec(training__freeze=30), "freeze"),
    ("batch zero", spec(training__batch=0), "batch"),
    ("batch -2", spec(training__batch=-2), "spec.training.batch must be a whole number 1-1024, -1"),
    ("batch 1.5", spec(training__batch=1.5), "spec.training.batch must be a whole number"),
    ("batch over 1024", spec(training__batch=2048), "spec.training.batch"),
    ("autobatch on CPU", spec(training__batch=-1, resources__gpus=0), "needs spec.resources.gpus 1"),
    ("autobatch with DDP", spec(training__batch=0.7, resources__gpus=2), "needs spec.resources.gpus 1"),
    ("unknown optimizer", spec(training__optimizer="Lion"), "optimizer"),
    ("negative gpus", spec(resources__gpus=-1), "gpus"),
    ("bad memory", spec(resources__memory="lots"), "memory"),
    ("bad gpu resource", spec(resources__gpuResourceName="nvidia.com/gpu/x"), "gpuResourceName"),
    ("unknown field", spec(foo=1), "foo"),
    ("unknown export format", spec(exportFormats=["gif"]), "exportFormats"),
    ("queue name invalid", spec(queueName="Gpu Queue"), "queueName"),
    ("bad scratch size", spec(resources__scratchSize="50GB"), "scratchSize"),
    ("bad scratch class", spec(resources__scratchSize="1Ti", resources__scratchStorageClassName="Fast_SSD"), "scratch"),
    ("bad dataset size", spec(resources__maxDatasetSize="200GB"), "maxDatasetSize"),
    ("zero dataset files", spec(resources__maxDatasetFiles=0), "maxDatasetFiles"),
    ("zero retry budget", spec(s3={"retryBudgetSeconds": 0}), "retryBudgetSeconds"),
]


@pytest.mark.parametrize(("case", "data", "needle"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_rejected(case, data, needle):
    with pytest.raises(ValidationError) as err:
        TrainingJobSpec.model_validate(data)
    assert needle.lower() in str(err.value).lower()


def test_every_reserved_hyperparameter_is_refused_naming_the_field_to_use():
    for key, field in {**TYPED_FIELDS, **TRAINER_OWNED}.items():
        with pytest.raises(ValidationError) as err:
            TrainingJobSpec.model_validate(spec(training__hyperparameters={key: 1}))
        assert f"hyperparameters.{key}" in str(err.value)
        assert field.split(" ")[0] in str(err.value)
    ok = TrainingJobSpec.model_validate(spec(training__hyperparameters={"lr0": 0.01, "mosaic": 0.5}))
    assert ok.training.hyperparameters == {"lr0": 0.01, "mosaic": 0.5}


@pytest.mark.parametrize(
    ("hp", "needle"),
    [
        ({"lr0": "0.01"}, "hyperparameters.lr0 must be a number"),
        ({"lr0": 2}, "hyperparameters.lr0 must be between 0.0 and 1.0"),
        ({"close_mosaic": 2.5}, "hyperparameters.close_mosaic must be an integer"),
        ({"cos_lr": "yes"}, "hyperparameters.cos_lr must be true or false"),
        ({"cache": True}, "hyperparameters.cache must be one of ram, disk"),
        ({"fraction": 0}, "hyperparameters.fraction must be a ratio"),
        ({"time": -1}, "hyperparameters.time must be >= 0"),
        ({"box": -7.5}, "hyperparameters.box must be >= 0"),
        ({"cls": -0.5}, "hyperparameters.cls must be >= 0"),
        ({"dfl": -1}, "hyperparameters.dfl must be >= 0"),
        ({"warmup_epochs": -3}, "hyperparameters.warmup_epochs must be >= 0"),
        ({"warmup_momentum": -0.1}, "hyperparameters.warmup_momentum must be between 0.0 and 1.0"),
        ({"warmup_bias_lr": -0.1}, "hyperparameters.warmup_bias_lr must be between 0.0 and 1.0"),
        ({"show": True}, "hyperparameters.show: not an Ultralytics train argument"),
        ({"learning_rate": 0.1}, "hyperparameters.learning_rate: not an Ultralytics train argument"),
    ],
)
def test_hyperparameter_table_refuses_naming_the_key(hp, needle):
    with pytest.raises(ValidationError) as err:
        TrainingJobSpec.model_validate(spec(training__hyperparameters=hp))
    assert needle in str(err.value)


@pytest.mark.parametrize(("batch", "stored"), [(-1, -1), (0.6, 0.6), (0.05, 0.05), (1, 1), (16.0, 16), (1024, 1024)])
def test_batch_accepts_autobatch_on_one_gpu_and_whole_sizes(batch, stored):
    s = TrainingJobSpec.model_validate(spec(training__batch=batch))  # gpus defaults to 1
    assert s.training.batch == stored
    assert type(s.training.batch) is type(stored)  # 16.0 from YAML reaches Ultralytics as the int 16


def test_time_zero_and_zero_gains_are_accepted():
    hp = {"time": 0, "box": 0, "cls": 0.0, "dfl": 0, "warmup_epochs": 0, "warmup_momentum": 0, "warmup_bias_lr": 0}
    assert TrainingJobSpec.model_validate(spec(training__hyperparameters=hp)).training.hyperparameters == hp


@given(st.integers(min_value=-64, max_value=5000))
def test_imgsz_accepted_iff_positive_multiple_of_32(imgsz):
    valid = 32 <= imgsz <= 4096 and imgsz % 32 == 0
    try:
        TrainingJobSpec.model_validate(spec(training__imgsz=imgsz))
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == valid


def test_mutable_fields_are_spec_fields():
    aliases = {f.alias for f in TrainingJobSpec.model_fields.values()}
    assert set(MUTABLE_SPEC_FIELDS) <= aliases
    assert set(MUTABLE_SPEC_FIELDS) == {"suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "stop"}


def test_status_reuses_trainer_report():
    """One definition of the trainer-written fields: the status model extends TrainerReport."""
    assert issubclass(TrainingJobStatus, TrainerReport)
    report = TrainerReport.model_validate(
        {
            "stage": "Training",
            "progress": {"epoch": 7, "epochs": 50, "epochDisplay": "7/50", "metrics": {"map50-95": 0.4}},
            "artifacts": {"bestWeights": "s3://runs/ns/a/weights/best.pt"},
        }
    )
    status = TrainingJobStatus.model_validate({**report.to_patch()["status"], "phase": "Training"})
    assert status.progress.metrics.map50_95 == 0.4
    assert status.artifacts.best_weights.endswith("best.pt")


def test_from_body_drops_unknown_status_fields():
    body = {"apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "a"},
            "spec": BASE, "status": {"phase": "Pending", "somethingNew": 1}}  # fmt: skip
    tj = TrainingJob.from_body(body)
    assert tj.status.phase == "Pending"
    assert tj.namespace == "default"


def test_operator_config_from_env():
    cfg = OperatorConfig.from_env(
        {
            "YOLO_OPERATOR_TRAINER_IMAGE": "registry.local/trainer:1",
            "YOLO_OPERATOR_NAMESPACES": " a, b ,,",
            "YOLO_OPERATOR_LOG_LEVEL": "debug",
            "YOLO_OPERATOR_METRICS_PORT": "9100",
            "YOLO_OPERATOR_HEALTH_PORT": "9101",
            "YOLO_OPERATOR_READ_ONLY_ROOT_FS": "false",
            "YOLO_OPERATOR_INSTANCE": "staging",
        }
    )
    assert cfg.instance == "staging"
    assert OperatorConfig.from_env({}).instance is None
    assert cfg.trainer_image == "registry.local/trainer:1"
    assert cfg.namespaces == ("a", "b")
    assert not cfg.clusterwide
    assert cfg.log_level == "DEBUG"
    assert (cfg.metrics_port, cfg.health_port) == (9100, 9101)
    assert cfg.read_only_root_filesystem is False
    assert OperatorConfig.from_env({}).clusterwide


def test_operator_servers_bind_where_configured():
    from yolo_operator.runtime.config import OperatorConfig

    assert OperatorConfig.from_env({}).bind_address == "0.0.0.0"  # in a pod: probes come from the kubelet
    assert OperatorConfig.from_env({"YOLO_OPERATOR_BIND_ADDRESS": "127.0.0.1"}).bind_address == "127.0.0.1"
