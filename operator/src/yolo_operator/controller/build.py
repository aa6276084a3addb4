"""Pure builders: TrainingJob (+ OperatorConfig) -> the Kubernetes objects that run it.

Nothing here talks to a cluster; every function is deterministic in its inputs, so the handlers can call
them again after a restart or a redelivered event and get byte-identical objects with the same names.

Objects per TrainingJob ``<name>``, all owned by it (controller=true, blockOwnerDeletion=true) so the
garbage collector removes them with it:

* ServiceAccount / Role / RoleBinding ``<name>-trainer``: the pod may ``get`` its own TrainingJob and
  ``get``/``patch`` its ``status`` subresource - that one name, nothing else.
* Job ``<name>-train``: one pod, ``restartPolicy: Never``, podFailurePolicy from the trainer's exit codes.
* With ``spec.resources.nodes`` > 1 (multi-node): the Job is an Indexed Job of that many pods (``<job>-<index>``
  hostnames), and a headless Service ``<name>-rdzv`` (created before the Job) gives them stable DNS names for
  torchrun's rendezvous at index 0: ``<job>-0.<service>`` (``multi_node_env``, docs/distributed.md).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from yolo_contract import API_VERSION, GROUP, KIND, MAX_NAME, PLURAL, VERSION, sizing
from yolo_contract.exitcodes import DISRUPTION, GANG, NON_RETRIABLE
from yolo_contract.model_source import HubModel, ModelRef, TrainingJobModel, UriModel, YamlModel
from yolo_contract.trainer_config import (
    COLLECTIVE_TIMEOUT_ENV,
    CONFIG_ENV,
    DATA_CONNECTION_KEYS,
    NODE_NAME_ENV,
    S3Config,
    StatusTarget,
    TrainerConfig,
)

from yolo_operator.api.reasons import (
    FAILED,
    REASON_SOURCE_FAILED,
    REASON_SOURCE_HAS_NO_WEIGHTS,
    REASON_SOURCE_NOT_FOUND,
    REASON_WAITING_FOR_SOURCE,
    SUCCEEDED,
)
from yolo_operator.api.types import ModelSource, TrainingJob, TrainingJobSpec, gang_stopped
from yolo_operator.controller import kueue
from yolo_operator.runtime.config import OperatorConfig

# --- labels and names -----------------------------------------------------------------------------------
LABEL_TRAINING_JOB = "yolo-operator.io/training-job"
#: Optional label on a TrainingJob naming the operator instance that owns it (YOLO_OPERATOR_INSTANCE);
#: copied to every child object so each instance watches only its own Jobs and pods.
LABEL_OPERATOR_INSTANCE = "yolo-operator.io/operator-instance"
#: The model the Job's trainer starts from (``ModelRef.text``, status.model), written once when the Job is made:
#: a Job adopted after a crash tells its model by this, not by its trainer's configuration.
ANNOTATION_MODEL = "yolo-operator.io/model"
MANAGED_BY = "yolo-operator"
CONTAINER_NAME = "trainer"
JOB_SUFFIX = "train"
RBAC_SUFFIX = "trainer"
RENDEZVOUS_SUFFIX = "rdzv"
#: torchrun's (and Kubeflow's) rendezvous port at node 0; the collective's own ports are ephemeral (see docs).
RENDEZVOUS_PORT = 29500
#: The label the Job controller puts on an Indexed Job's pods: their index, PET_NODE_RANK (downward API).
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
#: torchrun's static rendezvous waits this long for every node (its default is 600 s), then fails: a pod that
#: never comes (unschedulable, its image not pulled) ends the others' run with PeerLost instead of a hang.
RENDEZVOUS_TIMEOUT_SECONDS = 600
#: One collective may wait this long for a rank that stopped answering (Ultralytics sets 3 hours for NCCL): a
#: peer lost without a closed connection (a node gone dark) is noticed within it.
COLLECTIVE_TIMEOUT_SECONDS = 600

# --- pod layout ------------------------------------------------------------------------------------------
WORK_DIR = "/tmp"  # emptyDir: the only writable place besides /dev/shm (readOnlyRootFilesystem)
WORK_VOLUME = "work"
# Ephemeral storage the container uses beside the /tmp emptyDir: its logs (the kubelet keeps 5 x 10 MiB by
# default) and, without readOnlyRootFilesystem, its writable layer.
EPHEMERAL_STORAGE_MARGIN_MIB = 256
TRAINER_WORK_DIR = "/tmp/yolo-trainer"
CA_DIR = "/etc/yolo-trainer/ca"
CA_FILE = "ca.crt"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_GRACE_SECONDS = 120  # the trainer flushes a checkpoint on SIGTERM, then exits 75
TRAINER_GRACE_MARGIN_SECONDS = 20  # left for the trainer to exit after its flush budget

MIB = sizing.MIB


def child_name(tj_name: str, suffix: str) -> str:
    """``<tj_name>-<suffix>``; when that exceeds 63 characters the name is cut and an 8-hex hash of the
    full TrainingJob name is inserted, so different long names never collide and the result is stable."""
    name = f"{tj_name}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(tj_name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{tj_name[:keep].rstrip('-.')}-{digest}-{suffix}"


def _dns_label(tj_name: str, suffix: str, limit: int) -> str:
    """``<tj_name>-<suffix>`` as a DNS label of at most ``limit`` characters: dots (a TrainingJob name may have
    them) become dashes, and a name that changed or had to be cut carries an 8-hex hash of the full name."""
    base = tj_name.replace(".", "-")
    name = f"{base}-{suffix}"
    if base == tj_name and len(name) <= limit:
        return name
    digest = hashlib.sha256(tj_name.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-')}-{digest}-{suffix}".lstrip("-")


def job_name(tj_name: str, nodes: int = 1) -> str:
    """The Job's name. With several nodes its pods' hostnames are ``<job>-<index>``, DNS labels of 63 characters
    at most: the name leaves room for the largest index (and has no dots). One node: ``child_name`` as always."""
    if nodes <= 1:
        return child_name(tj_name, JOB_SUFFIX)
    return _dns_label(tj_name, JOB_SUFFIX, MAX_NAME - 1 - len(str(nodes - 1)))


def service_name(tj_name: str) -> str:
    """The headless Service of a multi-node job: a DNS-1035 label (a letter first, as a Service name must be)."""
    name = _dns_label(tj_name, RENDEZVOUS_SUFFIX, MAX_NAME)
    return name if name[0].isalpha() else "r-" + _dns_label(tj_name, RENDEZVOUS_SUFFIX, MAX_NAME - 2)


def nodes_of(tj: dict[str, Any] | TrainingJob) -> int:
    """spec.resources.nodes of a TrainingJob, its body or its view (1 when unset or not a number)."""
    if isinstance(tj, TrainingJob):
        return tj.spec.resources.nodes
    spec = tj.get("spec") if isinstance(tj.get("spec"), dict) else {}
    res = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
    n = res.get("nodes")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def max_gang_restarts(tj: dict[str, Any] | TrainingJob) -> int:
    """spec.maxGangRestarts of a TrainingJob, its body or its view (the API's default when unset)."""
    if isinstance(tj, TrainingJob):
        return tj.spec.max_gang_restarts
    spec = tj.get("spec") if isinstance(tj.get("spec"), dict) else {}
    n = spec.get("maxGangRestarts")
    default = TrainingJobSpec.model_fields["max_gang_restarts"].default
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else default


def rbac_name(tj_name: str) -> str:
    return child_name(tj_name, RBAC_SUFFIX)


def labels(tj_name: str, instance: str | None = None) -> dict[str, str]:
    """Labels of every object the operator creates for a TrainingJob (and of the training pod)."""
    out = {
        "app.kubernetes.io/name": "yolo-trainer",
        "app.kubernetes.io/instance": tj_name,
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/part-of": "yolo-operator",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_TRAINING_JOB: tj_name,
    }
    if instance:
        out[LABEL_OPERATOR_INSTANCE] = instance
    return out


def operator_instance(tj: dict[str, Any] | TrainingJob) -> str | None:
    """The operator instance a TrainingJob belongs to (its yolo-operator.io/operator-instance label)."""
    meta = tj.metadata if isinstance(tj, TrainingJob) else (tj.get("metadata") or {})
    return (meta.get("labels") or {}).get(LABEL_OPERATOR_INSTANCE) or None


def _tj(tj: dict[str, Any] | TrainingJob) -> TrainingJob:
    return tj if isinstance(tj, TrainingJob) else TrainingJob.from_body(tj)


def owner_reference(tj: dict[str, Any] | TrainingJob) -> dict[str, Any]:
    t = _tj(tj)
    if not t.uid:
        raise ValueError("the TrainingJob has no metadata.uid; owner references need one")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": t.name,
        "uid": t.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(t: TrainingJob, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": t.namespace,
        "labels": {**labels(t.name, operator_instance(t)), **(extra_labels or {})},
        "ownerReferences": [owner_reference(t)],
    }


# --- user metadata that propagates to the Job and its pod -----------------------------------------------
#: Prefixes of label and annotation keys that never propagate: the operator's own (its reserved labels and
#: kopf's progress annotations live under yolo-operator.io/), kopf's defaults, kubectl's and the API server's
#: bookkeeping. Copying these would make the Job look like a TrainingJob to kopf or to kubectl apply.
RESERVED_PREFIXES: tuple[str, ...] = (
    "yolo-operator.io/",
    "kopf.zalando.org/",
    "kubectl.kubernetes.io/",
    "kubernetes.io/",
    "k8s.io/",
    "app.kubernetes.io/",  # the operator sets name/instance/component/part-of/managed-by on every child
    "batch.kubernetes.io/",
    "controller-uid",
    "job-name",
)
#: Keys the operator derives from the spec; a label with the same key on the TrainingJob does not override it.
_DERIVED_LABELS: frozenset[str] = frozenset({kueue.LABEL_KUEUE_QUEUE})


def _reserved(key: str) -> bool:
    # "kubernetes.io/" also matches "*.kubernetes.io/" prefixes (e.g. kubectl.kubernetes.io, batch.kubernetes.io)
    prefix = key.split("/", 1)[0] + "/" if "/" in key else ""
    return (
        key in _DERIVED_LABELS
        or any(key.startswith(p) for p in RESERVED_PREFIXES)
        or prefix.endswith(".kubernetes.io/")
        or prefix.endswith(".k8s.io/")
    )


def propagated_labels(t: TrainingJob) -> dict[str, str]:
    """The TrainingJob's own labels that its Job carries (Kueue's priority-class label, cost-centre and team
    labels, ...): all but the reserved keys (``RESERVED_PREFIXES``) and kueue.x-k8s.io/queue-name, which
    comes from spec.queueName. Copied when the Job is created; later label edits do not propagate."""
    return {k: str(v) for k, v in (t.metadata.get("labels") or {}).items() if not _reserved(k)}


def propagated_annotations(t: TrainingJob) -> dict[str, str]:
    """The TrainingJob's annotations that its Job and pod carry: all but the reserved keys (kubectl's
    last-applied-configuration, kopf's and the operator's own progress annotations, ...)."""
    return {k: str(v) for k, v in (t.metadata.get("annotations") or {}).items() if not _reserved(k)}


def pod_template_labels(t: TrainingJob) -> dict[str, str]:
    """Labels of the training pod: the propagated ones but Kueue's (Kueue reads them from the Job; on a pod
    they would ask Kueue's pod integration, where enabled, to manage it too), then the operator's."""
    user = {k: v for k, v in propagated_labels(t).items() if not kueue.is_kueue_label(k)}
    return {**user, **labels(t.name, operator_instance(t))}


# --- model resolution ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelResolution:
    """``model`` is set when resolved; otherwise ``reason``/``message`` say why and ``terminal`` whether
    waiting can ever help (the source failed) or not."""

    model: ModelRef | None
    reason: str = ""
    message: str = ""
    terminal: bool = False


def static_model(source: ModelSource) -> ModelRef | None:
    """The trainer's model for hub/uri/yaml sources, of the same kind; None for fromTrainingJob (needs the
    source's status)."""
    if source.hub is not None:
        return HubModel(hub=source.hub)
    if source.uri is not None:
        return UriModel(uri=source.uri)
    if source.yaml is not None:
        return YamlModel(yaml=source.yaml)
    return None


def starting_model(source: ModelSource, source_tj: dict[str, Any] | None) -> ModelResolution:
    """Resolves ``spec.model`` to what the trainer loads. ``source_tj`` is the TrainingJob named by
    ``fromTrainingJob`` (None when it does not exist); it resolves to its ``status.artifacts.bestWeights``
    once it Succeeded, with the job itself (namespace, name, uid) and its metrics.json for the lineage."""
    model = static_model(source)
    if model is not None:
        return ModelResolution(model)
    name = source.from_training_job
    if source_tj is None:
        return ModelResolution(
            None,
            REASON_SOURCE_NOT_FOUND,
            f"TrainingJob {name!r} (spec.model.fromTrainingJob) does not exist yet; waiting for it",
        )
    status = source_tj.get("status") or {}
    phase = status.get("phase")
    artifacts = status.get("artifacts") if isinstance(status.get("artifacts"), dict) else {}
    best = artifacts.get("bestWeights")
    if phase == FAILED:
        return ModelResolution(
            None,
            REASON_SOURCE_FAILED,
            f"TrainingJob {name!r} (spec.model.fromTrainingJob) failed; it will never produce weights",
            terminal=True,
        )
    if phase != SUCCEEDED:
        return ModelResolution(
            None,
            REASON_WAITING_FOR_SOURCE,
            f"waiting for TrainingJob {name!r} (spec.model.fromTrainingJob) to succeed; it is {phase or 'not started'}",
        )
    if not best:
        return ModelResolution(
            None,
            REASON_SOURCE_HAS_NO_WEIGHTS,
            f"TrainingJob {name!r} succeeded but reports no status.artifacts.bestWeights",
            terminal=True,
        )
    meta = source_tj.get("metadata") or {}
    try:
        parent = TrainingJobModel(uri=best, namespace=meta.get("namespace") or "default", name=name,
                                  uid=meta.get("uid"), metrics=artifacts.get("metrics"))  # fmt: skip
    except ValueError as e:
        return ModelResolution(None, REASON_SOURCE_HAS_NO_WEIGHTS,
                               f"TrainingJob {name!r} reports bestWeights {best!r}, not an s3:// URI: {e}",
                               terminal=True)  # fmt: skip
    return ModelResolution(parent)


_DECIMAL_EXPONENTS = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_EXPONENTS = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)")


