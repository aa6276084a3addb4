"""kopf wiring: the watches, the indexes and the one Controller (controller.py) that reconciles.

Every watch event (a TrainingJob's, its Job's, its pods', its Kueue Workload's, its Job's FailedCreate Event)
only queues the TrainingJob's key: the controller's reconcile observes the TrainingJob from the indexes
(``observed.py``), decides (``reconcile.py``, pure) and acts. The handlers return at once, so kopf holds no
event body while the operator is busy, and whatever the event, the same state makes the same decision.

No handler is a create, update, resume or delete handler, so kopf neither keeps progress annotations on
TrainingJobs nor puts a finalizer on them: deleting one works while the operator is down, and the garbage
collector removes its Job, pods and RBAC via owner references. On a restart kopf's initial listing sends
every TrainingJob's event: each is reconciled (created, adopted or brought up to date) from scratch.

Every handler is a coroutine on kopf's event loop, and every request goes through one HTTP session
(``kube.Client``): no handler threads.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from yolo_operator import GROUP, PLURAL, VERSION, kube, metrics
from yolo_operator.api import clean_status
from yolo_operator.builders import (
    KUEUE_GROUP,
    KUEUE_VERSION,
    KUEUE_WORKLOADS,
    LABEL_OPERATOR_INSTANCE,
    LABEL_TRAINING_JOB,
)
from yolo_operator.config import OperatorConfig
from yolo_operator.controller import POOL_SIZE, STATUS_COALESCE_SECONDS, Controller
from yolo_operator.observed import Observed, is_pod_refusal
from yolo_operator.reasons import PENDING

log = logging.getLogger("yolo_operator")

# The operator's one controller, made by the startup handler (kopf's handlers are module functions).
CONTROLLER: Controller | None = None


def controller() -> Controller:
    if CONTROLLER is None:
        raise RuntimeError("the operator has not started")
    return CONTROLLER


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "yolo-operator"
    settings.peering.standalone = True
    # Server-side filtering: only this instance's TrainingJobs, and the Jobs and pods created for them.
    mine = f"{LABEL_OPERATOR_INSTANCE}={config.instance}" if config.instance else f"!{LABEL_OPERATOR_INSTANCE}"
    settings.watching.label_selectors[GROUP, PLURAL] = mine
    settings.watching.label_selectors["batch", "v1", "jobs"] = f"{LABEL_TRAINING_JOB},{mine}"
    settings.watching.label_selectors["v1", "pods"] = f"{LABEL_TRAINING_JOB},{mine}"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    return kube.login()  # the same credentials for kopf's watches and the controller's requests


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global CONTROLLER
    config = OperatorConfig.from_env()
    configure(settings, config)
    CONTROLLER = Controller(config, kube.Client(pool_size=POOL_SIZE))
    await CONTROLLER.detect_kueue()  # before the first reconcile: a job with queueName needs the answer
    CONTROLLER.start()  # its workers: tasks of the operator's whole run, not of any event
    metrics.serve(config.metrics_port, config.bind_address)
    log.info(
        "yolo-operator started: trainer image %s, %s",
        config.trainer_image,
        "cluster-wide" if config.clusterwide else f"namespaces {','.join(config.namespaces)}",
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    global CONTROLLER
    if CONTROLLER is not None:
        await CONTROLLER.stop()
        CONTROLLER = None


def _enqueue(key: tuple[str, str], kwargs: dict[str, Any], after: float = 0.0) -> Controller:
    c = controller()
    c.watching(Observed.of(kwargs, c.overlay))
    c.enqueue(key, after=after)
    return c


@kopf.on.event(GROUP, VERSION, PLURAL)
async def trainingjob_event(event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str, **kwargs: Any) -> None:
    """Queues the TrainingJob (at once: a new one's Job is created by its first reconcile), and keeps the
    by-phase gauge current."""
    with metrics.timed("trainingjob_event"):
        if event.get("type") == "DELETED":
            controller().forget((namespace, name))
            return
        status = clean_status(body.get("status"))
        metrics.observe_phase(namespace, name, status.get("phase") or PENDING)
        _enqueue((namespace, name), kwargs)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
async def job_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    with metrics.timed("job_event"):
        _enqueue((namespace, body["metadata"]["labels"][LABEL_TRAINING_JOB]), kwargs, STATUS_COALESCE_SECONDS)


@kopf.on.event("v1", "pods", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
async def pod_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    with metrics.timed("pod_event"):
        _enqueue((namespace, body["metadata"]["labels"][LABEL_TRAINING_JOB]), kwargs, STATUS_COALESCE_SECONDS)


@kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS)
async def workload_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    """A Kueue Workload changed (admitted, evicted, preempted, requeued): its Job's TrainingJob is queued (its
    status follows the Workload, and spec.suspend is kept on the Workload's spec.active)."""
    with metrics.timed("workload_event"):
        c = controller()
        obs = Observed.of(kwargs, c.overlay)
        for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
            if ref.get("kind") != "Job":
                continue
            tj_name = obs.trainingjob_of_job(namespace, ref.get("name"), ref.get("uid"))
            if tj_name is not None:
                _enqueue((namespace, tj_name), kwargs, STATUS_COALESCE_SECONDS)


@kopf.on.event("v1", "events", when=is_pod_refusal)
async def refusal_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    """The Job controller could not create a Job's pod (the API server refused it: a ResourceQuota, a
    LimitRange, an admission webhook): the Job's TrainingJob is queued, to show Stalled/PodRefused."""
    with metrics.timed("refusal_event"):
        involved = body.get("involvedObject") or {}
        obs = Observed.of(kwargs, controller().overlay)
        tj_name = obs.trainingjob_of_job(namespace, involved.get("name"), involved.get("uid"))
        if tj_name is not None:
            _enqueue((namespace, tj_name), kwargs, STATUS_COALESCE_SECONDS)
