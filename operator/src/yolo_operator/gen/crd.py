"""Generates the TrainingJob CustomResourceDefinition from the pydantic models in ``yolo_operator.api.types``.

    python -m yolo_operator.gen.crd            # print the CRD as YAML
    python -m yolo_operator.gen.crd --write    # write manifests/crd/ and charts/yolo-operator/files/crd/
    python -m yolo_operator.gen.crd --check    # exit 1 when a committed copy differs from the generated CRD

The pydantic JSON schema is turned into a *structural* OpenAPI v3 schema: every ``$ref`` is inlined,
``Optional[X]`` (``anyOf: [X, null]``) becomes plain ``X`` (optional = not in ``required``; an explicit
null sent by a client is pruned by the API server), titles are dropped, JSON-Schema-2020 numeric
exclusive bounds become OpenAPI 3.0 booleans, ``dict[str, Any]`` becomes an object that preserves unknown
fields, and only scalar defaults are kept (an object default would materialise objects the user never
wrote). CEL rules come from the models' ``json_schema_extra``; the immutability rules for the spec are
generated here from ``MUTABLE_SPEC_FIELDS``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from yolo_contract import GROUP, KIND, PLURAL, VERSION
from yolo_contract.generated import generator_main
from yolo_contract.training import cel

from yolo_operator.api.types import MUTABLE_SPEC_FIELDS, NAME_LENGTH, TrainingJobSpec, TrainingJobStatus

SINGULAR = "trainingjob"
SHORT_NAMES = ["tj"]
CATEGORIES = ["yolo"]
CRD_NAME = f"{PLURAL}.{GROUP}"

REPO_ROOT = Path(__file__).resolve().parents[4]  # operator/src/yolo_operator/gen/crd.py
CRD_PATHS = (
    Path("manifests/crd/trainingjobs.yaml"),
    # Not the chart's crds/ (helm installs those once and never upgrades them): templates/crd.yaml renders
    # this file, so `helm upgrade` upgrades the CRD too (value crd.install).
    Path("charts/yolo-operator/files/crd/trainingjobs.yaml"),
)

_KEEP = {
    "type", "description", "properties", "required", "items", "enum", "format", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "additionalProperties", "default", "nullable", "not",
}  # fmt: skip


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inlines $ref / allOf-of-one, collapsing Optional, recursively."""
    if isinstance(node, list):
        return [_resolve(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        # siblings of $ref (description, default, x-kubernetes-*) describe the field and win
        merged = {**target, **node}
        if "x-kubernetes-validations" in target and "x-kubernetes-validations" in node:
            merged["x-kubernetes-validations"] = target["x-kubernetes-validations"] + node["x-kubernetes-validations"]
        return _resolve(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _resolve({**inner, **node}, defs) if "$ref" not in inner else _resolve({**node, **inner}, defs)
    if "anyOf" in node and any(o.get("type") == "null" for o in node["anyOf"]):
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unsupported anyOf (only Optional[X] is): {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        inner = options[0]
        merged = {**inner, **rest}
        if "x-kubernetes-validations" in inner and "x-kubernetes-validations" in rest:
            merged["x-kubernetes-validations"] = inner["x-kubernetes-validations"] + rest["x-kubernetes-validations"]
        return _resolve(merged, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Turns a resolved JSON schema node into a structural OpenAPI v3 schema node."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in _KEEP or k.startswith("x-kubernetes-"):
            out[k] = v
    if "description" in out:
        out["description"] = " ".join(out["description"].split())
    if "const" in node:
        out["enum"] = [node["const"]]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in out and not isinstance(out[bound], bool):
            out[flag] = out.pop(bound)
            out[bound] = True
    typ = out.get("type")
    if typ == "object":
        props = out.get("properties")
        addl = out.get("additionalProperties")
        if props is not None:
            out["properties"] = {name: _structural(sub) for name, sub in props.items()}
            out.pop("additionalProperties", None)  # extra=forbid: pruning handles unknown fields
        elif isinstance(addl, dict) and addl:
            out["additionalProperties"] = _structural(addl)
        else:
            # dict[str, Any] / free-form: keep whatever the user wrote
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "required" in out:
            out["required"] = sorted(out["required"])
    elif typ == "array":
        out["items"] = _structural(out["items"])
    elif typ is None and not (out.get("x-kubernetes-preserve-unknown-fields") or out.get("x-kubernetes-int-or-string")):
        raise ValueError(f"schema node without a type: {node}")
    if "default" in out and (out["default"] is None or isinstance(out["default"], dict | list)):
        del out["default"]
    return out


def model_schema(model: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (validation mode, camelCase aliases)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def immutability_rules(spec_schema: dict[str, Any]) -> list[dict[str, str]]:
    """One CEL transition rule per immutable spec field, each naming the field in its message."""
    required = set(spec_schema.get("required", []))
    out = []
    for name in spec_schema["properties"]:
        if name in MUTABLE_SPEC_FIELDS:
            continue
        if name in required or "default" in spec_schema["properties"][name]:
            rule = f"self.{name} == oldSelf.{name}"
        else:
            rule = f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})"
        out.append(
            cel(
                rule,
                f"spec.{name} is immutable; only " + ", ".join(MUTABLE_SPEC_FIELDS) + " may change",
                fieldPath=f".{name}",
                reason="FieldValueForbidden",
            )
        )
    return out


def spec_schema() -> dict[str, Any]:
    schema = model_schema(TrainingJobSpec)
    schema["x-kubernetes-validations"] = schema.get("x-kubernetes-validations", []) + immutability_rules(schema)
    return schema


def status_schema() -> dict[str, Any]:
    return model_schema(TrainingJobStatus)


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
    {"name": "Epoch", "type": "string", "jsonPath": ".status.progress.epochDisplay",
     "description": "Epochs completed / requested."},
    {"name": "mAP50-95", "type": "number", "jsonPath": ".status.progress.metrics.map50-95",
     "description": "mAP50-95 of the latest epoch."},
    {"name": "Best", "type": "number", "jsonPath": ".status.progress.bestMap50-95",
     "description": "Best mAP50-95 so far."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent", "priority": 1,
     "description": "Epochs completed, in percent."},
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta", "priority": 1,
     "description": "Estimated time to the end of training."},
    {"name": "Test mAP50-95", "type": "number", "jsonPath": ".status.testMetrics.map50-95", "priority": 1,
     "description": "mAP50-95 of the best weights on the test split."},
    {"name": "Size", "type": "string", "jsonPath": ".status.size", "priority": 1,
     "description": "Nodes x GPUs per node of a multi-node job."},
    {"name": "Model", "type": "string", "jsonPath": ".status.model", "priority": 1,
     "description": "Resolved starting model."},
    {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1,
     "description": "The batch/v1 Job."},
    {"name": "Kueue", "type": "string", "jsonPath": ".status.kueue.reason", "priority": 1,
     "description": "Kueue's reason for the Workload (spec.queueName): Pending, Admitted, Preempted, ..."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]  # fmt: skip


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) as a dict."""
    root = {
        "type": "object",
        "description": "TrainingJob fine-tunes (or trains from scratch) an Ultralytics YOLO model on a "
        "dataset in S3 and writes the weights, metrics and exports back to S3.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [NAME_LENGTH.entry()],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "yolo-operator",
                "app.kubernetes.io/part-of": "yolo-operator",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


HEADER = "# Generated from yolo_operator.api.types by `python -m yolo_operator.gen.crd --write`. Do not edit.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    return generator_main(argv, description=__doc__, command="python -m yolo_operator.gen.crd", root=REPO_ROOT,
                          render=lambda: dict.fromkeys(CRD_PATHS, render()))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