def parse_quantity(q: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``8Gi``, ``1.5G``, ``1e3``) as a number."""
    m = _QUANTITY.fullmatch(str(q).strip())
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {q!r}")
    number, suffix = Decimal(m.group(1)), m.group(2)
    if suffix in _BINARY_EXPONENTS:
        return number * 2 ** _BINARY_EXPONENTS[suffix]
    return number.scaleb(_DECIMAL_EXPONENTS[suffix])


def quantity_bytes(q: str) -> int:
    return math.ceil(parse_quantity(q))


def mib(n_bytes: int) -> str:
    return f"{math.ceil(n_bytes / MIB)}Mi"


def scratch_bytes(t: TrainingJob, config: OperatorConfig | None = None) -> int | None:
    """spec.resources.scratchSize in bytes, else the operator's default (chart trainer.scratchSize); None when
    neither is set."""
    size = t.spec.resources.scratch_size or (config.default_scratch_size if config else None)
    return quantity_bytes(size) if size else None


def work_volume(t: TrainingJob, config: OperatorConfig | None = None) -> dict[str, Any]:
    """The /tmp volume: an emptyDir (sized when a scratch size applies), or with scratchStorageClassName a
    generic ephemeral volume, a ReadWriteOnce claim of that class created and deleted with the pod."""
    res = t.spec.resources
    size = scratch_bytes(t, config)
    if size is None:
        return {"name": WORK_VOLUME, "emptyDir": {}}
    if res.scratch_storage_class_name is None:
        return {"name": WORK_VOLUME, "emptyDir": {"sizeLimit": mib(size)}}
    claim = {
        "metadata": {"labels": labels(t.name, operator_instance(t))},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": res.scratch_storage_class_name,
            "resources": {"requests": {"storage": mib(size)}},
        },
    }
    return {"name": WORK_VOLUME, "ephemeral": {"volumeClaimTemplate": claim}}


def pod_shm_bytes(t: TrainingJob, config: OperatorConfig) -> int:
    """spec.resources.shmSize if set, else what the trainer's DataLoader workers need (yolo_contract.sizing)."""
    if t.spec.resources.shm_size:
        return quantity_bytes(t.spec.resources.shm_size)
    tr = t.spec.training
    return sizing.pod_shm_bytes(
        tr.workers, t.spec.resources.gpus, tr.batch, tr.imgsz, min_mib=config.shm_min_mib, max_mib=config.shm_max_mib
    )


