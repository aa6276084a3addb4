"""Multi-node TrainingJobs (spec.resources.nodes > 1) against the bed's real control plane: the operator makes a
headless Service and an Indexed Job whose pods carry torchrun's PET_* settings, makes the Service again when it is
deleted, lets the real Job controller replace a pod whose ranks exit PeerLost (23) without counting it, and fails
the TrainingJob once the gang restarted more than spec.maxGangRestarts times, its Job suspended.

The pods are kept off every node (a nodeSelector nothing matches) and the tests play the kubelet, as in
test_operator_lifecycle.py: no container runs. Admission of reserved launcher variables is checked here too.

A throwaway kwokctl control plane of its own (kube-apiserver, controller-manager, scheduler; no node needed):
the shared bed's CRD is cluster-wide and other branches' tests install theirs, which prunes spec.resources.nodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.fault.kwok_cluster import ThrowawayCluster
from tests.operator_fixtures import (
    OperatorProcess,
    apply,
    condition,
    get,
    install_crd,
    items,
    status_of,
    terminate_pod,
    trainingjob,
    wait_for,
)

pytestmark = pytest.mark.integration
LABEL = "yolo-operator.io/training-job"
INDEX = "batch.kubernetes.io/job-completion-index"
NOWHERE = {"nodeSelector": {"yolo-operator.io/test": "no-such-node"}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[ThrowawayCluster]:
    with ThrowawayCluster(tmp_path_factory.mktemp("multinode"), components=("kube-controller-manager",),
                          name=f"multinode-{int(time.time()) % 100000}") as c:  # fmt: skip
        controllers_running(c)
        install_crd(c.kubectl)
        yield c


def controllers_running(c: ThrowawayCluster) -> None:
    """The kube-controller-manager gives up when the API server is slow to become healthy (its RBAC bootstrap,
    on a loaded machine) and nothing restarts it: then the Job controller never makes a pod. Its service-account
    controller gives a new namespace its "default" ServiceAccount: without one, the cluster is restarted once."""
    for attempt in range(2):
        probe = f"probe-{attempt}"
        c.kubectl("create", "namespace", probe)
        try:
            wait_for(lambda ns=probe: c.kubectl("get", "serviceaccount", "default", namespace=ns, check=False)
                     .returncode == 0, 60, what="the kube-controller-manager (the default ServiceAccount)")  # fmt: skip
            return
        except AssertionError:
            if attempt:
                raise
            print("kube-controller-manager not running: restarting the throwaway cluster")
            c._kwokctl("stop", "cluster")
            c._kwokctl("start", "cluster")
            wait_for(c.ready, 120, what="the API server back")


@pytest.fixture
def kubectl(cluster):
    return cluster.kubectl


@pytest.fixture
def namespace(cluster, request) -> Iterator[str]:
    name = f"multinode-{abs(hash(request.node.name)) % 10**8}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(cluster, tmp_path, namespace):
    p = OperatorProcess(cluster.kubeconfig, [namespace], tmp_path / "operator.log").start()
    yield p
    p.stop()
    print("--- operator log (tail) ---\n" + p.logs()[-4000:])


def gang(name: str, nodes: int = 2, **spec) -> dict:
    return trainingjob(name, resources={"nodes": nodes, "gpus": 1, "cpu": "1", "memory": "2Gi"},
                       scheduling=NOWHERE, **spec)  # fmt: skip


def live_pods(kubectl, ns: str, name: str) -> list[dict]:
    pods = items(kubectl, ns, "pods", f"{LABEL}={name}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Pending"]


def pod_of_index(kubectl, ns: str, name: str, index: int, other_than: str | None = None) -> dict:
    def find():
        return next((p for p in live_pods(kubectl, ns, name)
                     if p["metadata"]["labels"].get(INDEX) == str(index) and p["metadata"]["name"] != other_than),
                    None)  # fmt: skip

    return wait_for(find, 120, what=dump(kubectl, ns, name, f"a pod of index {index} of {name}"))


def test_a_gang_gets_a_headless_service_and_an_indexed_job_with_torchruns_settings(kubectl, namespace, operator):
    ns = namespace
    apply(kubectl, ns, gang("gang"))
    job = wait_for(lambda: get(kubectl, ns, "job", "gang-train"), 60, what="Job gang-train")
    svc = get(kubectl, ns, "service", "gang-rdzv")
    tj = get(kubectl, ns, "trainingjob", "gang")
    print(json.dumps({"service": svc["spec"], "job": {k: job["spec"][k] for k in ("completionMode", "completions",
                      "parallelism", "podFailurePolicy")}}, indent=1))  # fmt: skip

    # the Service: headless, names published before readiness, this Job's pods only, owned by the TrainingJob
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "gang-train"}
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("rendezvous", 29500)]
    (owner,) = svc["metadata"]["ownerReferences"]
    assert owner["uid"] == tj["metadata"]["uid"] and owner["controller"]

    # the Indexed Job: one pod per node, under the Service; PeerLost (23) ignored like a disruption
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["template"]["spec"]["subdomain"] == "gang-rdzv"
    ignored = [v for r in spec["podFailurePolicy"]["rules"] if r["action"] == "Ignore"
               for v in r.get("onExitCodes", {}).get("values", ())]  # fmt: skip
    assert sorted(ignored) == [23, 75]

    # each pod: hostname <job>-<index> under the Service's subdomain, its index as PET_NODE_RANK
    wait_for(lambda: len(live_pods(kubectl, ns, "gang")) == 2, 120, what=dump(kubectl, ns, "gang", "2 pods"))
    for pod in live_pods(kubectl, ns, "gang"):
        index = pod["metadata"]["labels"][INDEX]
        assert pod["spec"]["hostname"] == f"gang-train-{index}" and pod["spec"]["subdomain"] == "gang-rdzv"
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["PET_NNODES"]["value"] == "2"
        assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.labels['{INDEX}']"
        assert env["PET_MASTER_ADDR"]["value"] == "gang-train-0.gang-rdzv"
        assert env["PET_MASTER_PORT"]["value"] == "29500"

    # status: nodes x GPUs, and each index's pod in the Running condition's message
    def shown():
        st = status_of(kubectl, ns, "gang")
        running = condition(st, "Running") or {}
        return st.get("size") == "2x1 GPU" and "0/2 pods running" in running.get("message", "") and st

    st = wait_for(shown, 60, what="status.size and the per-pod message")
    print("Running:", condition(st, "Running")["message"])
    assert "0 Pending" in condition(st, "Running")["message"] and "1 Pending" in condition(st, "Running")["message"]
    print(kubectl("get", "tj", "-o", "wide", namespace=ns).stdout)

    # the Service deleted by hand: made again (a new object), owned as before
    old_uid = svc["metadata"]["uid"]
    kubectl("delete", "service", "gang-rdzv", namespace=ns)
    again = wait_for(lambda: (s := get(kubectl, ns, "service", "gang-rdzv")) and s["metadata"]["uid"] != old_uid and s,
                     60, what="the Service re-created")  # fmt: skip
    assert again["spec"]["clusterIP"] == "None" and again["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]


def dump(kubectl, ns: str, name: str, what: str):
    """``what``, and when a wait fails (formatted only then) the TrainingJob's status, its Job, pods and events."""

    class Dump:
        def __str__(self) -> str:
            st = status_of(kubectl, ns, name)
            pods = kubectl("get", "jobs,pods,events", "-o", "wide", "-L", INDEX, namespace=ns).stdout
            return f"{what}\nstatus: {json.dumps(st, indent=1)}\n{pods}"

    return Dump()


