"""Bad input: fuzzed TrainingJob specs against the real kube-apiserver of the test bed and a running operator.

Specs are drawn by hypothesis in the shape of the pydantic models in ``yolo_operator.api.types`` (every base spec
parses there) and then mutated: wrong types, out-of-range numbers, unknown fields, huge and unicode strings,
missing fields, weird URIs. Each one is created through the API server (strict field validation) and is
either rejected at admission with a message naming a mutated field (or its parent), or stored in a form the
operator's models parse and then reconciled to a phase with conditions, without an unexpected exception in
the operator's log. Derandomized, so CI draws the same inputs every run.

Garbage that the API server never validated (objects stored under an older or permissive CRD) is covered by
``test_stored_garbage.py``.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError
from yolo_contract._ultralytics_args import ARGS
from yolo_contract.training import MAX_FREEZE
from yolo_operator import GROUP, PLURAL, VERSION
from yolo_operator.api import types as api
from yolo_operator.api.reasons import COND_FAILED, FAILED, PHASES

from tests.fault.operator_log import operator_problems
from tests.operator_fixtures import INSTANCE_LABEL, OperatorProcess, install_crd, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.integration]

MAX_EXAMPLES = 150
RECONCILE_TIMEOUT = 240

FieldPath = tuple[str | int, ...]


def fmt(path: FieldPath) -> str:
    """('spec', 'scheduling', 'tolerations', 0, 'key') -> 'spec.scheduling.tolerations[0].key' (as the API
    server writes field paths)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


# --- valid-ish specs: the shape and patterns of the pydantic models ------------------------------------------


def rx(pattern: str, max_len: int) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: 0 < len(s) <= max_len)


dns_label = rx(api.DNS_LABEL, 63)
dns_subdomain = rx(api.DNS_SUBDOMAIN, 253)
config_key = rx(api.CONFIG_KEY, 253)
bucket = rx(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", 63)
key_part = rx(r"[a-zA-Z0-9][a-zA-Z0-9/_.-]{0,16}", 40)
quantity = st.one_of(
    st.integers(0, 64).map(str),
    st.builds("{}{}".format, st.integers(1, 4096), st.sampled_from(["Mi", "Gi", "m", "k", "M", "G", "Ki"])),
    st.builds("{}.{}".format, st.integers(0, 9), st.integers(0, 9)),
    rx(api.QUANTITY, 32),
)
dataset_uri = st.one_of(
    st.builds("s3://{}/{}/".format, bucket, key_part),
    st.builds("s3://{}/{}.zip".format, bucket, key_part),
    st.builds("s3://{}/{}.tar.gz".format, bucket, key_part),
    st.builds("s3://{}".format, bucket),
)
json_leaf = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(-1e6, 1e6) | st.text(max_size=20)
json_value = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=6
)
model_source = st.one_of(
    st.sampled_from(["yolov8n.pt", "yolo11s.pt", "best-v2.pt"]).map(lambda h: {"hub": h}),
    st.builds(lambda b, k: {"uri": f"s3://{b}/{k}.pt"}, bucket, key_part),
    st.just({"uri": "https://models.example.com/yolo/best.pt"}),
    st.sampled_from(["yolov8n.yaml", "yolo11s.yaml", "cfg/models/v8/yolov8n.yml"]).map(lambda y: {"yaml": y}),
    dns_label.map(lambda n: {"fromTrainingJob": n}),
)
VALID_HYPERPARAMETERS = [
    {}, {"lr0": 0.01}, {"mosaic": 0.5, "cos_lr": True}, {"close_mosaic": 5, "amp": "bf16"},
    {"cache": "ram", "fraction": 0.5}, {"degrees": 10.0, "quantize": 8},
]  # fmt: skip
assert all(k in ARGS for hp in VALID_HYPERPARAMETERS for k in hp)


training = st.fixed_dictionaries(
    {},
    optional={
        "epochs": st.integers(1, 10000),
        "imgsz": st.integers(1, 128).map(lambda k: 32 * k),
        "batch": st.integers(1, 1024),
        "patience": st.integers(0, 10000),
        "freeze": st.integers(0, MAX_FREEZE),
        "optimizer": st.sampled_from(["auto", "SGD", "Adam", "AdamW", "MuSGD"]),
        # Valid ones from the table (every argument's verdict is test_hyperparameter_verdicts.py's job); the
        # mutations make them invalid.
        "hyperparameters": st.sampled_from(VALID_HYPERPARAMETERS),
        "workers": st.integers(0, 64),
        "seed": st.integers(0, 2**31 - 1),
    },
)
resources = st.fixed_dictionaries(
    {},
    optional={
        "gpus": st.integers(0, 64),
        "gpuResourceName": st.sampled_from(["nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-1g.10gb"])
        | rx(api.RESOURCE_NAME, 253),
        "cpu": quantity,
        "memory": quantity,
        "shmSize": quantity,
    },
)


