"""The TrainingJob API (``yolo-operator.io/v1alpha1``) as pydantic models.

These models are the single source of truth: ``yolo_operator.gen.crd`` generates the CustomResourceDefinition
(structural OpenAPI v3 schema and CEL rules) from them, and the operator parses TrainingJobs with them.
Field constraints (patterns, ranges, lengths) are pydantic's and become the CRD's OpenAPI constraints, so
both check them; rules that need CEL (``x-kubernetes-validations``) are declared once, beside their field,
and the API server alone enforces them. The parts of the spec the trainer receives (``spec.training``, the
S3 endpoint) are the contract's models (``yolo_contract.training``).

The trainer-written status fields (stage, progress, lastCheckpoint, artifacts) are defined once, in
``yolo_contract.progress.TrainerReport``; ``TrainingJobStatus`` extends it with the operator-owned fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from yolo_contract import API_VERSION, KIND, MAX_NAME
from yolo_contract.base import Model as _Model
from yolo_contract.exports import ExportFormat
from yolo_contract.model_source import HUB_DESCRIPTION, HUB_MODEL, MODEL_YAML, URI_DESCRIPTION, YAML_DESCRIPTION
from yolo_contract.progress import TrainerReport
from yolo_contract.trainer_config import DATA_CONNECTION_KEYS, RESERVED_ENV, RESERVED_ENV_PREFIXES
from yolo_contract.training import ARCHIVE_SUFFIXES, Rule, S3Endpoint, TrainingSpec, auto_batch, cel, rules

from yolo_operator.api.reasons import COND_FAILED, FAILED, PHASES, REASON_GANG_RESTART_LIMIT, Phase

# ExportFormat: the Ultralytics export formats (``yolo export format=...``) the trainer image can produce
# (``yolo_contract.exports``, the trainer's config's type too); admission refuses any other, naming it.
__all__ = ["API_VERSION", "MAX_NAME", "ExportFormat", "TrainingSpec"]

# --- patterns (RE2-compatible: the same text is used by the API server and by Python's re) -------------
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A non-negative resource quantity such as ``500m``, ``2``, ``8Gi``, ``1.5G``.
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE])?$"
#: A quantity of zero (``0``, ``0.0Gi``): no size at all, for fields where that cannot be meant.
ZERO_QUANTITY = r"^(0+(\.0*)?|\.0+)([KMGTPE]i|[mkMGTPE])?$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
#: A key (prefix) relative to a data connection's bucket: no scheme, no leading slash.
BUCKET_KEY = r"^[^/\s][^\s]*$"
#: An extended resource name: the pod is only valid with a fully qualified one (domain/name).
RESOURCE_NAME = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$"
)
#: A taint key (empty allowed: with operator Exists it matches every taint) and a label or taint value.
TAINT_KEY = (
    r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?)?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
#: Compressed or archive files the trainer cannot stage (a .gz is accepted only as .tar.gz).
UNSUPPORTED_ARCHIVE = r"\.(rar|7z|gz|bz2|xz|zst|lz4)$"

MAX_URI = 1024
#: Most pods of one multi-node TrainingJob (spec.resources.nodes): a pod's hostname is its Job's name and its
#: index (``<job>-<index>``), a DNS label of 63 characters at most (builders.job_name leaves room for two digits).
MAX_NODES = 64
#: spec fields that may change after creation; every other spec field is immutable (CEL transition rules).
MUTABLE_SPEC_FIELDS: tuple[str, ...] = ("suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "stop")


def _list_set() -> dict[str, Any]:
    return {"x-kubernetes-list-type": "set"}


# === spec =================================================================================================


EXACTLY_ONE_MODEL = Rule(
    "[has(self.hub), has(self.uri), has(self.yaml), has(self.fromTrainingJob)].filter(x, x).size() == 1",
    "spec.model: exactly one of hub, uri, yaml or fromTrainingJob must be set",
    lambda m: sum(v is not None for v in (m.hub, m.uri, m.yaml, m.from_training_job)) == 1,
)
DATASET_URI = Rule(
    f"self.matches(r'{S3_URI}') || (!self.contains('://') && self.matches(r'{BUCKET_KEY}'))",
    "spec.dataset must be an s3:// URI (s3://bucket/prefix/ or s3://bucket/dataset.zip), or with "
    "spec.s3.dataConnection a key in its bucket",
    lambda v: bool(re.search(S3_URI, v) or ("://" not in v and re.search(BUCKET_KEY, v))),
)
OUTPUT_URI = Rule(
    DATASET_URI.cel,
    "spec.output must be an s3:// URI (s3://bucket/prefix/), or with spec.s3.dataConnection a key prefix in its "
    "bucket",
    DATASET_URI.check,
)
AUTOBATCH_ONE_GPU = Rule(
    "!has(self.training) || !has(self.training.batch) || self.training.batch >= 1.0 "
    "|| (has(self.resources) && has(self.resources.gpus) && self.resources.gpus == 1 "
    "&& (!has(self.resources.nodes) || self.resources.nodes == 1))",
    "spec.training.batch: AutoBatch (-1 or a fraction in (0, 1)) measures one GPU's memory, so it needs "
    "spec.resources.gpus 1 on one node; set a whole batch for CPU, several GPUs or several nodes (Ultralytics "
    "refuses it with DDP and uses 16 on CPU)",
    lambda spec: not auto_batch(spec.training.batch) or (spec.resources.gpus == 1 and spec.resources.nodes == 1),
)
#: spec.training.batch is the global batch: every rank of every node takes batch / world size of it.
BATCH_PER_NODE = Rule(
    "!has(self.resources) || !has(self.resources.nodes) || self.resources.nodes == 1 || !has(self.training) "
    "|| !has(self.training.batch) || self.training.batch < 1.0 "
    "|| self.training.batch >= double(self.resources.nodes * (has(self.resources.gpus) && self.resources.gpus > 0 "
    "? self.resources.gpus : 1))",
    "spec.training.batch is the total batch of all nodes, split across their ranks: with spec.resources.nodes > 1 "
    "it must be at least nodes x gpus (nodes on CPU), or some rank would get no image",
    lambda spec: (
        spec.resources.nodes == 1
        or auto_batch(spec.training.batch)
        or spec.training.batch >= spec.resources.nodes * max(1, spec.resources.gpus)
    ),
)
NAME_LENGTH = Rule(
    f"self.metadata.name.size() <= {MAX_NAME}",
    f"metadata.name must be at most {MAX_NAME} characters (it is used as a label value)",
    lambda meta: len(str(meta.get("name") or "")) <= MAX_NAME,
)


class ModelSource(_Model):
    """Where the starting weights come from: exactly one of hub, uri, yaml, fromTrainingJob."""

    model_config = ConfigDict(json_schema_extra=rules(EXACTLY_ONE_MODEL))

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        return EXACTLY_ONE_MODEL.validate(self)

    hub: str | None = Field(
        None,
        max_length=128,
        pattern=HUB_MODEL,
        description=HUB_DESCRIPTION,
    )
    uri: str | None = Field(
        None,
        max_length=MAX_URI,
        description=URI_DESCRIPTION,
        json_schema_extra=rules(
            cel(
                "self.startsWith('s3://') || self.startsWith('https://')",
                "spec.model.uri must be an s3:// or https:// URI",
            ),
            cel("self.endsWith('.pt')", "spec.model.uri must point to a .pt weights file"),
        ),
    )
    yaml: str | None = Field(
        None,
        max_length=256,
        pattern=MODEL_YAML,
        description=YAML_DESCRIPTION,
    )
    from_training_job: str | None = Field(
        None,
        max_length=MAX_NAME,
        pattern=DNS_LABEL,
        description="Name of a TrainingJob in the same namespace whose best weights "
        "(status.artifacts.bestWeights) are the starting point; this job waits until that one Succeeded.",
    )


class SecretCredentialsRef(_Model):
    """A Secret in the TrainingJob's namespace holding S3 keys; injected as env via secretKeyRef only."""

    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    access_key_id_key: str = Field(
        "AWS_ACCESS_KEY_ID", max_length=253, pattern=CONFIG_KEY, description="Key holding the access key id."
    )
    secret_access_key_key: str = Field(
        "AWS_SECRET_ACCESS_KEY",
        max_length=253,
        pattern=CONFIG_KEY,
        description="Key holding the secret access key.",
    )


