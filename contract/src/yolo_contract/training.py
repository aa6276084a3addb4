"""``spec.training`` and the S3 endpoint: the parts of the TrainingJob spec that the trainer receives verbatim.

The operator's API (``yolo_operator.api``) embeds these models, so the CRD is generated from them; the pod's
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


class TrainingSpec(Model):
    """Ultralytics training arguments."""

    epochs: int = Field(100, ge=1, le=10000, description="Number of epochs to train.")
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32, description="Image size; a multiple of 32.")
    batch: int = Field(16, ge=1, le=1024, description="Total batch size (split across GPUs).")
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
