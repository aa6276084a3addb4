"""``spec.training`` and the S3 endpoint: the parts of the TrainingJob spec that the trainer receives verbatim.

The operator's API (``yolo_operator.api.types``) embeds these models, so the CRD is generated from them; the pod's
configuration (:mod:`.trainer_config`) carries the same objects, so both sides parse one definition.
Constraints are pydantic field constraints (they become the CRD's OpenAPI constraints); rules that need
CEL are declared once, as CEL, and enforced by the API server alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from yolo_contract import hyperparameters
from yolo_contract.base import Model

HTTP_URL = r"^https?://[^\s/]+(/\S*)?$"
MAX_FREEZE = 24  # YOLOv8/11 detection models have 23 modules (0..22); freezing more freezes everything.
#: Dataset archives the trainer stages (everything else under spec.dataset is a prefix).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
#: spec.s3.retryBudgetSeconds when unset.
DEFAULT_RETRY_BUDGET_SECONDS = 120

Optimizer = Literal["auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "MuSGD"]


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry (extra: fieldPath, reason, messageExpression)."""
    return {"rule": rule, "message": message, **extra}


def rules(*entries: dict[str, str] | Rule) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": [e.entry() if isinstance(e, Rule) else e for e in entries]}


@dataclass(frozen=True)
class Rule:
    """A CEL rule and its Python check, declared together: for the few rules the operator must also enforce
    itself, on objects the API server stored without them (under an older or permissive CRD)."""

    cel: str
    message: str
    check: Callable[[Any], bool]

    def entry(self) -> dict[str, str]:
        return cel(self.cel, self.message)

    def validate(self, value: Any) -> Any:
        if not self.check(value):
            raise ValueError(self.message)
        return value


#: The largest batch, given or chosen by AutoBatch (Ultralytics clamps AutoBatch's estimate to 1024 too).
MAX_BATCH = 1024
BATCH_VALUE = Rule(
    f"self == -1.0 || (self > 0.0 && self < 1.0) || (self >= 1.0 && self <= {MAX_BATCH}.0 "
    "&& self == double(int(self)))",
    f"spec.training.batch must be a whole number 1-{MAX_BATCH}, -1 (AutoBatch: 60% of the GPU's memory) or a "
    "fraction in (0, 1) (AutoBatch for that share of the GPU's memory)",
    lambda v: (
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and (v == -1 or 0 < v < 1 or (1 <= v <= MAX_BATCH and float(v).is_integer()))
    ),
)


def _one_number(schema: dict[str, Any], **extra: Any) -> None:
    """``int | float`` as one structural ``type: number`` (a CRD allows no anyOf of types)."""
    schema.pop("anyOf", None)
    schema.update(type="number", **extra)


def auto_batch(batch: float) -> bool:
    """True when Ultralytics' AutoBatch picks the batch size (-1, or a GPU-memory fraction)."""
    return batch < 1


class TrainingSpec(Model):
    """Ultralytics training arguments."""

    epochs: int = Field(100, ge=1, le=10000, description="Number of epochs to train.")
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32, description="Image size; a multiple of 32.")
    batch: int | float = Field(
        16,
        description="Total batch size (split across GPUs), a whole number 1-1024; or, on one GPU, Ultralytics' "
        "AutoBatch: -1 sizes it for 60% of the GPU's memory, a fraction in (0, 1) for that share of it (/dev/shm "
        "is then sized for the most AutoBatch can pick, 1024; spec.resources.shmSize caps it).",
        json_schema_extra=lambda schema: _one_number(schema, minimum=-1, maximum=MAX_BATCH, **rules(BATCH_VALUE)),
    )
    patience: int = Field(100, ge=0, le=10000, description="Epochs without improvement before stopping early.")
    freeze: int | None = Field(
        None,
        ge=0,
        le=MAX_FREEZE,
        description="Freeze the first N modules (10 freezes the YOLOv8 backbone, modules 0-9; 11 the YOLO11 "
        "backbone, modules 0-10); unset freezes nothing.",
    )
    optimizer: Optimizer = Field("auto", description="Optimizer; auto lets Ultralytics choose.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description="Other Ultralytics train arguments.",
        json_schema_extra=lambda schema: schema.update(hyperparameters.crd_schema()),
    )
    workers: int | None = Field(
        None, ge=0, le=64, description="DataLoader workers per GPU; unset lets the trainer choose (at most 8)."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed.")

    @field_validator("batch")
    @classmethod
    def _batch(cls, v: float) -> float:
        v = BATCH_VALUE.validate(v)
        return int(v) if v >= 1 else v  # 16.0 from YAML: DataLoader wants an int

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameters(cls, v: dict[str, Any]) -> dict[str, Any]:
        # The table check, for objects the API server never validated (stored under an older CRD) and for
        # the trainer's standalone --config; admission enforces the same table through the CRD schema.
        problems = hyperparameters.problems(v)
        if problems:
            raise ValueError("; ".join(problems))
        return v


class S3Endpoint(Model):
    """How to reach the S3-compatible object store (AWS, MinIO, Ceph RGW, ODF, SeaweedFS)."""

    endpoint: str | None = Field(
        None,
        max_length=512,
        description="Endpoint URL, e.g. https://minio.example:9000; unset means AWS S3.",
        json_schema_extra=rules(
            cel(f"self.matches(r'{HTTP_URL}')", "spec.s3.endpoint must be an http:// or https:// URL")
        ),
    )
    region: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[a-z0-9-]+$",
        description="S3 region. Unset: the output bucket's own, as S3 names it (the x-amz-bucket-region header "
        "of a HeadBucket), else us-east-1 (what MinIO, Ceph RGW and other S3-compatible stores accept).",
    )
    insecure_skip_tls_verify: bool = Field(
        False,
        alias="insecureSkipTLSVerify",
        description="Do not verify the endpoint's TLS certificate (testing only).",
    )
    retry_budget_seconds: int | None = Field(
        None,
        ge=1,
        le=DEFAULT_RETRY_BUDGET_SECONDS * 30,
        description=f"Seconds one S3 operation may keep retrying while S3 fails transiently (5xx, throttling, "
        f"connection errors) before the pod fails with S3Unavailable (retried by the Job, resuming from the last "
        f"checkpoint); at start, an endpoint that never answered within it fails with S3Unreachable (not "
        f"retried). Raise it to ride out longer outages of your store. Unset: {DEFAULT_RETRY_BUDGET_SECONDS}.",
    )
