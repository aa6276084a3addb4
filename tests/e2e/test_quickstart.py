"""The README's quick start, run as written against the bed: the chart's operator in-cluster, the trainer
image on the real node, the bed's S3. The commands are read from README.md (so the document cannot drift
from what is tested); only the settings block, the values a user fills in, is replaced by the bed's.

The cluster admin's part (installing the operator, placing pods) is done the way an admin would: the chart
installed with ``trainer.hubMirror`` (this bed has no internet, so ``hub: yolov8n.pt`` must come from a
mirror, here a checkpoint trained in this test and uploaded under that name) and a MutatingAdmissionPolicy
that places the namespace's pods on the real node (the bed's only node that runs containers).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from yolo_dev import testbed
from yolo_dev.stack import REAL_NODE_PLACEMENT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
README = testbed.ROOT / "README.md"
MIRROR_BUCKET = "hub-mirror"
MIRROR_PREFIX = "ultralytics"


def readme_block(marker: str) -> str:
    """The ```sh block right after ``<!-- quick-start: marker -->`` in README.md."""
    m = re.search(rf"<!-- quick-start: {marker} -->\s*```sh\n(.*?)```", README.read_text(), re.DOTALL)
    assert m, f"README.md has no quick-start {marker} block"
    return m.group(1)


def exported_names(settings: str) -> list[str]:
    names = []
    for line in settings.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            names += [w.split("=", 1)[0] for w in words[1:]]
    return names


def place_on_the_real_node(stack: Stack, namespace: str) -> None:
    """Cluster policy, not the user's spec: pods of this namespace select and tolerate the real node."""
    name = f"real-node-{namespace}"
    sel, (tol,) = REAL_NODE_PLACEMENT["nodeSelector"], REAL_NODE_PLACEMENT["tolerations"]
    (key, value), = sel.items()
    tol_obj = f'Object.spec.tolerations{{key: "{tol["key"]}", operator: "Exists", effect: "NoSchedule"}}'
    # JSON patches: an ApplyConfiguration may not set atomic fields such as nodeSelector and tolerations.
    expr = (f'[JSONPatch{{op: "add", path: "/spec/nodeSelector", value: {{"{key}": "{value}"}}}}] + '
            f'(has(object.spec.tolerations) ? [JSONPatch{{op: "add", path: "/spec/tolerations/-", value: {tol_obj}}}] '
            f': [JSONPatch{{op: "add", path: "/spec/tolerations", value: [{tol_obj}]}}])')  # fmt: skip
    manifest = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy", "metadata": {"name": name},
         "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                          "operations": ["CREATE"], "resources": ["pods"]}]},
                  "failurePolicy": "Fail", "reinvocationPolicy": "Never",
                  "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": expr}}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "matchResources": {"namespaceSelector": {
             "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}},
    ]}  # fmt: skip
    stack.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def mirror_a_self_trained_checkpoint(s3_client, dataset_root: Path, name: str) -> str:
    """Trains one tiny epoch here and uploads best.pt as s3://hub-mirror/ultralytics/<name>."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "YOLO_CONFIG_DIR": f"{tmp}/cfg", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
        code = ("import sys; from ultralytics import YOLO; "
                "YOLO('yolov8n.yaml').train(data=sys.argv[1], epochs=1, imgsz=64, batch=8, device='cpu', "
                "workers=0, project=sys.argv[2], name='hub', plots=False, val=False)")  # fmt: skip
        subprocess.run([sys.executable, "-c", code, str(dataset_root / "data.yaml"), tmp],
                       env=env, check=True, capture_output=True, timeout=600)  # fmt: skip
        best = Path(tmp) / "hub" / "weights" / "last.pt"
        with contextlib.suppress(s3_client.exceptions.BucketAlreadyOwnedByYou):
            s3_client.create_bucket(Bucket=MIRROR_BUCKET)
        s3_client.upload_file(str(best), MIRROR_BUCKET, f"{MIRROR_PREFIX}/{name}")
    return f"s3://{MIRROR_BUCKET}/{MIRROR_PREFIX}"


@pytest.fixture
def quickstart_namespace(kubectl):
    name = f"qs-{uuid.uuid4().hex[:8]}"
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    for kind in ("mutatingadmissionpolicybinding", "mutatingadmissionpolicy"):
        kubectl("delete", kind, f"real-node-{name}", "--ignore-not-found", check=False)


def test_readme_quick_start_runs_as_written(bed, real_node, s3_client, quickstart_namespace):
    from yolo_trainer import testing

    stack = Stack()
    ns = quickstart_namespace
    s3 = testbed.s3_env()
    settings = {"NAMESPACE": ns, "S3_ENDPOINT": s3.endpoint, "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key, "DATASET": f"s3://datasets/quickstart-{ns}/",
                "OUTPUT": "s3://runs/"}  # fmt: skip
    assert exported_names(readme_block("settings")) == list(settings), "README's settings changed: update this test"
    commands = readme_block("commands")

    # The admin's part: a namespace the operator watches, pods placed on the real node, the hub mirror.
    # applied, as the README's own `kubectl apply` of it expects (no last-applied-configuration warning)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    stack.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    place_on_the_real_node(stack, ns)
    with tempfile.TemporaryDirectory() as tmp:
        testing.write_yolo_dataset(Path(tmp), n_train=16, n_val=4, seed=7)
        with contextlib.suppress(s3_client.exceptions.BucketAlreadyOwnedByYou):
            s3_client.create_bucket(Bucket="datasets")
        testing.upload_dir(s3_client, "datasets", f"quickstart-{ns}", tmp)
        mirror = mirror_a_self_trained_checkpoint(s3_client, Path(tmp), "yolov8n.pt")
    with contextlib.suppress(s3_client.exceptions.BucketAlreadyOwnedByYou):
        s3_client.create_bucket(Bucket="runs")
    stack.install_chart([ns], {"trainer": {"hubMirror": mirror}})

    # The user's part: the README's commands, verbatim, in bash.
    env = {**stack.env, **settings, "EPOCHS": "2"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], env=env, capture_output=True, text=True,
                          timeout=1100)  # fmt: skip
    tj = stack.get("trainingjob", "helmets", "-n", ns)
    print(proc.stdout, proc.stderr, json.dumps(tj.get("status"), indent=1), sep="\n")
    assert proc.returncode == 0, f"the quick start failed:\n{proc.stdout}\n{proc.stderr}"
    best = proc.stdout.strip().splitlines()[-1]
    assert best == f"s3://runs/{ns}/helmets/{tj['metadata']['uid']}/weights/best.pt"  # run-scoped
    s3_client.head_object(Bucket="runs", Key=best.split("/", 3)[3])
    assert tj["status"]["phase"] == "Succeeded"
    assert tj["status"]["progress"]["epochDisplay"] == "2/2"
    log = "".join(stack.pod_log(ns, p["metadata"]["name"]) for p in stack.get("pods", "-n", ns)["items"])
    assert "yolov8n.pt from the hub mirror" in log, "the model did not come from the mirror"
