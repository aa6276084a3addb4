"""Admission and the trainer give the same verdict on every Ultralytics train argument.

For each key of the pinned Ultralytics version's argument table (train, val, predict and export arguments
alike, plus a few that are no argument at all) and a spread of values (its default, each JSON type, edge
numbers), a TrainingJob carrying ``{key: value}`` in ``spec.training.hyperparameters`` is created through the
real kube-apiserver with the generated CRD (server-side dry run, strict field validation as ``kubectl apply``
does). The trainer then judges what it would receive: the object as stored when admitted, the value as written
when refused (``yolo_trainer.train.validate_hyperparameters``: the contract's table, then Ultralytics'
``check_cfg``). Both must agree, and a refusal at admission must name the key.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from yolo_contract import GROUP, PLURAL, VERSION
from yolo_contract.exitcodes import ConfigInvalid

from tests.operator_fixtures import install_crd, trainingjob

pytestmark = pytest.mark.integration

PROBES: tuple[Any, ...] = (
    True, False, 0, 1, -1, 7, 2.5, 0.5, 1e6, -0.25, "x", "ram", "fp16", "int8", "val", [0.5, 0.5], {"a": 1},
)  # fmt: skip


def cases() -> list[tuple[str, Any]]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    keys = sorted(set(DEFAULT_CFG_DICT) | {"not_an_argument", "lr_zero"})
    out = []
    for key in keys:
        values = [*PROBES]
        default = DEFAULT_CFG_DICT.get(key)
        if default is not None and default not in values:
            values.append(default)
        out.extend((key, v) for v in values)
    return out


def admission(api: client.CustomObjectsApi, namespace: str, key: str, value: Any) -> tuple[bool, str, Any]:
    """(admitted, the API server's message, the value as stored)."""
    tj = copy.deepcopy(trainingjob("verdict"))
    tj["metadata"]["namespace"] = namespace
    tj["spec"]["training"]["hyperparameters"] = {key: value}
    try:
        stored = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, tj, dry_run="All", field_validation="Strict"
        )
    except ApiException as e:
        if e.status not in (400, 422):
            raise
        return False, e.body or "", None
    return True, "", stored["spec"]["training"].get("hyperparameters", {})


def trainer_accepts(hp: dict[str, Any]) -> tuple[bool, str]:
    from yolo_trainer.train import validate_hyperparameters

    try:
        validate_hyperparameters(hp)
    except ConfigInvalid as e:
        return False, str(e)
    return True, ""


@pytest.fixture(scope="module")
def custom_objects(kubectl, k8s_api):
    install_crd(kubectl)
    return client.CustomObjectsApi(k8s_api)


def test_admission_and_trainer_agree_on_every_argument(custom_objects, namespace):
    checked, disagreements, unnamed = 0, [], []
    admitted_keys: set[str] = set()
    for key, value in cases():
        admitted, message, stored = admission(custom_objects, namespace, key, value)
        ok, why = trainer_accepts(stored if admitted else {key: value})
        checked += 1
        if admitted != ok:
            disagreements.append(f"{key}={value!r}: admission {'accepts' if admitted else 'refuses'}, "
                                 f"trainer {'accepts' if ok else 'refuses: ' + why} {message[:200]}")  # fmt: skip
        if not admitted and key not in message:
            unnamed.append(f"{key}={value!r}: {message[:200]}")
        if admitted:
            admitted_keys.add(key)
    assert not disagreements, f"{len(disagreements)} of {checked} verdicts differ:\n" + "\n".join(disagreements)
    assert not unnamed, "refusals that do not name the key:\n" + "\n".join(unnamed)
    # Not vacuous: typical arguments pass, and what the trainer owns or the spec has a field for never does.
    assert {"lr0", "mosaic", "cos_lr", "close_mosaic", "amp", "cache", "fraction"} <= admitted_keys
    assert not {"epochs", "data", "device", "pretrained", "resume", "source", "format"} & admitted_keys
