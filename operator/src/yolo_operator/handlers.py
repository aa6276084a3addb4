"""kopf handlers: thin glue between the cluster and the pure functions in builders.py and status.py.

* TrainingJob created / operator resumed -> ``ensure``: resolve the model, create the ServiceAccount, Role,
  RoleBinding and Job if absent (deterministic names; 409 AlreadyExists is success), record jobName.
* Mutable spec fields changed -> ``sync_mutable``: patch suspend/activeDeadlineSeconds/ttl onto the Job.
* Job, pod or TrainingJob events -> ``sync_status``: derive phase/conditions from the Job and its pods as
  the watches show them (kopf indexes, ``observed.py``); an API request only when the status changes.

Every handler is a coroutine on kopf's event loop, and every request goes through one HTTP session
(``kube.Client``): no handler threads.

No handler is an ``on.delete`` handler, so kopf never puts a finalizer on TrainingJobs: deleting one works
while the operator is down, and the garbage collector removes its Job, pods and RBAC via owner references.
Handler progress lives in annotations (``yolo-operator.io/...``), never in ``status``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import kopf
from kopf._core.actions import execution as kopf_execution  # cause_var: see detached_context
from pydantic import ValidationError
from yolo_contract.trainer_config import CONFIG_ENV

from yolo_operator import GROUP, PLURAL, VERSION, kube, metrics, observed
from yolo_operator import reasons as R
from yolo_operator.api import TrainingJob, clean_status, describe_errors
from yolo_operator.builders import (
    LABEL_OPERATOR_INSTANCE,
    LABEL_TRAINING_JOB,
    build_job,
    build_role,
    build_role_binding,
    build_service_account,
    job_mutable_patch,
    job_name,
    operator_instance,
    starting_model,
    workload_active_patch,
)
from yolo_operator.config import OperatorConfig
from yolo_operator.kube import ApiError
from yolo_operator.observed import KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS, Observed
from yolo_operator.status import (
    ca_bundle_ref,
    derive_status,
    events_for,
    job_created_status,
    job_failed,
    job_missing_status,
    job_view,
    now_rfc3339,
    set_condition,
    terminated_state,
    waiting_for_model_status,
    waiting_to_create,
)

log = logging.getLogger("yolo_operator")
WAIT_FOR_SOURCE_SECONDS = 15
# Concurrent requests to the API server (the session's connection pool); more wait for a connection. Enough to
# keep a 2-core API server busy (bench/README.md) without holding hundreds of connections open.
POOL_SIZE = 32
# kopf judges a TrainingJob's next event only once the watch shows its own last patch (or after this long).
# Under load that takes longer than kopf's default 5 s, and a body from before kopf's "handled" annotation
# looks like a new creation: the create handler ran 2-3 times per TrainingJob at N >= 200.
CONSISTENCY_TIMEOUT_SECONDS = 60
# kopf retries a handler that raised something other than its own error types after 60 s by default: one
# transient API error (a timeout, a 5xx, a 409 after our retries) would hold a new TrainingJob back a minute.
RETRY_BACKOFF_SECONDS = 10
# How long a status derivation waits for more of the same TrainingJob's events (sync_status_soon): longer means
# fewer writes under load, and a status that much later than the cluster; kubectl's watch does not notice.
STATUS_COALESCE_SECONDS = 0.5

CONFIG = OperatorConfig.from_env()
_api_client: kube.Client | None = None
# TrainingJobs whose status is being synced right now -> whether another event came meanwhile (sync_status_soon)
_syncing: dict[tuple[str, str], bool] = {}
_sync_tasks: set[asyncio.Task] = set()  # the running _sync_later tasks (the loop keeps only weak references)
SYNC_RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0)


def api() -> kube.Client:
    global _api_client
    if _api_client is None:
        _api_client = kube.Client(pool_size=POOL_SIZE)
    return _api_client


def tj_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return kube.path(f"{GROUP}/{VERSION}", PLURAL, namespace, name, subresource)


# --- setup -----------------------------------------------------------------------------------------------


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP,
        key="last-handled-configuration",
        # on.update compares only the mutable spec fields; leaving out the immutable free-form parts keeps a
        # large spec.training.hyperparameters from pushing this annotation past the API server's 256 KiB.
        ignored_fields=["spec.training", "spec.scheduling"],
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"  # unused: there are no on.delete handlers
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "yolo-operator"
    settings.peering.standalone = True
    # Server-side filtering: only this instance's TrainingJobs, and the Jobs and pods created for them.
    mine = f"{LABEL_OPERATOR_INSTANCE}={CONFIG.instance}" if CONFIG.instance else f"!{LABEL_OPERATOR_INSTANCE}"
    settings.watching.label_selectors[GROUP, PLURAL] = mine
    settings.watching.label_selectors["batch", "v1", "jobs"] = f"{LABEL_TRAINING_JOB},{mine}"
    settings.watching.label_selectors["v1", "pods"] = f"{LABEL_TRAINING_JOB},{mine}"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT_SECONDS


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    return kube.login()  # the same credentials for kopf's watches and the handlers' requests


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global CONFIG
    CONFIG = OperatorConfig.from_env()
    configure(settings)
    api()
    metrics.serve(CONFIG.metrics_port, CONFIG.bind_address)
    log.info(
        "yolo-operator started: trainer image %s, %s",
        CONFIG.trainer_image,
        "cluster-wide" if CONFIG.clusterwide else f"namespaces {','.join(CONFIG.namespaces)}",
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    global _api_client
    # Before the client closes: a status task woken after it would open a new client (api()) that nobody closes.
    for task in [*_rechecks.values(), *_sync_tasks]:
        task.cancel()
    if _api_client is not None:
        await _api_client.close()
        _api_client = None


# --- API helpers -----------------------------------------------------------------------------------------


async def get_trainingjob(namespace: str, name: str) -> dict[str, Any] | None:
    tj = await api().get_or_none(tj_path(namespace, name))
    if tj is None:
        return None
    if "status" in tj:
        tj["status"] = clean_status(tj["status"])  # garbage from an older CRD is rewritten, not tripped over
    return tj


async def patch_status(
    namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
) -> dict[str, Any] | None:
    """Merge-patches .status; with resource_version the write fails with 409 if the object changed since.
    Returns the TrainingJob as written."""
    if not patch:
        return None
    body: dict[str, Any] = {"status": patch}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return await api().merge_patch(tj_path(namespace, name, "status"), body)


async def update_status(
    namespace: str,
    name: str,
    compute: Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]],
    read: Callable[[], dict[str, Any] | None] | None = None,
    attempts: int = 5,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Read-compute-write of the operator's status fields with an optimistic-concurrency precondition
    (conditions are written as a whole list, so a write computed from a stale read must not land: handlers of
    the TrainingJob's, its Job's and its pods' events may interleave at their requests).

    The first read is ``read()`` (the indexes: no request; None = the TrainingJob is gone) if given, and a
    GET after a 409 or without it. Nothing is written when ``compute`` returns ``{}``.
    Returns (the TrainingJob as read, the patch written)."""
    for attempt in range(attempts):
        tj = read() if read is not None and attempt == 0 else await get_trainingjob(namespace, name)
        if tj is None:
            return None, {}
        patch = compute(tj)
        if inspect.isawaitable(patch):
            patch = await patch
        if not patch:
            return tj, {}
        try:
            written = await patch_status(namespace, name, patch, tj["metadata"].get("resourceVersion"))
        except ApiError as e:
            if e.status == 409 and attempt < attempts - 1:
                observed.forget_written(namespace, name)
                continue
            raise
        if written:
            observed.wrote(namespace, name, written, tj["metadata"].get("resourceVersion"))
        return tj, patch
    raise AssertionError("unreachable")