class ConfigMapKeyRef(_Model):
    """A key of a ConfigMap in the TrainingJob's namespace."""

    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the ConfigMap.")
    key: str = Field("ca.crt", max_length=253, pattern=CONFIG_KEY, description="Key holding the PEM bundle.")


class S3Spec(S3Endpoint):
    """How to reach the S3-compatible object store, and with which credentials."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.dataConnection) || (!has(self.credentialsSecretRef) && !has(self.endpoint))",
                "spec.s3.dataConnection brings the endpoint and keys: leave spec.s3.endpoint and "
                "spec.s3.credentialsSecretRef unset",
            )
        )
    )

    data_connection: LocalObjectReference | None = Field(
        None,
        description="An OpenShift AI data connection: a Secret in the TrainingJob's namespace with "
        + ", ".join(DATA_CONNECTION_KEYS)
        + " (as the OpenShift AI dashboard writes it). The endpoint, region, bucket and keys come from it "
        "(keys only through secretKeyRef; the operator never reads it), and spec.dataset and spec.output may "
        "then be keys in its bucket (helmets/, runs/).",
    )

    credentials_secret_ref: SecretCredentialsRef | None = Field(
        None,
        description="Secret with the access keys; unset means anonymous access or ambient credentials.",
    )
    ca_bundle: ConfigMapKeyRef | None = Field(
        None, description="ConfigMap key with a PEM CA bundle for an endpoint signed by a private CA."
    )


class ResourcesSpec(_Model):
    """Compute and disk for the training pod."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.scratchStorageClassName) || has(self.scratchSize)",
                "spec.resources.scratchStorageClassName needs spec.resources.scratchSize (the volume's size)",
            )
        )
    )

    gpus: int = Field(1, ge=0, le=64, description="GPUs for the pod (for each pod, with nodes > 1); 0 trains on CPU.")
    nodes: int = Field(
        1,
        ge=1,
        le=MAX_NODES,
        description="Pods (nodes) the training runs on, each with gpus GPUs and the cpu, memory and scratch "
        "above: one DDP world of nodes x gpus ranks (nodes x 1 on CPU, with gloo). 1: one pod, as a plain Job. "
        "More: an Indexed Job of that many pods plus a headless Service for their rendezvous (TCP port 29500, "
        "pod to pod; docs/distributed.md says what the network must allow). The pods run as a gang: one lost, "
        "evicted or preempted restarts them all from the newest checkpoint, not counted as a failure, at most "
        "spec.maxGangRestarts times. With Kueue the whole gang is admitted at once or not at all.",
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu",
        max_length=253,
        pattern=RESOURCE_NAME,
        description="Extended resource name of a GPU (nvidia.com/gpu, amd.com/gpu, nvidia.com/mig-1g.10gb).",
    )
    cpu: str = Field("4", max_length=32, pattern=QUANTITY, description="CPU request.")
    cpu_limit: str | None = Field(
        None,
        max_length=32,
        pattern=QUANTITY,
        description="CPU limit of the trainer container (at least cpu). Unset: no CPU limit, unless the "
        "namespace's LimitRange sets a default; a ResourceQuota on limits.cpu refuses a pod without one "
        "(the TrainingJob then shows Stalled/PodRefused).",
    )
    memory: str = Field(
        "16Gi",
        max_length=32,
        pattern=QUANTITY,
        description="Memory for the trainer process; the pod's request and limit are this plus shmSize.",
    )
    shm_size: str | None = Field(
        None,
        max_length=32,
        pattern=QUANTITY,
        description="Size of /dev/shm; unset computes it from workers, batch and imgsz.",
    )
    scratch_size: str | None = Field(
        None,
        max_length=32,
        pattern=QUANTITY,
        description="Size of the scratch volume at /tmp. It holds the staged dataset (an archive's extracted "
        "contents, and a .zip itself too while it is extracted) plus about 2Gi for weights, checkpoints and "
        "runs. It becomes the emptyDir's sizeLimit "
        "and the pod's ephemeral-storage request and limit, so the scheduler picks a node with that much disk "
        "and an overflow evicts only this pod; the trainer fails with ScratchTooSmall before downloading a "
        "dataset that cannot fit. It also sets the dataset limits (maxDatasetSize, maxDatasetFiles). Unset: "
        "the operator's default (chart value trainer.scratchSize); where that is empty too, no limit or "
        "request, and the dataset is checked against the node's free disk only.",
        json_schema_extra=rules(
            cel(f"!self.matches(r'{ZERO_QUANTITY}')", "spec.resources.scratchSize must be greater than zero")
        ),
    )
    scratch_storage_class_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="StorageClass of a volume of its own for /tmp: a generic ephemeral volume (a "
        "ReadWriteOnce PersistentVolumeClaim of scratchSize, created and deleted with the pod) instead of "
        "an emptyDir on the node's disk. Needs scratchSize.",
    )
    max_dataset_size: str | None = Field(
        None,
        max_length=32,
        pattern=QUANTITY,
        description="Most bytes the staged dataset may extract to (a prefix's total, an archive's contents): "
        "staging stops there with DatasetInvalid (exit 11), which stops an archive bomb before it fills the disk. "
        "Unset: the scratch size (scratchSize, else the chart's trainer.scratchSize), else 100Gi.",
        json_schema_extra=rules(
            cel(f"!self.matches(r'{ZERO_QUANTITY}')", "spec.resources.maxDatasetSize must be greater than zero")
        ),
    )
    max_dataset_files: int | None = Field(
        None,
        ge=1,
        description="Most files the staged dataset may have; more fails with DatasetInvalid (exit 11). Unset: "
        "one per 4 KiB of the scratch size (the most a volume of that size holds), else 5000000.",
    )


ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


