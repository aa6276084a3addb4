"""The trainer's configuration: what the operator hands the training pod.

The operator's Job builder (``yolo_operator.controller.build``) writes a ``TrainerConfig`` as JSON into the container's
environment variable ``YOLO_TRAINER_CONFIG``; the trainer reads it from there or from ``--config FILE`` (YAML or
JSON) when run standalone. S3 credentials never appear here: they come from ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (a secretKeyRef in the pod) or, without spec.s3.credentialsSecretRef, from the AWS
credential chain (web identity, container credentials, instance metadata). ``training`` is the TrainingJob's
``spec.training`` itself (one model, :class:`yolo_contract.training.TrainingSpec`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from pydantic import Field, field_validator, model_validator

from yolo_contract import GROUP, PLURAL, VERSION
from yolo_contract.base import Model as _Model
from yolo_contract.exports import ExportFormat
from yolo_contract.model_source import ModelRef, model_ref_from_string
from yolo_contract.sizing import dataset_limits, processes_per_node
from yolo_contract.training import S3Endpoint, TrainingSpec

CONFIG_ENV = "YOLO_TRAINER_CONFIG"
#: Seconds one collective of a multi-node job may wait for a rank that stopped answering (the operator sets it;
#: unset, the trainer's default applies).
COLLECTIVE_TIMEOUT_ENV = "YOLO_TRAINER_COLLECTIVE_TIMEOUT_SECONDS"
#: The node the pod runs on (downward API spec.nodeName): failures that are the node's fault name it.
NODE_NAME_ENV = "YOLO_NODE_NAME"
#: The keys of an OpenShift AI data connection Secret (S3 type), as its dashboard writes them; the pod gets each
#: as the environment variable of the same name.
DATA_CONNECTION_KEYS: tuple[str, ...] = (
    "AWS_S3_ENDPOINT", "AWS_DEFAULT_REGION", "AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
)  # fmt: skip
#: Environment the operator (or torch's launcher, for the ranks) sets in the trainer container; extra environment
#: (chart-wide or spec.env) may not set these, nor any name starting with one of RESERVED_ENV_PREFIXES: YOLO_ (the
#: trainer's), PET_ (torchrun's settings: nodes, node rank, rendezvous address; the operator's for nodes > 1, the
#: trainer's for the ranks of a pod) and TORCHELASTIC_ (torchrun's own). RANK, WORLD_SIZE and the other names
#: torchrun gives each rank would make a single process believe it is a rank of a world that does not exist.
RESERVED_ENV: tuple[str, ...] = (
    CONFIG_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CA_BUNDLE", "HOME", "YOLO_CONFIG_DIR",
    "MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCH_HOME", "PYTHONUNBUFFERED", "POD_NAME", "POD_NAMESPACE",
    "NVIDIA_VISIBLE_DEVICES", "AWS_S3_ENDPOINT", "AWS_DEFAULT_REGION", "AWS_S3_BUCKET",
    "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
    "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE",
)  # fmt: skip
RESERVED_ENV_PREFIXES: tuple[str, ...] = ("YOLO_", "PET_", "TORCHELASTIC_")


def reserved_env_problem(name: str) -> str | None:
    """Why extra environment may not set ``name``, or None."""
    if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
        reserved = ", ".join([*RESERVED_ENV, *(f"{p}*" for p in RESERVED_ENV_PREFIXES)])
        return (f"{name} is set by the operator for the trainer, or by torch's launcher for its ranks "
                f"(reserved: {reserved})")
    return None


class S3Config(S3Endpoint):
    """spec.s3 as the pod sees it: the CA bundle is a file mounted from the ConfigMap, keys come from env."""

    ca_bundle: str | None = Field(None, description="Path of a PEM CA bundle inside the pod.")
    data_connection: bool = Field(
        False,
        description="Endpoint, region and bucket come from the data connection's environment (AWS_S3_ENDPOINT, "
        "AWS_DEFAULT_REGION, AWS_S3_BUCKET); see TrainerConfig.with_data_connection.",
    )

    @property
    def verify_tls(self) -> bool:
        return not self.insecure_skip_tls_verify


class StatusTarget(_Model):
    """Where the trainer reports progress: the TrainingJob's status subresource (merge patch)."""

    namespace: str
    name: str
    group: str = GROUP
    version: str = VERSION
    plural: str = PLURAL


