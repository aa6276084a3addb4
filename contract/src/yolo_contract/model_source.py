"""The starting model, typed from the TrainingJob to the trainer.

The API's ``spec.model`` (``yolo_operator.api.types.ModelSource``) names one of hub, uri, yaml or fromTrainingJob;
the operator resolves it to a :data:`ModelRef` and hands that to the trainer in ``TrainerConfig.model``. Each kind
stays what it is on the way: the trainer loads a hub name from the hub (or its mirror), a URI from S3 or HTTPS, a
YAML from scratch, and the weights of a parent TrainingJob from the s3:// URI the operator read from that job's
``status.artifacts.bestWeights``, knowing which job (namespace, name, uid) they came from. Nothing re-guesses a
kind from a string, except :func:`model_ref_from_string`: the one compatibility path for a config that still
carries the model as a plain string (a Job made by an operator before this type, or ``model: yolov8n.pt`` in a
``--config`` YAML written by hand).

``text`` is the model as one string (``status.model``, the lineage's ``baseModel.uri``, logs): what the config
carried before it was typed, so a checkpoint's fingerprint is the same either way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from yolo_contract.base import Model as _Model

#: An Ultralytics hub name (spec.model.hub) and a model architecture YAML (spec.model.yaml); RE2-compatible, so
#: the CRD's OpenAPI patterns are these very strings.
HUB_MODEL = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.pt$"
MODEL_YAML = r"^[A-Za-z0-9][A-Za-z0-9._/-]*\.ya?ml$"
HUB_DESCRIPTION = "Pretrained weights by Ultralytics name, e.g. yolov8n.pt or yolo11s.pt."
URI_DESCRIPTION = "s3:// or https:// URI of a .pt weights file."
YAML_DESCRIPTION = "Model architecture YAML (e.g. yolov8n.yaml): train from scratch, no pretrained weights."


class HubModel(_Model):
    """Pretrained weights by Ultralytics name: from the hub mirror (an s3:// prefix) or the internet."""

    kind: Literal["hub"] = "hub"
    hub: str = Field(..., min_length=1, description=HUB_DESCRIPTION)

    @property
    def text(self) -> str:
        return self.hub


class UriModel(_Model):
    """Weights at a URI: s3:// (through the job's S3 settings) or https://."""

    kind: Literal["uri"] = "uri"
    uri: str = Field(..., min_length=1, description=URI_DESCRIPTION)

    @property
    def text(self) -> str:
        return self.uri


class YamlModel(_Model):
    """A model architecture: trained from scratch."""

    kind: Literal["yaml"] = "yaml"
    yaml: str = Field(..., min_length=1, description=YAML_DESCRIPTION)

    @property
    def text(self) -> str:
        return self.yaml


class FileModel(_Model):
    """A weights file inside the trainer's image (the CLI run by hand; the API has no such source)."""

    kind: Literal["file"] = "file"
    path: str = Field(..., min_length=1, description="Path of a .pt file in the trainer's filesystem.")

    @property
    def text(self) -> str:
        return self.path


class TrainingJobModel(_Model):
    """The best weights of another TrainingJob (spec.model.fromTrainingJob), resolved by the operator once that
    job Succeeded: the s3:// URI of its status.artifacts.bestWeights, and which job it is."""

    kind: Literal["fromTrainingJob"] = "fromTrainingJob"
    uri: str = Field(..., pattern=r"^s3://", description="s3:// URI of the parent's best weights (bestWeights).")
    namespace: str = Field(..., min_length=1, description="The parent TrainingJob's namespace.")
    name: str = Field(..., min_length=1, description="The parent TrainingJob's name.")
    uid: str | None = Field(None, description="The parent TrainingJob's metadata.uid.")
    metrics: str | None = Field(
        None,
        description="s3:// URI of the parent's metrics.json (status.artifacts.metrics): it names the run whose "
        "weights these are, when it still lists these very bytes.",
    )

    @property
    def text(self) -> str:
        return self.uri


#: The starting model as the trainer receives it, one kind each (``kind`` on the wire).
ModelRef = Annotated[HubModel | UriModel | YamlModel | FileModel | TrainingJobModel, Field(discriminator="kind")]


def s3_location(model: ModelRef) -> str | None:
    """The s3:// URI the weights are read from (a URI source on S3, a parent TrainingJob's weights), or None."""
    if isinstance(model, TrainingJobModel):
        return model.uri
    if isinstance(model, UriModel) and model.uri.lower().startswith("s3://"):
        return model.uri
    return None


def model_ref_from_string(spec: str) -> dict[str, Any]:
    """The compatibility path, and the only place a model kind is read off a string: a config that carries
    ``model`` as a plain string (a Job made by the previous operator release, a hand-written ``--config``)
    means what the trainer made of such a string before the model was typed. s3:// and http(s):// are URIs, a
    .yaml/.yml an architecture, a path with a slash a file in the image, anything else a hub name."""
    s = spec.strip()
    low = s.lower()
    if low.startswith(("s3://", "https://", "http://")):
        return {"kind": "uri", "uri": s}
    if low.endswith((".yaml", ".yml")):
        return {"kind": "yaml", "yaml": s}
    if "/" in s:
        return {"kind": "file", "path": s}
    return {"kind": "hub", "hub": s}