def _toleration_fix(t: dict[str, Any]) -> dict[str, Any]:
    if t.get("operator") == "Exists":
        t.pop("value", None)  # the model's own rule; everything else is left to the fuzzer
    return t


toleration = st.fixed_dictionaries(
    {},
    optional={
        "key": st.sampled_from(["nvidia.com/gpu", "dedicated", ""]) | st.text(max_size=20),
        "operator": st.sampled_from(["Exists", "Equal"]),
        "value": st.text(max_size=10),
        "effect": st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
        "tolerationSeconds": st.integers(-10, 3600),
    },
).map(_toleration_fix)
node_affinity = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}]
        }
    }
}
scheduling = st.fixed_dictionaries(
    {},
    optional={
        "nodeSelector": st.dictionaries(
            st.sampled_from(["gpu", "topology.kubernetes.io/zone"]) | st.text(min_size=1, max_size=20),
            st.text(max_size=63),
            max_size=3,
        ),
        "tolerations": st.lists(toleration, max_size=3),
        "affinity": st.just(node_affinity)
        | st.dictionaries(st.sampled_from(["nodeAffinity", "x"]), json_value, max_size=2),
        "priorityClassName": dns_subdomain,
    },
)
s3 = st.fixed_dictionaries(
    {},
    optional={
        "endpoint": st.sampled_from(["http://127.0.0.1:7333", "https://minio.example:9000", "http://[::1]:9000/s3"]),
        "region": rx(r"^[a-z0-9-]+$", 64),
        "credentialsSecretRef": st.fixed_dictionaries(
            {"name": dns_subdomain}, optional={"accessKeyIdKey": config_key, "secretAccessKeyKey": config_key}
        ),
        "caBundle": st.fixed_dictionaries({"name": dns_subdomain}, optional={"key": config_key}),
        "insecureSkipTLSVerify": st.booleans(),
    },
)
base_spec = st.fixed_dictionaries(
    {"model": model_source, "dataset": dataset_uri, "output": st.builds("s3://{}/{}/".format, bucket, key_part)},
    optional={
        "s3": s3,
        "training": training,
        "resources": resources,
        "scheduling": scheduling,
        "image": rx(r"^[^\s]+$", 512),
        "imagePullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never"]),
        "backoffLimit": st.integers(0, 100),
        "activeDeadlineSeconds": st.integers(1, 2**40),
        "ttlSecondsAfterFinished": st.integers(0, 2**31 - 1),
        "suspend": st.booleans(),
        "queueName": dns_label,
        "exportFormats": st.lists(
            st.sampled_from(["onnx", "torchscript", "openvino", "tflite"]), unique=True, max_size=3
        ),
    },
)


def parses(spec: Any) -> bool:
    try:
        api.TrainingJobSpec.model_validate(spec)
    except ValidationError:
        return False
    return True


valid_ish_spec = base_spec.filter(parses)

# --- mutations ---------------------------------------------------------------------------------------------

WEIRD_URIS = [
    "s3://", "s3://a", "s3:///no-bucket/", "S3://datasets/x/", "s3://UPPER/x/", "s3://b_b/x/", "s3://bucket/../../etc/",
    "file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", "https://host/w.pt\n", "s3://b\u0000x/",
    "s3://bucket/d.rar", "s3://bucket/w.pt?x=1#frag", "javascript:alert(1)", "s3://" + "a" * 70 + "/",
    "s3://bucket/" + "é" * 600, "  s3://bucket/x/  ", "minio:9000", "https://", "",
]  # fmt: skip
OUT_OF_RANGE = [-1, 0, -(2**31), 2**31, 2**53 + 1, 2**63 - 1, 2**63, 10**30, 33, 31, 1.5, -0.0]
WRONG_TYPES = ["ten", 3, 2.5, True, ["x"], {"a": 1}, None, "", []]
HUGE = [1025, 5000, 70_000, 300_000]  # 300,000 emoji, JSON-escaped, exceed API_REQUEST_LIMIT: a 413
API_REQUEST_LIMIT = 3 * 2**20  # kube-apiserver's default --max-request-bytes for a JSON body (3 MiB)
KINDS = ["wrong_type", "out_of_range", "unknown_field", "huge_string", "unicode", "delete", "weird_uri"]
JSON_TYPES = (dict, list, str, bool, int, float, type(None))


