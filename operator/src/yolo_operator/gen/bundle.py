"""Generates the OLM bundle (``bundle/``) from the Helm chart and the CRD generator; never edit bundle/ by hand.

    python -m yolo_operator.gen.bundle --write    # charts/yolo-operator/files/examples/ and bundle/
    python -m yolo_operator.gen.bundle --check    # exit 1 when a committed file differs from the generated one

The chart is rendered with the pinned helm (``$HELM``, else hack/build-binaries.sh's, else ``helm``) twice:
cluster-wide (``watchNamespaces: []``) and namespaced (one watched namespace), with the OpenShift console
API, and the ClusterServiceVersion is built from what it renders:

* ``install.spec.deployments``: the chart's Deployment spec, with ``YOLO_OPERATOR_NAMESPACES`` read from the
  pod's ``olm.targetNamespaces`` annotation (OLM sets it from the OperatorGroup: empty = all namespaces), and the
  chart's ConsolePlugin in ``YOLO_OPERATOR_CONSOLE_PLUGIN`` for the operator to apply (OLM creates no
  ConsolePlugin from a bundle; the rules to apply it join the clusterPermissions); the console plugin's
  Deployment is the second;
* ``install.spec.permissions``: the namespaced Role's rules. OLM grants them in every target namespace,
  and cluster-wide (as a ClusterRole) for an AllNamespaces OperatorGroup: the chart's two modes; plus the
  leader election's Lease rules (the chart's Role in the release namespace), which OLM grants in the
  operator's own namespace too;
* ``install.spec.clusterPermissions``: the rules of the cluster-wide ClusterRole that the Role lacks (CRD
  reads, namespace list/watch);
* ``customresourcedefinitions.owned``: a spec or status descriptor for every field of the generated CRD schema
  (``yolo_operator.gen.crd``, from the pydantic models), with descriptions from it and names and x-descriptors
  derived from the field's name and type (DescriptorRules); a new field gets one with no edit here;
* ``alm-examples``: the TrainingJobs of ``examples/*.yaml``.

bundle/manifests/ also holds the generated CRD (byte-identical to ``python -m yolo_operator.gen.crd``), the
metrics Service, its ServiceMonitor and the console YAML samples and quick start: the chart's, except that the
quick start is the OLM variant of its template (Operators -> Installed Operators; the chart's speaks of a Helm
install). ``build_csv`` and ``bundle_files`` are pure (rendered documents in, dicts and text out); only ``main``
runs helm, skopeo and touches files.

Your own images (``make bundle IMG=... TRAINER_IMG=...``, the operator-sdk convention):

    python -m yolo_operator.gen.bundle --write --operator-image REG/yolo-operator:0.1.0 \
        --trainer-image REG/yolo-trainer:0.1.0 --resolve-digests --out build/bundle

The chart renders them (a digest reference as ``tag: sha256:...``), so the CSV's Deployment, the trainer image
its operator gives every TrainingJob (``YOLO_OPERATOR_TRAINER_IMAGE``) and ``relatedImages`` name them.
``--resolve-digests`` asks the registry (``skopeo inspect``) for each tag's digest and pins them; only a bundle
whose images are both pinned by digest claims ``features.operators.openshift.io/disconnected`` (a mirror serves
content by digest; a tag cannot be mirrored with ImageDigestMirrorSet). The committed bundle/ is the rendering
with the chart's default tags. ``--catalog DIR --bundle-image IMG`` writes a file-based catalog (FBC: olm.package,
olm.channel, olm.bundle) of that bundle and its Dockerfile beside it (``make catalog``); a catalog already in DIR
grows: the new bundle becomes the channel's head and replaces the previous one (the upgrade edge OLM follows).
``--version`` names a release other than the chart's appVersion (``make bundle VERSION=0.1.1``), ``--values FILE``
renders the chart with your settings (``BUNDLE_VALUES=my-values.yaml``), so the bundle carries them: OLM v1 has no
``Subscription.spec.config``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yolo_contract import GROUP, KIND, PLURAL, VERSION
from yolo_contract.generated import write_or_check

from yolo_operator.gen import crd
from yolo_operator.runtime.config import CONSOLE_PLUGIN_ENV

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
CONSOLE_API_VERSIONS = (
    "console.openshift.io/v1/ConsoleYAMLSample",
    "console.openshift.io/v1/ConsoleQuickStart",
    "console.openshift.io/v1/ConsolePlugin",
)
#: The console plugin's Deployment (charts/yolo-operator/templates/console-plugin.yaml): a second deployment of
#: the CSV's install strategy; its Service goes beside the CSV, its ConsolePlugin to the operator, which applies it
#: (CONSOLE_PLUGIN_ENV): OLM creates no ConsolePlugin from a bundle (not in operator-registry's supported kinds).
#: The CSV's console.openshift.io/plugins annotation offers to enable it at install.
CONSOLE_PLUGIN = "yolo-operator-console-plugin"
#: The Prometheus Operator's API, rendered too: OLM creates a bundle's ServiceMonitor in the operator's namespace.
MONITORING_API_VERSIONS = ("monitoring.coreos.com/v1/ServiceMonitor",)
#: examples/ files the chart's console YAML samples read (charts/yolo-operator/files/examples/, copied).
CONSOLE_EXAMPLES = ("finetune-frozen-backbone", "continue-from-previous", "zip-dataset", "s3-secret")
#: examples/ file whose TrainingJob is the first alm-example (the console's default in the Create form).
FIRST_EXAMPLE = "finetune-frozen-backbone"
#: Kinds of the chart's rendering that go into bundle/manifests/ beside the CSV (OLM creates the
#: ServiceAccount, RBAC and Deployment itself from the CSV).
#: Every one is in operator-registry's supported kinds (pkg/lib/bundle/supported_resources.go), which OLM v0 and
#: v1 both enforce.
EXTRA_KINDS = ("Service", "ServiceMonitor", "PodDisruptionBudget", "ConsoleYAMLSample", "ConsoleQuickStart")
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
DISCONNECTED = "features.operators.openshift.io/disconnected"
TRAINER_IMAGE_ENV = "YOLO_OPERATOR_TRAINER_IMAGE"
#: The label by which OLM finds a catalog image's file-based catalog (opm's convention).
CATALOG_CONFIGS_LABEL = "operators.operatorframework.io.index.configs.v1"
#: The template added to a copy of the chart to render the quick start's OLM variant (render_olm_quick_start).
OLM_QUICK_START_TEMPLATE = "olm-quickstart.yaml"

MANIFESTS = Path("bundle/manifests")
CSV_PATH = MANIFESTS / f"{PACKAGE}.clusterserviceversion.yaml"
CRD_PATH = MANIFESTS / f"{GROUP}_{PLURAL}.yaml"
ANNOTATIONS_PATH = Path("bundle/metadata/annotations.yaml")
DOCKERFILE_PATH = Path("bundle/bundle.Dockerfile")

TEXT = "urn:alm:descriptor:text"
NUMBER = "urn:alm:descriptor:com.tectonic.ui:number"
SWITCH = "urn:alm:descriptor:com.tectonic.ui:booleanSwitch"
K8S = "urn:alm:descriptor:io.kubernetes:"
ADVANCED = "urn:alm:descriptor:com.tectonic.ui:advanced"


@dataclass(frozen=True)
class DescriptorRules:
    """How the descriptors of spec or status are derived from the CRD schema (itself generated from the pydantic
    models of yolo_operator.api.types): one descriptor per field, in schema order, so a field added to the models gets
    one with no edit here. A field is a leaf of nested objects; an array, a map, a free-form object and a
    ``whole`` subtree are one field each. Display names come from the field names (``names`` overrides them),
    x-descriptors from the types (``xds`` overrides them), descriptions from the schema. Every path named here
    must exist, so a renamed field fails the generator instead of the console."""

    names: dict[str, str] = field(default_factory=dict)
    xds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: subtrees described by one descriptor, with the reason
    whole: dict[str, str] = field(default_factory=dict)
    #: fields without a descriptor, with the reason (the unit test asks for one)
    internal: dict[str, str] = field(default_factory=dict)
    #: paths placed first (the console lists descriptors in order)
    first: tuple[str, ...] = ()
    #: spec only: fields shown in the form's main section; every other one is marked advanced
    basic: frozenset[str] | None = None
    status: bool = False


# fmt: off  (tables, one line per group of fields)
SPEC_RULES = DescriptorRules(
    names={
        "model.hub": "Pretrained model",
        "model.uri": "Model weights URI",
        "model.yaml": "Model architecture",
        "model.fromTrainingJob": "Continue from TrainingJob",
        "dataset": "Dataset",
        "output": "Output prefix",
        "s3.dataConnection.name": "Data connection",
        "s3.credentialsSecretRef.name": "S3 credentials Secret",
        "s3.credentialsSecretRef.accessKeyIdKey": "Access key ID key",
        "s3.credentialsSecretRef.secretAccessKeyKey": "Secret access key key",
        "s3.caBundle.name": "CA bundle ConfigMap",
        "s3.caBundle.key": "CA bundle key",
        "s3.insecureSkipTLSVerify": "Skip TLS verification",
        "s3.retryBudgetSeconds": "S3 retry budget (seconds)",
        "training.imgsz": "Image size",
        "training.batch": "Batch size",
        "training.freeze": "Frozen modules",
        "training.hyperparameters": "Ultralytics hyperparameters",
        "training.workers": "DataLoader workers",
        "resources.gpus": "GPUs",
        "resources.cpu": "CPU",
        "resources.memory": "Memory",
        "resources.cpuLimit": "CPU limit",
        "resources.shmSize": "Shared memory (/dev/shm)",
        "resources.scratchSize": "Scratch volume size",
        "resources.scratchStorageClassName": "Scratch StorageClass",
        "scheduling.priorityClassName": "PriorityClass",
        "image": "Trainer image",
        "imagePullSecrets": "Image pull Secrets",
        "env": "Environment variables",
        "serviceAccountAnnotations": "ServiceAccount annotations",
        "backoffLimit": "Retries",
        "stop": "Stop and keep the best weights",
        "queueName": "Kueue LocalQueue",
        "exportFormats": "Export formats",
    },
    xds={
        "model.fromTrainingJob": (f"{K8S}{GROUP}:{VERSION}:{KIND}",),
        "s3.dataConnection.name": (f"{K8S}Secret",),
        "s3.credentialsSecretRef.name": (f"{K8S}Secret",),
        "s3.caBundle.name": (f"{K8S}ConfigMap", ADVANCED),
        "imagePullPolicy": ("urn:alm:descriptor:com.tectonic.ui:imagePullPolicy", ADVANCED),
        "scheduling.priorityClassName": (f"{K8S}scheduling.k8s.io:v1:PriorityClass", ADVANCED),
    },
    whole={"training.hyperparameters": "Ultralytics' own training arguments, passed through (~70 of them)"},
    basic=frozenset(
        {
            "model.hub",
            "model.uri",
            "model.yaml",
            "model.fromTrainingJob",
            "dataset",
            "output",
            "s3.endpoint",
            "s3.dataConnection.name",
            "s3.credentialsSecretRef.name",
            "training.epochs",
            "training.imgsz",
            "training.batch",
            "training.freeze",
            "resources.gpus",
            "resources.cpu",
            "resources.memory",
            "suspend",
            "stop",
        }
    ),
)
STATUS_RULES = DescriptorRules(
    names={
        "stage": "Stage",
        "progress.epochDisplay": "Epoch",
        "progress.epoch": "Epochs completed",
        "progress.epochs": "Epochs requested",
        "progress.metrics.clsLoss": "Classification loss",
        "progress.bestMap50-95": "Best mAP50-95",
        "progress.etaSeconds": "ETA (seconds)",
        "progress.eta": "ETA",
        "progress.percent": "Progress (%)",
        "progress.updatedAt": "Progress updated",
        "artifacts.bestWeights": "Best weights",
        "artifacts.lastWeights": "Last weights",
        "artifacts.metrics": "Metrics",
        "artifacts.results": "Results",
        "artifacts.plots": "Plots",
        "artifacts.exports": "Exported models",
        "lastCheckpoint.uri": "Last checkpoint",
        "jobName": "Job",
        "podName": "Pod",
        "model": "Resolved model",
        "startTime": "Started",
        "completionTime": "Completed",
        "restartCount": "Restarts",
        "outcome.reason": "Outcome",
        "outcome.message": "Outcome message",
        "artifacts.serving": "Model repository",
        "artifacts.test": "Test results",
        "artifacts.runId": "Run ID",
        "lineage.baseModel.trainingJob": "Base model TrainingJob",
        "kueue.clusterQueue": "Kueue ClusterQueue",
        "lineage.trainerImage": "Trainer image (digest)",
        "lineage.ultralytics": "Ultralytics version",
        "lineage.torch": "PyTorch version",
        "kueue.workload": "Kueue Workload",
    },
    xds={
        "phase": ("urn:alm:descriptor:io.kubernetes.phase",),
        "conditions": ("urn:alm:descriptor:io.kubernetes.conditions",),
        "outcome.reason": ("urn:alm:descriptor:io.kubernetes.phase:reason",),
        "jobName": (f"{K8S}batch:v1:Job",),
        "podName": (f"{K8S}Pod",),
    },
    internal={"observedGeneration": "reconcile bookkeeping; each condition carries it too"},
    first=("phase", "conditions", "stage", "outcome.reason", "outcome.message"),
    status=True,
)
# fmt: on

#: Words of field names that read better spelled out in a display name.
WORDS = {
    "s3": "S3", "uri": "URI", "gpu": "GPU", "cpu": "CPU", "id": "ID", "tls": "TLS", "ca": "CA", "eta": "ETA",
    "sha256": "SHA-256", "etag": "ETag", "map50": "mAP50", "map50-95": "mAP50-95", "ttl": "TTL", "dfl": "DFL",
}  # fmt: skip
#: Groups whose fields read well without the group's name (``resources.cpuLimit`` -> ``CPU limit``).
BARE_PARENTS = frozenset({"training", "resources", "scheduling", "progress", "metrics", "artifacts"})

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


def described_fields(schema: dict[str, Any], rules: DescriptorRules, prefix: str = "") -> list[str]:
    """The paths that get a descriptor, in schema order (see DescriptorRules)."""
    out = []
    for name, node in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        if path in rules.internal:
            continue
        if node.get("type") == "object" and node.get("properties") and path not in rules.whole:
            out += described_fields(node, rules, path)
        else:
            out.append(path)
    return out


def display_name(path: str) -> str:
    """``lineage.dataset.fingerprint`` -> ``Dataset fingerprint``: the field and its parent's name, in words."""
    parts = path.split(".")[-2:]
    if len(parts) == 2 and parts[0] in BARE_PARENTS:
        parts = parts[1:]
    words = [w for part in parts for w in re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", part).lower().split()]
    words = [WORDS.get(w, w) for w in words]
    first = words[0] if words[0] != words[0].lower() else words[0].capitalize()  # mAP50 stays mAP50
    return " ".join([first, *words[1:]])


def derived_xds(node: dict[str, Any], path: str, rules: DescriptorRules) -> list[str]:
    if path in rules.xds:
        return list(rules.xds[path])
    if rules.status:
        return [TEXT]
    kind = {"boolean": [SWITCH], "integer": [NUMBER], "number": [NUMBER], "string": [TEXT]}.get(node.get("type"), [])
    return kind if rules.basic is None or path in rules.basic else [*kind, ADVANCED]


def descriptors(schema: dict[str, Any], rules: DescriptorRules) -> list[dict]:
    """The spec or status descriptors of the CSV, one per field of ``schema`` (see DescriptorRules)."""
    named = {*rules.names, *rules.xds, *rules.whole, *rules.internal, *rules.first, *(rules.basic or ())}
    for path in sorted(named):
        try:
            schema_node(schema, path)
        except KeyError:
            raise ValueError(f"descriptor path {path!r} is not in the CRD schema") from None
    paths = described_fields(schema, rules)
    paths = [p for p in rules.first if p in paths] + [p for p in paths if p not in rules.first]
    out = []
    for path in paths:
        node = schema_node(schema, path)
        description = node.get("description", "")
        if path.endswith(".name") and "." in path:  # a reference's "Name of the object." says less than the field
            description = schema_node(schema, path.rpartition(".")[0]).get("description") or description
        out.append({"description": description or display_name(path),
                    "displayName": rules.names.get(path) or display_name(path), "path": path,
                    "x-descriptors": derived_xds(node, path, rules)})  # fmt: skip
    return out


def _strip_helm(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata") or {}
    meta.pop("namespace", None)
    labels = meta.get("labels") or {}
    for key in HELM_LABELS:
        labels.pop(key, None)
    return obj


def olm_deployment_spec(deployment: dict[str, Any], console_plugin: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chart's Deployment spec with the watched namespaces read from OLM's target namespaces, and the
    ConsolePlugin (the chart's, when it renders one) handed to the operator to apply: OLM creates no ConsolePlugin
    from a bundle (yolo_operator.runtime.console_plugin)."""
    spec = copy.deepcopy(deployment["spec"])
    (container,) = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "operator"]
    env = container["env"]
    (i,) = [n for n, e in enumerate(env) if e["name"] == NAMESPACES_ENV]
    env[i] = {"name": NAMESPACES_ENV, "valueFrom": {"fieldRef": {"fieldPath": TARGET_NAMESPACES_FIELD}}}
    if console_plugin is not None:
        plugin = _strip_helm(console_plugin)
        plugin["spec"]["backend"]["service"].pop("namespace", None)  # the operator's own, known only at run time
        value = json.dumps({"metadata": plugin["metadata"], "spec": plugin["spec"]}, sort_keys=True)
        env.append({"name": CONSOLE_PLUGIN_ENV, "value": value})
    return spec


def console_plugin_rules(name: str) -> list[dict[str, Any]]:
    """What the operator needs to apply its ConsolePlugin (server-side apply creates it: create and patch)."""
    return [
        {"apiGroups": ["console.openshift.io"], "resources": ["consoleplugins"], "verbs": ["create"]},
        {"apiGroups": ["console.openshift.io"], "resources": ["consoleplugins"], "resourceNames": [name],
         "verbs": ["get", "patch"]},
    ]  # fmt: skip


def rbac(cluster_wide: list[dict[str, Any]], namespaced: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(clusterPermissions rules, permissions rules) from the chart's two renderings."""

    def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"].get("namespace") != NAMESPACE]
        return doc

    def own_namespace_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rules of the Roles in the release namespace (the leader election's Lease), identical in both modes."""
        return [r for d in docs if d["kind"] == "Role" and d["metadata"].get("namespace") == NAMESPACE
                for r in d["rules"]]  # fmt: skip

    cluster_rules = one(cluster_wide, "ClusterRole")["rules"]
    role_rules = one(namespaced, "Role")["rules"]
    election_rules = own_namespace_rules(cluster_wide)
    if election_rules != own_namespace_rules(namespaced):
        raise ValueError("the release namespace's Roles differ between the cluster-wide and namespaced renderings")
    only_cluster = [r for r in cluster_rules if r not in role_rules]
    missing = [r for r in role_rules if r not in cluster_rules]
    if missing:
        raise ValueError(f"the namespaced Role grants what the cluster-wide ClusterRole does not: {missing}")
    if any(r not in only_cluster for r in one(namespaced, "ClusterRole")["rules"]):
        raise ValueError("the namespaced ClusterRole grants what the cluster-wide one does not")
    return only_cluster, role_rules + [r for r in election_rules if r not in role_rules]


def min_kube_version(chart: dict[str, Any]) -> str:
    """``kubeVersion: ">=1.29.0-0"`` -> ``1.29.0``."""
    text = chart["kubeVersion"].strip()
    if not text.startswith(">="):
        raise ValueError(f"Chart.yaml kubeVersion {text!r}: only a lower bound '>=X.Y.Z' maps to minKubeVersion")
    return text[2:].split("-")[0].strip()


# --- images -----------------------------------------------------------------------------------------------

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def split_image(ref: str) -> tuple[str, str]:
    """``REG:5000/a/b:1.0`` -> (``REG:5000/a/b``, ``1.0``); ``REG/a/b@sha256:..`` -> (``REG/a/b``, ``sha256:..``), the
    chart's ``repository`` and ``tag`` values (its tag may be a digest). A reference without a tag or digest is
    refused: ``latest`` is not what a bundle should pull."""
    ref = ref.strip()
    if "@" in ref:
        name, _, digest = ref.partition("@")
        if not _DIGEST.match(digest):
            raise ValueError(f"image {ref!r}: the digest after '@' must be sha256:<64 hex digits>")
        return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name, digest
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not name:
        raise ValueError(f"image {ref!r} names no tag or digest: write REPOSITORY:TAG or REPOSITORY@sha256:...")
    return name, tag


def is_pinned(ref: str) -> bool:
    """Whether the reference names its image by digest (``...@sha256:<64 hex>``)."""
    return bool(_DIGEST.match(ref.partition("@")[2])) if "@" in ref else False


def pin(ref: str, digest: str) -> str:
    """``REG/a/b:1.0`` + ``sha256:..`` -> ``REG/a/b@sha256:..`` (the tag dropped: the digest alone decides)."""
    if not _DIGEST.match(digest):
        raise ValueError(f"digest {digest!r} of {ref!r} is not sha256:<64 hex digits>")
    return f"{split_image(ref)[0]}@{digest}"


def claims_disconnected(images: list[str]) -> bool:
    """A bundle supports disconnected clusters only when every image it runs is named by digest: a mirror
    (ImageDigestMirrorSet, oc-mirror) redirects digests, never tags."""
    return bool(images) and all(is_pinned(i) for i in images)


#: The chart's image values a bundle of your images sets: operator, trainer and console plugin.
IMAGE_VALUES = ("operator", "trainer", "consolePlugin")


def chart_image_values(images: dict[str, str | None]) -> list[str]:
    """``helm template --set`` arguments that make the chart render these images (keys: ``IMAGE_VALUES``;
    None or missing: the chart's default)."""
    out = []
    for key in IMAGE_VALUES:
        if ref := images.get(key):
            repository, tag = split_image(ref)
            out += ["--set-string", f"{key}.image.repository={repository}", "--set-string", f"{key}.image.tag={tag}"]
    return out


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
    deployments = [d for d in cluster_wide if d["kind"] == "Deployment"]
    (deployment,) = [d for d in deployments if d["metadata"]["name"] != CONSOLE_PLUGIN]
    plugins = [d for d in deployments if d["metadata"]["name"] == CONSOLE_PLUGIN]
    plugin_images = [d["spec"]["template"]["spec"]["containers"][0]["image"] for d in plugins]
    pod = deployment["spec"]["template"]["spec"]
    sa = pod["serviceAccountName"]
    (container,) = [c for c in pod["containers"] if c["name"] == "operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    cluster_rules, role_rules = rbac(cluster_wide, namespaced)
    console_plugins = [d for d in cluster_wide if d["kind"] == "ConsolePlugin"]
    if console_plugins:
        cluster_rules = [*cluster_rules, *console_plugin_rules(console_plugins[0]["metadata"]["name"])]
    crd_version = crd_doc["spec"]["versions"][0]
    schema = crd_version["schema"]["openAPIV3Schema"]["properties"]
    home = chart["home"]
    maintainers = [{"name": m["name"], "email": m["email"]} for m in chart["maintainers"]]
    features = {
        "disconnected": str(claims_disconnected([container["image"], env[TRAINER_IMAGE_ENV], *plugin_images])).lower(),
        "fips-compliant": "false", "proxy-aware": "false", "tls-profiles": "false",
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
                **({"console.openshift.io/plugins": json.dumps([CONSOLE_PLUGIN])} if plugins else {}),
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
                        "specDescriptors": descriptors(schema["spec"], SPEC_RULES),
                        "statusDescriptors": descriptors(schema["status"], STATUS_RULES),
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
                            "spec": olm_deployment_spec(deployment, console_plugins[0] if console_plugins else None),
                        },
                        *(
                            {
                                "name": d["metadata"]["name"],
                                "label": {"app.kubernetes.io/part-of": "yolo-operator"},
                                "spec": copy.deepcopy(d["spec"]),
                            }
                            for d in plugins
                        ),
                    ],
                },
            },
            "relatedImages": [
                {"name": "operator", "image": container["image"]},
                {"name": "trainer", "image": env[TRAINER_IMAGE_ENV]},
                *({"name": "console-plugin", "image": image} for image in plugin_images),
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
        "# Generated by `python -m yolo_operator.gen.bundle --write`. Do not edit.\n"
        "# The bundle image (context bundle/):\n"
        "#   docker build -f bundle/bundle.Dockerfile -t REGISTRY/yolo-operator-bundle:vVERSION bundle/\n"
        f"FROM scratch\n{labels}COPY manifests /manifests/\nCOPY metadata /metadata/\n"
    )


HEADER = "# Generated by `python -m yolo_operator.gen.bundle --write` from charts/yolo-operator. Do not edit.\n"


def dump(doc: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def bundle_files(
    *,
    chart: dict[str, Any],
    cluster_wide: list[dict[str, Any]],
    namespaced: list[dict[str, Any]],
    examples: list[dict[str, Any]],
    icon_svg: bytes,
    quick_start: dict[str, Any],
) -> dict[Path, str]:
    """Every file under bundle/, by path relative to the repository root. ``quick_start`` (the OLM variant of
    the chart's, render_olm_quick_start) replaces the chart's Helm variant."""
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
    (helm_variant,) = [d for d in cluster_wide if d["kind"] == quick_start["kind"]]
    if quick_start["metadata"]["name"] != helm_variant["metadata"]["name"]:
        raise ValueError("the quick start's OLM variant must keep the chart's name")
    for doc in cluster_wide:
        if doc is helm_variant:
            doc = quick_start
        if doc["kind"] in EXTRA_KINDS:
            files[MANIFESTS / f"{doc['metadata']['name']}.{doc['kind'].lower()}.yaml"] = dump(_strip_helm(doc))
    return files


def file_based_catalog(
    csv: dict[str, Any], bundle_image: str, icon_svg: bytes, existing: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """A file-based catalog (FBC, what ``opm render`` and ``opm init`` write) with this bundle at the head of
    its channel: its olm.package, the olm.channel and the olm.bundle, whose ``image`` is ``bundle_image`` (OLM
    pulls the manifests from there) and whose properties are what OLM resolves by: the package and version and
    the owned CRD's group/version/kind.

    ``existing``: the catalog so far (the documents of an earlier ``--catalog`` run). The channel keeps its
    entries and the new bundle ``replaces`` the channel's head, the upgrade edge OLM v0 and v1 follow; a bundle
    of the same name is replaced in place (a rebuilt bundle image), keeping the edge it had."""
    name = csv["metadata"]["name"]
    version = csv["spec"]["version"]
    (owned,) = csv["spec"]["customresourcedefinitions"]["owned"]
    group = owned["name"].split(".", 1)[1]
    related = [{"name": "", "image": bundle_image}, *csv["spec"].get("relatedImages", [])]
    package = {"schema": "olm.package", "name": PACKAGE, "defaultChannel": CHANNEL,
               "icon": {"base64data": base64.b64encode(icon_svg).decode(), "mediatype": "image/svg+xml"},
               "description": csv["metadata"]["annotations"]["description"]}  # fmt: skip
    this = {"schema": "olm.bundle", "name": name, "package": PACKAGE, "image": bundle_image,
            "properties": [
                {"type": "olm.package", "value": {"packageName": PACKAGE, "version": version}},
                {"type": "olm.gvk", "value": {"group": group, "kind": owned["kind"], "version": owned["version"]}},
            ],
            "relatedImages": related}  # fmt: skip
    docs = list(existing or [])
    others = [d for d in docs if d.get("package", d.get("name")) != PACKAGE or d.get("schema") not in (
        "olm.package", "olm.channel", "olm.bundle")]  # fmt: skip
    if others:
        raise ValueError(f"the catalog holds documents of another package or schema: {others[0]!r:.200}")
    channels = [d for d in docs if d["schema"] == "olm.channel" and d["name"] == CHANNEL]
    entries = [dict(e) for e in (channels[0]["entries"] if channels else [])]
    if not any(e["name"] == name for e in entries):
        replaced = {e.get("replaces") for e in entries}
        heads = [e["name"] for e in entries if e["name"] not in replaced]
        if len(heads) > 1:
            raise ValueError(f"channel {CHANNEL} has more than one head ({', '.join(heads)}): which does {name} "
                             "replace? Mend the catalog by hand first")  # fmt: skip
        entries.append({"name": name, **({"replaces": heads[0]} if heads else {})})
    bundles = [d for d in docs if d["schema"] == "olm.bundle" and d["name"] != name]
    other_channels = [d for d in docs if d["schema"] == "olm.channel" and d["name"] != CHANNEL]
    return [package, *other_channels, {"schema": "olm.channel", "package": PACKAGE, "name": CHANNEL,
                                       "entries": entries}, *bundles, this]  # fmt: skip


def catalog_dockerfile() -> str:
    """The catalog image (context: the catalog directory): the FBC under /configs, found by OLM v1's ClusterCatalog
    through the label. OLM v0's CatalogSource serves it with opm: ``--build-arg BASE_IMAGE=quay.io/operator-
    framework/opm:v1.50.0`` gives the image the opm binary its entrypoint runs."""
    return (
        "# Generated by `python -m yolo_operator.gen.bundle --catalog DIR`. Do not edit.\n"
        "ARG BASE_IMAGE=scratch\n"
        "FROM ${BASE_IMAGE}\n"
        'ENTRYPOINT ["/bin/opm"]\n'
        'CMD ["serve", "/configs", "--cache-dir=/tmp/cache"]\n'
        "COPY configs /configs\n"
        f"LABEL {CATALOG_CONFIGS_LABEL}=/configs\n"
    )


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


def render_chart(helm: str, root: Path, *args: str, chart: Path | None = None) -> list[dict[str, Any]]:
    api = [a for v in CONSOLE_API_VERSIONS + MONITORING_API_VERSIONS for a in ("--api-versions", v)]
    chart = chart or root / CHART
    cmd = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--skip-tests", *api, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_olm_quick_start(helm: str, root: Path) -> dict[str, Any]:
    """The chart's quick start template (templates/_quickstart.tpl) in its OLM variant: rendered from a copy of
    the chart with one more template that asks for it, so the chart itself never carries that variant."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / CHART.name
        shutil.copytree(root / CHART, chart)
        (chart / "templates" / OLM_QUICK_START_TEMPLATE).write_text(
            '{{ include "yolo-operator.consoleQuickStart" (dict "root" . "install" "olm") }}\n'
        )
        docs = render_chart(helm, root, "--show-only", f"templates/{OLM_QUICK_START_TEMPLATE}", chart=chart)
    (doc,) = docs
    return doc


def expected_files(
    root: Path, helm: str, images: list[str] | None = None, version: str = "", values: list[Path] | None = None
) -> dict[Path, str]:
    """The chart's copies of examples/ and everything under bundle/, generated from the working tree; ``images``:
    chart_image_values' arguments (the chart's default images when empty); ``version``: the bundle's version
    (default: the chart's appVersion); ``values``: helm values files the chart is rendered with."""
    images = [*(a for v in values or () for a in ("--values", str(v))), *(images or [])]
    chart = yaml.safe_load((root / CHART / "Chart.yaml").read_text())
    if version:
        chart["appVersion"] = version
    copies = {CHART / "files" / "examples" / f"{n}.yaml": (root / "examples" / f"{n}.yaml").read_text()
              for n in CONSOLE_EXAMPLES}  # fmt: skip
    return copies | bundle_files(
        chart=chart,
        cluster_wide=render_chart(helm, root, *images),
        namespaced=render_chart(helm, root, *images, "--set", f"watchNamespaces={{{TARGET_NAMESPACE}}}"),
        examples=example_trainingjobs({p.stem: p.read_text() for p in (root / "examples").glob("*.yaml")}),
        icon_svg=(root / ICON).read_bytes(),
        quick_start=render_olm_quick_start(helm, root),
    )


def resolve_digest(ref: str, tls_verify: bool = True) -> str:
    """The reference pinned by the digest its registry serves for it (``skopeo inspect``); a pinned one as it is."""
    if is_pinned(ref):
        return ref
    cmd = ["skopeo", "inspect", "--format", "{{.Digest}}", f"--tls-verify={str(tls_verify).lower()}", f"docker://{ref}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SystemExit("--resolve-digests needs skopeo (Debian/Fedora package `skopeo`)") from None
    if proc.returncode:
        raise SystemExit(f"cannot read the digest of {ref} from its registry ({' '.join(cmd)}):\n"
                         f"{proc.stderr.strip()}\npush the image first (make images / docker push), log in "
                         "(skopeo login), or pass a reference with @sha256:...")  # fmt: skip
    return pin(ref, proc.stdout.strip())


def write_tree(files: dict[Path, str], out: Path) -> None:
    for path, text in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="write the files under --root (or the bundle under --out)")
    p.add_argument("--check", action="store_true", help="fail when a file under --root is stale")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    p.add_argument("--helm", default=None, help="helm binary (default: $HELM, else the pinned one)")
    p.add_argument("--operator-image", default="", help="operator image (default: the chart's)")
    p.add_argument("--trainer-image", default="", help="trainer image (default: the chart's)")
    p.add_argument("--console-plugin-image", default="", help="console plugin image (default: the chart's)")
    p.add_argument("--resolve-digests", action="store_true", help="pin tagged images by their registry's digest")
    p.add_argument("--tls-verify", default="true", choices=["true", "false"], help="skopeo's, for --resolve-digests")
    p.add_argument("--out", type=Path, default=None,
                   help="write the bundle (manifests/, metadata/, bundle.Dockerfile) here instead of bundle/")
    p.add_argument("--catalog", type=Path, default=None, help="also write a file-based catalog and its Dockerfile here")
    p.add_argument("--bundle-image", default="", help="the bundle image the catalog names (with --catalog)")
    p.add_argument("--version", default="", help="the bundle's version (default: the chart's appVersion)")
    p.add_argument("--values", type=Path, action="append", default=[],
                   help="a helm values file the chart is rendered with (repeatable): settings the bundle carries")
    args = p.parse_args(argv)
    root = args.root
    helm = args.helm or helm_binary(root)
    images = dict(zip(IMAGE_VALUES, (args.operator_image, args.trainer_image, args.console_plugin_image), strict=True))
    if args.resolve_digests:
        tls = args.tls_verify == "true"
        chart = yaml.safe_load((root / CHART / "Chart.yaml").read_text())
        values = yaml.safe_load((root / CHART / "values.yaml").read_text())
        images = {k: resolve_digest(ref or f"{values[k]['image']['repository']}:{chart['appVersion']}", tls)
                  for k, ref in images.items()}  # fmt: skip
    custom = any(images.values()) or bool(args.version or args.values)
    if args.catalog and not args.bundle_image:
        p.error("--catalog needs --bundle-image (the image `make bundle-build` tags: BUNDLE_IMG)")
    if custom and (args.check or (args.write and not args.out)):
        # The committed bundle/ is the default images' rendering (tests/integration/test_bundle.py checks it).
        p.error("a bundle with other images, a version or values goes to --out DIR (bundle/ is the chart's "
                "default rendering)")
    if args.write and not args.out:
        # The console samples render from the chart's copies of examples/: write those first.
        for n in CONSOLE_EXAMPLES:
            dst = root / CHART / "files" / "examples" / f"{n}.yaml"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text((root / "examples" / f"{n}.yaml").read_text())
    files = expected_files(root, helm, chart_image_values(images), args.version, args.values)
    if args.catalog:
        bundle_image = args.bundle_image
        if args.resolve_digests:
            bundle_image = resolve_digest(bundle_image, args.tls_verify == "true")
        csv = yaml.safe_load(files[CSV_PATH])
        catalog_yaml = args.catalog / "configs" / PACKAGE / "catalog.yaml"
        existing = [d for d in yaml.safe_load_all(catalog_yaml.read_text()) if d] if catalog_yaml.exists() else []
        try:
            fbc = file_based_catalog(csv, bundle_image, (root / ICON).read_bytes(), existing)
        except ValueError as e:
            p.error(f"{catalog_yaml}: {e}")
        write_tree({Path("configs") / PACKAGE / "catalog.yaml": yaml.safe_dump_all(fbc, sort_keys=False, width=120),
                    Path("Dockerfile"): catalog_dockerfile()}, args.catalog)  # fmt: skip
        print(f"catalog of {csv['metadata']['name']} ({bundle_image}) in {args.catalog}", file=sys.stderr)
    if args.out:
        bundle_dir = Path("bundle")
        write_tree({q.relative_to(bundle_dir): t for q, t in files.items() if q.is_relative_to(bundle_dir)}, args.out)
        named = ", ".join(f"{k} {ref or 'the chart default'}" for k, ref in images.items())
        print(f"bundle with {named} in {args.out}", file=sys.stderr)
        return 0
    if not (args.write or args.check):
        if not args.catalog:
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
    return write_or_check(files, root, write=args.write, command="python -m yolo_operator.gen.bundle", stale=stale)


if __name__ == "__main__":
    sys.exit(main())
