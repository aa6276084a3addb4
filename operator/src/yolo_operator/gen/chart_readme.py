"""Generates charts/yolo-operator/README.md (what ``helm show readme`` prints) from README.md.gotmpl and the
``# --`` comments of values.yaml, as helm-docs does: a value's description is the ``# --`` block right above
its key, continued by the ``#`` lines after it. Every value must be described, itself or through a parent.
`python -m yolo_operator.gen.chart_readme --write` (``make crds`` and ``make bundle`` run it); a unit test fails on
drift."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from yolo_contract.generated import generator_main

from yolo_operator.gen.crd import REPO_ROOT

CHART = Path("charts/yolo-operator")
README_PATH = CHART / "README.md"
TEMPLATE_PATH = CHART / "README.md.gotmpl"
COMMAND = "python -m yolo_operator.gen.chart_readme"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):")
_DOC_START = re.compile(r"^ *# -- ?(?P<text>.*)$")
_DOC_MORE = re.compile(r"^ *#(?: (?P<text>.*))?$")


def documented(values_text: str) -> dict[str, str]:
    """Dotted key path -> description, in file order, for every key with a ``# --`` block."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_text.splitlines():
        if m := _DOC_START.match(line):
            pending = [m.group("text")]
            continue
        if pending is not None and (m := _DOC_MORE.match(line)):
            pending.append(m.group("text") or "")
            continue
        m = _KEY.match(line)
        if not m:
            pending = None  # a blank line or a list item ends a block: it belongs to no key
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group("key")))
        if pending is not None:
            docs[".".join(k for _, k in stack)] = " ".join(t.strip() for t in pending if t.strip())
        pending = None
    return docs


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def _get(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for k in path.split("."):
        node = node[k]
    return node


def _type(v: Any) -> str:
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list")):
        if isinstance(v, t):
            return name
    return "object"


def _cell(text: str) -> str:
    """A table cell: | escaped, and <placeholders> outside code spans kept visible (not read as HTML tags)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def values_table(values_text: str) -> str:
    values = yaml.safe_load(values_text) or {}
    docs = documented(values_text)
    undocumented = [
        leaf for leaf in _leaves(values)
        if not any(leaf == p or leaf.startswith(p + ".") for p in docs)
    ]  # fmt: skip
    if undocumented:
        raise ValueError(f"values.yaml: no '# --' comment on {', '.join(undocumented)} (or on a parent)")
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, text in docs.items():
        v = _get(values, path)
        default = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
        rows.append(f"| `{path}` | {_type(v)} | `{_cell(default)}` | {_cell(text)} |")
    return "\n".join(rows) + "\n"


def render(root: Path = REPO_ROOT) -> str:
    chart = yaml.safe_load((root / CHART / "Chart.yaml").read_text())
    text = (root / TEMPLATE_PATH).read_text()
    fields = {
        "values": values_table((root / CHART / "values.yaml").read_text()),
        "version": chart["version"],
        "appVersion": chart["appVersion"],
        "kubeVersion": chart.get("kubeVersion", ""),
        "description": " ".join(chart["description"].split()),
    }
    for key, value in fields.items():
        text = text.replace("{{ ." + key + " }}", str(value))
    if "{{" in text:
        raise ValueError(f"{TEMPLATE_PATH}: unknown placeholder near {text[text.index('{{'):][:40]!r}")
    return f"<!-- Generated from {TEMPLATE_PATH.name} and values.yaml by {COMMAND} --write. Do not edit. -->\n\n{text}"


def main(argv: list[str] | None = None) -> int:
    return generator_main(argv, description=__doc__, command=COMMAND, root=REPO_ROOT,
                          render=lambda: {README_PATH: render()})  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