# --- trainer config --------------------------------------------------------------------------------------


def build_trainer_config(tj: dict[str, Any] | TrainingJob, config: OperatorConfig, model: ModelRef) -> TrainerConfig:
    """The TrainerConfig the pod receives in $YOLO_TRAINER_CONFIG (credentials are never part of it)."""
    t = _tj(tj)
    s = t.spec
    s3 = s.s3
    return TrainerConfig(
        namespace=t.namespace,
        name=t.name,
        uid=t.uid,
        model=model,
        dataset=s.dataset,
        output=s.output,
        s3=S3Config(
            endpoint=s3.endpoint if s3 else None,
            region=s3.region if s3 else None,  # unset: the trainer asks S3 for the bucket's region
            insecure_skip_tls_verify=bool(s3 and s3.insecure_skip_tls_verify),
            ca_bundle=f"{CA_DIR}/{CA_FILE}" if s3 and s3.ca_bundle else None,
            data_connection=bool(s3 and s3.data_connection),
            retry_budget_seconds=s3.retry_budget_seconds if s3 else None,
        ),
        training=s.training,
        export_formats=list(s.export_formats),
        gpus=s.resources.gpus,
        simulated_gpus=config.simulated_gpus,
        offline=config.offline,
        hub_mirror=config.hub_mirror,
        status=StatusTarget(namespace=t.namespace, name=t.name, group=GROUP, version=VERSION, plural=PLURAL),
        work_dir=TRAINER_WORK_DIR,
        scratch_bytes=scratch_bytes(t, config),
        max_dataset_bytes=quantity_bytes(s.resources.max_dataset_size) if s.resources.max_dataset_size else None,
        max_dataset_files=s.resources.max_dataset_files,
    )