class LocalObjectReference(_Model):
    """A core/v1 LocalObjectReference: an object by name in the TrainingJob's namespace."""

    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object.")


class KeyRef(_Model):
    """A key of a Secret or ConfigMap in the TrainingJob's namespace."""

    name: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret or ConfigMap.")
    key: str = Field(..., max_length=253, pattern=CONFIG_KEY, description="The key.")
    optional: bool | None = Field(None, description="Start the pod even when the key is missing.")


class EnvVarSource(_Model):
    """Where an environment variable's value comes from: exactly one of secretKeyRef, configMapKeyRef."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "[has(self.secretKeyRef), has(self.configMapKeyRef)].filter(x, x).size() == 1",
                "spec.env[].valueFrom: exactly one of secretKeyRef or configMapKeyRef must be set",
            )
        )
    )

    secret_key_ref: KeyRef | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = Field(None, description="A key of a ConfigMap.")


class EnvVar(_Model):
    """Extra environment for the trainer container (HTTPS_PROXY, NO_PROXY, AWS_ROLE_ARN, ...)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                f"!(self.name in {list(RESERVED_ENV)}) && "
                + " && ".join(f"!self.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES),
                "spec.env[].name: the operator sets this variable for the trainer, or torch's launcher for its ranks "
                "(reserved: "
                + ", ".join([*RESERVED_ENV, *(f"{p}*" for p in RESERVED_ENV_PREFIXES)]) + ")",
            ),
            cel("!(has(self.value) && has(self.valueFrom))", "spec.env[]: set value or valueFrom, not both"),
        )
    )

    name: str = Field(..., max_length=256, pattern=ENV_NAME, description="Variable name.")
    value: str | None = Field(None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(None, description="A Secret or ConfigMap key.")


TOLERATION_RULES = (
    Rule(
        "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
        "spec.scheduling.tolerations[].value must be empty when operator is Exists",
        lambda t: not (t.operator == "Exists" and t.value),
    ),
    # The pod's own rules, so that a TrainingJob is refused at admission rather than its Job later.
    Rule(
        "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
        "spec.scheduling.tolerations[].operator must be Exists when key is empty",
        lambda t: bool(t.key) or t.operator == "Exists",
    ),
    Rule(
        "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        "spec.scheduling.tolerations[].tolerationSeconds needs effect NoExecute",
        lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
    ),
)


class Toleration(_Model):
    """A core/v1 Toleration."""

    model_config = ConfigDict(json_schema_extra=rules(*TOLERATION_RULES))

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        for rule in TOLERATION_RULES:
            rule.validate(self)
        return self

    key: str | None = Field(
        None, max_length=316, pattern=TAINT_KEY, description="Taint key; empty with Exists matches all."
    )
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default).")
    value: str | None = Field(None, max_length=63, pattern=LABEL_VALUE, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated.")


class SchedulingSpec(_Model):
    """Where the training pod may run."""

    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] | None = Field(
        None, max_length=32, description="Node labels the pod requires."
    )
    tolerations: list[Toleration] | None = Field(
        None,
        max_length=32,
        description="Tolerations; one for the GPU resource taint is added when resources.gpus > 0.",
    )
    affinity: dict[str, Any] | None = Field(
        None, description="A core/v1 Affinity, passed to the pod unchanged (validated by the API server)."
    )
    priority_class_name: str | None = Field(
        None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass of the pod."
    )


