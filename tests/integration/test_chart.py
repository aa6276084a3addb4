"""The Helm chart (charts/yolo-operator) and the plain manifests rendered from it, with the real `helm` and the
real kube-apiserver of the local test bed.

* lint (also --strict), the values schema refusing misspelled or out-of-range values;
* the rendered objects: Deployment (2 replicas with leader election and a rolling update, or 1 standalone with
  Recreate; /healthz probes on the operator's health port, restricted security context without a fixed UID,
  env read by OperatorConfig), the PodDisruptionBudget, RBAC without wildcards or Secrets (Leases only in
  the release namespace, only its own), the CRD identical to the generator's;
* `kubectl apply --dry-run=server` of the rendering, cluster-wide and namespaced;
* a real `helm install` and what its ServiceAccount may and may not do (kubectl auth can-i), including
  creating the per-job ServiceAccount/Role/RoleBinding/Job exactly as the operator builds them (RBAC
  escalation prevention, owner references);
* both pods admitted by Pod Security "restricted";
* manifests/ regenerated into a temporary directory equals the committed copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from yolo_dev import testbed
from yolo_operator.api.types import TrainingJob
from yolo_operator.controller.build import build_children
from yolo_operator.gen import crd
from yolo_operator.runtime.config import OperatorConfig

pytestmark = pytest.mark.integration

ROOT = testbed.ROOT
CHART = ROOT / "charts" / "yolo-operator"
GEN = ROOT / "hack" / "gen-manifests.sh"


# --- tools -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    """The pinned helm of hack/build-binaries.sh (instant once built); no running bed needed."""
    out = subprocess.run(
        [str(ROOT / "hack" / "build-binaries.sh")], capture_output=True, text=True, check=True, timeout=1800
    )
    helm = Path(out.stdout.strip().splitlines()[-1]) / "helm"
    assert helm.is_file(), helm
    return helm


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True, input: str | None = None):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_args(values: dict[str, str]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def template(helm_bin: Path, values: dict[str, str] | None = None, *extra: str, namespace: str = "yolo-operator",
             release: str = "yolo-operator") -> list[dict[str, Any]]:  # fmt: skip
    out = run([str(helm_bin), "template", release, str(CHART), "--namespace", namespace,
               *set_args(values or {}), *extra]).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env with values (the downward-API entries, pod name and namespace, left out)."""
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture(scope="module")
def bed_env(bed) -> dict[str, str]:
    return {**os.environ, "PATH": testbed.tool_path(), "KUBECONFIG": str(testbed.KUBECONFIG)}


@pytest.fixture
def other_namespace(kubectl) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def release(bed_env) -> Iterator[list[tuple[str, str]]]:
    """Records (release, namespace) pairs and uninstalls them afterwards: their ClusterRoles and
    ClusterRoleBindings outlive the test namespace otherwise."""
    installed: list[tuple[str, str]] = []
    yield installed
    for name, ns in installed:
        run(["helm", "uninstall", name, "--namespace", ns], bed_env, check=False)


def helm_install(bed_env, release, namespace: str, values: dict[str, str] | None = None) -> str:
    name = f"yo-{namespace}"
    release.append((name, namespace))
    out = run(["helm", "install", name, str(CHART), "--namespace", namespace, *set_args(values or {})], bed_env)
    return out.stdout


def can_i(kubectl, sa: str, *args: str) -> bool:
    proc = kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


# --- lint and schema -------------------------------------------------------------------------------------