# --- Job -------------------------------------------------------------------------------------------------


def pod_failure_policy(nodes: int = 1) -> dict[str, Any]:
    """Non-retriable exit codes fail the Job at once; exit 75 (checkpointed after SIGTERM) and pods with
    the DisruptionTarget condition (eviction, preemption, drain) are replaced without counting. With several
    nodes, exit 23 (PeerLost: this pod's ranks lost a peer in another pod) is replaced without counting too: the
    lost pod's own end says why (counted or not), and the operator bounds the gang restarts
    (spec.maxGangRestarts). On one node 23 counts like any failure (no peer can be lost there)."""
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": sorted(NON_RETRIABLE),
                },
            },
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": sorted(DISRUPTION),
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    if nodes > 1:
        policy["rules"].insert(2, {
            "action": "Ignore",
            "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": sorted(GANG)},
        })  # fmt: skip
    return policy


def _tolerations(t: TrainingJob) -> list[dict[str, Any]]:
    sched = t.spec.scheduling
    out = [tol.model_dump(by_alias=True, exclude_none=True) for tol in (sched.tolerations or [])] if sched else []
    res = t.spec.resources
    if res.gpus > 0:
        gpu_tol = {"key": res.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_tol not in out:
            out.append(gpu_tol)
    return out


def _env(t: TrainingJob, config: OperatorConfig, model: ModelRef) -> list[dict[str, Any]]:
    cfg = build_trainer_config(t, config, model)
    env: list[dict[str, Any]] = [
        {"name": CONFIG_ENV, "value": cfg.to_env_json()},
        {"name": "HOME", "value": f"{WORK_DIR}/home"},
        {"name": "YOLO_CONFIG_DIR", "value": f"{WORK_DIR}/ultralytics"},
        {"name": "MPLCONFIGDIR", "value": f"{WORK_DIR}/matplotlib"},
        {"name": "XDG_CACHE_HOME", "value": f"{WORK_DIR}/.cache"},
        {"name": "TORCH_HOME", "value": f"{WORK_DIR}/torch"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # The trainer's checkpoint flush on SIGTERM must end before the kubelet's SIGKILL.
        {"name": "YOLO_TRAINER_GRACE_SECONDS", "value": str(TERMINATION_GRACE_SECONDS - TRAINER_GRACE_MARGIN_SECONDS)},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": NODE_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},  # named on GPU failures
    ]
    s3 = t.spec.s3
    if s3 and s3.credentials_secret_ref:
        ref = s3.credentials_secret_ref
        for var, key in (
            ("AWS_ACCESS_KEY_ID", ref.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", ref.secret_access_key_key),
        ):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}})
    if s3 and s3.data_connection:
        # Every key through secretKeyRef: the operator never reads the Secret. Only the region may be missing.
        for key in DATA_CONNECTION_KEYS:
            ref: dict[str, Any] = {"name": s3.data_connection.name, "key": key}
            if key == "AWS_DEFAULT_REGION":
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    if s3 and s3.ca_bundle:
        env.append({"name": "AWS_CA_BUNDLE", "value": f"{CA_DIR}/{CA_FILE}"})
    if t.spec.resources.nodes > 1:
        env += multi_node_env(t)
    if t.spec.resources.gpus == 0:
        # The image says NVIDIA_VISIBLE_DEVICES=all for the NVIDIA runtime; a CPU job must see no GPU at all.
        env.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    # Extra environment last: the operator's defaults, then the TrainingJob's (same name: the job's wins).
    extra = {v["name"]: v for v in config.trainer_env}
    extra.update({v.name: v.model_dump(by_alias=True, exclude_none=True) for v in t.spec.env or []})
    return env + list(extra.values())