def _relative_needs_data_connection(field: str, example: str) -> dict[str, str]:
    return cel(
        f"self.{field}.startsWith('s3://') || (has(self.s3) && has(self.s3.dataConnection))",
        f"spec.{field} must be an s3:// URI ({example}), or a key in the bucket of spec.s3.dataConnection",
        fieldPath=f".{field}",
    )


class TrainingJobSpec(_Model):
    """Desired state of a TrainingJob. Immutable after creation except suspend, activeDeadlineSeconds,
    ttlSecondsAfterFinished and stop."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel("!oldSelf.stop || self.stop", "spec.stop cannot be unset once true", fieldPath=".stop"),
            _relative_needs_data_connection("dataset", "s3://bucket/prefix/ or s3://bucket/dataset.zip"),
            _relative_needs_data_connection("output", "s3://bucket/prefix/"),
            AUTOBATCH_ONE_GPU,
            BATCH_PER_NODE,
        )
    )

    @model_validator(mode="after")
    def _autobatch(self) -> TrainingJobSpec:
        return BATCH_PER_NODE.validate(AUTOBATCH_ONE_GPU.validate(self))

    model: ModelSource = Field(..., description="Starting weights or architecture.")
    dataset: str = Field(
        ...,
        max_length=MAX_URI,
        description="s3:// prefix holding data.yaml (Ultralytics layout), or s3:// URI of a "
        + ", ".join(ARCHIVE_SUFFIXES)
        + " archive of it.",
        json_schema_extra=rules(
            DATASET_URI,
            cel(
                f"!self.matches(r'{UNSUPPORTED_ARCHIVE}') || self.endsWith('.tar.gz')",
                "spec.dataset: only " + ", ".join(ARCHIVE_SUFFIXES) + " archives are supported",
            ),
        ),
    )
    output: str = Field(
        ...,
        max_length=MAX_URI,
        description="s3:// prefix for the results; they go to <output>/<namespace>/<name>/<uid>/ (uid: the "
        "TrainingJob's metadata.uid, so a job deleted and re-created with the same name starts fresh and never "
        "overwrites what the earlier one published; status.artifacts names every object).",
        json_schema_extra=rules(
            OUTPUT_URI
        ),
    )
    s3: S3Spec | None = Field(None, description="Object store endpoint, credentials and CA bundle.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training arguments.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="GPUs, CPU, memory, shm, scratch disk.")
    scheduling: SchedulingSpec | None = Field(None, description="Node selection and priority.")
    image: str | None = Field(
        None,
        max_length=512,
        pattern=r"^[^\s]+$",
        description="Trainer image; unset uses the operator's default (YOLO_OPERATOR_TRAINER_IMAGE).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Pull policy of the trainer image."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        None,
        max_length=16,
        description="Secrets for pulling the trainer image from a private registry, in addition to the "
        "operator's defaults (chart value trainer.imagePullSecrets).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    env: list[EnvVar] | None = Field(
        None,
        max_length=64,
        description="Extra environment for the trainer container, after the operator's defaults (chart value "
        "trainer.env), e.g. HTTPS_PROXY/NO_PROXY or AWS_ROLE_ARN. Names the trainer owns are refused.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    service_account_annotations: dict[str, str] | None = Field(
        None,
        max_length=32,
        description="Annotations of the job's ServiceAccount, in addition to the operator's defaults (chart "
        "value trainer.serviceAccountAnnotations), e.g. eks.amazonaws.com/role-arn for workload identity.",
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": 4096},
            **rules(
                cel(
                    f"self.all(k, k.size() > 0 && k.size() <= 316 && k.matches(r'{TAINT_KEY}'))",
                    "spec.serviceAccountAnnotations: keys must be qualified names (example.com/name)",
                )
            ),
        },
    )
    backoff_limit: int = Field(
        3, ge=0, le=100, description="Retries after retriable failures (disruptions do not count)."
    )
    max_gang_restarts: int = Field(
        5,
        ge=0,
        le=100,
        description="With resources.nodes > 1: how many times the gang may restart (all its pods replaced and "
        "resumed from the newest checkpoint after one was lost, evicted, preempted or failed); one more fails the "
        "TrainingJob with GangRestartLimitExceeded. Restarts after a disruption do not count against "
        "backoffLimit (that counts the trainer's retriable failures); this bounds them all. Unused with one node.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Wall-clock limit of the whole job, retries included. Mutable."
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description="Delete the Job and its pods this long after it finished; TrainingJob stays. Mutable.",
    )
    suspend: bool = Field(
        False, description="Suspend the job: running pods are deleted, resuming starts a new pod. Mutable."
    )
    stop: bool = Field(
        False,
        description="Stop training and keep the best weights: the trainer ends after the epoch it is in (at "
        "least one epoch), publishes best.pt, its test evaluation and exports, and the TrainingJob ends "
        "Succeeded with reason StopRequested. Mutable; cannot be unset.",
    )
    queue_name: str | None = Field(
        None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Kueue LocalQueue; the Job is created suspended and Kueue admits it.",
    )
    export_formats: list[ExportFormat] = Field(
        default_factory=list,
        max_length=16,
        description="Export the best weights to these formats; they are published for a model server under "
        "<output>/<namespace>/<name>/<uid>/serving/<format>/1/ (model.onnx, model.xml + model.bin, model.pt).",
        json_schema_extra=_list_set(),
    )

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return DATASET_URI.validate(v)

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return OUTPUT_URI.validate(v)


# === status ===============================================================================================


class Condition(_Model):
    """A metav1.Condition."""

    type: str = Field(
        ...,
        max_length=316,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$",
        description="Condition type.",
    )
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str = Field(
        ...,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason (see yolo_operator.api.reasons).",
    )
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        ...,
        max_length=64,
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(None, ge=0, description="metadata.generation the condition is for.")


class KueueStatus(_Model):
    """What Kueue says about the TrainingJob's Workload (spec.queueName only), read from the Workload."""

    workload: str | None = Field(None, max_length=253, description="Name of the Kueue Workload (owned by the Job).")
    admitted: bool | None = Field(None, description="Whether Kueue has admitted the Workload (quota reserved).")
    cluster_queue: str | None = Field(None, max_length=253, description="ClusterQueue that admitted it.")
    reason: str | None = Field(
        None, max_length=128, description="Kueue's reason: the Workload's newest condition that holds it "
        "(QuotaReserved=False: Pending, ...; Evicted: Preempted, InactiveWorkload, ...) or Admitted."
    )
    message: str | None = Field(None, max_length=1024, description="Kueue's message for that reason.")
    evictions: int | None = Field(
        None, ge=0, description="Times Kueue evicted it (preemptions and others; Workload status.schedulingStats)."
    )
    preemptions: int | None = Field(None, ge=0, description="Of those, evictions by preemption.")


