"""Multi-node TrainingJobs (spec.resources.nodes > 1), pure: the Indexed Job, its headless Service, names that stay
DNS labels, the PET_* environment, the gang's podFailurePolicy, the reconciler's Service and gang decisions, status."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from yolo_contract import MAX_NAME
from yolo_contract.exitcodes import GANG, ExitCode, PeerLost
from yolo_contract.trainer_config import COLLECTIVE_TIMEOUT_ENV, RESERVED_ENV, reserved_env_problem
from yolo_operator.api import reasons as R
from yolo_operator.api.types import MAX_NODES, TrainingJob
from yolo_operator.controller import build as b
from yolo_operator.controller.decide import Snapshot, decide
from yolo_operator.controller.derive import derive_status, job_view, pod_view, trainingjob_view
from yolo_operator.runtime.config import OperatorConfig

pytestmark = pytest.mark.unit
CFG = OperatorConfig(trainer_image="registry.local/yolo-trainer:test")
NOW = "2026-01-01T00:00:00Z"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
TJ_NAME = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?", fullmatch=True).filter(lambda n: ".." not in n)


def make_tj(name: str = "helmets", nodes: int = 2, status: dict | None = None, **spec) -> dict:
    base = {
        "model": {"hub": "yolov8n.pt"},
        "dataset": "s3://datasets/helmets/",
        "output": "s3://runs/",
        "s3": {"endpoint": "http://minio:9000", "credentialsSecretRef": {"name": "s3-keys"}},
        "resources": {"nodes": nodes, "gpus": 4},
        "training": {"batch": 64},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": "yolo-operator.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "team-a", "uid": "uid-1234", "generation": 1, "resourceVersion": "7"},
        "spec": base,
        "status": status or {},
    }


def env(job: dict) -> dict[str, dict]:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in c["env"]}


# --- the Indexed Job and its Service ---------------------------------------------------------------------


def test_several_nodes_make_an_indexed_job_of_that_many_pods():
    job = b.build_job(make_tj(nodes=3), CFG)
    spec = job["spec"]
    assert job["metadata"]["name"] == "helmets-train"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["podReplacementPolicy"] == "Failed"  # never two pods of one index at once
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "helmets-rdzv" == b.service_name("helmets")
    assert pod["restartPolicy"] == "Never"
    # gpus stays per node: each pod holds its 4
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_each_pod_gets_torchruns_settings_with_its_index_as_node_rank():
    e = env(b.build_job(make_tj(nodes=2), CFG))
    assert e["PET_NNODES"]["value"] == "2"
    assert e["PET_NODE_RANK"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}
    }
    # Indexed Job pods are named <job>-<index> by hostname; the headless Service is their subdomain
    assert e["PET_MASTER_ADDR"]["value"] == "helmets-train-0.helmets-rdzv"
    assert e["PET_MASTER_PORT"]["value"] == "29500"
    assert e["PET_RDZV_CONF"]["value"] == f"timeout={b.RENDEZVOUS_TIMEOUT_SECONDS}"  # torchrun's static rendezvous
    assert int(e[COLLECTIVE_TIMEOUT_ENV]["value"]) == b.COLLECTIVE_TIMEOUT_SECONDS
    # the trainer computes the ranks of its own pod (yolo_contract.sizing.processes_per_node)
    assert "PET_NPROC_PER_NODE" not in e


def test_one_node_keeps_the_plain_job_exactly():
    one = make_tj(nodes=1)
    unset = make_tj(nodes=1)
    del unset["spec"]["resources"]["nodes"]
    job = b.build_job(one, CFG)
    assert job == b.build_job(unset, CFG)
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (1, 1)
    assert not [n for n in env(job) if n.startswith("PET_") or n == COLLECTIVE_TIMEOUT_ENV]
    assert job["spec"]["podFailurePolicy"] == b.pod_failure_policy()
    assert [o["kind"] for o in b.build_children(one, CFG)] == [
        "ServiceAccount", "Role", "RoleBinding", "Job"
    ]  # fmt: skip


def test_the_headless_service_comes_before_the_job_and_selects_only_its_pods():
    kinds = [o["kind"] for o in b.build_children(make_tj(), CFG)]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "Service", "Job"]
    svc = b.build_service(make_tj())
    assert svc["metadata"]["name"] == "helmets-rdzv"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "helmets-train"}
    assert svc["spec"]["ports"] == [{"name": "rendezvous", "port": 29500, "protocol": "TCP"}]
    (owner,) = svc["metadata"]["ownerReferences"]
    assert owner["uid"] == "uid-1234" and owner["controller"] and owner["kind"] == "TrainingJob"
    assert svc["metadata"]["labels"][b.LABEL_TRAINING_JOB] == "helmets"
    # built the same from the operator's compact view (how a deleted Service is re-created)
    assert b.build_service(trainingjob_view(make_tj())) == svc


# --- names -------------------------------------------------------------------------------------------------


def test_the_longest_name_gives_valid_hostnames_and_service_names():
    longest = "a" * MAX_NAME
    job = b.build_job(make_tj(longest, nodes=MAX_NODES, training={"batch": 1024}), CFG)
    name = job["metadata"]["name"]
    hostname = f"{name}-{MAX_NODES - 1}"  # the Job controller's hostname of the last index
    assert len(hostname) <= 63 and DNS_LABEL.fullmatch(hostname), hostname
    svc = job["spec"]["template"]["spec"]["subdomain"]
    assert len(svc) <= 63 and DNS_1035.fullmatch(svc)
    assert env(job)["PET_MASTER_ADDR"]["value"] == f"{name}-0.{svc}"


@given(TJ_NAME, st.integers(2, MAX_NODES))
def test_multi_node_names_are_dns_labels_for_any_trainingjob_name(name, nodes):
    jname = b.job_name(name, nodes)
    assert len(f"{jname}-{nodes - 1}") <= 63 and DNS_LABEL.fullmatch(jname), jname
    svc = b.service_name(name)
    assert len(svc) <= 63 and DNS_1035.fullmatch(svc), svc


def test_names_that_had_to_change_stay_distinct():
    # dots are not allowed in a hostname: a.b and a-b must not share a Job
    assert b.job_name("a.b", 2) != b.job_name("a-b", 2) and "." not in b.job_name("a.b", 2)
    assert b.job_name("a" * 60 + "xyz", 2) != b.job_name("a" * 60 + "xyw", 2)
    assert b.service_name("1st").startswith("r-") and b.service_name("1st") != b.service_name("2nd")
    # a short name is the plain child name, with one node or several
    assert b.job_name("helmets", 8) == b.job_name("helmets") == "helmets-train"


# --- API rules ---------------------------------------------------------------------------------------------


def parse(**spec) -> TrainingJob:
    return TrainingJob.from_body(make_tj(**spec))


def test_nodes_default_to_one_and_are_bounded():
    t = TrainingJob.from_body({**make_tj(), "spec": {**make_tj()["spec"], "resources": {}}})
    assert t.spec.resources.nodes == 1 and t.spec.max_gang_restarts == 5
    for bad in (0, MAX_NODES + 1):
        with pytest.raises(ValidationError, match="nodes"):
            parse(resources={"nodes": bad})


def test_a_cpu_gang_is_allowed_one_rank_per_node():
    t = parse(resources={"nodes": 2, "gpus": 0}, training={"batch": 16})
    assert t.spec.resources.nodes == 2 and t.spec.resources.gpus == 0
    job = b.build_job(t, CFG)
    assert env(job)["NVIDIA_VISIBLE_DEVICES"]["value"] == "void" and env(job)["PET_NNODES"]["value"] == "2"


def test_the_batch_must_give_every_rank_of_every_node_an_image():
    with pytest.raises(ValidationError, match=r"at least nodes x gpus"):
        parse(resources={"nodes": 4, "gpus": 8}, training={"batch": 16})
    parse(resources={"nodes": 4, "gpus": 8}, training={"batch": 32})
    with pytest.raises(ValidationError, match=r"AutoBatch .* on one node"):
        parse(resources={"nodes": 2, "gpus": 1}, training={"batch": -1})


def test_launcher_variables_are_reserved_in_one_place():
    for name in ("PET_NNODES", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_RDZV_CONF", "TORCHELASTIC_ERROR_FILE",
                 "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", COLLECTIVE_TIMEOUT_ENV):  # fmt: skip
        assert reserved_env_problem(name), name
    assert "torch's launcher" in reserved_env_problem("PET_NNODES")
    assert reserved_env_problem("NCCL_SOCKET_IFNAME") is None and reserved_env_problem("GLOO_SOCKET_IFNAME") is None
    # every variable the operator sets for a gang is one spec.env cannot override
    for name in env(b.build_job(make_tj(), CFG)):
        assert reserved_env_problem(name) or name in RESERVED_ENV or name.startswith("AWS_"), name
    with pytest.raises(ValueError, match=r"trainer\.env: PET_NNODES is set by the operator"):
        OperatorConfig.from_env({"YOLO_OPERATOR_TRAINER_ENV": json.dumps([{"name": "PET_NNODES", "value": "9"}])})


# --- gang failure policy -------------------------------------------------------------------------------------


def test_a_gang_ignores_peerlost_and_disruptions_one_node_counts_peerlost():
    assert ExitCode.PEER_LOST == 23 and ExitCode.PEER_LOST.reason == "PeerLost" and GANG == (23,)
    assert PeerLost("x").code == ExitCode.PEER_LOST and ExitCode.PEER_LOST.retriable

    def ignored(policy: dict) -> set[int]:
        rules = [r for r in policy["rules"] if r["action"] == "Ignore"]
        return {v for r in rules for v in r.get("onExitCodes", {}).get("values", ())}

    def fail_job(policy: dict) -> set[int]:
        return {v for r in policy["rules"] if r["action"] == "FailJob" for v in r["onExitCodes"]["values"]}

    gang = b.build_job(make_tj(), CFG)["spec"]["podFailurePolicy"]
    assert ignored(gang) == {75, 23} and 23 not in fail_job(gang)
    assert {"type": "DisruptionTarget", "status": "True"} in [c for r in gang["rules"]
                                                              for c in r.get("onPodConditions", ())]  # fmt: skip
    one = b.pod_failure_policy()
    assert ignored(one) == {75} and 23 not in fail_job(one)  # counted: retried up to backoffLimit, never forever


# --- the reconciler ----------------------------------------------------------------------------------------


def snapshot(tj: dict, **kw) -> Snapshot:
    return Snapshot("team-a", tj["metadata"]["name"], trainingjob_view(tj), body=tj, now=NOW, **kw)


def made_job(tj: dict, **status) -> dict:
    return job_view({
        "metadata": {"name": "helmets-train", "namespace": "team-a", "uid": "uid-job",
                     "ownerReferences": [{"uid": tj["metadata"]["uid"]}],
                     "annotations": {b.ANNOTATION_MODEL: "yolov8n.pt"}},
        "spec": {"suspend": False},
        "status": status,
    })  # fmt: skip


def service(tj: dict) -> dict:
    return {"metadata": {"name": "helmets-rdzv", "uid": "uid-svc", "ownerReferences": [{"uid": tj["metadata"]["uid"]}]}}


def pod(index: int, name: str, phase: str = "Running", created: str = NOW, node: str = "gpu-a", **status) -> dict:
    return pod_view({
        "metadata": {"name": name, "creationTimestamp": created, "ownerReferences": [{"uid": "uid-job"}],
                     "labels": {b.LABEL_COMPLETION_INDEX: str(index)}},
        "spec": {"nodeName": node},
        "status": {"phase": phase, **status},
    })  # fmt: skip


RUNNING = {"jobName": "helmets-train", "model": "yolov8n.pt", "phase": R.TRAINING, "podName": "helmets-train-0-a",
           "restartCount": 0, "stage": R.TRAINING}  # fmt: skip


def test_a_new_gang_gets_its_service_before_its_job():
    plan = decide(snapshot(make_tj()), CFG)
    assert [o["kind"] for o in plan.create] == ["ServiceAccount", "Role", "RoleBinding", "Service", "Job"]
    assert plan.create[-1]["spec"]["completionMode"] == "Indexed"


def test_a_deleted_service_is_made_again_and_a_present_one_left_alone():
    tj = make_tj(status=RUNNING)
    pods = (pod(0, "helmets-train-0-a"), pod(1, "helmets-train-1-a"))
    plan = decide(snapshot(tj, job=made_job(tj, active=2), pods=pods), CFG)
    assert [o["kind"] for o in plan.create] == ["Service"]
    assert plan.create[0] == b.build_service(make_tj())
    plan = decide(snapshot(tj, job=made_job(tj, active=2), pods=pods, service=service(tj)), CFG)
    assert plan.create == ()
    # a finished gang needs no Service any more
    done = make_tj(status={**RUNNING, "phase": R.SUCCEEDED})
    assert decide(snapshot(done, job=made_job(done, succeeded=2)), CFG).create == ()
    # one node never has one
    one = make_tj(nodes=1, status=RUNNING)
    assert decide(snapshot(one, job=made_job(one, active=1)), CFG).create == ()


def test_status_shows_size_and_each_pods_phase_and_node_zeros_pod():
    tj = make_tj(status=RUNNING)
    pods = [pod(0, "helmets-train-0-a", node="gpu-a"),
            pod(1, "helmets-train-1-a", phase="Pending", node="")]  # fmt: skip
    out = derive_status(trainingjob_view(tj), made_job(tj, active=2), pods, now=NOW)
    assert out["size"] == "2x4 GPU"
    running = next(c for c in out["conditions"] if c["type"] == R.RUNNING)
    assert running["status"] == "True"
    assert running["message"].startswith("1/2 pods running: 0 Running on gpu-a [helmets-train-0-a], 1 Pending")
    assert out.get("podName", RUNNING["podName"]) == "helmets-train-0-a"  # node 0's, whose rank 0 reports progress
    assert "phase" not in out  # the trainer's stage, unchanged
    cpu = make_tj(status=RUNNING, resources={"nodes": 3, "gpus": 0}, training={"batch": 16})
    assert derive_status(trainingjob_view(cpu), made_job(cpu, active=3), pods, now=NOW)["size"] == "3x CPU"


def test_a_gang_restart_counts_once_per_replaced_node_zero_pod():
    tj = make_tj(status=RUNNING)
    later = "2026-01-01T00:10:00Z"
    # node 1 evicted: its replacement alone is no gang restart (node 0 still runs the old world)
    pods = [pod(0, "helmets-train-0-a"), pod(1, "helmets-train-1-b", created=later)]
    out = derive_status(trainingjob_view(tj), made_job(tj, active=2), pods, now=NOW)
    assert out.get("restartCount", 0) == 0
    # node 0's ranks exit PeerLost, its pod is replaced too: one gang restart, and podName follows node 0
    pods = [pod(0, "helmets-train-0-a", phase="Failed", containerStatuses=[
        {"name": "trainer", "state": {"terminated": {"exitCode": 23, "reason": "Error"}}}]),
        pod(0, "helmets-train-0-b", created=later), pod(1, "helmets-train-1-b", created=later)]  # fmt: skip
    out = derive_status(trainingjob_view(tj), made_job(tj, active=2), pods, now=NOW)
    assert out["restartCount"] == 1 and out["podName"] == "helmets-train-0-b"
    # seen in two steps (node 0's pod failed, then its replacement): still one
    failed_only = [pods[0], pod(1, "helmets-train-1-b", created=later)]
    step1 = derive_status(trainingjob_view(tj), made_job(tj, active=1), failed_only, now=NOW)
    assert step1.get("restartCount", 0) == 0
    tj1 = make_tj(status={**RUNNING, **step1})
    step2 = derive_status(trainingjob_view(tj1), made_job(tj1, active=2), pods, now=NOW)
    assert step2["restartCount"] == 1 and step2["podName"] == "helmets-train-0-b"
    # the same observation again changes nothing
    again = make_tj(status={**RUNNING, **out})
    assert "restartCount" not in derive_status(trainingjob_view(again), made_job(again, active=2), pods, now=NOW)


def test_pods_back_after_a_suspension_or_kueue_preemption_are_no_gang_restart():
    later = "2026-01-01T00:10:00Z"
    pods = [pod(0, "helmets-train-0-b", created=later), pod(1, "helmets-train-1-b", created=later)]
    for phase in (R.QUEUED, R.SUSPENDED):
        tj = make_tj(status={**RUNNING, "phase": phase})
        out = derive_status(trainingjob_view(tj), made_job(tj, active=2), pods, now=NOW)
        assert out["podName"] == "helmets-train-0-b" and "restartCount" not in out, out


def test_too_many_gang_restarts_fail_the_trainingjob_and_keep_its_job_suspended():
    tj = make_tj(status={**RUNNING, "restartCount": 2}, maxGangRestarts=2)
    later = "2026-01-01T00:10:00Z"
    pods = (pod(0, "helmets-train-0-c", created=later), pod(1, "helmets-train-1-c", created=later))
    plan = decide(snapshot(tj, job=made_job(tj, active=2), pods=pods, service=service(tj)), CFG)
    assert plan.status["phase"] == R.FAILED and plan.status["restartCount"] == 3
    failed = next(c for c in plan.status["conditions"] if c["type"] == R.COND_FAILED)
    assert failed["reason"] == R.REASON_GANG_RESTART_LIMIT == "GangRestartLimitExceeded"
    assert "spec.maxGangRestarts (2)" in failed["message"]
    assert plan.job_patch == {"spec": {"activeDeadlineSeconds": None, "ttlSecondsAfterFinished": None,
                                       "suspend": True}}  # fmt: skip
    # next time round: the status stays Failed (not the suspended Job's Suspended), the Job stays suspended
    stopped = make_tj(status={**RUNNING, **plan.status}, maxGangRestarts=2)
    suspended = {**made_job(stopped), "spec": {"suspend": True}}
    assert decide(snapshot(stopped, job=suspended, pods=(), service=service(stopped)), CFG).idle
    # with Kueue the Workload is deactivated instead (Kueue owns the Job's suspend)
    queued = make_tj(status={**RUNNING, **plan.status}, maxGangRestarts=2, queueName="team")
    wl = {"metadata": {"name": "job-helmets-train-x"}, "spec": {"active": True}}
    p = decide(snapshot(queued, job=made_job(queued), pods=(), service=service(queued), workload=wl), CFG)
    assert p.workload_patch == {"spec": {"active": False}} and not p.status


def test_a_failed_gang_is_blamed_on_the_pod_that_failed_not_on_the_peerlost_survivors():
    tj = make_tj(status=RUNNING)

    def ended(index: int, name: str, code: int, message: str, at: str) -> dict:
        term = {"exitCode": code, "reason": "Error", "message": message, "finishedAt": at}
        return pod(index, name, phase="Failed", containerStatuses=[{"name": "trainer", "state": {"terminated": term}}])

    pods = [ended(1, "helmets-train-1-a", 20, "NaN loss", "2026-01-01T00:01:00Z"),
            ended(0, "helmets-train-0-a", 23, "peer lost", "2026-01-01T00:02:00Z")]  # fmt: skip
    job = made_job(tj, failed=1)
    job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                    "message": "Job has reached the specified backoff limit"}]  # fmt: skip
    out = derive_status(trainingjob_view(tj), job, pods, now=NOW)
    failed = next(c for c in out["conditions"] if c["type"] == R.COND_FAILED)
    assert failed["reason"] == "TrainingError" and "NaN loss" in failed["message"]


def test_the_view_keeps_what_a_gang_needs_and_one_node_keeps_its_view():
    v = trainingjob_view(make_tj(maxGangRestarts=7))
    assert v["spec"]["resources"] == {"nodes": 2, "gpus": 4} and v["spec"]["maxGangRestarts"] == 7
    assert "resources" not in trainingjob_view(make_tj(nodes=1))["spec"]
    p = pod_view({"metadata": {"name": "x", "labels": {b.LABEL_COMPLETION_INDEX: "1", "other": "y"}}, "status": {}})
    assert p["metadata"]["labels"] == {b.LABEL_COMPLETION_INDEX: "1"}


# --- the trainer honours the operator's collective bound ----------------------------------------------------


def test_the_collective_timeout_comes_from_the_operator_and_bounds_ultralytics_init(monkeypatch):
    import torch.distributed as dist
    from yolo_trainer import ranks

    assert ranks.collective_timeout({COLLECTIVE_TIMEOUT_ENV: "600"}).total_seconds() == 600
    for unset in ({}, {COLLECTIVE_TIMEOUT_ENV: ""}, {COLLECTIVE_TIMEOUT_ENV: "0"}, {COLLECTIVE_TIMEOUT_ENV: "x"}):
        assert ranks.collective_timeout(unset) == ranks.COLLECTIVE_TIMEOUT
    seen = {}
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **kw: seen.update(kw))
    with ranks.bounded_init(ranks.collective_timeout({COLLECTIVE_TIMEOUT_ENV: "42"})):
        from datetime import timedelta

        dist.init_process_group(backend="nccl", timeout=timedelta(seconds=10800), rank=0, world_size=2)  # Ultralytics'
    assert seen["timeout"].total_seconds() == 42 and seen["world_size"] == 2