VALUE_SETS = {
    "defaults": {},
    "namespaced": {"watchNamespaces": "{team-a,team-b}"},
    "no-crd-no-rbac-existing-sa": {
        "crd.install": "false",
        "rbac.create": "false",
        "serviceAccount.create": "false",
        "serviceAccount.name": "operator",
    },
    "tuned": {
        "replicaCount": "0",
        "operator.logLevel": "DEBUG",
        "operator.image.tag": "sha256:" + "a" * 64,
        "trainer.image.pullPolicy": "Always",
        "trainer.offline": "true",
        "metrics.service.enabled": "false",
    },
}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint_clean(helm_bin, values, strict):
    proc = run([str(helm_bin), "lint", str(CHART), *(["--strict"] if strict else []), *set_args(values)])
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"opertor.image": "x"}, "opertor"),  # misspelled top-level key
        ({"operator.imgae.tag": "x"}, "imgae"),  # misspelled nested key
        ({"crd.instal": "false"}, "instal"),
        ({"replicaCount": "2", "leaderElection.enabled": "false"}, "replicaCount"),  # standalone: at most one
        ({"leaderElection.retryPeriodSeconds": "0"}, "retryPeriodSeconds"),
        ({"operator.logLevel": "verbose"}, "logLevel"),
        ({"watchNamespaces": "{Team_A}"}, "watchNamespaces"),
        ({"operator.healthPort": "0"}, "healthPort"),
        ({"trainer.image.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"trainer.env[0].name": "AWS_SECRET_ACCESS_KEY", "trainer.env[0].value": "x"}, "trainer/env/0/name"),
        ({"trainer.env[0].name": "YOLO_TRAINER_CONFIG"}, "trainer/env/0/name"),
        ({"trainer.hubMirror": "https://github.com/"}, "hubMirror"),
        ({"metrics.serviceMonitor.interval": "soon"}, "interval"),
        ({"metrics.dashboard.namespace": "Not_A_Namespace"}, "namespace"),
        ({"metrics.dashbaord.enabled": "false"}, "dashbaord"),
    ],
)
def test_values_schema_rejects_bad_values_naming_them(helm_bin, values, named):
    proc = run([str(helm_bin), "template", "x", str(CHART), *set_args(values)], check=False)
    assert proc.returncode != 0, f"{values} was accepted"
    assert "schema" in proc.stderr and named in proc.stderr, proc.stderr