class TrainingJobStatus(TrainerReport):
    """Observed state. stage, progress, lastCheckpoint and artifacts are written by the trainer
    (yolo_contract.progress.TrainerReport); everything else by the operator."""

    phase: Phase | None = Field(
        None,
        description="Pending, Staging, Training, Uploading, Succeeded, Failed, Suspended, or Queued (spec.queueName: "
        "Kueue holds the Job, not admitted yet or preempted and requeued).",
    )
    conditions: list[Condition] | None = Field(
        None,
        max_length=16,
        description="Latest observations (metav1.Condition).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(None, ge=0, description="metadata.generation last reconciled.")
    start_time: str | None = Field(
        None,
        max_length=64,
        description="When the Job started (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    completion_time: str | None = Field(
        None,
        max_length=64,
        description="When the Job finished (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    restart_count: int | None = Field(
        None,
        ge=0,
        description="Pods replaced after failures or disruptions; with resources.nodes > 1, gang restarts (node "
        "0's pod replaced: the whole gang resumed from the newest checkpoint).",
    )
    pod_name: str | None = Field(
        None,
        max_length=253,
        description="The Job's newest pod: the one training now, or the last one that did (with several nodes, "
        "node 0's: global rank 0, which reports progress).",
    )
    size: str | None = Field(
        None, max_length=32, description="With resources.nodes > 1: nodes x GPUs per node, e.g. 2x4 GPU (2x CPU)."
    )
    job_name: str | None = Field(None, max_length=MAX_NAME, description="Name of the batch/v1 Job.")
    model: str | None = Field(None, max_length=MAX_URI, description="The resolved model the trainer loads.")
    kueue: KueueStatus | None = Field(None, description="Kueue's view of the Job's Workload (spec.queueName).")


class TrainingJob(_Model):
    """A YOLO transfer-learning (or from-scratch) training run."""

    api_version: Literal["yolo-operator.io/v1alpha1"] = Field(API_VERSION, description="API version.")
    kind: Literal["TrainingJob"] = Field(KIND, description="Kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: TrainingJobSpec = Field(..., description="Desired state.")
    status: TrainingJobStatus | None = Field(None, description="Observed state.")

    @field_validator("metadata")
    @classmethod
    def _name_length(cls, v: dict[str, Any]) -> dict[str, Any]:
        return NAME_LENGTH.validate(v)

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def namespace(self) -> str:
        return self.metadata.get("namespace") or "default"

    @property
    def uid(self) -> str | None:
        return self.metadata.get("uid")

    @classmethod
    def from_body(cls, body: Any) -> TrainingJob:
        """Parses a TrainingJob from a dict (or kopf Body); unknown server-side status fields are dropped, and
        so is a status that does not parse (garbage from an older CRD): only the spec can make this fail."""
        data = dict(body)
        if "status" in data:
            known = {f.alias or n for n, f in TrainingJobStatus.model_fields.items()}
            status = {k: v for k, v in clean_status(data["status"]).items() if k in known}
            try:
                TrainingJobStatus.model_validate(status)
            except ValueError:
                status = {}
            data["status"] = status or None
        meta = data.get("metadata") or {}
        return cls.model_validate({**data, "metadata": dict(meta)})


#: Types of the operator-owned status fields, as the handlers read them back.
_STATUS_TYPES: dict[str, type] = {
    "phase": str, "conditions": list, "observedGeneration": int, "startTime": str, "completionTime": str,
    "restartCount": int, "podName": str, "jobName": str, "model": str, "kueue": dict, "size": str,
}  # fmt: skip


def clean_status(status: Any) -> dict[str, Any]:
    """``status`` as the operator may read it: a dict whose operator-owned fields have their schema's types.

    Garbage stored under an older or permissive CRD (status a string, conditions that are not objects, a
    phase that is no phase) is dropped, so status derivation starts afresh and its next write replaces it
    instead of crashing on it. Other fields (the trainer's) pass unchanged."""
    if not isinstance(status, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in status.items():
        typ = _STATUS_TYPES.get(key)
        if typ is not None and (not isinstance(value, typ) or isinstance(value, bool)):
            continue
        if key == "conditions":
            value = [c for c in value if isinstance(c, dict) and isinstance(c.get("type"), str)]
        if key == "phase" and value not in PHASES:
            continue
        out[key] = value
    return out


def gang_stopped(tj: dict[str, Any]) -> bool:
    """The operator failed this multi-node TrainingJob for too many gang restarts (a view or a body): its Job is
    kept suspended (or its Kueue Workload inactive) so that no pod starts again."""
    status = tj.get("status") if isinstance(tj.get("status"), dict) else {}
    if status.get("phase") != FAILED:
        return False
    return any(c.get("type") == COND_FAILED and c.get("reason") == REASON_GANG_RESTART_LIMIT
               for c in status.get("conditions") or () if isinstance(c, dict))  # fmt: skip


def describe_errors(error: ValidationError, limit: int = 5) -> str:
    """A ValidationError as one line per problem, each led by the field path the user wrote
    ("spec.training.epochs: Input should be a valid integer ..."), without pydantic's URLs and type tags."""
    errors = error.errors()
    parts = []
    for e in errors[:limit]:
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(msg if msg.startswith(loc) else f"{loc}: {msg}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)