def test_peerlost_restarts_the_gang_uncounted_until_max_gang_restarts(kubectl, namespace, operator):
    ns = namespace
    apply(kubectl, ns, gang("lost", maxGangRestarts=1))
    wait_for(lambda: len(live_pods(kubectl, ns, "lost")) == 2, 120, what=dump(kubectl, ns, "lost", "2 pods"))

    # node 1 is lost (the test marks it failed as if evicted: DisruptionTarget) and node 0's ranks exit PeerLost
    first0 = pod_of_index(kubectl, ns, "lost", 0)
    first1 = pod_of_index(kubectl, ns, "lost", 1)
    disrupted = [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                  "message": "Eviction API: evicting"}]  # fmt: skip
    terminate_pod(kubectl, ns, first1["metadata"]["name"], 137, "", conditions=disrupted)
    terminate_pod(kubectl, ns, first0["metadata"]["name"], 23, "PeerLost: training rank 2 on lost-train-1 went away")
    pod_of_index(kubectl, ns, "lost", 0, other_than=first0["metadata"]["name"])
    pod_of_index(kubectl, ns, "lost", 1, other_than=first1["metadata"]["name"])
    st = wait_for(lambda: (s := status_of(kubectl, ns, "lost")).get("restartCount") == 1 and s, 60,
                  what=dump(kubectl, ns, "lost", "restartCount 1"))  # fmt: skip
    # podName: node 0's newest pod (the Job controller may briefly make two for one index under load, and
    # deletes the extra one: the one status names is the one to end next)
    second0 = wait_for(lambda: next((p for p in live_pods(kubectl, ns, "lost") if p["metadata"]["name"]
                                     == status_of(kubectl, ns, "lost").get("podName")), None), 60,
                       what=dump(kubectl, ns, "lost", "status.podName a live pod"))  # fmt: skip
    assert st["phase"] not in ("Failed", "Succeeded") and second0["metadata"]["labels"][INDEX] == "0"
    assert second0["metadata"]["name"] != first0["metadata"]["name"]
    job = get(kubectl, ns, "job", "lost-train")
    assert not job["status"].get("failed"), job["status"]  # neither end counted against backoffLimit

    # once more: the second gang restart is one more than spec.maxGangRestarts (1)
    terminate_pod(kubectl, ns, second0["metadata"]["name"], 23, "PeerLost: rendezvous timed out")
    st = wait_for(lambda: (s := status_of(kubectl, ns, "lost")).get("phase") == "Failed" and s, 60,
                  what=dump(kubectl, ns, "lost", "Failed"))  # fmt: skip
    failed = condition(st, "Failed")
    print("Failed:", failed["reason"], "-", failed["message"])
    assert failed["reason"] == "GangRestartLimitExceeded" and "spec.maxGangRestarts (1)" in failed["message"]
    assert st["restartCount"] == 2
    job = wait_for(lambda: (j := get(kubectl, ns, "job", "lost-train"))["spec"].get("suspend") and j, 30,
                   what="the Job suspended")  # fmt: skip
    wait_for(lambda: not live_pods(kubectl, ns, "lost"), 60, what="no pod left")
    # and it stays Failed: the suspended Job does not turn it into Suspended
    assert status_of(kubectl, ns, "lost")["phase"] == "Failed"


@pytest.mark.parametrize("name", ["PET_NNODES", "PET_MASTER_ADDR", "TORCHELASTIC_ERROR_FILE", "WORLD_SIZE"])
def test_launcher_variables_are_refused_at_apply(kubectl, namespace, name):
    proc = apply(kubectl, namespace, gang("env", env=[{"name": name, "value": "x"}]), check=False)
    assert proc.returncode != 0
    print(proc.stderr.strip())
    assert "spec.env[0]" in proc.stderr and "torch's launcher" in proc.stderr and "PET_*" in proc.stderr


def test_a_batch_too_small_for_the_gang_is_refused_at_apply(kubectl, namespace):
    tj = gang("small", nodes=4, training={"epochs": 1, "batch": 2})
    proc = apply(kubectl, namespace, tj, check=False)
    assert proc.returncode != 0 and "at least nodes x gpus" in proc.stderr, proc.stderr
