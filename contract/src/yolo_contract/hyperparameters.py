"""``spec.training.hyperparameters``: the Ultralytics train arguments a TrainingJob may pass through.

One table, :data:`ARGS` in ``_ultralytics_args.py``, is generated from the pinned Ultralytics version (its
``cfg/default.yaml`` and the key sets ``check_cfg`` validates with) by::

    python -m yolo_contract.hyperparameters --write     # --check: exit 1 when the committed table is stale

From that one table come both the CRD's typed schema for ``hyperparameters`` (:func:`crd_schema`: types,
Ultralytics' ranges, its descriptions, so ``kubectl explain`` shows them; unknown keys are refused by the API
server's strict field validation) and the Python check (:func:`problems`) that the operator's models and the
trainer run. The trainer additionally runs Ultralytics' own ``check_cfg``; ``tests/integration/
test_hyperparameter_verdicts.py`` asserts, for every train argument, that admission and the trainer agree.

Keys the spec has a field for (:data:`TYPED_FIELDS`) and keys the trainer sets itself (:data:`TRAINER_OWNED`)
are absent from the table, so the API server refuses them; :func:`problems` names the field to use instead.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

#: Train arguments with a dedicated field in ``spec.training``.
TYPED_FIELDS: dict[str, str] = {
    "epochs": "spec.training.epochs",
    "imgsz": "spec.training.imgsz",
    "batch": "spec.training.batch",
    "patience": "spec.training.patience",
    "freeze": "spec.training.freeze",
    "optimizer": "spec.training.optimizer",
    "workers": "spec.training.workers",
    "seed": "spec.training.seed",
}
#: Train arguments the trainer sets: paths, devices and modes that only make sense inside the pod.
TRAINER_OWNED: dict[str, str] = {
    "model": "spec.model",
    "data": "spec.dataset",
    "device": "spec.resources.gpus",
    "pretrained": "spec.model (a .yaml trains from scratch)",
    "task": "the trainer (detection)",
    "mode": "the trainer",
    "project": "spec.output",
    "name": "spec.output",
    "exist_ok": "the trainer",
    "resume": "the trainer (it resumes from its own checkpoints)",
    "save": "the trainer",
    "plots": "the trainer",
    "save_dir": "spec.output",
    "distill_model": "the trainer (a teacher model path inside the pod)",
}
#: Sections of Ultralytics' default.yaml whose keys are train arguments (predict, export, tracker are not).
TRAIN_SECTIONS = ("Train settings", "Segmentation", "Classification", "Val/Test settings", "Hyperparameters")

#: Keys whose value may take several types in Ultralytics (its ``check_cfg`` special cases). A structural schema
#: gives each field one type, and CEL cannot see a field without one, so each gets one type here, the same for
#: admission and the trainer: the Ultralytics forms they leave out have an equivalent within the type.
SPECIAL_ARGS: dict[str, dict[str, Any]] = {
    "cache": {"kind": "string", "enum": ["ram", "disk"], "note": "Unset: no caching (Ultralytics' true is ram)."},
    "amp": {"kind": "string", "enum": ["fp16", "bf16", "fp32"], "note": "fp16 is Ultralytics' true, fp32 its false."},
    "compile": {"kind": "boolean", "note": "true compiles in torch.compile's default mode."},
    "scale": {
        "kind": "fraction",
        "minimum": 0.0,
        "maximum": 1.0,
        "note": "A gain; the (min, max) form is not offered.",
    },
    "fraction": {"kind": "dataset_fraction", "note": "A ratio in (0, 1] or a count > 1 of training images."},
    "quantize": {"kind": "quantize"},
}

#: Floats Ultralytics takes at any sign, where a negative value means nothing for training: a time budget
#: (0 is Ultralytics' "no budget"), warmup length and the loss gains (a negative gain maximises that loss).
#: Refused at admission and by the trainer alike (both read the generated table).
NON_NEGATIVE = ("time", "warmup_epochs", "box", "cls", "dfl", "dis", "pose", "kobj", "rle", "angle", "dlog", "dgrad")

TABLE_FILE = Path(__file__).with_name("_ultralytics_args.py")


# === the Python check ========================================================================================


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _value_problem(key: str, arg: dict[str, Any], v: Any) -> str | None:
    """Why ``v`` is not a valid value for the table entry ``arg``, or None."""
    kind = arg["kind"]
    if v is None:
        return None  # the API server drops nulls; Ultralytics' default applies
    where = f"spec.training.hyperparameters.{key}"
    if kind in ("number", "fraction"):
        if not _number(v):
            return f"{where} must be a number"
        lo, hi = arg.get("minimum"), arg.get("maximum")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"{where} must be between {lo} and {hi}" if hi is not None else f"{where} must be >= {lo}"
        return None
    if kind == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{where} must be an integer"
        if arg.get("minimum") is not None and v < arg["minimum"]:
            return f"{where} must be >= {arg['minimum']}"
        return None
    if kind == "boolean":
        return None if isinstance(v, bool) else f"{where} must be true or false"
    if kind == "string":
        if arg.get("enum") and v not in arg["enum"]:
            return f"{where} must be one of " + ", ".join(arg["enum"])
        return None if isinstance(v, str) else f"{where} must be a string"
    if kind == "dataset_fraction":
        ok = _number(v) and (0 < v <= 1 or (isinstance(v, int) and v > 1))
        return None if ok else f"{where} must be a ratio in (0, 1] or a whole count > 1"
    if kind == "quantize":
        ok = isinstance(v, int | str) and not isinstance(v, bool) and str(v).lower() in arg["enum"]
        return None if ok else f"{where} must be one of " + ", ".join(arg["enum"])
    raise ValueError(f"unknown kind {kind!r} for {key}")


def problems(hp: dict[str, Any]) -> list[str]:
    """Every problem with ``hp``, one message per key naming it and the fix; empty when valid."""
    from yolo_contract._ultralytics_args import ARGS

    out = []
    for key, value in hp.items():
        if key in TYPED_FIELDS:
            out.append(f"spec.training.hyperparameters.{key}: set {TYPED_FIELDS[key]} instead")
        elif key in TRAINER_OWNED:
            out.append(f"spec.training.hyperparameters.{key}: set by {TRAINER_OWNED[key]}, not a hyperparameter")
        elif key not in ARGS:
            out.append(f"spec.training.hyperparameters.{key}: not an Ultralytics train argument")
        else:
            problem = _value_problem(key, ARGS[key], value)
            if problem:
                out.append(problem)
    return out


# === the CRD schema ==========================================================================================


def _cel(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _property(key: str, arg: dict[str, Any]) -> dict[str, Any]:
    """The structural OpenAPI node for one argument."""
    kind = arg["kind"]
    where = f"spec.training.hyperparameters.{key}"
    desc = arg["description"]
    if arg.get("default") is not None:
        desc += f" Ultralytics' default: {arg['default']}."
    node: dict[str, Any] = {"description": desc}
    if kind in ("number", "fraction"):
        node["type"] = "number"
        for bound in ("minimum", "maximum"):
            if arg.get(bound) is not None:
                node[bound] = arg[bound]
    elif kind == "integer":
        node["type"] = "integer"
        if arg.get("minimum") is not None:
            node["minimum"] = arg["minimum"]
    elif kind in ("boolean", "string"):
        node["type"] = kind
        if arg.get("enum"):
            node["enum"] = list(arg["enum"])
    elif kind == "quantize":
        node["x-kubernetes-int-or-string"] = True
        node["x-kubernetes-validations"] = [
            _cel(
                f"string(self).lowerAscii() in {list(arg['enum'])}",
                f"{where} must be one of {', '.join(arg['enum'])}",
            )
        ]
    elif kind == "dataset_fraction":
        node["type"] = "number"
        node["x-kubernetes-validations"] = [
            _cel("(self > 0.0 && self <= 1.0) || (self > 1.0 && self == double(int(self)))",
                 f"{where} must be a ratio in (0, 1] or a whole count > 1")
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown kind {kind!r} for {key}")
    return node


def crd_schema() -> dict[str, Any]:
    """The typed ``hyperparameters`` object for the CRD (pruning with strict field validation refuses unknown
    keys, naming them, at ``kubectl apply``)."""
    from yolo_contract._ultralytics_args import ARGS, ULTRALYTICS_VERSION

    return {
        "type": "object",
        "description": f"Other Ultralytics {ULTRALYTICS_VERSION} train arguments (lr0, mosaic, cos_lr, ...), "
        "typed as Ultralytics checks them. Not here: the arguments with a field of their own ("
        + ", ".join(TYPED_FIELDS)
        + ") and those the trainer sets ("
        + ", ".join(TRAINER_OWNED)
        + ").",
        "properties": {key: _property(key, arg) for key, arg in ARGS.items()},
    }


# === the generator (needs ultralytics) =======================================================================

_COMMENT = re.compile(r"^\((?P<types>[^)]*)\)\s*(?P<text>.*)$")


def _sections(default_yaml: str) -> dict[str, tuple[str, str]]:
    """key -> (section, description) from Ultralytics' cfg/default.yaml."""
    out: dict[str, tuple[str, str]] = {}
    section = ""
    for line in default_yaml.splitlines():
        if line.startswith("# ") and not line.startswith("# For") and ":" not in line.split("#")[1][:40]:
            section = line[2:].split(" ---")[0].strip()
            continue
        m = re.match(r"^([a-z_0-9]+):[^#]*#\s*(.*)$", line)
        if m:
            c = _COMMENT.match(m.group(2))
            out[m.group(1)] = (section, (c.group("text") if c else m.group(2)).strip())
    return out


