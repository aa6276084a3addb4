"""The trainer's configuration: the one contract between the operator and the training pod.

The operator's Job builder writes a ``TrainerConfig`` as JSON into the container's environment variable
``YOLO_TRAINER_CONFIG``; the trainer reads it from there or from ``--config FILE`` (YAML or JSON) when run
standalone. S3 credentials never appear here: they come from ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (a secretKeyRef in the pod).

Keep this module free of heavy imports (no torch, no ultralytics, no boto3): the operator imports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

CONFIG_ENV = "YOLO_TRAINER_CONFIG"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class S3Config(_Model):
    endpoint: str | None = Field(None, description="S3 endpoint URL (MinIO, Ceph, ODF); unset means AWS.")
    region: str = Field("us-east-1", description="S3 region.")
    ca_bundle: str | None = Field(None, description="Path of a PEM CA bundle inside the pod.")
    verify_tls: bool = Field(True, description="Verify the endpoint's TLS certificate.")


class TrainingConfig(_Model):
    epochs: int = Field(100, ge=1)
    imgsz: int = Field(640, ge=32, multiple_of=32)
    batch: int = Field(16, ge=1)
    patience: int = Field(100, ge=0)
    freeze: int | None = Field(None, ge=0, description="Freeze the first N modules (10 = YOLOv8 backbone).")
    optimizer: str = Field("auto")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Other Ultralytics train arguments, validated by the trainer."
    )
    workers: int | None = Field(
        None, ge=0, description="DataLoader workers; unset = chosen from CPUs and shm."
    )
    seed: int = 0


class StatusTarget(_Model):
    """Where the trainer reports progress: the TrainingJob's status subresource (merge patch)."""

    namespace: str
    name: str
    group: str = "yolo-operator.io"
    version: str = "v1alpha1"
    plural: str = "trainingjobs"


class TrainerConfig(_Model):
    namespace: str = Field("default", description="Namespace of the TrainingJob (part of the output path).")
    name: str = Field(..., description="Name of the TrainingJob (part of the output path).")
    model: str = Field(
        ...,
        description="Base weights: a hub name (yolov8n.pt), an s3:// or https:// URI of a .pt file, "
        "or a model YAML (yolov8n.yaml) to train from scratch.",
    )
    dataset: str = Field(
        ..., description="s3:// prefix holding data.yaml, or s3:// URI of a .zip/.tar/.tar.gz."
    )
    output: str = Field(..., description="s3:// prefix; outputs go to <output>/<namespace>/<name>/.")
    s3: S3Config = Field(default_factory=S3Config)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    export_formats: list[str] = Field(default_factory=list, description="e.g. onnx, torchscript")
    offline: bool = Field(False, description="Never try to reach the internet (hub downloads, fonts).")
    status: StatusTarget | None = Field(None, description="Report progress here; unset = log only.")
    work_dir: str = Field("/tmp/yolo-trainer", description="Local scratch directory (dataset, runs).")
    scratch_bytes: int | None = Field(
        None,
        ge=1,
        description="Size of the volume holding work_dir (spec.resources.scratchSize); unset = only the "
        "filesystem's free space bounds it. The dataset must fit in it before staging starts.",
    )

    @field_validator("dataset", "output")
    @classmethod
    def _s3_uri(cls, v: str) -> str:
        if not v.startswith("s3://") or len(v) <= len("s3://"):
            raise ValueError(f"must be an s3:// URI, got {v!r}")
        return v

    @property
    def job_prefix(self) -> str:
        """s3:// prefix (no trailing slash) holding everything this job writes."""
        return f"{self.output.rstrip('/')}/{self.namespace}/{self.name}"

    def to_env_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> TrainerConfig:
    """Reads the config from a YAML/JSON file, else from ``$YOLO_TRAINER_CONFIG``."""
    env = os.environ if environ is None else environ
    if path is not None:
        data = yaml.safe_load(Path(path).read_text())
    elif env.get(CONFIG_ENV):
        data = json.loads(env[CONFIG_ENV])
    else:
        raise ValueError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    return TrainerConfig.model_validate(data)
