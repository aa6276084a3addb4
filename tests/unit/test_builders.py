"""Pure builders: Job, per-job RBAC, names, shm sizing, model resolution, the trainer config contract."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yolo_contract.exitcodes import DISRUPTION, NON_RETRIABLE, ExitCode
from yolo_contract.model_source import HubModel, TrainingJobModel, UriModel, YamlModel
from yolo_contract.trainer_config import CONFIG_ENV, TrainerConfig
from yolo_operator.api.types import ModelSource
from yolo_operator.controller import build as b
from yolo_operator.controller import kueue
from yolo_operator.runtime.config import OperatorConfig

pytestmark = pytest.mark.unit
CFG = OperatorConfig(trainer_image="registry.local/yolo-trainer:test")
HUB = HubModel(hub="yolov8n.pt")
MIB = 1024 * 1024


def make_tj(name: str = "helmets", **spec) -> dict:
    base = {
        "model": {"hub": "yolov8n.pt"},
        "dataset": "s3://datasets/helmets/",
        "output": "s3://runs/",
        "s3": {"endpoint": "http://minio:9000", "credentialsSecretRef": {"name": "s3-keys"}},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": "yolo-operator.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "team-a", "uid": "uid-1234", "generation": 1},
        "spec": base,
    }


def container(job: dict) -> dict:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return c


def env(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(job)["env"]}


# --- names -----------------------------------------------------------------------------------------------


def test_job_name_is_deterministic():
    assert b.job_name("helmets") == "helmets-train"
    assert b.rbac_name("helmets") == "helmets-trainer"
    assert b.build_job(make_tj(), CFG) == b.build_job(make_tj(), CFG)


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True))
def test_child_names_are_valid_and_short(name):
    for n in (b.job_name(name), b.rbac_name(name)):
        assert len(n) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n), n


def test_long_names_are_hashed_and_distinct():
    a, c = "a" * 60 + "xyz", "a" * 60 + "xyw"
    assert b.job_name(a) != b.job_name(c)
    assert len(b.job_name(a)) == 63
    assert b.job_name(a).endswith("-train")


# --- the Job ---------------------------------------------------------------------------------------------


def test_job_owner_reference_and_labels():
    job = b.build_job(make_tj(), CFG)
    meta = job["metadata"]
    assert meta["name"] == "helmets-train"
    assert meta["namespace"] == "team-a"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "yolo-operator.io/v1alpha1",
        "kind": "TrainingJob",
        "name": "helmets",
        "uid": "uid-1234",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for labels in (meta["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["yolo-operator.io/training-job"] == "helmets"
        assert labels["app.kubernetes.io/name"] == "yolo-trainer"
        assert labels["app.kubernetes.io/managed-by"] == "yolo-operator"


def test_owner_reference_needs_uid():
    tj = make_tj()
    del tj["metadata"]["uid"]
    with pytest.raises(ValueError, match="uid"):
        b.build_job(tj, CFG)


def test_job_spec_basics():
    job = b.build_job(make_tj(backoffLimit=5, activeDeadlineSeconds=3600, ttlSecondsAfterFinished=60), CFG)
    s = job["spec"]
    assert (s["parallelism"], s["completions"], s["backoffLimit"]) == (1, 1, 5)
    assert s["activeDeadlineSeconds"] == 3600
    assert s["ttlSecondsAfterFinished"] == 60
    assert s["suspend"] is False
    assert s["podReplacementPolicy"] == "Failed"
    pod = s["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "helmets-trainer"
    assert container(job)["image"] == "registry.local/yolo-trainer:test"
    assert container(job)["terminationMessagePath"] == "/dev/termination-log"
    assert container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "activeDeadlineSeconds" not in b.build_job(make_tj(), CFG)["spec"]


def test_image_override():
    job = b.build_job(make_tj(image="my.registry/trainer:2", imagePullPolicy="Always"), CFG)
    assert container(job)["image"] == "my.registry/trainer:2"
    assert container(job)["imagePullPolicy"] == "Always"


def test_pod_failure_policy_follows_exit_codes():
    rules = b.build_job(make_tj(), CFG)["spec"]["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    ignore = [r for r in rules if r["action"] == "Ignore"]
    assert fail[0]["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "In",
        "values": sorted(NON_RETRIABLE),
    }
    assert int(ExitCode.DATASET_INVALID) in fail[0]["onExitCodes"]["values"]
    assert int(ExitCode.SCRATCH_TOO_SMALL) in fail[0]["onExitCodes"]["values"]  # a retry has the same disk
    s3_misconfigured = (ExitCode.S3_BUCKET_NOT_FOUND, ExitCode.S3_WRONG_REGION, ExitCode.S3_TLS_FAILED,
                        ExitCode.S3_UNREACHABLE)  # fmt: skip
    for code in s3_misconfigured:
        assert int(code) in fail[0]["onExitCodes"]["values"]  # S3 misconfigurations: a retry fails the same way
    assert int(ExitCode.GPU_NOT_VISIBLE) in fail[0]["onExitCodes"]["values"]  # the node's driver: no CPU fallback
    assert int(ExitCode.TRAINING_ERROR) not in fail[0]["onExitCodes"]["values"]  # retriable
    assert ignore[0]["onExitCodes"]["values"] == list(DISRUPTION) == [75]
    assert ignore[1]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]


def test_restricted_security_context():
    job = b.build_job(make_tj(), CFG)
    pod = job["spec"]["template"]["spec"]
    sc = container(job)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    text = json.dumps(job)
    assert "runAsUser" not in text and "fsGroup" not in text  # OpenShift restricted-v2 assigns them
    assert "privileged" not in text and "hostPath" not in text


def test_writable_home_and_config_dir_on_emptydir():
    job = b.build_job(make_tj(), CFG)
    e = env(job)
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    for var in ("HOME", "YOLO_CONFIG_DIR", "MPLCONFIGDIR"):
        assert e[var]["value"].startswith(b.WORK_DIR + "/")
    assert mounts[b.WORK_DIR] == "work" and vols["work"] == {"name": "work", "emptyDir": {}}
    assert "ephemeral-storage" not in json.dumps(container(job)["resources"])  # unsized: nothing requested
    assert "scratchBytes" not in env(job)[CONFIG_ENV]["value"]


def work_volume(job: dict) -> dict:
    return next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "work")


def test_scratch_size_limits_the_emptydir_and_requests_ephemeral_storage():
    job = b.build_job(make_tj(resources={"scratchSize": "50Gi"}), CFG)
    assert work_volume(job) == {"name": "work", "emptyDir": {"sizeLimit": "51200Mi"}}
    res = container(job)["resources"]
    want = f"{50 * 1024 + b.EPHEMERAL_STORAGE_MARGIN_MIB}Mi"  # the emptyDir plus logs and writable layer
    assert res["requests"]["ephemeral-storage"] == res["limits"]["ephemeral-storage"] == want
    cfg = TrainerConfig.model_validate_json(env(job)[CONFIG_ENV]["value"])
    assert cfg.scratch_bytes == 50 << 30  # the trainer checks the dataset against this before staging
    decimal = work_volume(b.build_job(make_tj(resources={"scratchSize": "1.5G"}), CFG))
    assert decimal["emptyDir"] == {"sizeLimit": "1431Mi"}  # 1.5e9 bytes, rounded up to whole MiB


def test_the_operators_default_scratch_size_applies_when_the_spec_sets_none():
    cfg = CFG.model_copy(update={"default_scratch_size": "20Gi"})
    job = b.build_job(make_tj(), cfg)
    assert work_volume(job) == {"name": "work", "emptyDir": {"sizeLimit": "20480Mi"}}
    res = container(job)["resources"]
    assert res["requests"]["ephemeral-storage"] == f"{20 * 1024 + b.EPHEMERAL_STORAGE_MARGIN_MIB}Mi"
    trainer = TrainerConfig.model_validate_json(env(job)[CONFIG_ENV]["value"])
    assert trainer.scratch_bytes == 20 << 30
    assert trainer.dataset_limits == (20 << 30, (20 << 30) // 4096)  # derived from it
    # the job's own size wins over the default
    own = b.build_job(make_tj(resources={"scratchSize": "5Gi"}), cfg)
    assert work_volume(own) == {"name": "work", "emptyDir": {"sizeLimit": "5120Mi"}}


def test_retry_budget_and_dataset_limits_reach_the_trainer_config():
    tj = make_tj(
        s3={"endpoint": "http://minio:9000", "retryBudgetSeconds": 900},
        resources={"scratchSize": "50Gi", "maxDatasetSize": "1Gi", "maxDatasetFiles": 1000},
    )
    trainer = TrainerConfig.model_validate_json(env(b.build_job(tj, CFG))[CONFIG_ENV]["value"])
    assert trainer.s3.retry_budget_seconds == 900
    assert (trainer.max_dataset_bytes, trainer.max_dataset_files) == (1 << 30, 1000)
    assert trainer.dataset_limits == (1 << 30, 1000)  # explicit limits win over the scratch size
    unset = TrainerConfig.model_validate_json(env(b.build_job(make_tj(), CFG))[CONFIG_ENV]["value"])
    assert unset.s3.retry_budget_seconds is None and unset.max_dataset_bytes is None


def test_scratch_storage_class_makes_a_generic_ephemeral_volume():
    tj = make_tj(resources={"scratchSize": "200Gi", "scratchStorageClassName": "fast-local"})
    job = b.build_job(tj, CFG)
    vol = work_volume(job)
    assert set(vol) == {"name", "ephemeral"}
    claim = vol["ephemeral"]["volumeClaimTemplate"]
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-local",
        "resources": {"requests": {"storage": f"{200 * 1024}Mi"}},
    }
    assert claim["metadata"]["labels"][b.LABEL_TRAINING_JOB] == "helmets"
    assert {"name": "work", "mountPath": b.WORK_DIR} in container(job)["volumeMounts"]
    # the claim is not node disk: no ephemeral-storage request for it
    assert "ephemeral-storage" not in json.dumps(container(job)["resources"])
    cfg = TrainerConfig.model_validate_json(env(job)[CONFIG_ENV]["value"])
    assert cfg.scratch_bytes == 200 << 30


def test_credentials_only_via_secret_key_ref():
    tj = make_tj(
        s3={
            "credentialsSecretRef": {"name": "keys", "accessKeyIdKey": "ak", "secretAccessKeyKey": "sk"},
            "endpoint": "https://s3.example",
        }
    )
    job = b.build_job(tj, CFG)
    e = env(job)
    assert e["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "keys", "key": "ak"}},
    }
    assert e["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "keys", "key": "sk"}}
    cfg = json.loads(e[CONFIG_ENV]["value"])
    assert "keys" not in json.dumps(cfg)  # no credentials (or their Secret) in the config
    # no credentials ref -> no credential variables at all
    job2 = b.build_job(make_tj(s3={"endpoint": "http://minio:9000"}), CFG)
    assert "AWS_ACCESS_KEY_ID" not in env(job2)


def test_trainer_config_contract():
    tj = make_tj(
        training={"epochs": 7, "imgsz": 320, "batch": 4, "freeze": 10, "hyperparameters": {"lr0": 0.01}},
        exportFormats=["onnx"],
        s3={
            "endpoint": "https://s3.example",
            "region": "eu-west-1",
            "caBundle": {"name": "ca", "key": "bundle.pem"},
        },
    )
    job = b.build_job(tj, CFG)
    cfg = TrainerConfig.model_validate_json(env(job)[CONFIG_ENV]["value"])
    assert (cfg.name, cfg.namespace) == ("helmets", "team-a")
    assert cfg.model == HubModel(hub="yolov8n.pt")
    assert cfg.dataset == "s3://datasets/helmets/"
    assert cfg.output == "s3://runs/"
    assert (cfg.training.epochs, cfg.training.imgsz, cfg.training.batch, cfg.training.freeze) == (
        7,
        320,
        4,
        10,
    )
    assert cfg.training.hyperparameters == {"lr0": 0.01}
    assert cfg.export_formats == ["onnx"]
    assert cfg.s3.endpoint == "https://s3.example" and cfg.s3.region == "eu-west-1"
    assert cfg.s3.ca_bundle == f"{b.CA_DIR}/{b.CA_FILE}"
    assert cfg.status.name == "helmets" and cfg.status.plural == "trainingjobs"
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["ca-bundle"]["configMap"] == {
        "name": "ca",
        "items": [{"key": "bundle.pem", "path": "ca.crt"}],
    }
    assert cfg.work_dir.startswith(b.WORK_DIR + "/")


def test_resolved_model_goes_into_the_config():
    tj = make_tj(model={"fromTrainingJob": "previous"})
    with pytest.raises(ValueError, match="resolved"):
        b.build_job(tj, CFG)
    parent = TrainingJobModel(uri="s3://runs/team-a/previous/weights/best.pt", namespace="team-a", name="previous",
                              uid="uid-prev", metrics="s3://runs/team-a/previous/metrics.json")  # fmt: skip
    job = b.build_job(tj, CFG, model=parent)
    cfg = TrainerConfig.model_validate_json(env(job)[CONFIG_ENV]["value"])
    assert cfg.model == parent and cfg.model.text == "s3://runs/team-a/previous/weights/best.pt"
    # the Job says which model it started from (status.model of an adopted Job), once, as written
    assert job["metadata"]["annotations"][b.ANNOTATION_MODEL] == parent.text


@pytest.mark.parametrize(
    ("source", "kind"),
    [({"hub": "yolo11n.pt"}, HubModel), ({"uri": "s3://m/w.pt"}, UriModel), ({"uri": "https://x/w.pt"}, UriModel),
     ({"yaml": "yolov8n.yaml"}, YamlModel), ({"fromTrainingJob": "prev"}, TrainingJobModel)],
)  # fmt: skip
def test_each_model_source_reaches_the_trainers_resolver_as_its_own_kind(source, kind, tmp_path, monkeypatch):
    """spec.model -> the operator's resolution -> TrainerConfig JSON in the pod -> the trainer's config and
    resolver: the kind stays typed all the way (an object with its kind on the wire, never a string to sniff)."""
    from yolo_contract.exitcodes import ModelUnavailable
    from yolo_trainer import model as trainer_model

    artifacts = {"bestWeights": "s3://runs/team-a/prev/weights/best.pt", "metrics": "s3://runs/team-a/prev/metrics.json"}
    prev = {"metadata": {"name": "prev", "namespace": "team-a", "uid": "uid-prev"},
            "status": {"phase": "Succeeded", "artifacts": artifacts}}  # fmt: skip
    resolved = b.starting_model(ModelSource.model_validate(source), prev).model
    wire = env(b.build_job(make_tj(model=source), CFG, model=resolved))[CONFIG_ENV]["value"]
    assert isinstance(json.loads(wire)["model"], dict) and json.loads(wire)["model"]["kind"] == kind.model_fields[
        "kind"].default  # fmt: skip
    cfg = TrainerConfig.model_validate_json(wire)
    assert type(cfg.model) is kind and cfg.model == resolved
    if kind is TrainingJobModel:
        assert (cfg.model.namespace, cfg.model.name, cfg.model.uid) == ("team-a", "prev", "uid-prev")
        assert cfg.model.metrics == "s3://runs/team-a/prev/metrics.json"
    seen = {}

    class Store:
        def download(self, bucket, key, dest, max_size):
            seen["s3"] = f"s3://{bucket}/{key}"

    monkeypatch.setattr(trainer_model, "_check_builtin_yaml", lambda spec: seen.setdefault("yaml", spec))
    monkeypatch.setattr(trainer_model, "_download_https", lambda url, dest: seen.setdefault("https", url))
    try:  # offline: a hub name's branch says it needs the internet (no download here)
        trainer_model.resolve_model(cfg.model, Store(), tmp_path, offline=kind is HubModel)
    except ModelUnavailable as e:
        seen["hub"] = str(e)
    want = {"hub": "is a hub name", "https": cfg.model.text, "s3": cfg.model.text, "yaml": cfg.model.text}
    (branch,) = seen
    assert branch == {HubModel: "hub", UriModel: "https" if "https" in cfg.model.text else "s3", YamlModel: "yaml",
                      TrainingJobModel: "s3"}[kind]  # fmt: skip
    assert want[branch] in seen[branch]


# --- GPUs, shm, memory -----------------------------------------------------------------------------------


def test_gpu_limits_and_toleration():
    job = b.build_job(make_tj(resources={"gpus": 2}), CFG)
    res = container(job)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "2"
    assert res["requests"]["nvidia.com/gpu"] == "2"
    tols = job["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tols


def test_custom_gpu_resource_name():
    job = b.build_job(make_tj(resources={"gpus": 1, "gpuResourceName": "amd.com/gpu"}), CFG)
    assert container(job)["resources"]["limits"]["amd.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in json.dumps(container(job)["resources"])
    tols = job["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tols


def test_cpu_only_has_no_gpu_limit_or_toleration():
    job = b.build_job(make_tj(resources={"gpus": 0}), CFG)
    assert "gpu" not in json.dumps(container(job)["resources"])
    assert "tolerations" not in job["spec"]["template"]["spec"]


def test_a_cpu_limit_is_set_only_when_asked_for():
    assert "cpu" not in container(b.build_job(make_tj(), CFG))["resources"]["limits"]
    res = container(b.build_job(make_tj(resources={"cpu": "2", "cpuLimit": "3500m"}), CFG))["resources"]
    assert res["requests"]["cpu"] == "2" and res["limits"]["cpu"] == "3500m"


def shm_volume(job: dict) -> dict:
    return next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm")


def test_shm_volume_memory_backed_and_memory_accounts_for_it():
    job = b.build_job(make_tj(training={"workers": 8, "batch": 16, "imgsz": 640}, resources={"memory": "16Gi"}), CFG)
    vol = shm_volume(job)
    assert vol["emptyDir"]["medium"] == "Memory"
    assert vol["emptyDir"]["sizeLimit"] == "896Mi"  # the docstring's worked example
    assert {"name": "shm", "mountPath": "/dev/shm"} in container(job)["volumeMounts"]
    res = container(job)["resources"]
    assert res["limits"]["memory"] == res["requests"]["memory"] == f"{16 * 1024 + 896}Mi"


def test_shm_override():
    job = b.build_job(make_tj(resources={"shmSize": "8Gi", "memory": "32Gi"}), CFG)
    assert shm_volume(job)["emptyDir"]["sizeLimit"] == "8192Mi"
    assert container(job)["resources"]["limits"]["memory"] == f"{(32 + 8) * 1024}Mi"


# --- scheduling and Kueue --------------------------------------------------------------------------------


def test_scheduling_passthrough():
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    tj = make_tj(
        scheduling={
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "affinity": affinity,
            "priorityClassName": "high",
        }
    )
    pod = b.build_job(tj, CFG)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "high"
    assert pod["tolerations"][0] == {
        "key": "dedicated",
        "operator": "Equal",
        "value": "ml",
        "effect": "NoSchedule",
    }
    assert len(pod["tolerations"]) == 2  # plus the GPU one


def test_kueue_label_and_suspended_creation():
    job = b.build_job(make_tj(queueName="gpu-queue"), CFG)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["suspend"] is True
    assert "suspend" not in b.job_mutable_patch(make_tj(queueName="gpu-queue"))["spec"]
    assert "kueue.x-k8s.io/queue-name" not in b.build_job(make_tj(), CFG)["metadata"]["labels"]


def test_suspend_and_mutable_patch():
    assert b.build_job(make_tj(suspend=True), CFG)["spec"]["suspend"] is True
    assert b.job_mutable_patch(make_tj(suspend=True, activeDeadlineSeconds=10)) == {
        "spec": {"suspend": True, "activeDeadlineSeconds": 10, "ttlSecondsAfterFinished": None}
    }


# --- RBAC ------------------------------------------------------------------------------------------------


def test_rbac_is_least_privilege_and_owned():
    tj = make_tj()
    sa, role, rb = b.build_service_account(tj, CFG), b.build_role(tj), b.build_role_binding(tj)
    for obj in (sa, role, rb):
        assert obj["metadata"]["name"] == "helmets-trainer"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    rules = {tuple(r["resources"]): r for r in role["rules"]}
    assert rules[("trainingjobs/status",)]["verbs"] == ["get", "patch"]
    assert rules[("trainingjobs",)]["verbs"] == ["get"]
    for r in role["rules"]:
        assert r["resourceNames"] == ["helmets"]
        assert r["apiGroups"] == ["yolo-operator.io"]
    assert "secrets" not in json.dumps(role)
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "helmets-trainer",
    }
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "helmets-trainer", "namespace": "team-a"}]
    kinds = [o["kind"] for o in b.build_children(tj, CFG)]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "Job"]


# --- model resolution ------------------------------------------------------------------------------------


def test_resolve_static_sources():
    for src, want in (
        ({"hub": "yolo11n.pt"}, "yolo11n.pt"),
        ({"uri": "https://example.com/w.pt"}, "https://example.com/w.pt"),
        ({"yaml": "yolov8n.yaml"}, "yolov8n.yaml"),
    ):
        assert b.starting_model(ModelSource.model_validate(src), None).model.text == want


def test_resolve_from_training_job():
    src = ModelSource.model_validate({"fromTrainingJob": "prev"})
    missing = b.starting_model(src, None)
    assert missing.model is None and missing.reason == "SourceTrainingJobNotFound" and not missing.terminal
    running = b.starting_model(src, {"status": {"phase": "Training"}})
    assert running.model is None and running.reason == "WaitingForSourceTrainingJob" and not running.terminal
    assert "prev" in running.message and "Training" in running.message
    failed = b.starting_model(src, {"status": {"phase": "Failed"}})
    assert failed.terminal and failed.reason == "SourceTrainingJobFailed"
    done = b.starting_model(src, {"status": {"phase": "Succeeded", "artifacts": {"bestWeights": "s3://r/best.pt"}}})
    assert done.model.text == "s3://r/best.pt" and done.model.name == "prev"
    no_weights = b.starting_model(src, {"status": {"phase": "Succeeded"}})
    assert no_weights.model is None and no_weights.terminal


def test_operator_instance_label_propagates_to_children():
    tj = make_tj()
    tj["metadata"]["labels"] = {"yolo-operator.io/operator-instance": "staging"}
    assert b.operator_instance(tj) == "staging"
    job = b.build_job(tj, CFG)
    assert job["metadata"]["labels"][b.LABEL_OPERATOR_INSTANCE] == "staging"
    assert job["spec"]["template"]["metadata"]["labels"][b.LABEL_OPERATOR_INSTANCE] == "staging"
    for obj in (b.build_service_account(tj, CFG), b.build_role(tj), b.build_role_binding(tj)):
        assert obj["metadata"]["labels"][b.LABEL_OPERATOR_INSTANCE] == "staging"
    plain = b.build_job(make_tj(), CFG)
    assert b.LABEL_OPERATOR_INSTANCE not in plain["metadata"]["labels"]
    assert b.operator_instance(make_tj()) is None


def test_trainer_flush_budget_ends_before_the_grace_period():
    job = b.build_job(_grace_tj(), OperatorConfig())
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert 0 < int(env["YOLO_TRAINER_GRACE_SECONDS"]) < pod["terminationGracePeriodSeconds"]


def _grace_tj():
    return {
        "apiVersion": "yolo-operator.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "g", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"model": {"yaml": "yolov8n.yaml"}, "dataset": "s3://datasets/d/", "output": "s3://runs/o/"},
    }


@pytest.mark.parametrize(
    "q", ["0", "1", "500m", "2", "8Gi", "1.5G", "64Mi", "1e3", "1E", "100k", "0.5Ki", "3n", "7u", "1.25Ti", ".5", "+1M"]
)
def test_parse_quantity_agrees_with_the_kubernetes_client(q):
    from kubernetes.utils.quantity import parse_quantity as reference

    assert b.parse_quantity(q) == reference(q)


@pytest.mark.parametrize("q", ["", "Gi", "1ki", "1 Gi", "1GiB", "abc", "1.2.3"])
def test_parse_quantity_rejects_what_kubernetes_rejects(q):
    with pytest.raises(ValueError):
        b.parse_quantity(q)


# --- first-hour settings: pull secrets, extra environment, workload identity, CPU jobs ---------------------


def env_of(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(job)["env"]}


def test_image_pull_secrets_from_the_chart_and_the_trainingjob():
    cfg = OperatorConfig(trainer_image_pull_secrets=("registry-a", "registry-b"))
    job = b.build_job(make_tj(imagePullSecrets=[{"name": "registry-b"}, {"name": "mine"}]), cfg)
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "registry-a"}, {"name": "registry-b"}, {"name": "mine"}
    ]  # fmt: skip
    assert "imagePullSecrets" not in b.build_job(make_tj(), CFG)["spec"]["template"]["spec"]


def test_extra_env_chart_then_trainingjob_after_the_operators_own():
    cfg = OperatorConfig(trainer_env=({"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                                      {"name": "NO_PROXY", "value": ".svc"}))  # fmt: skip
    role = {"name": "AWS_ROLE_ARN", "valueFrom": {"secretKeyRef": {"name": "r", "key": "arn"}}}
    tj = make_tj(env=[{"name": "NO_PROXY", "value": ".svc,minio"}, role])
    job = b.build_job(tj, cfg)
    names = [e["name"] for e in container(job)["env"]]
    env = env_of(job)
    assert env["HTTPS_PROXY"]["value"] == "http://proxy:3128"
    assert env["NO_PROXY"]["value"] == ".svc,minio"  # the TrainingJob's wins
    assert env["AWS_ROLE_ARN"]["valueFrom"] == {"secretKeyRef": {"name": "r", "key": "arn"}}
    assert names.index("HTTPS_PROXY") > names.index(CONFIG_ENV)
    assert len(names) == len(set(names))


def test_every_env_name_the_operator_sets_is_reserved():
    from yolo_contract.trainer_config import RESERVED_ENV, reserved_env_problem

    tj = make_tj(resources={"gpus": 0}, s3={"endpoint": "https://s3.example", "caBundle": {"name": "ca"},
                                            "credentialsSecretRef": {"name": "keys"}})  # fmt: skip
    for name in env_of(b.build_job(tj, CFG)):
        assert reserved_env_problem(name), f"{name} is set by the operator but not reserved"
    assert "NVIDIA_VISIBLE_DEVICES" in RESERVED_ENV
    with pytest.raises(ValueError, match=r"trainer\.env: AWS_SECRET_ACCESS_KEY is set by the operator"):
        OperatorConfig(trainer_env=({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"},))


def test_each_incarnation_of_a_trainingjob_gets_its_own_run_prefix():
    """Its metadata.uid reaches the trainer: a re-created job (new uid) never resumes nor overwrites the old one."""
    first = b.build_trainer_config(make_tj(), CFG, HUB)
    again = make_tj()
    again["metadata"]["uid"] = "uid-5678"
    second = b.build_trainer_config(again, CFG, HUB)
    assert first.uid == "uid-1234" and first.job_prefix.endswith("/team-a/helmets/uid-1234")
    assert second.job_prefix.endswith("/team-a/helmets/uid-5678")
    env = env_of(b.build_job(again, CFG))
    assert TrainerConfig.model_validate_json(env[CONFIG_ENV]["value"]).uid == "uid-5678"


def test_simulated_gpus_only_where_the_operator_says_so_and_the_pod_knows_its_node():
    assert b.build_trainer_config(make_tj(), CFG, HUB).simulated_gpus is False
    bed = OperatorConfig.from_env({"YOLO_OPERATOR_SIMULATED_GPUS": "true"})
    assert bed.simulated_gpus is True and OperatorConfig.from_env({}).simulated_gpus is False
    assert b.build_trainer_config(make_tj(), bed, HUB).simulated_gpus is True
    env = env_of(b.build_job(make_tj(), CFG))
    assert env["YOLO_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_cpu_jobs_see_no_gpu():
    assert env_of(b.build_job(make_tj(resources={"gpus": 0}), CFG))["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(b.build_job(make_tj(resources={"gpus": 1}), CFG))


def test_service_account_annotations_for_workload_identity():
    cfg = OperatorConfig(trainer_service_account_annotations={"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/a"})
    sa = b.build_service_account(make_tj(), cfg)
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::1:role/a"
    mine = b.build_service_account(make_tj(serviceAccountAnnotations={"eks.amazonaws.com/role-arn": "b"}), cfg)
    assert mine["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "b"
    assert "annotations" not in b.build_service_account(make_tj(), CFG)["metadata"]


def test_hub_mirror_reaches_the_trainer():
    cfg = OperatorConfig(hub_mirror="s3://mirror/ultralytics")
    assert b.build_trainer_config(make_tj(), cfg, HUB).hub_mirror == "s3://mirror/ultralytics"


def test_operator_config_reads_first_hour_settings_from_env():
    cfg = OperatorConfig.from_env({
        "YOLO_OPERATOR_TRAINER_IMAGE_PULL_SECRETS": "a, b",
        "YOLO_OPERATOR_TRAINER_ENV": '[{"name": "HTTPS_PROXY", "value": "http://p:3128"}]',
        "YOLO_OPERATOR_TRAINER_SA_ANNOTATIONS": '{"eks.amazonaws.com/role-arn": "arn"}',
        "YOLO_OPERATOR_HUB_MIRROR": "s3://mirror/hub",
    })  # fmt: skip
    assert cfg.trainer_image_pull_secrets == ("a", "b")
    assert cfg.trainer_env[0]["name"] == "HTTPS_PROXY"
    assert cfg.trainer_service_account_annotations == {"eks.amazonaws.com/role-arn": "arn"}
    assert cfg.hub_mirror == "s3://mirror/hub"


def test_data_connection_reaches_the_pod_only_through_secret_key_refs():
    tj = make_tj(dataset="helmets/", output="runs/", s3={"dataConnection": {"name": "aws-connection-minio"}})
    env = env_of(b.build_job(tj, CFG))
    for key in ("AWS_S3_ENDPOINT", "AWS_DEFAULT_REGION", "AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "aws-connection-minio", key
        assert "value" not in env[key]
    cfg = TrainerConfig.model_validate_json(env[CONFIG_ENV]["value"])
    assert cfg.s3.data_connection and cfg.dataset == "helmets/"
    resolved = cfg.with_data_connection({"AWS_S3_BUCKET": "team-bucket", "AWS_S3_ENDPOINT": "minio.example:9000",
                                         "AWS_DEFAULT_REGION": "eu-west-1"})  # fmt: skip
    assert resolved.dataset == "s3://team-bucket/helmets/" and resolved.output == "s3://team-bucket/runs/"
    assert resolved.s3.endpoint == "https://minio.example:9000" and resolved.s3.region == "eu-west-1"
    assert resolved.job_prefix == "s3://team-bucket/runs/team-a/helmets/uid-1234"
    absolute = cfg.model_copy(update={"dataset": "s3://other/d.zip"}).with_data_connection({"AWS_S3_BUCKET": "b"})
    assert absolute.dataset == "s3://other/d.zip"
    with pytest.raises(ValueError, match="AWS_S3_BUCKET is empty"):
        cfg.with_data_connection({})


def _with_meta(tj: dict, labels: dict | None = None, annotations: dict | None = None) -> dict:
    tj["metadata"]["labels"] = labels or {}
    tj["metadata"]["annotations"] = annotations or {}
    return tj


def test_user_labels_and_annotations_propagate_to_job_and_pod():
    tj = _with_meta(
        make_tj(queueName="gpu-queue"),
        labels={"kueue.x-k8s.io/priority-class": "high", "cost-centre": "cc-42", "team": "vision"},
        annotations={"example.com/ticket": "ML-7"},
    )
    job = b.build_job(tj, CFG)
    jl, pl = job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]
    assert jl["kueue.x-k8s.io/priority-class"] == "high" and jl["cost-centre"] == "cc-42" and jl["team"] == "vision"
    # Kueue reads its labels from the Job; the pod gets the user's other labels
    assert "kueue.x-k8s.io/priority-class" not in pl and "kueue.x-k8s.io/queue-name" not in pl
    assert pl["cost-centre"] == "cc-42" and pl[b.LABEL_TRAINING_JOB] == "helmets"
    assert job["metadata"]["annotations"] == {"example.com/ticket": "ML-7", b.ANNOTATION_MODEL: "yolov8n.pt"}
    assert job["spec"]["template"]["metadata"]["annotations"] == {"example.com/ticket": "ML-7"}
    # the RBAC children keep only the operator's labels
    assert "cost-centre" not in b.build_role(tj)["metadata"]["labels"]


def test_reserved_labels_and_annotations_do_not_propagate():
    tj = _with_meta(
        make_tj(queueName="from-spec"),
        labels={
            b.LABEL_TRAINING_JOB: "someone-else",
            b.LABEL_OPERATOR_INSTANCE: "x",
            "app.kubernetes.io/name": "spoof",
            "kueue.x-k8s.io/queue-name": "from-label",
            "batch.kubernetes.io/job-name": "spoof",
        },
        annotations={
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            "yolo-operator.io/last-handled-configuration": "{...}",
            "kopf.zalando.org/touch-dummy": "x",
            "deployment.kubernetes.io/revision": "3",
        },
    )
    tj["metadata"]["labels"].pop(b.LABEL_OPERATOR_INSTANCE)  # (the instance label is honoured, not copied)
    job = b.build_job(tj, CFG)
    jl = job["metadata"]["labels"]
    assert jl[b.LABEL_TRAINING_JOB] == "helmets" and jl["app.kubernetes.io/name"] == "yolo-trainer"
    assert jl["kueue.x-k8s.io/queue-name"] == "from-spec"
    assert "batch.kubernetes.io/job-name" not in jl
    assert job["metadata"]["annotations"] == {b.ANNOTATION_MODEL: "yolov8n.pt"}  # the operator's own, no other
    assert "annotations" not in job["spec"]["template"]["metadata"]


def test_without_user_metadata_the_job_is_unchanged():
    job = b.build_job(make_tj(), CFG)
    assert job["metadata"]["labels"] == b.labels("helmets")
    assert job["spec"]["template"]["metadata"] == {"labels": b.labels("helmets")}


@pytest.mark.parametrize(
    ("suspend", "active", "expected"),
    [
        (True, None, {"spec": {"active": False}}),  # spec.active defaults to true
        (True, True, {"spec": {"active": False}}),
        (True, False, None),
        (False, False, {"spec": {"active": True}}),  # hand it back to Kueue; Kueue unsuspends the Job
        (False, True, None),
        (False, None, None),
    ],
)
def test_suspend_with_kueue_goes_to_the_workload(suspend, active, expected):
    wl = {"metadata": {"name": "job-helmets-train-abcde"}, "spec": {} if active is None else {"active": active}}
    assert kueue.workload_active_patch(make_tj(queueName="q", suspend=suspend), wl) == expected
    assert kueue.workload_active_patch(make_tj(suspend=suspend), wl) is None  # no Kueue: the Job's suspend
    assert kueue.workload_active_patch(make_tj(queueName="q", suspend=suspend), None) is None
    # the Job's suspend stays Kueue's either way
    assert "suspend" not in b.job_mutable_patch(make_tj(queueName="q", suspend=suspend))["spec"]