class TrainerConfig(_Model):
    namespace: str = Field("default", description="Namespace of the TrainingJob (part of the output path).")
    name: str = Field(..., description="Name of the TrainingJob (part of the output path).")
    uid: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$",
        description="metadata.uid of the TrainingJob (part of the output path): each incarnation of a name "
        "resumes and publishes only under its own <output>/<namespace>/<name>/<uid>/. Unset (the CLI run by "
        "hand): <output>/<namespace>/<name>/, and a second run of the same name resumes the first.",
    )
    model: ModelRef = Field(
        ...,
        description="Base weights, one kind each (yolo_contract.model_source): a hub name (yolov8n.pt), an s3:// "
        "or https:// URI of a .pt file, a model YAML (yolov8n.yaml) to train from scratch, a file in the image, or "
        "the best weights of a parent TrainingJob. A plain string is read as before the model was typed.",
    )
    dataset: str = Field(..., description="s3:// prefix holding data.yaml, or s3:// URI of a .zip/.tar/.tar.gz.")
    output: str = Field(..., description="s3:// prefix; outputs go to job_prefix under it.")
    s3: S3Config = Field(default_factory=S3Config)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    export_formats: list[ExportFormat] = Field(default_factory=list, description="e.g. onnx, torchscript")
    gpus: int = Field(0, ge=0, description="GPUs the pod holds (spec.resources.gpus): the trainer refuses to "
                      "train on fewer CUDA devices than that, rather than fall back silently.")
    cpu_processes: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Training processes per node on CPU (gpus must be 0): more than 1 runs that many DDP ranks "
        "with the gloo backend under torch's launcher, as N GPUs would (CI runs 2 real ranks this way). Only ever "
        "an explicit choice: a pod that holds GPUs never trains on CPU ranks instead. Unset = 1.",
    )
    simulated_gpus: bool = Field(
        False,
        description="Test beds only (the chart's trainer.simulatedGpus): a pod that holds GPUs but sees no CUDA "
        "device trains on CPU. Off: it fails at once with GPUNotVisible (exit 22).",
    )
    offline: bool = Field(False, description="Never try to reach the internet (hub downloads, fonts).")
    hub_mirror: str | None = Field(
        None, description="s3:// prefix mirroring hub weights: <prefix>/<name> is tried before the internet."
    )
    status: StatusTarget | None = Field(None, description="Report progress here; unset = log only.")
    work_dir: str = Field("/tmp/yolo-trainer", description="Local scratch directory (dataset, runs).")
    scratch_bytes: int | None = Field(
        None,
        ge=1,
        description="Size of the volume holding work_dir (spec.resources.scratchSize); unset = only the "
        "filesystem's free space bounds it. The dataset must fit in it before staging starts.",
    )
    max_dataset_bytes: int | None = Field(
        None,
        ge=1,
        description="Bytes the staged dataset may reach (spec.resources.maxDatasetSize); unset: derived from "
        "scratch_bytes (yolo_contract.sizing.dataset_limits).",
    )
    max_dataset_files: int | None = Field(
        None,
        ge=1,
        description="Files the staged dataset may have (spec.resources.maxDatasetFiles); unset: derived from "
        "scratch_bytes (yolo_contract.sizing.dataset_limits).",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_string(cls, v: object) -> object:
        # The compatibility path (model_ref_from_string): a Job made by the previous operator release, or a
        # hand-written --config, carries the model as a plain string.
        return model_ref_from_string(v) if isinstance(v, str) else v

    @field_validator("dataset", "output")
    @classmethod
    def _s3_uri(cls, v: str) -> str:
        if v.startswith("s3://") and len(v) > len("s3://"):
            return v
        if "://" not in v and v and not v.startswith("/"):
            return v  # a key in the data connection's bucket (with_data_connection makes it a URI)
        raise ValueError(f"must be an s3:// URI, got {v!r}")

    def with_data_connection(self, environ: dict[str, str] | None = None) -> TrainerConfig:
        """This config with the data connection's endpoint, region and bucket applied (from the environment the
        pod got from the Secret): relative dataset and output become s3://<AWS_S3_BUCKET>/... URIs."""
        if not self.s3.data_connection:
            return self
        env = os.environ if environ is None else environ
        bucket = env.get("AWS_S3_BUCKET", "").strip()
        endpoint = env.get("AWS_S3_ENDPOINT", "").strip() or None
        if endpoint and "://" not in endpoint:
            endpoint = f"https://{endpoint}"  # the dashboard accepts a bare host name
        region = env.get("AWS_DEFAULT_REGION", "").strip() or self.s3.region

        def uri(v: str) -> str:
            if v.startswith("s3://"):
                return v
            if not bucket:
                raise ValueError(f"{v!r} is a key in the data connection's bucket, but its AWS_S3_BUCKET is empty")
            return f"s3://{bucket}/{v}"

        s3 = self.s3.model_copy(update={"endpoint": endpoint, "region": region})
        return self.model_copy(update={"s3": s3, "dataset": uri(self.dataset), "output": uri(self.output)})

    @model_validator(mode="after")
    def _cpu_processes_only_without_gpus(self) -> TrainerConfig:
        if (self.cpu_processes or 1) > 1 and self.gpus > 0:
            raise ValueError(f"cpuProcesses ({self.cpu_processes}) is for CPU training, but gpus is {self.gpus}: "
                             "a pod that holds GPUs trains on them, one process per GPU")  # fmt: skip
        return self

    @property
    def dataset_limits(self) -> tuple[int, int]:
        """(bytes, files) the staged dataset may reach (see :func:`yolo_contract.sizing.dataset_limits`)."""
        return dataset_limits(self.scratch_bytes, self.max_dataset_bytes, self.max_dataset_files)

    @property
    def processes_per_node(self) -> int:
        """Training processes (DDP ranks) this pod runs: one per GPU, else ``cpu_processes``."""
        return processes_per_node(self.gpus, self.cpu_processes)

    @property
    def job_prefix(self) -> str:
        """s3:// prefix (no trailing slash) holding everything this job writes: <output>/<namespace>/<name>/<uid>.
        The uid scopes a run to one incarnation of the TrainingJob: a job deleted and re-created with the same
        name starts fresh and never overwrites what the earlier one published."""
        scoped = f"{self.output.rstrip('/')}/{self.namespace}/{self.name}"
        return f"{scoped}/{self.uid}" if self.uid else scoped

    def to_env_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> TrainerConfig:
    """Reads the config from a YAML/JSON file, else from ``$YOLO_TRAINER_CONFIG``."""
    env = os.environ if environ is None else environ
    if path is not None:
        data = yaml.safe_load(Path(path).read_text())
    elif env.get(CONFIG_ENV):
        data = json.loads(env[CONFIG_ENV])
    else:
        raise ValueError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    return TrainerConfig.model_validate(data)
