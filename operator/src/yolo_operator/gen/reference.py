"""Generates docs/reference.md, the TrainingJob field reference, from the CRD schema (and so from the
pydantic models' field docs). `python -m yolo_operator.gen.reference --write`; a unit test fails on drift."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from yolo_contract.generated import generator_main

from yolo_operator.gen.crd import REPO_ROOT, spec_schema, status_schema

REFERENCE_PATH = Path("docs/reference.md")


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    t = node.get("type", "any" if node.get("x-kubernetes-preserve-unknown-fields") else "object")
    if t == "array":
        return f"[]{_type(node.get('items', {}))}"
    if t == "object" and "additionalProperties" in node:
        return f"map[string]{_type(node['additionalProperties'])}"
    return t


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", ">="), ("maximum", "<="), ("multipleOf", "multiple of"),
                       ("minLength", "min length"), ("maxLength", "max length"), ("maxItems", "max items"),
                       ("pattern", "pattern"), ("enum", "one of"), ("default", "default")):  # fmt: skip
        if key in node:
            value = node[key]
            value = ", ".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"{label} `{value}`")
    parts += [f"rule: {r['message']}" for r in node.get("x-kubernetes-validations", []) if "message" in r]
    return "; ".join(parts)


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    desc = " ".join(node.get("description", "").split()).replace("|", "\\|")
    rules = _constraints(node).replace("|", "\\|")
    rows = [f"| `{path}` | {_type(node)}{' (required)' if required else ''} | {desc} | {rules} |"]
    children = node.get("properties") or node.get("items", {}).get("properties") or {}
    req = set(node.get("required") or node.get("items", {}).get("required") or [])
    suffix = "[]" if node.get("type") == "array" else ""
    for name, child in children.items():
        rows += _rows(child, f"{path}{suffix}.{name}", name in req)
    return rows


def render() -> str:
    out = [
        "# TrainingJob reference (`yolo-operator.io/v1alpha1`)",
        "",
        "Generated from the API models by `python -m yolo_operator.gen.reference --write`; do not edit.",
        "",
    ]
    for title, schema in (("spec", spec_schema()), ("status", status_schema())):
        out += [f"## {title}", "", "| field | type | description | validation |", "|---|---|---|---|"]
        for name, child in schema.get("properties", {}).items():
            out += _rows(child, f"{title}.{name}", name in set(schema.get("required", [])))
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return generator_main(argv, description=__doc__, command="python -m yolo_operator.gen.reference", root=REPO_ROOT,
                          render=lambda: {REFERENCE_PATH: render()})  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