def build_table() -> tuple[str, dict[str, dict[str, Any]]]:
    """(ultralytics version, the table) from the installed Ultralytics."""
    import ultralytics
    from ultralytics import cfg

    text = (Path(cfg.__file__).parent / "default.yaml").read_text()
    sections = _sections(text)
    defaults = cfg.DEFAULT_CFG_DICT
    table: dict[str, dict[str, Any]] = {}
    for key, (section, description) in sections.items():
        if section not in TRAIN_SECTIONS or key in TYPED_FIELDS or key in TRAINER_OWNED:
            continue
        default = defaults.get(key)
        text = (description[0].upper() + description[1:]).rstrip(".") + "." if description else key
        arg: dict[str, Any] = {"description": text}
        if key in SPECIAL_ARGS:
            special = dict(SPECIAL_ARGS[key])
            note = special.pop("note", None)
            arg.update(special)
            if note:
                arg["description"] += f" {note}"
            if key == "quantize":
                arg["enum"] = sorted(cfg.QUANTIZE_ALIASES)
        elif key in cfg.CFG_FRACTION_KEYS:
            arg.update(kind="fraction", minimum=0.0, maximum=1.0)
        elif key in cfg.CFG_FLOAT_KEYS:
            arg["kind"] = "number"
            if key in NON_NEGATIVE:
                arg["minimum"] = 0.0
        elif key in cfg.CFG_INT_KEYS:
            arg["kind"] = "integer"
            if key in cfg.CFG_INT_MIN:
                arg["minimum"] = cfg.CFG_INT_MIN[key]
        elif key in cfg.CFG_BOOL_KEYS:
            arg["kind"] = "boolean"
        elif key in cfg.CFG_STR_KEYS:
            arg["kind"] = "string"
            choices = re.findall(r"\b([a-z][a-z_]+)\b", description.split(":", 1)[-1])
            values = [c for c in choices if c != "or"] if ":" in description else []
            if values:
                arg["enum"] = values
        else:
            raise ValueError(f"Ultralytics train argument {key!r} has no known type: add it to SPECIAL_ARGS")
        if default is not None and key not in SPECIAL_ARGS and not isinstance(default, list | tuple):
            arg["default"] = default
        table[key] = arg
    return ultralytics.__version__, table


def render_table() -> str:
    import pprint

    version, table = build_table()
    return (
        '"""Generated by `python -m yolo_contract.hyperparameters --write` from Ultralytics '
        f'{version}. Do not edit."""\n\n'
        f"ULTRALYTICS_VERSION = {version!r}\n\n"
        f"ARGS = {pprint.pformat(table, width=116, sort_dicts=False)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    from yolo_contract.generated import generator_main

    return generator_main(argv, description=__doc__, command="python -m yolo_contract.hyperparameters",
                          root=TABLE_FILE.parent, render=lambda: {Path(TABLE_FILE.name): render_table()})  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
