"""kopf wiring: the watches, the indexes and the one Controller (controller/act.py) that reconciles.

Every watch event (a TrainingJob's, its Job's, its pods', its Kueue Workload's, its Job's FailedCreate Event)
only queues the TrainingJob's key: the controller's reconcile observes the TrainingJob from the indexes
(``runtime/indexes.py``), decides (``controller/decide.py``, pure) and acts. The handlers return at once, so
kopf holds no event body while the operator is busy, and whatever the event, the same state makes the same
decision.

No handler is a create, update, resume or delete handler, so kopf neither keeps progress annotations on
TrainingJobs nor puts a finalizer on them: deleting one works while the operator is down, and the garbage
collector removes its Job, pods and RBAC via owner references. On a restart kopf's initial listing sends
every TrainingJob's event: each is reconciled (created, adopted or brought up to date) from scratch.

With leader election (several replicas, ``leader.py``) a standby runs the same watches and indexes and queues
the same keys, but its controller's workers start only when it acquires the Lease: until then it writes nothing.

Every handler is a coroutine on kopf's event loop, and every request goes through one HTTP session
(``kube.Client``): no handler threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import kopf

from yolo_operator import GROUP, PLURAL, VERSION
from yolo_operator.api.reasons import PENDING
from yolo_operator.api.types import clean_status
from yolo_operator.controller.act import POOL_SIZE, STATUS_COALESCE_SECONDS, Controller
from yolo_operator.controller.build import LABEL_OPERATOR_INSTANCE, LABEL_TRAINING_JOB
from yolo_operator.controller.derive import needs_children
from yolo_operator.controller.kueue import KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS, workload_jobs
from yolo_operator.runtime import console_plugin, heap, kube, leader, lease, metrics
from yolo_operator.runtime.config import CONSOLE_PLUGIN_ENV, OperatorConfig
from yolo_operator.runtime.indexes import POD_REFUSAL_SELECTOR, Observed, is_pod_refusal

log = logging.getLogger("yolo_operator")

# The operator's one controller, made by the startup handler (kopf's handlers are module functions).
CONTROLLER: Controller | None = None
_BACKGROUND: set[asyncio.Task] = set()
# With leader election (several replicas): this process's candidacy for the Lease (leader.py).
ELECTOR: leader.LeaderElector | None = None


def controller() -> Controller:
    if CONTROLLER is None:
        raise RuntimeError("the operator has not started")
    return CONTROLLER


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "yolo-operator"
    settings.peering.standalone = True
    if config.namespaces_named:
        # A namespaced install may not list namespaces, and kopf retries that refusal through its error backoffs
        # (about 55 s) before it falls back to the names it was given: no scanning starts the watches at once.
        # Scanning also watches CRDs; the operator's own CRD is installed before it, and Kueue is detected at start.
        settings.scanning.disabled = True
    # Server-side filtering: only this instance's TrainingJobs, and the Jobs and pods created for them.
    mine = f"{LABEL_OPERATOR_INSTANCE}={config.instance}" if config.instance else f"!{LABEL_OPERATOR_INSTANCE}"
    settings.watching.label_selectors[GROUP, PLURAL] = mine
    settings.watching.label_selectors["batch", "v1", "jobs"] = f"{LABEL_TRAINING_JOB},{mine}"
    settings.watching.label_selectors["v1", "pods"] = f"{LABEL_TRAINING_JOB},{mine}"
    settings.watching.label_selectors["v1", "services"] = f"{LABEL_TRAINING_JOB},{mine}"
    settings.watching.field_selectors["v1", "events"] = POD_REFUSAL_SELECTOR
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    return kube.login()  # the same credentials for kopf's watches and the controller's requests


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global CONTROLLER, ELECTOR
    config = OperatorConfig.from_env()
    configure(settings, config)
    CONTROLLER = Controller(config, kube.Client(pool_size=POOL_SIZE))
    await CONTROLLER.detect_kueue()  # before the first reconcile: a job with queueName needs the answer
    if config.leader_election:
        # A standby watches and queues keys like the leader but starts no worker, so it writes nothing; it
        # starts them the moment it acquires the Lease. Its own HTTP client: a renew must never wait behind
        # the reconciles for one of the 32 connections of the controller's pool.
        ELECTOR = leader.LeaderElector(
            kube.Client(pool_size=2), config.lease_namespace(), config.lease_name,
            lease.default_identity(config.pod_name), config.timing(),
            on_started_leading=lambda: lead(config), on_change=lambda lead: metrics.LEADER.set(int(lead)),
        )  # fmt: skip
        metrics.LEADER.set(0)
        ELECTOR.start()
    else:
        lead(config)
        metrics.LEADER.set(1)
    metrics.serve(config.metrics_port, config.bind_address)
    queue = CONTROLLER.queue
    _background(heap.trim_after_activity(lambda: queue.added, heap.malloc_trim()))
    log.info(
        "yolo-operator started: trainer image %s, %s",
        config.trainer_image,
        "cluster-wide" if config.clusterwide else f"namespaces {','.join(config.namespaces)}",
    )


def lead(config: OperatorConfig) -> None:
    """What only the leader does: the controller's workers (tasks of the operator's whole run, not of any event)
    and, in an OLM install, the console plugin's ConsolePlugin (one request, its own task)."""
    CONTROLLER.start()
    namespace = config.pod_namespace()
    if config.console_plugin and not namespace:
        log.warning("%s is set but this process runs in no pod: no namespace for the ConsolePlugin's Service, "
                    "none applied", CONSOLE_PLUGIN_ENV)  # fmt: skip
    elif config.console_plugin:
        _background(console_plugin.apply(CONTROLLER.client, config.console_plugin, namespace))


