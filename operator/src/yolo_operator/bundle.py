"""Generates the OLM bundle (``bundle/``) from the Helm chart and the CRD generator; never edit bundle/ by hand.

    python -m yolo_operator.bundle --write    # charts/yolo-operator/files/examples/ and bundle/
    python -m yolo_operator.bundle --check    # exit 1 when a committed file differs from the generated one

The chart is rendered with the pinned helm (``$HELM``, else hack/build-binaries.sh's, else ``helm``) twice:
cluster-wide (``watchNamespaces: []``) and namespaced (one watched namespace), with the OpenShift console
API, and the ClusterServiceVersion is built from what it renders:

* ``install.spec.deployments``: the chart's Deployment spec, with ``YOLO_OPERATOR_NAMESPACES`` read from the
  pod's ``olm.targetNamespaces`` annotation (OLM sets it from the OperatorGroup: empty = all namespaces);
* ``install.spec.permissions``: the namespaced Role's rules. OLM grants them in every target namespace,
  and cluster-wide (as a ClusterRole) for an AllNamespaces OperatorGroup: the chart's two modes;
* ``install.spec.clusterPermissions``: the rules of the cluster-wide ClusterRole that the Role lacks (CRD
  reads, namespace list/watch);
* ``customresourcedefinitions.owned``: descriptors whose paths and descriptions come from the generated CRD
  schema (``yolo_operator.crd``), so a renamed status field fails the generator instead of the console;
* ``alm-examples``: the TrainingJobs of ``examples/*.yaml``.

bundle/manifests/ also holds the generated CRD (byte-identical to ``python -m yolo_operator.crd``), the
metrics Service and the console YAML samples and quick start. ``build_csv`` and ``bundle_files`` are pure
(rendered documents in, dicts and text out); only ``main`` runs helm and touches files.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from yolo_contract import GROUP, KIND, PLURAL, VERSION
from yolo_contract.generated import write_or_check

from yolo_operator import crd

REPO_ROOT = crd.REPO_ROOT
CHART = Path("charts/yolo-operator")
PACKAGE = "yolo-operator"
CHANNEL = "candidate"
RELEASE = "yolo-operator"
NAMESPACE = "yolo-operator"  # rendering only: OLM installs into the OperatorGroup's namespace
TARGET_NAMESPACE = "olm-target-namespace"  # rendering only: the namespaced mode's Role
ICON = Path("docs/images/yolo-operator.svg")
NAMESPACES_ENV = "YOLO_OPERATOR_NAMESPACES"
TARGET_NAMESPACES_FIELD = "metadata.annotations['olm.targetNamespaces']"
CONSOLE_API_VERSIONS = ("console.openshift.io/v1/ConsoleYAMLSample", "console.openshift.io/v1/ConsoleQuickStart")
#: examples/ files the chart's console YAML samples read (charts/yolo-operator/files/examples/, copied).
CONSOLE_EXAMPLES = ("finetune-frozen-backbone", "continue-from-previous", "zip-dataset", "s3-secret")
#: examples/ file whose TrainingJob is the first alm-example (the console's default in the Create form).
FIRST_EXAMPLE = "finetune-frozen-backbone"
#: Kinds of the chart's rendering that go into bundle/manifests/ beside the CSV (OLM creates the
#: ServiceAccount, RBAC and Deployment itself from the CSV).
EXTRA_KINDS = ("Service", "ConsoleYAMLSample", "ConsoleQuickStart")
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

MANIFESTS = Path("bundle/manifests")
CSV_PATH = MANIFESTS / f"{PACKAGE}.clusterserviceversion.yaml"
CRD_PATH = MANIFESTS / f"{GROUP}_{PLURAL}.yaml"
ANNOTATIONS_PATH = Path("bundle/metadata/annotations.yaml")
DOCKERFILE_PATH = Path("bundle/bundle.Dockerfile")

TEXT = "urn:alm:descriptor:text"
NUMBER = "urn:alm:descriptor:com.tectonic.ui:number"
K8S = "urn:alm:descriptor:io.kubernetes:"
ADVANCED = "urn:alm:descriptor:com.tectonic.ui:advanced"

#: (path, display name, x-descriptors). Paths are checked against the CRD schema; descriptions come from it.
SPEC_DESCRIPTORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("model.hub", "Pretrained model", (TEXT,)),
    ("model.uri", "Model weights URI", (TEXT,)),
    ("model.yaml", "Model architecture", (TEXT,)),
    ("model.fromTrainingJob", "Continue from TrainingJob", (f"{K8S}{GROUP}:{VERSION}:{KIND}",)),
    ("dataset", "Dataset", (TEXT,)),
    ("output", "Output prefix", (TEXT,)),
    ("s3.endpoint", "S3 endpoint", (TEXT,)),
    ("s3.credentialsSecretRef.name", "S3 credentials Secret", (f"{K8S}Secret",)),
    ("training.epochs", "Epochs", (NUMBER,)),
    ("training.imgsz", "Image size", (NUMBER,)),
    ("training.batch", "Batch size", (NUMBER,)),
    ("training.freeze", "Frozen modules", (NUMBER,)),
    ("training.patience", "Patience", (NUMBER, ADVANCED)),
    ("resources.gpus", "GPUs", (NUMBER,)),
    ("resources.cpu", "CPU", (TEXT,)),
    ("resources.memory", "Memory", (TEXT,)),
    ("exportFormats", "Export formats", (ADVANCED,)),
    ("suspend", "Suspend", ("urn:alm:descriptor:com.tectonic.ui:booleanSwitch",)),
    ("queueName", "Kueue LocalQueue", (TEXT, ADVANCED)),
)
STATUS_DESCRIPTORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("phase", "Phase", ("urn:alm:descriptor:io.kubernetes.phase",)),
    ("conditions", "Conditions", ("urn:alm:descriptor:io.kubernetes.conditions",)),
    ("stage", "Stage", (TEXT,)),
    ("progress.epochDisplay", "Epoch", (TEXT,)),
    ("progress.metrics.map50-95", "mAP50-95", (TEXT,)),
    ("progress.bestMap50-95", "Best mAP50-95", (TEXT,)),
    ("progress.bestEpoch", "Best epoch", (TEXT,)),
    ("progress.etaSeconds", "ETA (seconds)", (TEXT,)),
    ("progress.updatedAt", "Progress updated", (TEXT,)),
    ("artifacts.bestWeights", "Best weights", (TEXT,)),
    ("artifacts.lastWeights", "Last weights", (TEXT,)),
    ("artifacts.metrics", "Metrics", (TEXT,)),
    ("artifacts.results", "Results", (TEXT,)),
    ("artifacts.plots", "Plots", (TEXT,)),
    ("artifacts.exports", "Exported models", (TEXT,)),
    ("lastCheckpoint.uri", "Last checkpoint", (TEXT,)),
    ("jobName", "Job", (f"{K8S}batch:v1:Job",)),
    ("podName", "Pod", (f"{K8S}Pod",)),
    ("model", "Resolved model", (TEXT,)),
    ("startTime", "Started", (TEXT,)),
    ("completionTime", "Completed", (TEXT,)),
    ("restartCount", "Restarts", (TEXT,)),
)

DESCRIPTION = """\
The YOLO Operator fine-tunes (or trains from scratch) [Ultralytics YOLO](https://docs.ultralytics.com) object \
detection models on your own images. A **TrainingJob** names a starting model, a dataset in S3 and an S3 \
prefix for the results; the operator runs it as a Kubernetes Job with the Ultralytics trainer, on a GPU \
when it asks for one, and reports the phase, epoch, mAP and ETA in its status.

## Features
* Transfer learning from Ultralytics hub weights (`yolov8n.pt`, `yolo11s.pt`, ...), from weights in S3, or \
from another TrainingJob's best weights (`spec.model.fromTrainingJob`); freeze the backbone with \
`spec.training.freeze`.
* Datasets in Ultralytics YOLO layout under an S3 prefix, or as one `.zip`/`.tar` archive such as a \
Roboflow "YOLOv8" export.
* Any S3-compatible store (AWS S3, MinIO, OpenShift Data Foundation), private CAs, workload identity.
* Multi-GPU training, Kueue queues, suspend and resume, checkpoints that survive pod restarts, exports \
(ONNX, TorchScript, ...).
* Typed, validated spec: the API server refuses a bad TrainingJob and names the field.
* Runs under the `restricted-v2` SCC; disconnected clusters with a mirror of the hub weights.

## Using it
Create a Secret with your S3 keys (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), then a TrainingJob from \
one of the samples, and watch it: `oc get trainingjob -w`. The quick start **Fine-tune YOLO on your own \
images** walks through it. The weights, `results.csv`, `metrics.json`, plots and exports end up under \
`<output>/<namespace>/<name>/<uid>/` (the TrainingJob's UID: a re-created job never overwrites an earlier \
one's); `status.artifacts` lists them.

## Install modes
All namespaces, or one or more namespaces of the OperatorGroup: the operator reconciles TrainingJobs \
only in the OperatorGroup's target namespaces.
"""

OWNED_DESCRIPTION = (
    "Fine-tunes (or trains from scratch) an Ultralytics YOLO model on a dataset in S3 and writes the weights, "
    "metrics and exports back to S3."
)


# --- pure builders ----------------------------------------------------------------------------------------


def schema_node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node of a dotted descriptor path (``progress.metrics.map50-95``); KeyError when absent."""
    node = schema
    for part in path.split("."):
        if node.get("type") == "array":
            node = node["items"]
        node = node["properties"][part]
    return node


def descriptors(schema: dict[str, Any], table: tuple[tuple[str, str, tuple[str, ...]], ...]) -> list[dict]:
    out = []
    for path, name, xds in table:
        try:
            node = schema_node(schema, path)
        except KeyError:
            raise ValueError(f"descriptor path {path!r} is not in the CRD schema") from None
        out.append({"description": node.get("description", name), "displayName": name, "path": path,
                    "x-descriptors": list(xds)})  # fmt: skip
    return out


def _strip_helm(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata") or {}
    meta.pop("namespace", None)
    labels = meta.get("labels") or {}
    for key in HELM_LABELS:
        labels.pop(key, None)
    return obj


def olm_deployment_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    """The chart's Deployment spec with the watched namespaces read from OLM's target namespaces."""
    spec = copy.deepcopy(deployment["spec"])
    (container,) = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "operator"]
    env = container["env"]
    (i,) = [n for n, e in enumerate(env) if e["name"] == NAMESPACES_ENV]
    env[i] = {"name": NAMESPACES_ENV, "valueFrom": {"fieldRef": {"fieldPath": TARGET_NAMESPACES_FIELD}}}
    return spec


def rbac(cluster_wide: list[dict[str, Any]], namespaced: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(clusterPermissions rules, permissions rules) from the chart's two renderings."""

    def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        (doc,) = [d for d in docs if d["kind"] == kind]
        return doc

    cluster_rules = one(cluster_wide, "ClusterRole")["rules"]
    role_rules = one(namespaced, "Role")["rules"]
    only_cluster = [r for r in cluster_rules if r not in role_rules]
    missing = [r for r in role_rules if r not in cluster_rules]
    if missing:
        raise ValueError(f"the namespaced Role grants what the cluster-wide ClusterRole does not: {missing}")
    if any(r not in only_cluster for r in one(namespaced, "ClusterRole")["rules"]):
        raise ValueError("the namespaced ClusterRole grants what the cluster-wide one does not")
    return only_cluster, role_rules


def min_kube_version(chart: dict[str, Any]) -> str:
    """``kubeVersion: ">=1.29.0-0"`` -> ``1.29.0``."""
    text = chart["kubeVersion"].strip()
    if not text.startswith(">="):
        raise ValueError(f"Chart.yaml kubeVersion {text!r}: only a lower bound '>=X.Y.Z' maps to minKubeVersion")
    return text[2:].split("-")[0].strip()


def build_csv(
    *,
    chart: dict[str, Any],
    cluster_wide: list[dict[str, Any]],
    namespaced: list[dict[str, Any]],
    crd_doc: dict[str, Any],
    examples: list[dict[str, Any]],
    icon_svg: bytes,
) -> dict[str, Any]:
    """The ClusterServiceVersion (operators.coreos.com/v1alpha1) as a dict."""
    version = chart["appVersion"]
    (deployment,) = [d for d in cluster_wide if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    sa = pod["serviceAccountName"]
    (container,) = [c for c in pod["containers"] if c["name"] == "operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    cluster_rules, role_rules = rbac(cluster_wide, namespaced)
    crd_version = crd_doc["spec"]["versions"][0]
    schema = crd_version["schema"]["openAPIV3Schema"]["properties"]
    home = chart["home"]
    maintainers = [{"name": m["name"], "email": m["email"]} for m in chart["maintainers"]]
    features = {
        "disconnected": "true", "fips-compliant": "false", "proxy-aware": "false", "tls-profiles": "false",
        "token-auth-aws": "false", "token-auth-azure": "false", "token-auth-gcp": "false",
        "cnf": "false", "cni": "false", "csi": "false",
    }  # fmt: skip
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": f"{PACKAGE}.v{version}",
            "annotations": {
                "alm-examples": json.dumps(examples, indent=2),
                "capabilities": "Basic Install",
                "categories": "AI/Machine Learning",
                "containerImage": container["image"],
                "description": chart["description"].strip(),
                "repository": chart["sources"][0],
                "support": maintainers[0]["name"],
                "operatorframework.io/suggested-namespace": NAMESPACE,
                **{f"features.operators.openshift.io/{k}": v for k, v in features.items()},
            },
            "labels": {"operatorframework.io/arch.amd64": "supported", "operatorframework.io/os.linux": "supported"},
        },
        "spec": {
            "displayName": "YOLO Operator",
            "description": DESCRIPTION,
            "version": version,
            "minKubeVersion": min_kube_version(chart),
            "maturity": "alpha",
            "keywords": list(chart["keywords"]),
            "maintainers": maintainers,
            "provider": {"name": maintainers[0]["name"], "url": home},
            "links": [
                {"name": "Documentation", "url": f"{home}#readme"},
                {"name": "TrainingJob API reference", "url": f"{home}/blob/main/docs/reference.md"},
                {"name": "Source", "url": chart["sources"][0]},
            ],
            "icon": [{"base64data": base64.b64encode(icon_svg).decode(), "mediatype": "image/svg+xml"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": True},
                {"type": "SingleNamespace", "supported": True},
                {"type": "MultiNamespace", "supported": True},
                {"type": "AllNamespaces", "supported": True},
            ],
            "customresourcedefinitions": {
                "owned": [
                    {
                        "name": crd_doc["metadata"]["name"],
                        "version": crd_version["name"],
                        "kind": crd_doc["spec"]["names"]["kind"],
                        "displayName": "Training Job",
                        "description": OWNED_DESCRIPTION,
                        "resources": [
                            {"kind": "Job", "name": "", "version": "v1"},
                            {"kind": "Pod", "name": "", "version": "v1"},
                            {"kind": "ServiceAccount", "name": "", "version": "v1"},
                            {"kind": "Role", "name": "", "version": "v1"},
                            {"kind": "RoleBinding", "name": "", "version": "v1"},
                        ],
                        "specDescriptors": descriptors(schema["spec"], SPEC_DESCRIPTORS),
                        "statusDescriptors": descriptors(schema["status"], STATUS_DESCRIPTORS),
                    }
                ]
            },
            "install": {
                "strategy": "deployment",
                "spec": {
                    "clusterPermissions": [{"serviceAccountName": sa, "rules": cluster_rules}],
                    "permissions": [{"serviceAccountName": sa, "rules": role_rules}],
                    "deployments": [
                        {
                            "name": deployment["metadata"]["name"],
                            "label": {"app.kubernetes.io/part-of": "yolo-operator"},
                            "spec": olm_deployment_spec(deployment),
                        }
                    ],
                },
            },
            "relatedImages": [
                {"name": "operator", "image": container["image"]},
                {"name": "trainer", "image": env["YOLO_OPERATOR_TRAINER_IMAGE"]},
            ],
        },
    }


def annotations() -> dict[str, Any]:
    return {
        "annotations": {
            "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
            "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
            "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
            "operators.operatorframework.io.bundle.package.v1": PACKAGE,
            "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
            "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
        }
    }


def dockerfile() -> str:
    labels = "".join(f"LABEL {k}={v}\n" for k, v in annotations()["annotations"].items())
    return (
        "# Generated by `python -m yolo_operator.bundle --write`. Do not edit.\n"
        "# The bundle image (context bundle/):\n"
        "#   docker build -f bundle/bundle.Dockerfile -t REGISTRY/yolo-operator-bundle:vVERSION bundle/\n"
        f"FROM scratch\n{labels}COPY manifests /manifests/\nCOPY metadata /metadata/\n"
    )


HEADER = "# Generated by `python -m yolo_operator.bundle --write` from charts/yolo-operator. Do not edit.\n"


def dump(doc: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def bundle_files(
    *,
    chart: dict[str, Any],
    cluster_wide: list[dict[str, Any]],
    namespaced: list[dict[str, Any]],
    examples: list[dict[str, Any]],
    icon_svg: bytes,
) -> dict[Path, str]:
    """Every file under bundle/, by path relative to the repository root."""
    files = {
        CSV_PATH: dump(
            build_csv(
                chart=chart,
                cluster_wide=cluster_wide,
                namespaced=namespaced,
                crd_doc=crd.build_crd(),
                examples=examples,
                icon_svg=icon_svg,
            )
        ),
        CRD_PATH: crd.render(),
        ANNOTATIONS_PATH: dump(annotations()),
        DOCKERFILE_PATH: dockerfile(),
    }
    for doc in cluster_wide:
        if doc["kind"] in EXTRA_KINDS:
            files[MANIFESTS / f"{doc['metadata']['name']}.{doc['kind'].lower()}.yaml"] = dump(_strip_helm(doc))
    return files


def example_trainingjobs(texts: dict[str, str]) -> list[dict[str, Any]]:
    """The TrainingJobs of examples/*.yaml (name -> text), FIRST_EXAMPLE's first."""
    order = sorted(texts, key=lambda n: (n != FIRST_EXAMPLE, n))
    return [d for n in order for d in yaml.safe_load_all(texts[n]) if d and d.get("kind") == KIND]


# --- helm and files ---------------------------------------------------------------------------------------


def helm_binary(root: Path) -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    proc = subprocess.run([str(root / "hack" / "build-binaries.sh")], capture_output=True, text=True)
    if proc.returncode == 0 and (Path(proc.stdout.strip().splitlines()[-1]) / "helm").is_file():
        return str(Path(proc.stdout.strip().splitlines()[-1]) / "helm")
    return "helm"


def render_chart(helm: str, root: Path, *args: str) -> list[dict[str, Any]]:
    api = [a for v in CONSOLE_API_VERSIONS for a in ("--api-versions", v)]
    cmd = [helm, "template", RELEASE, str(root / CHART), "--namespace", NAMESPACE, "--skip-tests", *api, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def expected_files(root: Path, helm: str) -> dict[Path, str]:
    """The chart's copies of examples/ and everything under bundle/, generated from the working tree."""
    copies = {CHART / "files" / "examples" / f"{n}.yaml": (root / "examples" / f"{n}.yaml").read_text()
              for n in CONSOLE_EXAMPLES}  # fmt: skip
    return copies | bundle_files(
        chart=yaml.safe_load((root / CHART / "Chart.yaml").read_text()),
        cluster_wide=render_chart(helm, root),
        namespaced=render_chart(helm, root, "--set", f"watchNamespaces={{{TARGET_NAMESPACE}}}"),
        examples=example_trainingjobs({p.stem: p.read_text() for p in (root / "examples").glob("*.yaml")}),
        icon_svg=(root / ICON).read_bytes(),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="write the files under --root")
    p.add_argument("--check", action="store_true", help="fail when a file under --root is stale")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    p.add_argument("--helm", default=None, help="helm binary (default: $HELM, else the pinned one)")
    args = p.parse_args(argv)
    root = args.root
    helm = args.helm or helm_binary(root)
    if args.write:
        # The console samples render from the chart's copies of examples/: write those first.
        for n in CONSOLE_EXAMPLES:
            dst = root / CHART / "files" / "examples" / f"{n}.yaml"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text((root / "examples" / f"{n}.yaml").read_text())
    files = expected_files(root, helm)
    if not (args.write or args.check):
        sys.stdout.write(files[CSV_PATH])
        return 0
    stale = []
    if args.write:
        for old in (root / "bundle" / "manifests").glob("*"):
            if old.relative_to(root) not in files:
                old.unlink()
    else:
        present = {q.relative_to(root) for q in (root / "bundle").rglob("*") if q.is_file()}
        stale += sorted(str(q) for q in present - set(files))
    return write_or_check(files, root, write=args.write, command="python -m yolo_operator.bundle", stale=stale)


if __name__ == "__main__":
    sys.exit(main())
