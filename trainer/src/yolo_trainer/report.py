"""Progress reporting into the TrainingJob's status subresource (JSON merge patch).

Where it goes: in-cluster config when ``KUBERNETES_SERVICE_HOST`` is set (the pod's service account, whose
Role allows patching this one TrainingJob's status), else ``$KUBECONFIG`` if set, else nowhere (log only).
A failing report must never fail training: every error is logged and swallowed, and each PATCH has a short
timeout so an unreachable API server costs seconds, not the run.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Protocol

from yolo_contract.progress import TrainerReport
from yolo_contract.trainer_config import StatusTarget

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


class Reporter(Protocol):
    def report(self, report: TrainerReport) -> None: ...


class LogReporter:
    """Reports nowhere but the log (no status target or no cluster)."""

    def report(self, report: TrainerReport) -> None:
        log.debug("status %s", json.dumps(report.to_patch()))


class KubeStatusReporter:
    def __init__(self, api_client, target: StatusTarget, timeout: float = 5.0):
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.target = target
        self.timeout = timeout
        self.failures = 0

    def report(self, report: TrainerReport) -> None:
        t = self.target
        try:
            self.api.patch_namespaced_custom_object_status(
                t.group,
                t.version,
                t.namespace,
                t.plural,
                t.name,
                report.to_patch(),
                _content_type=MERGE_PATCH,
                _request_timeout=self.timeout,
            )
            if self.failures:
                log.info("status reporting works again after %d failures", self.failures)
            self.failures = 0
        except Exception as e:  # never let reporting kill training
            self.failures += 1
            if self.failures <= 3 or self.failures % 20 == 0:
                log.warning(
                    "could not report status to %s/%s (%d failures): %s",
                    t.namespace,
                    t.name,
                    self.failures,
                    _short(e),
                )


def _short(e: Exception) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


def kube_api_client(environ: dict[str, str] | None = None):
    """A kubernetes ApiClient: in-cluster, else $KUBECONFIG; None when neither is configured."""
    env = os.environ if environ is None else environ
    from kubernetes import client, config

    if env.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
    elif env.get("KUBECONFIG"):
        cfg = client.Configuration()
        config.load_kube_config(config_file=env["KUBECONFIG"], client_configuration=cfg)
    else:
        return None
    cfg.retries = 1  # urllib3 retries; a missed report is replaced by the next one anyway
    return client.ApiClient(cfg)


def make_reporter(target: StatusTarget | None, environ: dict[str, str] | None = None) -> Reporter:
    if target is None:
        return LogReporter()
    try:
        api_client = kube_api_client(environ)
        if api_client is None:
            log.info("no cluster configured (KUBERNETES_SERVICE_HOST/KUBECONFIG unset): status is logged only")
            return LogReporter()
        return KubeStatusReporter(api_client, target)
    except Exception as e:
        log.warning("status reporting disabled: %s", _short(e))
        return LogReporter()