def json_type(v: Any) -> type:
    return next(t for t in JSON_TYPES if isinstance(v, t))


def all_paths(node: Any, prefix: FieldPath = ("spec",)) -> list[FieldPath]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += all_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += all_paths(v, (*prefix, i))
    return out


def lookup(doc: dict[str, Any], path: FieldPath) -> Any:
    node: Any = doc
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A TrainingJob body and the field paths its mutations touched (empty: a valid spec)."""
    # A copy: st.just and st.sampled_from hand out the same objects every draw, and mutating those in place
    # changes what later draws see (hypothesis reports that as FlakyStrategyDefinition).
    doc: dict[str, Any] = {"spec": copy.deepcopy(draw(valid_ish_spec))}
    touched: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        if "spec" not in doc:
            break
        path = draw(st.sampled_from(all_paths(doc["spec"])))
        kind = draw(st.sampled_from(KINDS))
        parent, key = lookup(doc, path[:-1]), path[-1]
        current = parent[key]
        if kind == "unknown_field" and isinstance(current, dict):
            name = draw(st.text(st.characters(categories=["L", "Nd"]), min_size=1, max_size=12))
            if name in current:
                continue
            current[name] = draw(json_value)
            touched.append(fmt((*path, name)))
            continue
        if kind == "delete":
            del parent[key]  # a dict key or a list element
        elif kind == "out_of_range" and isinstance(current, int | float) and not isinstance(current, bool):
            parent[key] = draw(st.sampled_from(OUT_OF_RANGE) | st.integers())
        elif kind == "huge_string":
            parent[key] = draw(st.sampled_from(["x", "é", "🦾", "\u202e"])) * draw(st.sampled_from(HUGE))
        elif kind == "unicode":
            parent[key] = draw(st.text(min_size=1, max_size=40))
        elif kind == "weird_uri":
            parent[key] = draw(st.sampled_from(WEIRD_URIS))
        else:  # wrong_type, and the kinds that do not fit the value
            other = [v for v in WRONG_TYPES if json_type(v) is not json_type(current)]
            # A copy: WRONG_TYPES holds lists and dicts that a later mutation of this case may edit in place.
            parent[key] = copy.deepcopy(draw(st.sampled_from(other)))
        touched.append(fmt(path))
    return doc, touched


def _known(touched: list[str], **spec: Any) -> tuple[dict[str, Any], list[str]]:
    base = {"model": {"hub": "yolov8n.pt"}, "dataset": "s3://data/d/", "output": "s3://runs/"}
    return {"spec": {**base, **spec}}, touched


#: Always tried (regressions the fuzzer found): specs the models accept whose Job the API server refuses,
#: tolerations / resource names it used to accept and the pod would not, a spec of over 256 KiB.
KNOWN = [
    _known([], scheduling={"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": 2.5}}}),
    _known([], scheduling={"nodeSelector": {"not a label key!": "v"}}),
    _known(["spec.scheduling.tolerations[1]"], scheduling={"tolerations": [{"operator": "Exists"}, {}]}),
    _known(["spec.scheduling.tolerations[0]"], scheduling={"tolerations": [{"key": "k", "tolerationSeconds": 5}]}),
    _known(["spec.resources.gpuResourceName"], resources={"gpuResourceName": "gpu"}),
    # accepted (affinity is free-form), and must not push kopf's last-handled-configuration annotation past 256 KiB
    _known([], scheduling={"affinity": {"podAffinity": {}, "notes": "x" * 300_000}}),
]


def named_candidates(touched: list[str]) -> set[str]:
    """A rejection must name a touched field or one of its parents below spec (CEL rules on an object, such
    as spec.model's exactly-one rule, report at the object)."""
    out: set[str] = set()
    for p in touched:
        parts = p.replace("[", ".[").split(".")
        for n in range(min(2, len(parts)), len(parts) + 1):
            out.add(".".join(parts[:n]).replace(".[", "["))
    return out


# --- the test ----------------------------------------------------------------------------------------------


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(mutated())
def test_mutations_leave_the_shared_strategy_values_alone(case: tuple[dict[str, Any], list[str]]) -> None:
    """Drawing is pure: the objects st.just and st.sampled_from hand out are never mutated in place."""
    assert node_affinity == NODE_AFFINITY_AT_IMPORT
    assert VALID_HYPERPARAMETERS == VALID_HYPERPARAMETERS_AT_IMPORT
    assert WRONG_TYPES == WRONG_TYPES_AT_IMPORT


NODE_AFFINITY_AT_IMPORT = copy.deepcopy(node_affinity)
VALID_HYPERPARAMETERS_AT_IMPORT = copy.deepcopy(VALID_HYPERPARAMETERS)
WRONG_TYPES_AT_IMPORT = copy.deepcopy(WRONG_TYPES)


@pytest.fixture
def crd_installed(kubectl):
    install_crd(kubectl)


@pytest.mark.timeout(600)
def test_fuzzed_specs_rejected_naming_the_field_or_reconciled(kubectl, kubeconfig, k8s_api, namespace, tmp_path,
                                                              crd_installed):  # fmt: skip
    ns = namespace
    objects = client.CustomObjectsApi(k8s_api)
    operator = OperatorProcess(kubeconfig, [ns], tmp_path / "operator.log").start()
    tried: list[str] = []
    rejected: list[tuple[str, str]] = []
    accepted: list[str] = []
    started = time.monotonic()

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True)
    @given(mutated())
    def one(case: tuple[dict[str, Any], list[str]]) -> None:
        doc, touched = copy.deepcopy(case)
        name = f"fz-{len(tried)}"
        tried.append(name)
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "TrainingJob",
            "metadata": {"name": name, "labels": {INSTANCE_LABEL: ns}},
            **doc,
        }
        try:
            stored = objects.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, body, field_validation="Strict"
            )
        except ApiException as e:
            if e.status == 413:  # over the API server's request limit, refused before any validation
                sent = len(json.dumps(body))  # as the client sends it (ASCII-escaped: 12 bytes per emoji)
                assert sent > API_REQUEST_LIMIT, f"413 for a {sent}-byte request ({touched})"
                rejected.append((name, "request entity too large"))
                return
            assert e.status in (400, 422), f"{e.status} for {touched}: {e.body[:2000]}"
            message = json.loads(e.body).get("message", "")
            assert touched, f"a spec the models accept was rejected: {message[:2000]}\n{json.dumps(doc)[:2000]}"
            names = named_candidates(touched)
            assert any(n in message for n in names), f"message names none of {sorted(names)}:\n{message[:3000]}"
            rejected.append((name, message))
            return
        # Accepted: what the API server stored must be a TrainingJob the operator's models parse.
        try:
            api.TrainingJob.from_body(stored)
        except ValidationError as e:
            raise AssertionError(f"accepted at admission but the operator's models refuse it ({touched}): {e}") from e
        accepted.append(name)

    for case in KNOWN:
        one = example(case)(one)
    try:
        one()
        admission_s = time.monotonic() - started
        # Every accepted TrainingJob gets a phase (and conditions) from the operator.
        deadline = time.monotonic() + RECONCILE_TIMEOUT
        while True:
            listed = objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            status = {o["metadata"]["name"]: o.get("status") or {} for o in listed}
            waiting = [n for n in accepted if not status.get(n, {}).get("phase")]
            if not waiting or time.monotonic() > deadline:
                break
            assert operator.proc.poll() is None, f"operator exited:\n{operator.logs()[-3000:]}"
            time.sleep(2)
        assert not waiting, f"{len(waiting)} accepted TrainingJobs never got a phase: {waiting[:20]}"
        for n in accepted:
            s = status[n]
            assert s["phase"] in PHASES and s.get("conditions"), (n, s)
            if s["phase"] == FAILED:
                failed = next(c for c in s["conditions"] if c["type"] == COND_FAILED)
                assert failed["status"] == "True" and failed["reason"] and failed["message"], (n, failed)
        wait_for(operator.healthy, 60, what="operator /healthz")
        problems = operator_problems(operator.logs())
        assert not problems, "unexpected exceptions in the operator log:\n" + "\n".join(problems[:20])
    finally:
        operator.stop()
        print(f"--- operator log (tail) ---\n{operator.logs()[-4000:]}")
    print(
        f"FAULT-FIGURE fuzz: {len(tried)} specs tried, {len(rejected)} rejected at admission, "
        f"{len(accepted)} accepted and reconciled (admission {admission_s:.0f} s, "
        f"total {time.monotonic() - started:.0f} s)"
    )
    assert len(tried) >= MAX_EXAMPLES // 2 and rejected and accepted