def multi_node_env(t: TrainingJob) -> list[dict[str, Any]]:
    """torchrun's settings for one pod of a multi-node job, the ``PET_*`` variables Kubeflow Trainer's torch
    runtime sets too (the trainer adds PET_NPROC_PER_NODE itself): node count, this pod's node rank (its
    completion index, from the label the Job controller sets), node 0's stable DNS name through the headless
    Service, the rendezvous port, and the bounded waits (rendezvous, one collective)."""
    nodes = t.spec.resources.nodes
    master = f"{job_name(t.name, nodes)}-0.{service_name(t.name)}"
    index = {"fieldRef": {"fieldPath": f"metadata.labels['{LABEL_COMPLETION_INDEX}']"}}
    return [
        {"name": "PET_NNODES", "value": str(nodes)},
        {"name": "PET_NODE_RANK", "valueFrom": index},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        {"name": "PET_RDZV_CONF", "value": f"timeout={RENDEZVOUS_TIMEOUT_SECONDS}"},
        {"name": COLLECTIVE_TIMEOUT_ENV, "value": str(COLLECTIVE_TIMEOUT_SECONDS)},
    ]


def build_job(
    tj: dict[str, Any] | TrainingJob, config: OperatorConfig, model: ModelRef | None = None
) -> dict[str, Any]:
    """The batch/v1 Job running the trainer. ``model`` is the resolved model (see ``starting_model``); it
    may be omitted for hub/uri/yaml sources."""
    t = _tj(tj)
    s = t.spec
    if model is None:
        model = static_model(s.model)
        if model is None:
            raise ValueError("spec.model.fromTrainingJob must be resolved first (starting_model)")
    res = s.resources
    shm = pod_shm_bytes(t, config)
    memory = quantity_bytes(res.memory) + shm  # tmpfs pages are charged to the pod's memory cgroup
    requests: dict[str, str] = {"cpu": res.cpu, "memory": mib(memory)}
    limits: dict[str, str] = {"memory": mib(memory)}
    if res.cpu_limit is not None:
        limits["cpu"] = res.cpu_limit  # a ResourceQuota on limits.cpu needs one (or a LimitRange default)
    if res.gpus > 0:
        requests[res.gpu_resource_name] = str(res.gpus)
        limits[res.gpu_resource_name] = str(res.gpus)
    scratch = scratch_bytes(t, config)
    if scratch is not None and res.scratch_storage_class_name is None:
        # The emptyDir is node disk: the scheduler counts it only when requested, and the kubelet then evicts
        # only this pod when it overflows, not its neighbours under disk pressure.
        ephemeral = mib(scratch + EPHEMERAL_STORAGE_MARGIN_MIB * MIB)
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = ephemeral

    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": mib(shm)}},
        work_volume(t, config),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": WORK_VOLUME, "mountPath": WORK_DIR},
    ]
    if s.s3 and s.s3.ca_bundle:
        volumes.append(
            {
                "name": "ca-bundle",
                "configMap": {
                    "name": s.s3.ca_bundle.name,
                    "items": [{"key": s.s3.ca_bundle.key, "path": CA_FILE}],
                },
            }
        )
        mounts.append({"name": "ca-bundle", "mountPath": CA_DIR, "readOnly": True})

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": s.image or config.trainer_image,
        "env": _env(t, config, model),
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": config.read_only_root_filesystem,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pull = s.image_pull_policy or config.image_pull_policy
    if pull:
        container["imagePullPolicy"] = pull
    pull_secrets = dict.fromkeys([*config.trainer_image_pull_secrets, *(r.name for r in s.image_pull_secrets or [])])

    pod_spec: dict[str, Any] = {
        "serviceAccountName": rbac_name(t.name),
        "automountServiceAccountToken": True,  # the trainer patches its TrainingJob's status
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        # No runAsUser/fsGroup: OpenShift's restricted-v2 SCC assigns them from the namespace range.
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    tolerations = _tolerations(t)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    sched = s.scheduling
    if sched:
        if sched.node_selector:
            pod_spec["nodeSelector"] = dict(sched.node_selector)
        if sched.affinity:
            pod_spec["affinity"] = sched.affinity
        if sched.priority_class_name:
            pod_spec["priorityClassName"] = sched.priority_class_name

    # The operator's labels win over the user's; queue-name comes from spec.queueName only.
    extra_labels = {**propagated_labels(t), **labels(t.name, operator_instance(t)), **kueue.job_labels(s.queue_name)}
    annotations = propagated_annotations(t)
    template_meta: dict[str, Any] = {"labels": pod_template_labels(t)}
    if annotations:
        template_meta["annotations"] = annotations
    nodes = res.nodes
    job_spec: dict[str, Any] = {
        "parallelism": nodes,
        "completions": nodes,
        "backoffLimit": s.backoff_limit,
        "podFailurePolicy": pod_failure_policy(nodes),
        "podReplacementPolicy": "Failed",  # never two GPU pods at once: replace only after termination
        "suspend": kueue.suspended_at_creation(s.suspend, s.queue_name),
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if nodes > 1:
        # One pod per index, hostnames <job>-<index> under the headless Service: node 0 is reachable by name
        # before any pod is ready. A pod lost is recreated for its index (podFailurePolicy), never a second one.
        job_spec["completionMode"] = "Indexed"
        pod_spec["subdomain"] = service_name(t.name)
    if s.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = s.active_deadline_seconds
    if s.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = s.ttl_seconds_after_finished
    metadata = _metadata(t, job_name(t.name, nodes), extra_labels)
    metadata["annotations"] = {**annotations, ANNOTATION_MODEL: model.text}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def job_mutable_patch(tj: dict[str, Any] | TrainingJob) -> dict[str, Any]:
    """Merge patch carrying the TrainingJob's mutable fields to its Job. With Kueue (queueName) the
    operator leaves the Job's ``suspend`` to Kueue, which unsuspends an admitted Job whatever the user set:
    spec.suspend goes to the Workload's spec.active instead (``kueue.workload_active_patch``)."""
    if isinstance(tj, TrainingJob):
        s = tj.spec
        deadline, ttl, suspend, queue = s.active_deadline_seconds, s.ttl_seconds_after_finished, s.suspend, s.queue_name
        stopped = False
    else:  # a full body or the operator's compact view (status.trainingjob_view keeps these fields)
        raw = tj.get("spec") if isinstance(tj.get("spec"), dict) else {}
        deadline, ttl = raw.get("activeDeadlineSeconds"), raw.get("ttlSecondsAfterFinished")
        suspend, queue = raw.get("suspend") is True, raw.get("queueName")
        stopped = gang_stopped(tj)
    spec: dict[str, Any] = {"activeDeadlineSeconds": deadline, "ttlSecondsAfterFinished": ttl}
    if not queue:
        spec["suspend"] = suspend or stopped  # a gang failed by the operator stays stopped
    return {"spec": spec}


# --- per-job RBAC ----------------------------------------------------------------------------------------


def build_service_account(tj: dict[str, Any] | TrainingJob, config: OperatorConfig) -> dict[str, Any]:
    """The job's ServiceAccount; its annotations (workload identity, e.g. eks.amazonaws.com/role-arn) are the
    operator's defaults, then the TrainingJob's."""
    t = _tj(tj)
    meta = _metadata(t, rbac_name(t.name))
    annotations = {**config.trainer_service_account_annotations,
                   **(t.spec.service_account_annotations or {})}  # fmt: skip
    if annotations:
        meta["annotations"] = {**meta.get("annotations", {}), **annotations}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def build_role(tj: dict[str, Any] | TrainingJob) -> dict[str, Any]:
    """Least privilege for the trainer: its own TrainingJob (get) and status (get, patch), by name."""
    t = _tj(tj)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(t, rbac_name(t.name)),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [t.name],
                "verbs": ["get", "patch"],
            },
            {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [t.name], "verbs": ["get"]},
        ],
    }