def _background(coro: Coroutine[Any, Any, None]) -> None:
    """A task of the operator's run (the console plugin's one request, the heap trimmer), cancelled at cleanup."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)  # the loop holds tasks weakly
    task.add_done_callback(_BACKGROUND.discard)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    """On SIGTERM: no more takeover, then the workers stop, then the leader releases the Lease (so a standby
    takes over within a retry period, and never while this process still writes)."""
    global CONTROLLER, ELECTOR
    for task in list(_BACKGROUND):
        task.cancel()
    if ELECTOR is not None:
        await ELECTOR.stop()
    if CONTROLLER is not None:
        await CONTROLLER.stop()
        CONTROLLER = None
    if ELECTOR is not None:
        await ELECTOR.release()
        await ELECTOR.client.close()
        ELECTOR = None


def _enqueue(key: tuple[str, str], kwargs: dict[str, Any], after: float = 0.0, first: bool = False) -> Controller:
    c = controller()
    c.watching(Observed.of(kwargs, c.overlay))
    c.enqueue(key, after=after, first=first)
    return c


@kopf.on.event(GROUP, VERSION, PLURAL)
async def trainingjob_event(event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str, **kwargs: Any) -> None:
    """Queues the TrainingJob (at once, and ahead of status updates while it needs its Job: a new one's Job is
    created by its first reconcile), and keeps the by-phase gauge and the job's yolo_trainingjob_* series current."""
    with metrics.timed("trainingjob_event"):
        if event.get("type") == "DELETED":
            controller().forget((namespace, name))
            return
        status = clean_status(body.get("status"))
        status["phase"] = status.get("phase") or PENDING
        metrics.observe_phase(namespace, name, status["phase"])
        metrics.JOBS.observe(namespace, name, status)
        _enqueue((namespace, name), kwargs, first=needs_children({"metadata": body.get("metadata"), "status": status}))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
async def job_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    with metrics.timed("job_event"):
        _enqueue((namespace, body["metadata"]["labels"][LABEL_TRAINING_JOB]), kwargs, STATUS_COALESCE_SECONDS)


@kopf.on.event("v1", "pods", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
async def pod_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    with metrics.timed("pod_event"):
        _enqueue((namespace, body["metadata"]["labels"][LABEL_TRAINING_JOB]), kwargs, STATUS_COALESCE_SECONDS)


@kopf.on.event("v1", "services", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
async def service_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    """A multi-node job's headless Service changed or was deleted: its TrainingJob is queued (and re-creates it)."""
    with metrics.timed("service_event"):
        _enqueue((namespace, body["metadata"]["labels"][LABEL_TRAINING_JOB]), kwargs, STATUS_COALESCE_SECONDS)


@kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS)
async def workload_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    """A Kueue Workload changed (admitted, evicted, preempted, requeued): its Job's TrainingJob is queued (its
    status follows the Workload, and spec.suspend is kept on the Workload's spec.active)."""
    with metrics.timed("workload_event"):
        c = controller()
        obs = Observed.of(kwargs, c.overlay)
        for ref in workload_jobs(body):
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