def test_every_value_is_commented():
    """values.yaml documents each value: a comment stands right above the key or above one of its parents
    (pass-through Kubernetes objects such as resources are documented once)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while documented and documented[-1][0] >= indent:
            documented.pop()
        here = i > 0 and lines[i - 1].strip().startswith("#")
        inherited = any(d for _, d in documented)
        leaf = not stripped.endswith(":")
        assert not leaf or here or inherited, f"values.yaml:{i + 1} {stripped!r} has no comment"
        documented.append((indent, here))


# --- what the chart renders ------------------------------------------------------------------------------


def test_deployment(helm_bin):
    docs = template(helm_bin)
    (dep,) = by_kind(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    defaults = OperatorConfig()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": defaults.metrics_port, "health": defaults.health_port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # restricted, and no fixed UID/GID anywhere so that OpenShift's restricted-v2 SCC assigns one
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    text = json.dumps(docs)
    for fixed in ("runAsUser", "runAsGroup", "fsGroup"):
        assert fixed not in text
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert pod["serviceAccountName"] == "yolo-operator"
    # every YOLO_OPERATOR_* variable is one the operator reads, and they configure it as intended
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert downward == {"YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE": "metadata.namespace",
                        "YOLO_OPERATOR_POD_NAME": "metadata.name"}  # fmt: skip
    env = plain_env(c)
    cfg_source = (ROOT / "operator" / "src" / "yolo_operator" / "runtime" / "config.py").read_text()
    for name in env:
        assert not name.startswith("YOLO_OPERATOR_") or f'"{name}"' in cfg_source, name
    cfg = OperatorConfig.from_env(env)
    assert cfg.clusterwide and cfg.trainer_image == "ghcr.io/yolo-operator/yolo-trainer:0.1.0"
    assert cfg.read_only_root_filesystem and not cfg.offline and cfg.log_level == "INFO"
    assert cfg.leader_election and cfg.lease_name == dep["metadata"]["name"]
    assert (cfg.lease_duration_seconds, cfg.renew_deadline_seconds, cfg.retry_period_seconds) == (15, 10, 2)


def test_high_availability_objects_follow_replicas_and_leader_election(helm_bin):
    docs = template(helm_bin)
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    (dep,) = by_kind(docs, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # the user's affinity replaces the default spread
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}  # fmt: skip
    (dep,) = by_kind(template(helm_bin, {}, "--set-json", f"affinity={json.dumps(mine)}"), "Deployment")
    assert dep["spec"]["template"]["spec"]["affinity"] == mine
    # one replica: no budget (it would block every drain), no spread
    one = template(helm_bin, {"replicaCount": "1"})
    assert not by_kind(one, "PodDisruptionBudget")
    assert "affinity" not in by_kind(one, "Deployment")[0]["spec"]["template"]["spec"]
    # standalone: as before leader election existed (Recreate, no Lease, no Lease RBAC)
    alone = template(helm_bin, {"replicaCount": "1", "leaderElection.enabled": "false"})
    (dep,) = by_kind(alone, "Deployment")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "LEADER" not in json.dumps(dep) and "leases" not in json.dumps(rules_of(alone))
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert not OperatorConfig.from_env(plain_env(c)).leader_election
    # unsafe durations fail the install, naming them
    proc = run([str(helm_bin), "template", "x", str(CHART), "--set", "leaderElection.renewDeadlineSeconds=20"],
               check=False)  # fmt: skip
    assert proc.returncode and "renewDeadlineSeconds must be less than leaseDurationSeconds" in proc.stderr


def test_deployment_env_follows_values(helm_bin):
    docs = template(helm_bin, {"watchNamespaces": "{team-a,team-b}", "trainer.image.tag": "1.2.3",
                               "trainer.image.pullPolicy": "Always", "trainer.offline": "true",
                               "operator.logLevel": "DEBUG", "operator.healthPort": "9000"})  # fmt: skip
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    cfg = OperatorConfig.from_env(plain_env(c))
    assert cfg.namespaces == ("team-a", "team-b") and not cfg.clusterwide
    assert cfg.trainer_image == "ghcr.io/yolo-operator/yolo-trainer:1.2.3"
    assert cfg.image_pull_policy == "Always" and cfg.offline and cfg.log_level == "DEBUG"
    assert cfg.health_port == 9000 and {"name": "health", "containerPort": 9000, "protocol": "TCP"} in c["ports"]


def test_simulated_gpus_only_when_a_test_bed_asks_for_them(helm_bin):
    """Default: a GPU job without a visible GPU fails (GPUNotVisible); only trainer.simulatedGpus=true, which
    only the test bed sets (dev/src/yolo_dev/stack.py), lets it train on CPU."""

    def operator_config(values: dict[str, str]) -> OperatorConfig:
        (dep,) = by_kind(template(helm_bin, values), "Deployment")
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        return OperatorConfig.from_env(plain_env(c))

    assert operator_config({}).simulated_gpus is False
    assert operator_config({"trainer.simulatedGpus": "true"}).simulated_gpus is True


def test_default_scratch_size_reaches_the_operator_unless_emptied(helm_bin):
    """trainer.scratchSize (20Gi) sizes every job that sets no spec.resources.scratchSize; "" = unbounded."""

    def operator_config(values: dict[str, str]) -> OperatorConfig:
        (dep,) = by_kind(template(helm_bin, values), "Deployment")
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        return OperatorConfig.from_env(plain_env(c))

    assert operator_config({}).default_scratch_size == "20Gi"
    assert operator_config({"trainer.scratchSize": "100Gi"}).default_scratch_size == "100Gi"
    assert operator_config({"trainer.scratchSize": ""}).default_scratch_size is None


SA_ROLE_KEY = "trainer.serviceAccountAnnotations.eks\\.amazonaws\\.com/role-arn"  # --set escapes the dots


def test_trainer_pod_settings_reach_the_operator(helm_bin):
    docs = template(helm_bin, {"trainer.imagePullSecrets[0].name": "registry-a",
                               "trainer.imagePullSecrets[1].name": "registry-b",
                               "trainer.env[0].name": "HTTPS_PROXY", "trainer.env[0].value": "http://proxy:3128",
                               SA_ROLE_KEY: "arn:aws:iam::1:role/t",
                               "trainer.hubMirror": "s3://mirror/ultralytics"})  # fmt: skip
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    cfg = OperatorConfig.from_env(plain_env(c))
    assert cfg.trainer_image_pull_secrets == ("registry-a", "registry-b")
    assert cfg.trainer_env == ({"name": "HTTPS_PROXY", "value": "http://proxy:3128"},)
    assert cfg.trainer_service_account_annotations == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/t"}
    assert cfg.hub_mirror == "s3://mirror/ultralytics"


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def grants(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": "{team-a,team-b}"}], ids=["clusterwide", "namespaced"])
def test_rbac_least_privilege(helm_bin, values):
    docs = template(helm_bin, values)
    rules = rules_of(docs)
    for r in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in r[key], r
        assert "secrets" not in r["resources"] and "nonResourceURLs" not in r
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(r["verbs"]), r
    g = "yolo-operator.io"
    assert grants(rules, g, "trainingjobs") == {"get", "list", "watch", "patch"}
    assert grants(rules, g, "trainingjobs/status") == {"get", "patch", "update"}
    assert grants(rules, g, "trainingjobs/finalizers") == {"update"}
    assert grants(rules, "batch", "jobs") == {"create", "get", "list", "watch", "patch"}
    assert grants(rules, "", "pods") == {"get", "list", "watch"}
    assert grants(rules, "", "configmaps") == {"get"}  # the CA bundle, only to report it missing
    assert grants(rules, "", "services") == {"create", "get", "list", "watch"}  # a multi-node job's rendezvous
    assert grants(rules, "", "events") >= {"create"} and grants(rules, "events.k8s.io", "events") >= {"create"}
    for group, res in (("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"),
                       ("rbac.authorization.k8s.io", "rolebindings")):  # fmt: skip
        assert "create" in grants(rules, group, res)
    # the per-job Role the operator creates grants nothing the operator lacks (escalation prevention)
    tj = {"apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob",
          "metadata": {"name": "x", "namespace": "team-a", "uid": "u"},
          "spec": {"model": {"hub": "yolov8n.pt"}, "dataset": "s3://datasets/d/", "output": "s3://runs/"}}  # fmt: skip
    role = next(o for o in build_children(tj, OperatorConfig()) if o["kind"] == "Role")
    for r in role["rules"]:
        for group in r["apiGroups"]:
            for res in r["resources"]:
                assert set(r["verbs"]) <= grants(rules, group, res), (res, r["verbs"])
    (cluster_role,) = by_kind(docs, "ClusterRole")
    # Leases: only in the release namespace, and only its own one may be read or written
    (election,) = [d for d in by_kind(docs, "Role") if d["metadata"]["name"].endswith("-leader-election")]
    assert election["metadata"]["namespace"] == "yolo-operator"
    assert election["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["yolo-operator"],
         "verbs": ["get", "update"]},
    ]  # fmt: skip
    assert [r for r in rules_of(docs) if "leases" in r["resources"]] == election["rules"]
    docs = [d for d in docs if not d["metadata"]["name"].endswith("-leader-election")]
    if values:
        assert {d["metadata"]["namespace"] for d in by_kind(docs, "Role")} == {"team-a", "team-b"}
        assert {d["metadata"]["namespace"] for d in by_kind(docs, "RoleBinding")} == {"team-a", "team-b"}
        # cluster-wide only what kopf needs to discover the CRD
        assert [res for r in cluster_role["rules"] for res in r["resources"]] == ["customresourcedefinitions"]
    else:
        assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
        assert grants(cluster_role["rules"], "batch", "jobs")
    (crb,) = by_kind(docs, "ClusterRoleBinding")
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "yolo-operator", "namespace": "yolo-operator"}]


def test_crd_rendered_from_the_generator_and_kept_on_uninstall(helm_bin):
    (rendered,) = by_kind(template(helm_bin), "CustomResourceDefinition")
    assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    generated = crd.build_crd()
    for key, value in generated["metadata"]["labels"].items():
        assert rendered["metadata"]["labels"][key] == value
    rendered["metadata"] = generated["metadata"]
    assert rendered == generated
    assert not by_kind(template(helm_bin, {"crd.install": "false"}), "CustomResourceDefinition")


def test_helm_test_pod_checks_the_crd(helm_bin):
    (pod,) = by_kind(template(helm_bin), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["serviceAccountName"] == "yolo-operator"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "trainingjobs.yolo-operator.io" in script and "Established" in script
    compile(script, "test-crd", "exec")


CONSOLE_KINDS = {"ConsoleYAMLSample", "ConsoleQuickStart"}
YAML_SAMPLE_API = "console.openshift.io/v1/ConsoleYAMLSample"
QUICK_START_API = "console.openshift.io/v1/ConsoleQuickStart"


def test_console_resources_only_where_the_console_api_exists(helm_bin):
    """Plain Kubernetes (and manifests/): no console objects. OpenShift: YAML samples and a quick start."""
    plain = template(helm_bin, {}, "--skip-tests")
    assert not CONSOLE_KINDS & {d["kind"] for d in plain}
    samples_only = template(helm_bin, {}, "--skip-tests", "--api-versions", YAML_SAMPLE_API)
    assert {d["kind"] for d in samples_only} - {d["kind"] for d in plain} == {"ConsoleYAMLSample"}
    full = template(helm_bin, {}, "--skip-tests", "--api-versions", YAML_SAMPLE_API, "--api-versions", QUICK_START_API)
    assert {d["kind"] for d in full} - {d["kind"] for d in plain} == CONSOLE_KINDS
    # The rest of the rendering does not change with the console API.
    assert [d for d in full if d["kind"] not in CONSOLE_KINDS] == plain


def test_console_yaml_samples_are_the_examples(helm_bin):
    docs = template(helm_bin, {}, "--skip-tests", "--api-versions", YAML_SAMPLE_API)
    samples = {d["metadata"]["name"]: d for d in by_kind(docs, "ConsoleYAMLSample")}
    assert set(samples) == {f"yolo-operator-{n}" for n in
                            ("finetune-frozen-backbone", "continue-from-previous", "zip-dataset")}  # fmt: skip
    for name, sample in samples.items():
        example = ROOT / "examples" / f"{name.removeprefix('yolo-operator-')}.yaml"
        spec = sample["spec"]
        assert spec["targetResource"] == {"apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob"}
        assert spec["title"] and spec["description"]
        assert spec["yaml"] == example.read_text(), f"{name}: not {example} byte for byte"
        TrainingJob.model_validate(yaml.safe_load(spec["yaml"]))
    assert "Roboflow" in samples["yolo-operator-zip-dataset"]["spec"]["title"]


def test_console_quick_start(helm_bin):
    docs = template(helm_bin, {}, "--skip-tests", "--api-versions", YAML_SAMPLE_API, "--api-versions", QUICK_START_API)
    (qs,) = by_kind(docs, "ConsoleQuickStart")
    spec = qs["spec"]
    assert spec["displayName"] == "Fine-tune YOLO on your own images"
    titles = [t["title"] for t in spec["tasks"]]
    assert titles == ["Create the S3 credentials Secret", "Create the TrainingJob", "Watch it train",
                      "Find the weights"]  # fmt: skip
    for task in spec["tasks"]:
        assert task["description"] and task["review"]["instructions"] and task["summary"]["success"]
    # the Secret to paste is examples/s3-secret.yaml as it is
    assert (ROOT / "examples" / "s3-secret.yaml").read_text() in spec["tasks"][0]["description"]
    assert "status.artifacts.bestWeights" in spec["tasks"][3]["description"]
    assert spec["introduction"] and spec["conclusion"] and spec["durationMinutes"] > 0
    # A Helm install has no Installed Operators entry and no CSV-drawn details page (those are the bundle's variant).
    text = json.dumps(spec, ensure_ascii=False)
    assert "Helm chart" in spec["prerequisites"][0] and "API Explorer" in spec["tasks"][1]["description"]
    assert "Installed Operators" not in text and "OperatorHub" not in text and "details page" not in text


def test_metrics_service_targets_the_metrics_port(helm_bin):
    docs = template(helm_bin)
    (svc,) = by_kind(docs, "Service")
    (dep,) = by_kind(docs, "Deployment")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
CONSOLE_API = "console.openshift.io/v1"


def dashboard_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Grafana JSON of the chart's console dashboard ConfigMap."""
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-trainingjob-dashboard")]
    (text,) = cm["data"].values()
    return json.loads(text)


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for row in dashboard["rows"] for p in row["panels"] for t in p["targets"]]