def build_role_binding(tj: dict[str, Any] | TrainingJob) -> dict[str, Any]:
    t = _tj(tj)
    name = rbac_name(t.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(t, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": t.namespace}],
    }


def build_service(tj: dict[str, Any] | TrainingJob) -> dict[str, Any]:
    """The headless Service of a multi-node job: DNS names ``<job>-<index>.<service>`` for its pods, published
    before they are ready (the rendezvous happens before any readiness), selecting only this Job's pods. Built
    from the TrainingJob, its body or the operator's compact view (re-created from that when deleted)."""
    meta = tj.metadata if isinstance(tj, TrainingJob) else (tj.get("metadata") or {})
    name, uid = meta["name"], meta.get("uid")
    if not uid:
        raise ValueError("the TrainingJob has no metadata.uid; owner references need one")
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid, "controller": True,
             "blockOwnerDeletion": True}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name),
            "namespace": meta.get("namespace") or "default",
            "labels": labels(name, operator_instance(tj)),
            "ownerReferences": [owner],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_JOB_NAME: job_name(name, nodes_of(tj))},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }


def build_children(
    tj: dict[str, Any] | TrainingJob, config: OperatorConfig, model: ModelRef | None = None
) -> list[dict[str, Any]]:
    """Everything to create, in creation order (the Job last, so its pod finds its ServiceAccount and, with
    several nodes, its Service)."""
    t = _tj(tj)
    service = [build_service(t)] if t.spec.resources.nodes > 1 else []
    rbac = [build_service_account(t, config), build_role(t), build_role_binding(t)]
    return [*rbac, *service, build_job(t, config, model)]
