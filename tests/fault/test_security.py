"""Security: what the operator's and the trainer's ServiceAccounts may do, as the real API server's RBAC
authorizer answers for ``--as system:serviceaccount:<ns>:<sa>`` (SelfSubjectAccessReviews under impersonation,
which is what `kubectl auth can-i --as` sends; a sample goes through kubectl itself and must agree), over a
matrix of verbs x resources (and subresources, other namespaces, cluster-scoped resources and the RBAC
escalation verbs).

* The operator, installed with the real helm (tests/integration/test_chart.py's install helpers), cluster-wide
  and namespaced: exactly what its handlers and kopf need (OPERATOR_NEEDS, written from the code, not from
  the chart) in the namespaces it reconciles, nothing in the others, never Secrets, pods/exec, nodes or
  cluster roles.
* The per-job trainer ServiceAccount that a running operator creates for a TrainingJob: get its own
  TrainingJob and get/patch its status, nothing else; and real requests made as that ServiceAccount
  confirm it (its own status: yes; another TrainingJob's status, its own spec: Forbidden).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from kubernetes import client, config

# The chart tests' helm install helpers and fixtures (imported fixtures are redefined as test arguments: F811).
from tests.integration.test_chart import bed_env, helm_install, other_namespace, release  # noqa: F401
from tests.operator_fixtures import OperatorProcess, apply, install_crd, trainingjob, wait_condition

pytestmark = [pytest.mark.fault, pytest.mark.integration]

TJ = "trainingjobs.yolo-operator.io"
RBAC = "rbac.authorization.k8s.io"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# (resource, subresource) in a namespace
NAMESPACED = (
    (TJ, ""), (TJ, "status"), (TJ, "finalizers"), ("jobs.batch", ""), ("pods", ""), ("pods", "exec"),
    ("pods", "log"), ("pods", "portforward"), ("secrets", ""), ("configmaps", ""),
    ("serviceaccounts", ""), ("serviceaccounts", "token"), (f"roles.{RBAC}", ""), (f"rolebindings.{RBAC}", ""),
    ("events", ""), ("events.events.k8s.io", ""), ("deployments.apps", ""), ("services", ""),
)  # fmt: skip
CLUSTER = (
    ("nodes", ""), ("nodes", "proxy"), ("namespaces", ""), (f"clusterroles.{RBAC}", ""),
    (f"clusterrolebindings.{RBAC}", ""), ("customresourcedefinitions.apiextensions.k8s.io", ""),
    ("persistentvolumes", ""), ("validatingwebhookconfigurations.admissionregistration.k8s.io", ""),
)  # fmt: skip
#: RBAC escalation and impersonation verbs: never granted to anyone here.
SPECIAL = (
    ("escalate", f"roles.{RBAC}"), ("bind", f"roles.{RBAC}"), ("escalate", f"clusterroles.{RBAC}"),
    ("bind", f"clusterroles.{RBAC}"), ("impersonate", "serviceaccounts"), ("impersonate", "users"),
    ("impersonate", "groups"),
)  # fmt: skip

#: What the operator needs in a namespace it reconciles (handlers.py and kopf), from the code.
OPERATOR_NEEDS: dict[tuple[str, str], set[str]] = {
    (TJ, ""): {"get", "list", "watch", "patch"},  # kopf watches; get_trainingjob; kopf's annotations
    (TJ, "status"): {"get", "patch", "update"},  # patch_status (get/patch also for the trainer's Role)
    (TJ, "finalizers"): {"update"},  # blockOwnerDeletion owner references
    ("jobs.batch", ""): {"create", "get", "list", "watch", "patch"},  # create_if_absent, get_job, mutable fields
    ("pods", ""): {"get", "list", "watch"},  # list_pods, kopf watches
    ("configmaps", ""): {"get"},  # missing_ca_bundle: a pod waiting to mount spec.s3.caBundle
    ("services", ""): {"create", "get", "list", "watch"},  # a multi-node job's headless Service, kopf watches
    ("serviceaccounts", ""): {"create", "get", "list", "watch"},  # per-job RBAC
    (f"roles.{RBAC}", ""): {"create", "get", "list", "watch"},
    (f"rolebindings.{RBAC}", ""): {"create", "get", "list", "watch"},
    ("events", ""): {"create", "patch", "list", "watch"},  # post_event; FailedCreate of its Jobs (refusal_index)
    ("events.events.k8s.io", ""): {"create", "patch"},
}
OPERATOR_CLUSTER_NEEDS: dict[tuple[str, str], set[str]] = {
    ("customresourcedefinitions.apiextensions.k8s.io", ""): {"get", "list", "watch"},  # kopf's discovery
}


@dataclass(frozen=True)
class Check:
    verb: str
    resource: str
    subresource: str = ""
    namespace: str | None = None  # None: all namespaces / cluster-scoped
    name: str = ""

    def args(self) -> list[str]:
        target = f"{self.resource}/{self.name}" if self.name else self.resource
        return [self.verb, target, *([f"--subresource={self.subresource}"] if self.subresource else []),
                *(["-n", self.namespace] if self.namespace else ["-A"])]  # fmt: skip

    def __str__(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        name = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.resource}{sub}{name} in {self.namespace or '(cluster)'}"


CHECKS_RUN: list[int] = []
KUBECTL_RUN: list[int] = []
KUBECTL_SAMPLE = 8  # besides every expected "yes", every 8th check also goes through kubectl itself


def mismatches(kubectl, kubeconfig, sa: str, expected: dict[Check, bool]) -> list[str]:
    """Asks the API server's authorizer every check as the ServiceAccount and returns the wrong answers.

    A check is a SelfSubjectAccessReview under impersonation of the ServiceAccount: exactly what
    `kubectl auth can-i --as <sa>` sends, without a kubectl process per check (a matrix of ~400 would take
    minutes on 2 cores). A sample (every expected yes, every KUBECTL_SAMPLE-th no) is also asked through
    `kubectl auth can-i --as`, which must answer the same."""
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    api_client.set_default_header("Impersonate-User", sa)  # the API server adds the ServiceAccount's groups
    authz = client.AuthorizationV1Api(api_client)

    def review(check: Check) -> bool:
        resource, _, group = check.resource.partition(".")
        attrs = client.V1ResourceAttributes(
            verb=check.verb, group=group, resource=resource, subresource=check.subresource or None,
            name=check.name or None, namespace=check.namespace or "",
        )  # fmt: skip
        spec = client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs)
        return bool(authz.create_self_subject_access_review(client.V1SelfSubjectAccessReview(spec=spec)).status.allowed)

    def can_i(check: Check) -> bool:
        proc = kubectl("auth", "can-i", *check.args(), f"--as={sa}", check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), f"{check}: {proc.stdout}{proc.stderr}"
        return answer == "yes"

    try:
        answers = {c: review(c) for c in expected}
    finally:
        api_client.close()
    sample = [c for i, c in enumerate(expected) if expected[c] or i % KUBECTL_SAMPLE == 0]
    with ThreadPoolExecutor(4) as pool:
        via_kubectl = dict(zip(sample, pool.map(can_i, sample), strict=True))
    assert {c: a for c, a in via_kubectl.items() if a != answers[c]} == {}, "kubectl auth can-i disagrees"
    CHECKS_RUN.append(len(answers))
    KUBECTL_RUN.append(len(sample))
    return [f"{c}: expected {'yes' if expected[c] else 'no'}" for c, got in answers.items() if got != expected[c]]


def figure(what: str) -> str:
    return (
        f"FAULT-FIGURE rbac: {sum(CHECKS_RUN)} can-i checks so far ({sum(KUBECTL_RUN)} of them also through "
        f"kubectl auth can-i), {what}"
    )


def matrix(namespace: str | None, allowed: dict[tuple[str, str], set[str]], resources=NAMESPACED,
           name_for: dict[str, str] | None = None) -> dict[Check, bool]:  # fmt: skip
    """Every verb x (resource, subresource) in the namespace, expected yes exactly where allowed says."""
    return {
        Check(v, res, sub, namespace, (name_for or {}).get(res, "")): v in allowed.get((res, sub), set())
        for res, sub in resources
        for v in VERBS
    }


def special(namespace: str | None) -> dict[Check, bool]:
    return {Check(v, res, "", namespace): False for v, res in SPECIAL}


def sa_of(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


@pytest.mark.timeout(300)
def test_operator_rbac_matrix_clusterwide(bed_env, kubectl, kubeconfig, release, namespace, other_namespace):  # noqa: F811
    install_crd(kubectl)  # kubectl auth can-i resolves trainingjobs through discovery
    helm_install(bed_env, release, namespace, {"replicaCount": "0", "crd.install": "false"})
    sa = sa_of(namespace, f"yo-{namespace}-yolo-operator")
    cluster_needs = {**OPERATOR_CLUSTER_NEEDS, ("namespaces", ""): {"list", "watch"}}  # kopf finds namespaces
    expected = {
        **matrix(other_namespace, OPERATOR_NEEDS),
        **matrix(None, OPERATOR_NEEDS),  # cluster-wide: the same rights across all namespaces
        **matrix(None, cluster_needs, CLUSTER),
        **special(other_namespace),
    }
    assert mismatches(kubectl, kubeconfig, sa, expected) == []
    print(figure("operator, cluster-wide"))


@pytest.mark.timeout(300)
def test_operator_rbac_matrix_namespaced(bed_env, kubectl, kubeconfig, release, namespace, other_namespace):  # noqa: F811
    values = {"replicaCount": "0", "crd.install": "false", "watchNamespaces": f"{{{other_namespace}}}"}
    install_crd(kubectl)  # kubectl auth can-i resolves trainingjobs through discovery
    helm_install(bed_env, release, namespace, values)
    sa = sa_of(namespace, f"yo-{namespace}-yolo-operator")
    expected = {
        **matrix(other_namespace, OPERATOR_NEEDS),  # the watched namespace
        **matrix(namespace, {}),  # its own namespace is not watched: nothing there
        **matrix(None, {}),  # nothing across all namespaces
        **matrix(None, OPERATOR_CLUSTER_NEEDS, CLUSTER),  # no namespaces list/watch: it watches one
        **special(other_namespace),
    }
    assert mismatches(kubectl, kubeconfig, sa, expected) == []
    print(figure("operator, namespaced"))


@pytest.mark.timeout(300)
def test_trainer_serviceaccount_only_patches_its_own_status(kubectl, kubeconfig, namespace, other_namespace,  # noqa: F811
                                                            tmp_path):  # fmt: skip
    install_crd(kubectl)
    ns = namespace
    operator = OperatorProcess(kubeconfig, [ns], tmp_path / "operator.log").start()
    try:
        # Suspended: the operator creates the ServiceAccount, Role, RoleBinding and Job; no pod is needed.
        apply(kubectl, ns, trainingjob("mine", suspend=True), trainingjob("theirs", suspend=True))
        for name in ("mine", "theirs"):
            wait_condition(kubectl, ns, name, "JobCreated", timeout=120)
    finally:
        operator.stop()
        print("--- operator log (tail) ---\n" + operator.logs()[-6000:])
    sa = sa_of(ns, "mine-trainer")
    own = {(TJ, ""): {"get"}, (TJ, "status"): {"get", "patch"}}
    expected = {
        **matrix(ns, own, name_for={TJ: "mine"}),
        **matrix(ns, {}, name_for={TJ: "theirs"}),  # another TrainingJob in the same namespace
        **matrix(ns, {}),  # no name: list, watch, create, deletecollection, any Job, pod or Secret
        **matrix(other_namespace, {}, name_for={TJ: "mine"}),
        **matrix(None, {}, CLUSTER),
        **special(ns),
    }
    assert mismatches(kubectl, kubeconfig, sa, expected) == []
    print(figure("trainer"))

    # Real requests as the trainer's ServiceAccount, not only the authorizer's opinion.
    def as_trainer(*args: str):
        return kubectl(*args, f"--as={sa}", namespace=ns, check=False)

    status = json.dumps({"status": {"stage": "Training"}})
    assert as_trainer("patch", "tj", "mine", "--subresource=status", "--type=merge", "-p", status).returncode == 0
    for args in (
        ("patch", "tj", "theirs", "--subresource=status", "--type=merge", "-p", status),
        ("patch", "tj", "mine", "--type=merge", "-p", json.dumps({"spec": {"suspend": False}})),
        ("get", "tj", "theirs"),
        ("get", "secrets"),
        ("delete", "job", "mine-train"),
        ("create", "token", "mine-trainer"),
    ):
        proc = as_trainer(*args)
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), (args, proc.stdout, proc.stderr)
    got = json.loads(kubectl("get", "tj", "mine", "-o", "json", namespace=ns).stdout)
    assert got["status"]["stage"] == "Training" and got["spec"]["suspend"] is True