def test_service_monitor_only_where_its_api_exists(helm_bin):
    plain = template(helm_bin, {}, "--skip-tests")
    with_api = template(helm_bin, {}, "--skip-tests", "--api-versions", SERVICE_MONITOR_API)
    assert not by_kind(plain, "ServiceMonitor")
    (sm,) = by_kind(with_api, "ServiceMonitor")
    assert [d for d in with_api if d["kind"] != "ServiceMonitor"] == plain  # nothing else changes
    (svc,) = by_kind(with_api, "Service")
    # it selects the metrics Service (and only it: the component label) by the port's name
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]
    assert "namespaceSelector" not in sm["spec"]  # its own namespace: the OLM bundle carries it unchanged
    labelled = template(helm_bin, {"metrics.serviceMonitor.labels.release": "kps", "metrics.serviceMonitor.interval":
                                   "15s"}, "--skip-tests", "--api-versions", SERVICE_MONITOR_API)  # fmt: skip
    (sm,) = by_kind(labelled, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kps" and sm["spec"]["endpoints"][0]["interval"] == "15s"
    for off in ({"metrics.serviceMonitor.enabled": "false"}, {"metrics.service.enabled": "false"}):
        assert not by_kind(template(helm_bin, off, "--skip-tests", "--api-versions", SERVICE_MONITOR_API),
                           "ServiceMonitor")  # fmt: skip


def test_console_dashboard_only_where_the_console_api_exists_and_it_draws_one_jobs_series(helm_bin):
    from yolo_operator.runtime import metrics

    plain = template(helm_bin, {}, "--skip-tests")
    with_console = template(helm_bin, {}, "--skip-tests", "--api-versions", CONSOLE_API)
    (cm,) = [d for d in with_console if d not in plain]
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["namespace"] == "openshift-config-managed"
    assert cm["metadata"]["labels"]["console.openshift.io/dashboard"] == "true"
    dashboard = dashboard_of(with_console)
    variables = {v["name"]: v["query"] for v in dashboard["templating"]["list"]}
    assert set(variables) == {"namespace", "trainingjob"}
    exported = {name for name, *_ in metrics.JOB_SERIES} | {metrics.PHASE_SERIES}
    exprs = dashboard_exprs(dashboard)
    for expr in exprs:  # every query names a series the operator exports, for the chosen job only
        assert expr.split("{")[0] in exported, expr
        assert 'trainingjob_namespace="$namespace"' in expr and 'trainingjob="$trainingjob"' in expr, expr
    assert {e.split("{")[0] for e in exprs} == exported - {metrics.PHASE_SERIES}  # every series is drawn
    elsewhere = template(helm_bin, {"metrics.dashboard.namespace": "dashboards"}, "--skip-tests",
                         "--api-versions", CONSOLE_API)  # fmt: skip
    assert next(d for d in elsewhere if d not in plain)["metadata"]["namespace"] == "dashboards"
    off = template(helm_bin, {"metrics.dashboard.enabled": "false"}, "--skip-tests", "--api-versions", CONSOLE_API)
    assert off == plain


CONSOLE_PLUGIN_API = "console.openshift.io/v1/ConsolePlugin"


def test_console_plugin_only_where_its_api_exists_and_it_is_enabled(helm_bin):
    plugin_json = json.loads((ROOT / "console-plugin" / "package.json").read_text())["consolePlugin"]
    plain = template(helm_bin, {}, "--skip-tests")
    with_api = template(helm_bin, {}, "--skip-tests", "--api-versions", CONSOLE_PLUGIN_API)
    added = [d for d in with_api if d not in plain]
    assert sorted(d["kind"] for d in added) == ["ConsolePlugin", "Deployment", "Service"]
    assert [d for d in with_api if d not in added] == plain  # nothing else changes
    (cp,) = by_kind(added, "ConsolePlugin")
    (dep,) = by_kind(added, "Deployment")
    (svc,) = by_kind(added, "Service")
    # The console loads /api/plugins/<ConsolePlugin name>/plugin-manifest.json: the name must be package.json's.
    assert cp["apiVersion"] == "console.openshift.io/v1" and cp["metadata"]["name"] == plugin_json["name"]
    assert cp["spec"]["displayName"] == plugin_json["displayName"] and cp["spec"]["i18n"] == {"loadType": ""}
    backend = cp["spec"]["backend"]["service"]
    assert (backend["name"], backend["namespace"], backend["port"]) == (svc["metadata"]["name"], "yolo-operator",
                                                                        svc["spec"]["ports"][0]["port"])  # fmt: skip
    assert backend["port"] == 9443 and svc["spec"]["ports"][0]["targetPort"] == "https"
    # TLS from OpenShift's service CA: the Secret the Service annotation names is the one the pod mounts.
    secret = svc["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
    pod = dep["spec"]["template"]
    assert {v["name"]: v for v in pod["spec"]["volumes"]}["serving-cert"]["secret"]["secretName"] == secret
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # Its pods are no operator pods: the operator's Deployment and Service select none of them.
    operator_dep = next(d for d in plain if d["kind"] == "Deployment")
    assert not operator_dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("ghcr.io/yolo-operator/yolo-console-plugin:")
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    off = template(helm_bin, {"consolePlugin.enabled": "false"}, "--skip-tests", "--api-versions", CONSOLE_PLUGIN_API)
    assert off == plain


# --- against the API server ------------------------------------------------------------------------------


def test_dry_run_server_clusterwide(helm_bin, kubectl, namespace):
    docs = template(helm_bin, {}, "--skip-tests", namespace=namespace, release=f"yo-{namespace}")
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs)).stdout
    for kind in ("serviceaccount", "clusterrole", "clusterrolebinding", "service", "deployment",
                 "customresourcedefinition"):  # fmt: skip
        assert f"{kind}." in out or f"{kind}/" in out, out