async def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    return await api().get_or_none(kube.path("batch/v1", "jobs", namespace, name))


async def list_pods(namespace: str, tj_name: str) -> list[dict[str, Any]]:
    pods = await api().get(kube.path("v1", "pods", namespace), labelSelector=f"{LABEL_TRAINING_JOB}={tj_name}")
    return pods.get("items") or []


def owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or ())


async def create_if_absent(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Creates the object; returns it as created, or None if it already existed (409)."""
    plural = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings", "Job": "jobs"}
    try:
        return await api().create(kube.path(obj["apiVersion"], plural[obj["kind"]], obj["metadata"]["namespace"]), obj)
    except ApiError as e:
        if e.status == 409:
            return None
        raise


# --- create / resume -------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
async def ensure(body: kopf.Body, name: str, namespace: str, logger: logging.Logger, **kwargs: Any) -> None:
    # Returns nothing: kopf would store a result under status.<handler>, which the CRD schema prunes.
    async with ensure_slots():
        with metrics.timed("ensure", expected=(kopf.TemporaryError,)):
            outcome = await _ensure(dict(body), name, namespace, Observed.of(kwargs))
            log.info("%s/%s ensure: %s", namespace, name, outcome)
    if "created" in outcome:
        # kopf's own patch of this TrainingJob (its "handled" annotation) follows when this returns: it waits
        # for the Jobs being created, but gives its slot to the next TrainingJob first
        await api().after_creates()


# Handlers of new (or, after a restart, all) TrainingJobs that run at once; the others wait before they parse or
# build anything. Unbounded, a burst of 4,000 new TrainingJobs had ~1,000 handlers holding their models, built
# objects and requests while waiting for a connection: the heap's peak, which the process keeps (RSS) after.
# The pool's size: each makes its requests one after the other.
ENSURE_CONCURRENCY = POOL_SIZE
_ensure_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None


def ensure_slots() -> asyncio.Semaphore:
    """ENSURE_CONCURRENCY slots, made in the running loop (one per operator run; tests run several loops)."""
    global _ensure_slots
    loop = asyncio.get_running_loop()
    if _ensure_slots is None or _ensure_slots[0] is not loop:
        _ensure_slots = (loop, asyncio.Semaphore(ENSURE_CONCURRENCY))
    return _ensure_slots[1]


async def _fail_permanently(tj: dict[str, Any], reason: str, message: str) -> None:
    def compute(fresh: dict[str, Any]) -> dict[str, Any]:
        status = fresh.get("status") or {}
        gen = (fresh.get("metadata") or {}).get("generation")
        conds = set_condition(
            status.get("conditions"), R.COND_FAILED, True, reason, message, generation=gen, now=now_rfc3339()
        )
        return {"phase": R.FAILED, "conditions": conds, "completionTime": now_rfc3339()}

    try:
        await update_status(tj["metadata"]["namespace"], tj["metadata"]["name"], compute)
    except ApiError as e:
        if e.status != 422:
            raise
        # A spec stored under an older CRD can make the API server refuse every write to the object (its CEL
        # rules cannot evaluate on it): the Warning event is all that can be said, and retrying cannot help.
        log.warning("%s/%s: status not writable (%s); %s", tj["metadata"]["namespace"], tj["metadata"]["name"],
                    e.reason, message)  # fmt: skip
    kopf.warn(tj, reason=reason, message=message)
    raise kopf.PermanentError(message)


async def _ensure(body: dict[str, Any], name: str, namespace: str, obs: Observed) -> dict[str, Any]:
    # kopf's body may predate our own status writes: status and resourceVersion from the newest view
    current = obs.trainingjob(namespace, name)
    if current is None:
        # Not in the index: confirm before skipping for good (kopf does not call a handler that succeeded again).
        current = await get_trainingjob(namespace, name)
        if current is None:
            return {"skipped": "gone"}
    tj = {**body, "metadata": {**body["metadata"], **_pick_meta(current)}, "status": current.get("status") or {}}
    status = tj["status"]
    if operator_instance(tj) != CONFIG.instance:
        return {"skipped": f"belongs to operator instance {operator_instance(tj)!r}"}
    if status.get("phase") in R.TERMINAL_PHASES:
        return {"skipped": f"already {status['phase']}"}
    if (tj.get("metadata") or {}).get("deletionTimestamp"):
        return {"skipped": "being deleted"}
    try:
        t = TrainingJob.from_body(tj)
    except ValidationError as e:
        await _fail_permanently(tj, "InvalidSpec", f"invalid TrainingJob: {describe_errors(e)}")
        raise  # unreachable

    jname = job_name(name)
    job = obs.job(namespace, name, t.uid)
    if job is None and status.get("jobName"):
        job = await get_job(namespace, jname)  # the index may lag: confirm before declaring the Job gone
    if job is None and status.get("jobName"):
        # The Job was created before and is gone (deleted by hand while the operator was down).
        # Never silently start over: that would be a second training run.
        await update_status(namespace, name, job_missing_status)
        kopf.warn(tj, reason=R.REASON_JOB_DELETED, message=f"Job {jname} was deleted before it finished")
        return {"job": None}

    if job is not None and not owned_by(job, t.uid):
        raise kopf.TemporaryError(
            f"Job {jname} belongs to another (deleted) TrainingJob; waiting for garbage collection",
            delay=5,
        )

    if job is not None and status.get("jobName") == jname and status.get("model"):
        # Done before (a resume, or kopf repeating the create handler): nothing to create, no request
        # unless a mutable field or the status has to follow.
        await _sync_mutable_fields(t, job)
        await sync_status(namespace, name, obs)
        return {"job": jname, "done before": True}

    if job is not None:
        model = status.get("model") or (job and _model_from_job(job)) or ""
    else:
        source_tj = None
        if t.spec.model.from_training_job:
            source_tj = await get_trainingjob(namespace, t.spec.model.from_training_job)
        res = starting_model(t.spec.model, source_tj)
        if res.model is None:
            first_time = (status.get("conditions") or []) == [] or any(
                c.get("type") == R.MODEL_RESOLVED and c.get("reason") != res.reason for c in status.get("conditions")
            )
            await update_status(
                namespace,
                name,
                lambda fresh: waiting_for_model_status(fresh, res.reason, res.message, terminal=res.terminal),
                read=lambda: obs.trainingjob(namespace, name),
            )
            if res.terminal:
                kopf.warn(tj, reason=res.reason, message=res.message)
                raise kopf.PermanentError(res.message)
            if first_time:
                kopf.info(tj, reason=R.EVENT_WAITING_FOR_MODEL, message=res.message)
            raise kopf.TemporaryError(res.message, delay=WAIT_FOR_SOURCE_SECONDS)
        model = res.model

    # RBAC first, so that the pod finds its ServiceAccount; then the Job. All idempotent.
    for obj in (build_service_account(t, CONFIG), build_role(t), build_role_binding(t)):
        await create_if_absent(obj)
    created = False
    if job is None:
        try:
            new = await create_if_absent(build_job(t, CONFIG, model))
        except ApiError as e:
            if e.status not in (400, 422):
                raise
            # Admitted TrainingJob, refused Job (a free-form affinity, ...): the same spec is refused again.
            await _fail_permanently(
                tj, "InvalidSpec", f"the API server refused the Job built from the spec: {e.message}"
            )
        if new is not None:
            created = True
            observed.created(namespace, name, new)
            job = job_view(new)
            metrics.JOBS_CREATED.inc()
            kopf.info(tj, reason=R.EVENT_JOB_CREATED, message=f"created Job {jname} (model {model})")
        else:  # it exists after all (created by an earlier run the index has not shown yet): adopt it
            job = await get_job(namespace, jname)
            if job is None or not owned_by(job, t.uid):
                raise kopf.TemporaryError(f"Job {jname} exists but is not this TrainingJob's (yet)", delay=5)
    else:
        await _sync_mutable_fields(t, job)

    # The status write that records the Job (jobName, model, JobCreated) is the first coalesced write of its
    # Job's and pod's events (_derive): under a burst of creations the Jobs come first and each status is
    # written about once, instead of once here and again for each of the Job's first events.
    if _stored_status_is_garbage(body):
        # The API server validates the stored status on every write to the object, kopf's own patch included:
        # garbage from an older CRD is replaced now, or that patch is refused until the coalesced write comes.
        await sync_status(namespace, name, obs)
    else:
        sync_status_soon(namespace, name, obs)
    return {"job": jname, "created": created}


def _stored_status_is_garbage(body: dict[str, Any]) -> bool:
    raw = body.get("status")
    return raw is not None and clean_status(raw) != raw


def _pick_meta(view: dict[str, Any]) -> dict[str, Any]:
    meta = view.get("metadata") or {}
    return {k: meta[k] for k in ("resourceVersion", "deletionTimestamp") if k in meta}


def _uid(obj: dict[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("uid")


def _model_from_job(job: dict[str, Any]) -> str | None:
    if "model" in job:  # a view (status.job_view) carries it
        return job["model"]
    for c in job["spec"]["template"]["spec"].get("containers", []):
        for e in c.get("env", []):
            if e.get("name") == CONFIG_ENV:
                return json.loads(e["value"]).get("model")
    return None


# --- mutable fields --------------------------------------------------------------------------------------


async def _sync_mutable_fields(t: TrainingJob, job: dict[str, Any]) -> bool:
    patch = job_mutable_patch(t)
    current = job.get("spec") or {}
    if all(current.get(k) == v for k, v in patch["spec"].items()):
        return False
    await api().merge_patch(kube.path("batch/v1", "jobs", t.namespace, job["metadata"]["name"]), patch)
    return True


async def _sync_workload_active(
    tj: dict[str, Any] | TrainingJob, namespace: str, workload: dict[str, Any] | None
) -> bool:
    """spec.suspend with spec.queueName -> the Workload's spec.active (``workload_active_patch``)."""
    patch = workload_active_patch(tj, workload)
    if patch is None or workload is None:
        return False
    path = kube.path(f"{KUEUE_GROUP}/{KUEUE_VERSION}", KUEUE_WORKLOADS, namespace, workload["metadata"]["name"])
    try:
        await api().merge_patch(path, patch)
    except ApiError as e:
        if e.status == 404:
            return False  # Kueue replaced or removed it; its successor's event brings us back
        raise
    return True


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", backoff=RETRY_BACKOFF_SECONDS)
async def sync_mutable(body: kopf.Body, name: str, namespace: str, logger: logging.Logger, **kwargs: Any) -> None:
    with metrics.timed("sync_mutable"):
        t = TrainingJob.from_body(dict(body))
        obs = Observed.of(kwargs)
        job = obs.job(namespace, name, t.uid)
        if job is None or not owned_by(job, t.uid):
            return
        if await _sync_mutable_fields(t, job):
            kopf.info(dict(body), reason="JobUpdated", message=f"applied {job_mutable_patch(t)['spec']} to the Job")
        if t.spec.queue_name:
            workload = obs.workload(namespace, job["metadata"]["name"], _uid(job))
            if await _sync_workload_active(t, namespace, workload):
                message = f"set Kueue Workload {workload['metadata']['name']} active={not t.spec.suspend}"
                kopf.info(dict(body), reason="WorkloadUpdated", message=message)


# --- status ----------------------------------------------------------------------------------------------


async def _derive(namespace: str, name: str, tj: dict[str, Any], obs: Observed) -> dict[str, Any]:
    """The status patch for the TrainingJob as the indexes show it and its Job and pods (``{}``: none);
    from memory, but for the two cases below that need a request."""
    if (tj.get("metadata") or {}).get("deletionTimestamp") or operator_instance(tj) != CONFIG.instance:
        return {}
    status = tj.get("status") or {}
    uid = _uid(tj)
    job = obs.job(namespace, name, uid)
    if job is None and status.get("jobName") and status.get("phase") not in R.TERMINAL_PHASES:
        job = await get_job(namespace, status["jobName"])  # the index says gone: confirm before failing it
        if job is None:
            return job_missing_status(tj)
    if job is None or not owned_by(job, uid):
        return {}
    recorded: dict[str, Any] = {}
    if not status.get("jobName"):
        # ensure() created the Job (the overlay or the index shows it): this write records it, with what it shows
        if not job.get("model") or job["metadata"].get("name") != job_name(name):
            return {}
        recorded = job_created_status(tj, job["metadata"]["name"], job["model"])
        tj = {**tj, "status": {**status, **recorded}}
    pods = obs.pods(namespace, name, _uid(job))
    if _pods_lag(job, pods):
        return {}  # the pod watch is behind the Job's (a new pod counted, not yet seen): its event follows
    if job_failed(job) and status.get("phase") not in R.TERMINAL_PHASES and not any(map(terminated_state, pods)):
        # The pod watch may lag the Job's: list the pods once, so that the failure is reported (and
        # announced) with the trainer's exit code and message rather than the Job's generic reason.
        pods = [p for p in await list_pods(namespace, name) if owned_by(p, _uid(job))]
    queued = (tj.get("spec") or {}).get("queueName")
    workload = obs.workload(namespace, job["metadata"]["name"], _uid(job)) if queued else None
    derived = derive_status(tj, job, pods, missing_volume=await missing_ca_bundle(tj, pods), workload=workload)
    return {**recorded, **derived}


async def missing_ca_bundle(tj: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """Why the newest pod cannot mount spec.s3.caBundle, or None. Asked only while that pod waits in
    ContainerCreating (the kubelet reports a missing ConfigMap only as an Event), so it costs one GET then."""
    ref = ca_bundle_ref(tj)
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    newest = max(live, key=lambda p: p["metadata"].get("creationTimestamp", ""), default=None)
    if not ref or newest is None or not waiting_to_create(newest):
        return None
    namespace = (tj.get("metadata") or {}).get("namespace")
    cm = await api().get_or_none(kube.path("v1", "configmaps", namespace, ref["name"]))
    key = ref.get("key", "ca.crt")
    if cm is None:
        return (f"ConfigMap {ref['name']} (spec.s3.caBundle) does not exist in namespace {namespace}: create it with "
                f"the PEM bundle under key {key}; the pod waits for it")  # fmt: skip
    if key not in (cm.get("data") or {}):
        return f"ConfigMap {ref['name']} has no key {key} (spec.s3.caBundle.key); the pod waits for it"
    return None


def _pods_lag(job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """The Job counts more active pods than the pod index shows unfinished: the pod watch is behind the
    Job's (a replacement counted, not yet seen) or ahead of it (a pod finished, the Job not updated yet).
    Either way the next event completes the picture; deriving now could count a replacement twice."""
    jst = job.get("status") or {}
    if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in jst.get("conditions") or ()):
        return False
    live = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") in (None, "Pending", "Running")
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    return int(jst.get("active") or 0) > len(live)


async def sync_status(namespace: str, name: str, obs: Observed) -> dict[str, Any]:
    """Re-derives the operator's status fields from the Job and its pods as the indexes show them, and
    patches what changed. Most events change nothing (e.g. the TrainingJob event of our own last write, a
    pod's scheduling retries): those are settled from memory, without a request."""
    tj, patch = await update_status(
        namespace, name, lambda tj: _derive(namespace, name, tj, obs), read=lambda: obs.trainingjob(namespace, name)
    )
    _announce(tj, (tj or {}).get("status"), patch)
    return patch


def detached_context() -> contextvars.Context:
    """The context for a task that a handler starts and that outlives it: a copy of the handler's, since kopf's
    event poster lives there (kopf.info from the task needs it), without kopf's cause of the handler call. That
    holds the event's whole body, its patch and logger, which the task would keep alive for as long as it waits
    (under a burst of new TrainingJobs: minutes, for thousands of them). kopf has no public way to say this."""
    ctx = contextvars.copy_context()
    ctx.run(kopf_execution.cause_var.set, None)
    return ctx


def start_detached(coro: Coroutine[Any, Any, None], name: str, done: Callable[[asyncio.Task], object]) -> asyncio.Task:
    """A task (and its done callback: that copies its caller's context too) in ``detached_context()``."""
    ctx = detached_context()
    task = asyncio.get_running_loop().create_task(coro, name=name, context=ctx)
    task.add_done_callback(done, context=ctx)
    return task


def sync_status_soon(namespace: str, name: str, obs: Observed) -> None:
    """For the event handlers of the TrainingJob, its Job and its pods: the status is derived and written by one
    task per TrainingJob, a moment later (``_sync_later``). The handler returns at once, so kopf does not hold
    its event bodies while the task waits (with a burst of 1,000 TrainingJobs that is most of the heap).

    kopf runs one object's handlers one at a time, but these are three objects: while the task of one of them
    derives or writes, the others' events only ask it to derive once more when done (from the indexes, which
    by then show their objects), instead of writing on top of it and retrying on a 409."""
    key = (namespace, name)
    if key in _syncing:
        _syncing[key] = True
        return
    _syncing[key] = False
    task = start_detached(_sync_later(key, obs), f"status {namespace}/{name}", _sync_tasks.discard)
    _sync_tasks.add(task)


async def _sync_later(key: tuple[str, str], obs: Observed) -> None:
    """Each derivation waits STATUS_COALESCE_SECONDS, and while creates are in flight (``kube.Client.after_creates``):
    a Job's and its pod's events come in bursts (created, pod created, scheduled or not, started), and one write
    follows them all instead of one per event; under a burst of new TrainingJobs their Jobs are created first.
    A failed write is retried (SYNC_RETRY_DELAYS), since no kopf retry stands behind a task."""
    namespace, name = key
    failures = 0
    try:
        while True:
            await asyncio.sleep(STATUS_COALESCE_SECONDS)  # the events that come meanwhile make the same write
            await api().after_creates()  # Jobs (and their RBAC) being created go first
            _syncing[key] = False  # what comes from here on asks for one more derivation
            try:
                await sync_status(namespace, name, obs)
            except Exception as e:  # logged and retried: no handler stands behind a task to raise to
                if failures == len(SYNC_RETRY_DELAYS):
                    log.error("%s/%s: status not written after %d attempts: %s", namespace, name, failures + 1, e)
                    return
                log.warning("%s/%s: status write failed, retrying: %s", namespace, name, e)
                await asyncio.sleep(SYNC_RETRY_DELAYS[failures])
                failures += 1
                _syncing[key] = True
            if not _syncing[key]:
                return
    finally:
        del _syncing[key]


def _announce(tj: dict[str, Any] | None, old_status: dict[str, Any] | None, patch: dict[str, Any]) -> None:
    """Events and the phase gauge for a status patch that was written."""
    if tj is None or not patch:
        return
    for type_, reason, message in events_for(old_status, patch):
        if type_ == "Warning":
            kopf.warn(tj, reason=reason, message=message)
        else:
            kopf.info(tj, reason=reason, message=message)
    if "phase" in patch:
        metrics.observe_phase(tj["metadata"]["namespace"], tj["metadata"]["name"], patch["phase"])


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
async def job_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    with metrics.timed("job_event"):
        sync_status_soon(namespace, body["metadata"]["labels"][LABEL_TRAINING_JOB], Observed.of(kwargs))


@kopf.on.event("v1", "pods", labels={LABEL_TRAINING_JOB: kopf.PRESENT})
async def pod_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    with metrics.timed("pod_event"):
        sync_status_soon(namespace, body["metadata"]["labels"][LABEL_TRAINING_JOB], Observed.of(kwargs))


@kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS)
async def workload_event(body: kopf.Body, namespace: str, **kwargs: Any) -> None:
    """A Kueue Workload changed (admitted, evicted, preempted, requeued): re-derive its TrainingJob's status,
    and keep spec.suspend on it (a Workload Kueue created for a Job made while spec.suspend was true)."""
    with metrics.timed("workload_event"):
        obs = Observed.of(kwargs)
        for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
            if ref.get("kind") != "Job":
                continue
            tj_name = obs.trainingjob_of_job(namespace, ref.get("name"), ref.get("uid"))
            tj = obs.trainingjob(namespace, tj_name) if tj_name else None
            if tj is None:
                continue
            await _sync_workload_active(tj, namespace, obs.workload(namespace, ref["name"], ref.get("uid")))
            sync_status_soon(namespace, tj_name, obs)


def _waiting_on_ca_bundle(body: Mapping[str, Any], **_: Any) -> bool:
    """Whether a TrainingJob (body or index view) uses spec.s3.caBundle and is still Pending. It must not
    raise on a stored object of the wrong shape (a string spec or status): it runs on every event."""
    status = body.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return ca_bundle_ref(body) is not None and phase in (None, R.PENDING)


CA_BUNDLE_RECHECK_SECONDS = 20.0
_rechecks: dict[tuple[str, str], asyncio.Task] = {}  # TrainingJobs waiting on their CA bundle -> recheck task


def recheck_ca_bundle_while_pending(namespace: str, name: str, obs: Observed) -> None:
    """A pod that cannot mount spec.s3.caBundle sends no event after its first status: the kubelet reports
    the missing ConfigMap only as a core Event. While such a TrainingJob is Pending, its status is re-derived
    every CA_BUNDLE_RECHECK_SECONDS, so Stalled/CABundleMissing is set even when no event of the pod follows
    the one that left it waiting (settled from the indexes unless the pod waits in ContainerCreating: then one
    GET of the ConfigMap).

    A task holding the key, not a kopf timer: for a resource with any timer or daemon kopf keeps every
    object's whole last body (its daemons' live body), ~25 KB per TrainingJob, waiting or not."""
    key = (namespace, name)
    if key in _rechecks:
        return
    task = start_detached(
        _recheck_loop(key, obs),
        f"ca-bundle {namespace}/{name}",
        lambda t: _rechecks.pop(key) if _rechecks.get(key) is t else None,
    )
    _rechecks[key] = task


async def _recheck_loop(key: tuple[str, str], obs: Observed) -> None:
    while True:
        await asyncio.sleep(CA_BUNDLE_RECHECK_SECONDS)
        tj = obs.trainingjob(*key)
        if tj is None or not _waiting_on_ca_bundle(tj):
            return
        sync_status_soon(*key, obs)


def stop_ca_bundle_recheck(namespace: str, name: str) -> None:
    task = _rechecks.pop((namespace, name), None)
    if task is not None:
        task.cancel()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def trainingjob_event(event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str, **kwargs: Any) -> None:
    """Keeps the by-phase gauge current and maps the trainer's stage reports onto the phase."""
    with metrics.timed("trainingjob_event"):
        if event.get("type") == "DELETED":
            metrics.observe_phase(namespace, name, None)
            observed.forget(namespace, name)
            stop_ca_bundle_recheck(namespace, name)
            return
        if _waiting_on_ca_bundle(body):
            recheck_ca_bundle_while_pending(namespace, name, Observed.of(kwargs))
        status = clean_status(body.get("status"))
        metrics.observe_phase(namespace, name, status.get("phase") or R.PENDING)
        if status.get("jobName") and status.get("phase") not in R.TERMINAL_PHASES:
            sync_status_soon(namespace, name, Observed.of(kwargs))
