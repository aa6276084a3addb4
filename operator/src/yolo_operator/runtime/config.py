"""Operator configuration, read from the environment (the Deployment / Helm chart sets these)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yolo_contract.trainer_config import reserved_env_problem

from yolo_operator.api.types import QUANTITY

DEFAULT_TRAINER_IMAGE = "ghcr.io/yolo-operator/yolo-trainer:0.1.0"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: The ConsolePlugin an OLM install hands the operator (the bundle generator writes it into the CSV;
#: yolo_operator.runtime.console_plugin applies it).
CONSOLE_PLUGIN_ENV = "YOLO_OPERATOR_CONSOLE_PLUGIN"


def console_plugin_problem(template: dict[str, Any]) -> str | None:
    """What keeps a ConsolePlugin template from being applied; None when it can be."""
    service = ((template.get("spec") or {}).get("backend") or {}).get("service")
    if not (template.get("metadata") or {}).get("name") or not isinstance(service, dict):
        return f"{CONSOLE_PLUGIN_ENV} needs metadata.name and spec.backend.service"
    return None


class OperatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer_image: str = Field(
        DEFAULT_TRAINER_IMAGE, description="Default trainer image ($YOLO_OPERATOR_TRAINER_IMAGE)."
    )
    namespaces: tuple[str, ...] = Field((), description="Namespaces to watch; empty = cluster-wide.")
    instance: str | None = Field(
        None,
        description="Operator instance name ($YOLO_OPERATOR_INSTANCE): handle only TrainingJobs labelled "
        "yolo-operator.io/operator-instance=<instance>. Unset: handle only TrainingJobs without that label.",
    )
    log_level: str = Field("INFO", description="Python log level.")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus /metrics port; 0 disables.")
    health_port: int = Field(8081, ge=0, le=65535, description="/healthz port; 0 disables.")
    bind_address: str = Field(
        "0.0.0.0", description="Address of the /healthz and /metrics servers; 127.0.0.1 outside a pod."
    )
    image_pull_policy: str | None = Field(None, description="Default pull policy; unset = Kubernetes default.")
    read_only_root_filesystem: bool = Field(True, description="Trainer container's readOnlyRootFilesystem.")
    offline: bool = Field(False, description="Tell the trainer never to reach the internet.")
    simulated_gpus: bool = Field(
        False,
        description="Test beds only ($YOLO_OPERATOR_SIMULATED_GPUS, the chart's trainer.simulatedGpus): nodes "
        "advertise GPUs they do not have, so a GPU job that sees no CUDA device trains on CPU instead of failing.",
    )
    default_scratch_size: str | None = Field(
        None,
        pattern=QUANTITY,
        description="spec.resources.scratchSize of a TrainingJob that sets none ($YOLO_OPERATOR_DEFAULT_SCRATCH_SIZE, "
        "the chart's trainer.scratchSize): its /tmp gets a sizeLimit and an ephemeral-storage request. Unset: "
        "such a /tmp is unbounded.",
    )
    shm_min_mib: int = Field(256, ge=64, description="Lower clamp of the computed /dev/shm size (MiB).")
    shm_max_mib: int = Field(16384, ge=64, description="Upper clamp of the computed /dev/shm size (MiB).")
    trainer_image_pull_secrets: tuple[str, ...] = Field(
        (), description="Pull secrets of every trainer pod ($YOLO_OPERATOR_TRAINER_IMAGE_PULL_SECRETS, comma list)."
    )
    trainer_env: tuple[dict[str, Any], ...] = Field(
        (), description="Extra environment of every trainer container ($YOLO_OPERATOR_TRAINER_ENV, a JSON list)."
    )
    trainer_service_account_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of every job's ServiceAccount ($YOLO_OPERATOR_TRAINER_SA_ANNOTATIONS, JSON).",
    )
    hub_mirror: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        description="s3:// prefix mirroring Ultralytics hub weights ($YOLO_OPERATOR_HUB_MIRROR): spec.model.hub "
        "names are fetched from <prefix>/<name> before the internet is tried.",
    )

    leader_election: bool = Field(
        False,
        description="Run as one of several replicas ($YOLO_OPERATOR_LEADER_ELECTION, the chart's "
        "leaderElection.enabled): only the holder of a coordination.k8s.io Lease reconciles "
        "(yolo_operator.runtime.leader). "
        "Off: this process reconciles alone, as one replica must.",
    )
    leader_election_namespace: str | None = Field(
        None,
        description="Namespace of the Lease ($YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE; the chart sets the "
        "pod's own). Unset: the ServiceAccount's namespace when in a pod.",
    )
    leader_election_id: str | None = Field(
        None,
        description="Name of the Lease ($YOLO_OPERATOR_LEADER_ELECTION_ID; the chart sets the release's full "
        "name). Unset: yolo-operator, or yolo-operator-<instance>.",
    )
    pod_name: str | None = Field(
        None, description="This pod's name ($YOLO_OPERATOR_POD_NAME, downward API): the Lease holder's prefix."
    )
    lease_duration_seconds: float = Field(
        15, gt=0, description="How long a standby waits after the lease's last renew before taking it over."
    )
    renew_deadline_seconds: float = Field(
        10, gt=0, description="How long the leader keeps trying to renew before it exits (crash-only)."
    )
    retry_period_seconds: float = Field(2, gt=0, description="How often the leader renews and standbys look.")
    console_plugin: dict[str, Any] | None = Field(
        None,
        description="The console plugin's ConsolePlugin (metadata and spec) the leader applies, its backend Service "
        "in the operator's namespace ($YOLO_OPERATOR_CONSOLE_PLUGIN, JSON; yolo_operator.runtime.console_plugin). "
        "The OLM bundle sets it (OLM creates no ConsolePlugin from a bundle); the Helm chart creates its own.",
    )

    @model_validator(mode="after")
    def _election_timing(self) -> OperatorConfig:
        if not self.leader_election:
            return self
        from yolo_operator.runtime.lease import Timing

        problem = Timing(self.lease_duration_seconds, self.renew_deadline_seconds, self.retry_period_seconds).problem()
        if problem:
            raise ValueError(f"leader election: {problem} (the chart's leaderElection.* values)")
        return self

    def timing(self) -> Any:
        """The election's durations (a yolo_operator.runtime.lease.Timing)."""
        from yolo_operator.runtime.lease import Timing

        return Timing(self.lease_duration_seconds, self.renew_deadline_seconds, self.retry_period_seconds)

    @property
    def lease_name(self) -> str:
        if self.leader_election_id:
            return self.leader_election_id
        return f"yolo-operator-{self.instance}" if self.instance else "yolo-operator"

    @staticmethod
    def pod_namespace(sa_namespace_file: str = SERVICE_ACCOUNT_NAMESPACE) -> str | None:
        """The namespace this pod runs in (its ServiceAccount's); None outside a pod."""
        try:
            with open(sa_namespace_file) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def lease_namespace(self, sa_namespace_file: str = SERVICE_ACCOUNT_NAMESPACE) -> str:
        """The Lease's namespace; a clear error when none is known (outside a pod, unset)."""
        if self.leader_election_namespace:
            return self.leader_election_namespace
        if (namespace := self.pod_namespace(sa_namespace_file)) is None:
            raise ValueError(
                "leader election needs the Lease's namespace: set YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE "
                "(outside a pod there is no ServiceAccount namespace to default to)"
            )
        return namespace

    @field_validator("console_plugin")
    @classmethod
    def _console_plugin_shape(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """A ConsolePlugin that cannot be applied fails at start, not in the leader's request."""
        if v is not None and (problem := console_plugin_problem(v)):
            raise ValueError(problem)
        return v

    @field_validator("trainer_env")
    @classmethod
    def _env_names(cls, v: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        for var in v:
            problem = reserved_env_problem(str(var.get("name", "")))
            if problem:
                raise ValueError(f"trainer.env: {problem}")
        return v

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("YOLO_OPERATOR_TRAINER_IMAGE"):
            values["trainer_image"] = env["YOLO_OPERATOR_TRAINER_IMAGE"]
        ns = env.get("YOLO_OPERATOR_NAMESPACES", "")
        values["namespaces"] = tuple(n.strip() for n in ns.split(",") if n.strip())
        if env.get("YOLO_OPERATOR_INSTANCE"):
            values["instance"] = env["YOLO_OPERATOR_INSTANCE"].strip()
        if env.get("YOLO_OPERATOR_LOG_LEVEL"):
            values["log_level"] = env["YOLO_OPERATOR_LOG_LEVEL"].upper()
        for key, var in (
            ("metrics_port", "YOLO_OPERATOR_METRICS_PORT"),
            ("health_port", "YOLO_OPERATOR_HEALTH_PORT"),
        ):
            if env.get(var):
                values[key] = int(env[var])
        if env.get("YOLO_OPERATOR_BIND_ADDRESS"):
            values["bind_address"] = env["YOLO_OPERATOR_BIND_ADDRESS"].strip()
        if env.get("YOLO_OPERATOR_IMAGE_PULL_POLICY"):
            values["image_pull_policy"] = env["YOLO_OPERATOR_IMAGE_PULL_POLICY"]
        for key, var in (
            ("read_only_root_filesystem", "YOLO_OPERATOR_READ_ONLY_ROOT_FS"),
            ("offline", "YOLO_OPERATOR_OFFLINE"),
            ("simulated_gpus", "YOLO_OPERATOR_SIMULATED_GPUS"),
            ("leader_election", "YOLO_OPERATOR_LEADER_ELECTION"),
        ):
            if env.get(var):
                values[key] = env[var].strip().lower() in ("1", "true", "yes", "on")
        if env.get("YOLO_OPERATOR_TRAINER_IMAGE_PULL_SECRETS"):
            names = env["YOLO_OPERATOR_TRAINER_IMAGE_PULL_SECRETS"].split(",")
            values["trainer_image_pull_secrets"] = tuple(n.strip() for n in names if n.strip())
        if env.get("YOLO_OPERATOR_TRAINER_ENV"):
            values["trainer_env"] = tuple(json.loads(env["YOLO_OPERATOR_TRAINER_ENV"]))
        if env.get("YOLO_OPERATOR_TRAINER_SA_ANNOTATIONS"):
            values["trainer_service_account_annotations"] = json.loads(env["YOLO_OPERATOR_TRAINER_SA_ANNOTATIONS"])
        if env.get("YOLO_OPERATOR_DEFAULT_SCRATCH_SIZE", "").strip():
            values["default_scratch_size"] = env["YOLO_OPERATOR_DEFAULT_SCRATCH_SIZE"].strip()
        if env.get(CONSOLE_PLUGIN_ENV, "").strip():
            values["console_plugin"] = json.loads(env[CONSOLE_PLUGIN_ENV])
        if env.get("YOLO_OPERATOR_HUB_MIRROR"):
            values["hub_mirror"] = env["YOLO_OPERATOR_HUB_MIRROR"].strip()
        for key, var in (
            ("leader_election_namespace", "YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE"),
            ("leader_election_id", "YOLO_OPERATOR_LEADER_ELECTION_ID"),
            ("pod_name", "YOLO_OPERATOR_POD_NAME"),
        ):
            if env.get(var, "").strip():
                values[key] = env[var].strip()
        for key, var in (
            ("lease_duration_seconds", "YOLO_OPERATOR_LEASE_DURATION_SECONDS"),
            ("renew_deadline_seconds", "YOLO_OPERATOR_RENEW_DEADLINE_SECONDS"),
            ("retry_period_seconds", "YOLO_OPERATOR_RETRY_PERIOD_SECONDS"),
        ):
            if env.get(var, "").strip():
                values[key] = float(env[var])
        return cls.model_validate(values)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def namespaces_named(self) -> bool:
        """Every watched namespace is named outright (no kopf glob or negation such as ``team-*``, ``!kube-*``):
        nothing to discover by listing namespaces."""
        return bool(self.namespaces) and not any(set(n) & set("*?[]!") for n in self.namespaces)