def test_dry_run_server_namespaced(helm_bin, kubectl, namespace, other_namespace):
    values = {"watchNamespaces": f"{{{namespace},{other_namespace}}}", "crd.install": "false"}
    docs = template(helm_bin, values, "--skip-tests", namespace=namespace, release=f"yo-{namespace}")
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs)).stdout
    lines = out.splitlines()
    # one per watched namespace, and the leader election's in the release namespace
    assert sum(x.startswith("role.rbac") for x in lines) == 3, out
    assert sum(x.startswith("rolebinding.rbac") for x in lines) == 3, out


def test_helm_install_clusterwide_permissions(bed_env, kubectl, release, namespace, other_namespace):
    crd_before = json.loads(kubectl("get", "crd", crd.CRD_NAME, "-o", "json", check=False).stdout or "{}")
    notes = helm_install(bed_env, release, namespace)
    fullname = f"yo-{namespace}-yolo-operator"
    for obj in (f"deployment/{fullname}", f"serviceaccount/{fullname}", f"service/{fullname}-metrics"):
        kubectl("get", obj, namespace=namespace)
    kubectl("get", f"clusterrole/{fullname}", f"clusterrolebinding/{fullname}")
    manifest = run(["helm", "get", "manifest", f"yo-{namespace}", "-n", namespace], bed_env).stdout
    if crd_before:  # the bed's CRD belongs to kubectl or another release: left alone, and NOTES says so
        assert "kind: CustomResourceDefinition" not in manifest
        assert "not managed by this release" in notes

    sa = f"system:serviceaccount:{namespace}:{fullname}"
    ns = other_namespace
    allowed = [
        ("create", "jobs.batch", "-n", ns), ("patch", "jobs.batch", "-n", ns), ("watch", "pods", "-A"),
        ("list", "trainingjobs.yolo-operator.io", "-A"), ("patch", "trainingjobs.yolo-operator.io", "-n", ns),
        ("patch", "trainingjobs.yolo-operator.io", "--subresource=status", "-n", ns),
        ("update", "trainingjobs.yolo-operator.io", "--subresource=finalizers", "-n", ns),
        ("create", "serviceaccounts", "-n", ns), ("create", "roles.rbac.authorization.k8s.io", "-n", ns),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", ns), ("create", "events", "-n", ns),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("get", "configmaps", "-n", ns),  # the CA bundle, to report it missing
        ("create", "services", "-n", ns),  # a multi-node job's headless Service
        ("update", f"leases.coordination.k8s.io/{fullname}", "-n", namespace),  # leader election
    ]  # fmt: skip
    denied = [
        ("get", "secrets", "-n", ns), ("list", "secrets", "-A"), ("get", "secrets", "-n", namespace),
        ("delete", "nodes"), ("delete", "jobs.batch", "-n", ns), ("create", "pods", "-n", ns),
        ("delete", "trainingjobs.yolo-operator.io", "-n", ns), ("list", "configmaps", "-n", ns),
        ("create", "clusterroles.rbac.authorization.k8s.io"), ("bind", "roles.rbac.authorization.k8s.io", "-n", ns),
        ("escalate", "roles.rbac.authorization.k8s.io", "-n", ns), ("impersonate", "serviceaccounts", "-n", ns),
        ("create", "serviceaccounts", "--subresource=token", "-n", ns),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"), ("delete", "services", "-n", ns),
        ("update", "leases.coordination.k8s.io/other", "-n", namespace),
        ("get", "leases.coordination.k8s.io", "-n", ns),
    ]  # fmt: skip
    assert [a for a in allowed if not can_i(kubectl, sa, *a)] == []
    assert [a for a in denied if can_i(kubectl, sa, *a)] == []

    # What the operator creates for a TrainingJob, created by its ServiceAccount: the Role passes RBAC
    # escalation prevention and the owner references (blockOwnerDeletion) pass admission.
    tj = {"apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "rbac-probe"},
          "spec": {"model": {"hub": "yolov8n.pt"}, "dataset": "s3://datasets/d/", "output": "s3://runs/",
                   "suspend": True}}  # fmt: skip
    if not crd_before:
        kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")
    created = json.loads(kubectl("create", "-o", "json", "-f", "-", namespace=ns, input=json.dumps(tj)).stdout)
    # Renamed (suffix -x): an operator running against the shared bed may create the real ones meanwhile.
    children = build_children(created, OperatorConfig())
    for obj in children:
        obj["metadata"]["name"] += "-x"
        if obj["kind"] == "RoleBinding":
            obj["roleRef"]["name"] += "-x"
            obj["subjects"][0]["name"] += "-x"
        if obj["kind"] == "Job":
            obj["spec"]["template"]["spec"]["serviceAccountName"] += "-x"
    kubectl("create", f"--as={sa}", "-f", "-", namespace=ns, input=yaml.safe_dump_all(children))
    job = json.loads(kubectl("get", "job", "rbac-probe-train-x", "-o", "json", namespace=ns).stdout)
    assert job["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    # ... and the trainer's per-job ServiceAccount may patch its own TrainingJob's status and nothing else
    trainer = f"system:serviceaccount:{ns}:rbac-probe-trainer-x"
    assert can_i(kubectl, trainer, "patch", "trainingjobs.yolo-operator.io/rbac-probe", "--subresource=status",
                 "-n", ns)  # fmt: skip
    assert not can_i(kubectl, trainer, "patch", "trainingjobs.yolo-operator.io/other", "--subresource=status",
                     "-n", ns)  # fmt: skip
    assert not can_i(kubectl, trainer, "get", "secrets", "-n", ns)


def test_helm_install_namespaced_permissions(bed_env, kubectl, release, namespace, other_namespace):
    helm_install(bed_env, release, namespace, {"watchNamespaces": f"{{{other_namespace}}}", "crd.install": "false"})
    fullname = f"yo-{namespace}-yolo-operator"
    kubectl("get", f"role/{fullname}", f"rolebinding/{fullname}", namespace=other_namespace)
    sa = f"system:serviceaccount:{namespace}:{fullname}"
    assert can_i(kubectl, sa, "create", "jobs.batch", "-n", other_namespace)
    assert can_i(kubectl, sa, "watch", "trainingjobs.yolo-operator.io", "-n", other_namespace)
    assert can_i(kubectl, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    for args in (("create", "jobs.batch", "-n", namespace), ("create", "jobs.batch", "-n", "default"),
                 ("list", "trainingjobs.yolo-operator.io", "-A"), ("list", "pods", "-A"),
                 ("get", "secrets", "-n", other_namespace), ("list", "namespaces")):  # fmt: skip
        assert not can_i(kubectl, sa, *args), args


def test_pods_pass_restricted_pod_security(helm_bin, bed_env, kubectl, release, restricted_namespace):
    """The operator pod and the helm test pod are admitted where Pod Security "restricted" is enforced
    (OpenShift's restricted-v2 SCC is stricter still about UIDs: the chart fixes none)."""
    ns = restricted_namespace
    helm_install(bed_env, release, ns, {"replicaCount": "0", "crd.install": "false"})  # creates the SA
    docs = template(helm_bin, {}, namespace=ns, release=f"yo-{ns}")
    (dep,) = by_kind(docs, "Deployment")
    (test_pod,) = by_kind(docs, "Pod")
    operator_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-psa-probe", "namespace": ns},
                    "spec": dep["spec"]["template"]["spec"]}  # fmt: skip
    for pod in (operator_pod, test_pod):
        proc = kubectl("create", "--dry-run=server", "-f", "-", namespace=ns, input=json.dumps(pod))
        assert "PodSecurity" not in proc.stderr, proc.stderr


# --- plain manifests -------------------------------------------------------------------------------------


def test_manifests_are_up_to_date(helm_bin, tmp_path):
    """Drift: rerun hack/gen-manifests.sh after changing the chart (or the CRD)."""
    run([str(GEN), str(tmp_path)], {**os.environ, "HELM": str(helm_bin)})
    for name in ("install.yaml", "kustomization.yaml"):
        committed = ROOT / "manifests" / name
        assert committed.exists(), f"manifests/{name} missing; run hack/gen-manifests.sh"
        assert committed.read_text() == (tmp_path / name).read_text(), (
            f"manifests/{name} is stale; run hack/gen-manifests.sh"
        )


def test_manifests_apply_with_kustomize(helm_bin, kubectl, namespace, tmp_path):
    """`kubectl apply --server-side -k` of the generated manifests (rendered for a test namespace)."""
    run([str(GEN), str(tmp_path), namespace], {**os.environ, "HELM": str(helm_bin)})
    docs = [d for d in yaml.safe_load_all((tmp_path / "install.yaml").read_text()) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == namespace
    assert {d["kind"] for d in docs} == {"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                                         "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment",
                                         "PodDisruptionBudget"}  # fmt: skip
    out = kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(tmp_path)).stdout
    assert "deployment.apps/yolo-operator serverside-applied (server dry run)" in out, out
