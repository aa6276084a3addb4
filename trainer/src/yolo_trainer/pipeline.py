"""One training job end to end, as four stages with typed results: preflight (Preflight), stage the dataset and
the model or checkpoint to start from (Staged), train (Trained), then test, export and publish (publish_outputs).

Order matters: everything that can be checked cheaply (config, output bucket, export deps, dataset) is
checked before the first epoch, so a broken job fails in seconds with a precise exit code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_contract.base import now_rfc3339
from yolo_contract.exitcodes import ConfigInvalid, ExitCode, GPUNotVisible, Interrupted, PeerLost, TrainerError
from yolo_contract.model_source import s3_location
from yolo_contract.progress import (
    COMPLETED,
    EARLY_STOPPING,
    STOP_REQUESTED,
    TIME_BUDGET_REACHED,
    BaseModelLineage,
    Checkpoint,
    DatasetLineage,
    Outcome,
    Progress,
    TrainerReport,
)
from yolo_contract.sizing import dataloader_workers, processes_per_node
from yolo_contract.trainer_config import NODE_NAME_ENV, TrainerConfig
from yolo_contract.training import ARCHIVE_SUFFIXES, auto_batch

from . import launch
from .checkpoint import (
    CheckpointState,
    CheckpointUploader,
    config_fingerprint,
    read_state,
    rewrite_train_args,
)
from .control import StopWatcher, kube_fetcher
from .dataset import DatasetSummary, Limits, Scratch, stage_dataset, validate_dataset
from .evaluate import TEST_DIR, evaluate_test
from .lineage import base_model_lineage, dataset_lineage, lineage
from .model import resolve_model
from .outputs import check_export_formats, collect_files, export_models, publish
from .parity import onnx_parity, split_images
from .report import Reporter, make_reporter
from .results import best_from_results, results_through
from .s3 import S3NotFound, S3Store, join_key, parse_s3_uri
from .supervisor import Supervisor, TrainingResult
from .train import (
    available_cpus,
    choose_device,
    ddp_supported,
    epoch_metrics,
    prepare_environment,
    shm_bytes,
    train_args,
    validate_hyperparameters,
)

log = logging.getLogger(__name__)

GRACE_ENV = "YOLO_TRAINER_GRACE_SECONDS"
DEFAULT_GRACE = 25.0  # below Kubernetes' default terminationGracePeriodSeconds (30)
RUN_NAME = "run"


@dataclass
class Interruption:
    """SIGTERM/SIGINT: stop training at once, but never in the middle of the final checkpoint flush."""

    event: threading.Event = field(default_factory=threading.Event)
    raise_now: bool = True
    signum: int | None = None

    def handler(self, signum, frame) -> None:
        first = not self.event.is_set()
        self.event.set()
        self.signum = signum
        if first:
            log.warning("received signal %d: stopping", signum)
        if self.raise_now and first:
            raise Interrupted(f"interrupted by signal {signal.Signals(signum).name}")

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.handler)
            signal.signal(signal.SIGINT, self.handler)


def grace_seconds(environ: dict[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    try:
        return float(env.get(GRACE_ENV, DEFAULT_GRACE))
    except ValueError:
        return DEFAULT_GRACE


class SafeReporter:
    """Serializes reports from the training and uploader threads; swallows every error."""

    def __init__(self, inner: Reporter):
        self.inner = inner
        self._lock = threading.Lock()

    def report(self, report: TrainerReport) -> None:
        try:
            with self._lock:
                self.inner.report(report)
        except Exception as e:  # reporting must never fail training
            log.warning("status report failed: %s", e)


def _log_event(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def run(
    cfg: TrainerConfig,
    reporter: Reporter | None = None,
    interruption: Interruption | None = None,
    store: S3Store | None = None,
) -> dict[str, Any]:
    """Runs the job; returns the final metrics.json body. Raises TrainerError subclasses on failure.

    After a SIGTERM every failure is ``Interrupted`` (exit 75): the signal may surface as any exception
    (a broad ``except`` in a library can turn it into something else), and a disruption must never be
    reported as a non-retriable error.
    """
    interruption = interruption or Interruption()
    # spec.stop is decided by global rank 0, on the first node: only that pod reads the TrainingJob.
    watcher = StopWatcher(kube_fetcher(cfg.status) if launch.first_node() else None)
    try:
        return _run(cfg, reporter, interruption, store, watcher)
    except Interrupted:
        raise
    except BaseException as e:
        if interruption.event.is_set():
            raise Interrupted(f"interrupted by signal (while: {type(e).__name__}: {e})") from e
        raise
    finally:
        watcher.close()


@dataclass(frozen=True)
class Preflight:
    """What the cheap checks established: nothing has been downloaded yet."""

    hyper: dict[str, Any]  # validated spec.training.hyperparameters
    n_gpus: int  # CUDA devices this pod trains on (0: CPU)
    plan: launch.LaunchPlan  # this pod's ranks in the job's world
    store: S3Store


@dataclass(frozen=True)
class Staged:
    """The dataset on local disk and the model training starts from (a checkpoint's, or the base weights)."""

    state: CheckpointState | None  # the checkpoint resumed from
    dataset_id: DatasetLineage | None
    base_id: BaseModelLineage
    summary: DatasetSummary
    save_dir: Path  # where Ultralytics writes this run
    device: str | int | list[int]  # Ultralytics' device argument
    workers: int
    kwargs: dict[str, Any]  # Ultralytics' train() arguments
    model_path: str


@dataclass(frozen=True)
class Trained:
    """Training over: what it reported, and the uploader holding its newest checkpoint."""

    result: TrainingResult
    uploader: CheckpointUploader


def _run(
    cfg: TrainerConfig,
    reporter: Reporter | None = None,
    interruption: Interruption | None = None,
    store: S3Store | None = None,
    watcher: StopWatcher | None = None,
) -> dict[str, Any]:
    prepare_environment(cfg)
    interruption = interruption or Interruption()
    interruption.install()
    first_node = launch.first_node()  # global rank 0's pod: status, checkpoints and outputs are its alone
    reporter = SafeReporter(reporter or make_reporter(cfg.status if first_node else None))
    run_id = uuid.uuid4().hex[:12]
    # Who and where: the UID/GID the platform assigned (OpenShift: arbitrary, group 0) and the /dev/shm size
    # the DataLoader gets, the two things a "Bus error" or a permission error comes down to.
    _log_event("start", runId=run_id, job=cfg.job_prefix, model=cfg.model.text, dataset=cfg.dataset,
               uid=os.getuid(), gid=os.getgid(), groups=os.getgroups(), shmBytes=shm_bytes())  # fmt: skip
    checked = preflight(cfg, store)
    watcher = (watcher or StopWatcher(None)).start()  # spec.stop, polled from here on
    staged = stage(cfg, checked, reporter)
    trained = train(cfg, checked, staged, reporter, interruption, watcher, run_id)
    if not checked.plan.first_node:
        # Its ranks trained and validated; global rank 0's pod reports, tests, exports and publishes.
        _log_event("done", runId=run_id, nodeRank=checked.plan.node_rank, epochs=None)
        return {"runId": run_id, "nodeRank": checked.plan.node_rank}
    return publish_outputs(cfg, checked, staged, trained, reporter, watcher, run_id)


def preflight(cfg: TrainerConfig, store: S3Store | None) -> Preflight:
    """Cheap checks first: the config, the GPUs, this pod's place in the world, every bucket."""
    hyper = validate_hyperparameters(cfg.training.hyperparameters)
    check_export_formats(cfg.export_formats)
    # A GPU job that cannot see its GPU fails before staging: on CPU it would hold the GPU for hours.
    # CPU ranks only where the config asks for them (it then cannot ask for GPUs): never a fallback.
    cpu_ranks = (cfg.cpu_processes or 1) > 1
    n_gpus = 0 if cpu_ranks else check_gpus(_gpu_count(), cfg.gpus, ddp_supported(), simulated=cfg.simulated_gpus)
    plan = launch.plan(ranks_per_node(cfg, n_gpus))  # a world this pod cannot join: now
    out_bucket, out_prefix = parse_s3_uri(cfg.job_prefix)
    # spec.s3.region unset: the output bucket's region, as S3 names it (AWS buckets outside us-east-1).
    store = store or S3Store.from_config(cfg.s3, region_bucket=out_bucket)
    ds_bucket, ds_key = parse_s3_uri(cfg.dataset)
    bucket_of = " (its bucket: AWS_S3_BUCKET of spec.s3.dataConnection)" if cfg.s3.data_connection else ""
    store.hints.name_bucket(out_bucket, f"spec.output{bucket_of}")  # named before any request: a shared bucket
    store.hints.name_bucket(ds_bucket, f"spec.dataset{bucket_of}")  # is named by both
    if (model_uri := s3_location(cfg.model)) is not None:
        store.hints.name_bucket(parse_s3_uri(model_uri)[0], "spec.model")
    if cfg.hub_mirror:
        store.hints.name_bucket(parse_s3_uri(cfg.hub_mirror)[0], "the operator's trainer.hubMirror")
    # Every S3 misconfiguration (endpoint, TLS, keys, region, missing buckets) fails here, before staging,
    # with the field to fix; the output bucket first, as a job without it could never publish.
    store.check_bucket(out_bucket, out_prefix)
    store.check_bucket(ds_bucket, ds_key)
    return Preflight(hyper, n_gpus, plan, store)


def resumable_checkpoint(cfg: TrainerConfig, store: S3Store) -> CheckpointState | None:
    """The checkpoint this run resumes from: this incarnation's newest, for this configuration, not the last."""
    state = read_state(store, cfg.job_prefix)
    if state is not None and state.fingerprint != config_fingerprint(cfg):
        log.warning("checkpoint %s was written for a different configuration; starting fresh", state.uri)
        return None
    if state is not None and state.epoch >= cfg.training.epochs:
        log.warning("checkpoint %s is already at the last epoch; starting fresh", state.uri)
        return None
    return state


def stage(cfg: TrainerConfig, checked: Preflight, reporter: Reporter) -> Staged:
    """The dataset staged and validated, and the model to start from: a checkpoint's weights, else the base."""
    store, work = checked.store, Path(cfg.work_dir)
    state = resumable_checkpoint(cfg, store)
    # A resumed run keeps showing the epochs already done while it re-stages.
    done = state.epoch if state else 0
    reporter.report(
        TrainerReport(
            stage="Staging",
            progress=Progress.of(done, cfg.training.epochs, updated_at=now_rfc3339()),
            last_checkpoint=Checkpoint(epoch=done, uri=state.uri) if state else None,
        )
    )

    # Fingerprinted from a LIST just before staging (what is staged, unless it changes in between).
    dataset_id = dataset_lineage(store, cfg.dataset, archive=cfg.dataset.lower().endswith(ARCHIVE_SUFFIXES))
    data_yaml = stage_dataset(
        store, cfg.dataset, work / "dataset", Limits.from_config(cfg), scratch=Scratch(cfg.scratch_bytes)
    )
    summary = validate_dataset(data_yaml)
    _log_event("dataset", **summary.as_dict())

    runs = work / "runs"
    save_dir = runs / RUN_NAME
    if save_dir.exists():
        shutil.rmtree(save_dir)  # a retried container starts clean; S3 holds what survives
    device = choose_device(checked.n_gpus)
    _log_event("ranks", **checked.plan.describe(), device=device)
    t = cfg.training
    workers = dataloader_workers(
        t.workers, checked.n_gpus, t.batch, t.imgsz, cpus=available_cpus(), shm_bytes=shm_bytes()
    )
    if t.workers is not None and workers < t.workers:
        log.warning("%d DataLoader workers instead of the %d requested: that is what the CPUs and /dev/shm take",
                    workers, t.workers)  # fmt: skip
    kwargs = train_args(cfg, summary.data_yaml, runs, RUN_NAME, device, workers, checked.hyper)

    model_path = _download_checkpoint(store, state, work / "resume", save_dir) if state else None
    if state is not None and model_path is not None:
        rewrite_train_args(
            Path(model_path),
            {
                "data": str(summary.data_yaml),
                "project": str(runs),
                "name": RUN_NAME,
                "save_dir": str(save_dir),
                "device": device,
                "workers": workers,
                "exist_ok": True,
            },
        )
        _log_event("resume", fromEpoch=state.epoch, uri=state.uri)
    else:
        state = None
        model_path = resolve_model(cfg.model, store, work / "model", cfg.offline, cfg.hub_mirror)
    # A resumed run does not fetch the base weights again: their ETag (and parent run) still identify them.
    base_id = base_model_lineage(store, cfg.model, None if state else model_path)
    reporter.report(TrainerReport(lineage=lineage(dataset_id, base_id, None)))
    return Staged(state, dataset_id, base_id, summary, save_dir, device, workers, kwargs, model_path)


def train(
    cfg: TrainerConfig,
    checked: Preflight,
    staged: Staged,
    reporter: Reporter,
    interruption: Interruption,
    watcher: StopWatcher,
    run_id: str,
) -> Trained:
    """Trains under the supervisor, every checkpoint to S3; after a SIGTERM, flushes the newest and raises
    ``Interrupted``."""
    work, plan, state = Path(cfg.work_dir), checked.plan, staged.state
    uploader = CheckpointUploader(
        checked.store,
        cfg.job_prefix,
        work / "staging",
        run_id,
        config_fingerprint(cfg),
        on_uploaded=lambda s: reporter.report(TrainerReport(last_checkpoint=Checkpoint(epoch=s.epoch, uri=s.uri))),
    )

    def last_checkpoint() -> Checkpoint | None:
        s = uploader.uploaded
        return Checkpoint(epoch=s.epoch, uri=s.uri) if s else None

    spec_path = work / "child.json"
    spec_path.write_text(json.dumps({"model": staged.model_path, "kwargs": staged.kwargs, "resume": state is not None,
                                     "control": str(work / "control")}))  # fmt: skip
    control = work / "control"
    cpu_threads = launch.cpu_threads_per_rank(available_cpus(), plan.nproc_per_node) if checked.n_gpus == 0 else None
    supervisor = Supervisor(
        launch.command(plan, spec_path),
        work / "control",
        staged.save_dir,
        cfg.training.epochs,
        reporter.report,
        uploader.submit,
        interruption.event,
        stop=watcher.requested,
        uploader_error=lambda: uploader.error,
        last_checkpoint=last_checkpoint,
        shm_bytes=shm_bytes(),
        env=launch.environment(plan, control, cpu_threads),
        describe=plan.describe(),
    )
    try:
        if interruption.event.is_set():
            raise Interrupted("interrupted by SIGTERM")
        result = supervisor.run()
    except BaseException as e:
        # Another node lost: like a SIGTERM, the gang restarts from the newest complete checkpoint.
        peer_lost = isinstance(e, PeerLost) and not interruption.event.is_set()
        if not interruption.event.is_set() and not peer_lost:
            uploader.close()
            raise
        # Whatever the exception became on its way out, a SIGTERM caused it. The training process is gone
        # (Supervisor.run terminated it); what the uploader holds is complete.
        interruption.raise_now = False  # a second SIGTERM must not abort the flush
        flushed = uploader.flush(grace_seconds())
        uploader.close()
        s = uploader.uploaded
        _log_event("peerLost" if peer_lost else "interrupted", flushed=flushed,
                   checkpointEpoch=s.epoch if s else None)  # fmt: skip
        if isinstance(e, Interrupted) or peer_lost:
            raise
        raise Interrupted(f"interrupted by signal (while: {type(e).__name__}: {e})") from e
    uploader.finish()
    return Trained(result, uploader)


def publish_outputs(
    cfg: TrainerConfig,
    checked: Preflight,
    staged: Staged,
    trained: Trained,
    reporter: Reporter,
    watcher: StopWatcher,
    run_id: str,
) -> dict[str, Any]:
    """Global rank 0's pod: tests best.pt, exports it, publishes weights, metrics and plots, then drops the
    checkpoints; returns the metrics.json body."""
    work, store, summary, state = Path(cfg.work_dir), checked.store, staged.summary, staged.state
    result = trained.result
    save_dir, workers, job_prefix = result.save_dir, staged.workers, cfg.job_prefix
    reporter.report(TrainerReport(stage="Uploading"))
    best = save_dir / "weights" / "best.pt"
    outcome = training_outcome(result, checked.hyper, cfg.training, save_dir / "results.csv")
    _log_event("outcome", **outcome.model_dump(by_alias=True, exclude_none=True))
    device = staged.device
    single_device = device[0] if isinstance(device, list) else device
    test, test_error = None, None
    if "test" in summary.splits and summary.splits["test"].images and best.is_file():
        try:
            # AutoBatch's choice dies with the training process: evaluate at Ultralytics' default batch.
            batch = 16 if auto_batch(cfg.training.batch) else cfg.training.batch
            test = evaluate_test(best, summary.data_yaml, work / "test" / TEST_DIR, cfg.training.imgsz,
                                 batch, single_device, workers)  # fmt: skip
            test.metrics.images = summary.splits["test"].images
            test.body["metrics"]["images"] = test.metrics.images
            (test.dir / "metrics.json").write_text(json.dumps(test.body, indent=1))
            _log_event("test", **test.metrics.model_dump(by_alias=True, exclude_none=True))
        except Exception as e:  # the weights are still worth publishing
            log.error("test-split evaluation failed: %s", e)
            test_error = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    exports, export_errors = (
        export_models(best, cfg.export_formats, cfg.training.imgsz)
        if cfg.export_formats and best.is_file()
        else ({}, {})
    )
    export_info: dict[str, Any] = {}
    if "onnx" in exports:
        try:
            parity = onnx_parity(best, exports["onnx"], split_images(summary.data_yaml, "val"), cfg.training.imgsz)
            export_info["onnx"] = {"parity": parity}
            _log_event("onnxParity", **parity)
            if not parity["passed"]:
                export_errors["onnx"] = "onnxruntime's detections differ from the .pt model's (see exports.onnx)"
        except Exception as e:
            log.error("ONNX parity check failed: %s", e)
            export_errors["onnx"] = f"parity check failed: {e}"[:300]
    raw = dict(result.final_metrics)
    # Final validation of best.pt, in the status' metric names; Ultralytics' own keys kept alongside.
    final = epoch_metrics(raw, {}).model_dump(by_alias=True, exclude_none=True)
    lin = lineage(staged.dataset_id, staged.base_id, watcher.trainer_image())
    extra: dict[str, Any] = {
        "ultralyticsMetrics": raw,
        "epochs": result.epochs_reported[-1] if result.epochs_reported else None,
        "outcome": outcome.model_dump(by_alias=True, exclude_none=True),
        "dataset": summary.as_dict(),
        "lineage": lin.model_dump(by_alias=True, exclude_none=True),
        "resumedFromEpoch": state.epoch if state else None,
        "trainingJob": {"namespace": cfg.namespace, "name": cfg.name, "uid": cfg.uid},  # which incarnation
    }
    if test is not None:
        extra["test"] = {k: test.body[k] for k in ("metrics", "perClass")}
    if test_error:
        extra["testError"] = test_error
    if export_info:
        extra["exports"] = export_info
    if export_errors:
        extra["exportErrors"] = export_errors
    files = collect_files(save_dir, exports, test.dir if test else None)
    artifacts = publish(store, job_prefix, files, final, run_id, extra)
    trained.uploader.delete_all()  # the job is complete: a re-created job of the same name starts fresh
    test_metrics = test.metrics.model_copy(update={"uri": artifacts.test}) if test else None
    reporter.report(TrainerReport(artifacts=artifacts, test_metrics=test_metrics, lineage=lin, outcome=outcome))
    _log_event("done", runId=run_id, metrics=final, artifacts=artifacts.model_dump(by_alias=True, exclude_none=True))
    return {"runId": run_id, "metrics": final, "artifacts": artifacts, **extra}


def training_outcome(result: TrainingResult, hyper: dict[str, Any], training, results_csv: Path) -> Outcome:
    """Why training ended: a stop request, the time budget, patience, or all epochs done."""
    done = result.epochs_reported[-1] if result.epochs_reported else None
    epochs = training.epochs
    try:
        _, best_epoch = best_from_results(results_csv.read_text())
    except OSError:
        best_epoch = None
    best = f"; best.pt is epoch {best_epoch}" if best_epoch else ""
    if result.stopped_at is not None:
        return Outcome(reason=STOP_REQUESTED, epochs=done, best_epoch=best_epoch,
                       message=f"spec.stop: training stopped after epoch {result.stopped_at}{best}")  # fmt: skip
    if hyper.get("time"):
        return Outcome(reason=TIME_BUDGET_REACHED, epochs=done, best_epoch=best_epoch,
                       message=f"time budget of {hyper['time']} h reached after {done} epochs{best}")  # fmt: skip
    if done is not None and done < epochs:
        msg = f"no improvement for {training.patience} epochs (spec.training.patience): {done} of {epochs} ran"
        return Outcome(reason=EARLY_STOPPING, epochs=done, best_epoch=best_epoch, message=f"{msg}{best}")
    return Outcome(reason=COMPLETED, epochs=done, best_epoch=best_epoch, message=f"{done or epochs} epochs{best}")


def ranks_per_node(cfg: TrainerConfig, n_gpus: int) -> int:
    """The ranks this pod runs: one per GPU it trains on, or cpuProcesses. On a test bed that simulates its GPUs
    (none visible, ``simulated_gpus``), one CPU rank (gloo) for each GPU the pod holds: the world a GPU pod
    would have, so a bed runs a several-GPU job with that many real ranks, as CI does with cpuProcesses."""
    if n_gpus == 0 and cfg.simulated_gpus and not cfg.cpu_processes and cfg.gpus > 1:
        return cfg.gpus
    return processes_per_node(n_gpus, cfg.cpu_processes)


def check_gpus(visible: int, requested: int, ddp: bool, simulated: bool = False) -> int:
    """The GPUs to train on. None visible with spec.resources.gpus > 0: GPUNotVisible (a test bed that
    simulates its GPUs says so with ``simulated`` and trains on CPU). Fewer than spec.resources.gpus, or
    several without torch.distributed: an error, never a silent fallback to fewer GPUs than the job holds."""
    if visible == 0:
        if requested and not simulated:
            raise GPUNotVisible(no_gpu_message(requested, os.environ.get(NODE_NAME_ENV), cuda_diagnosis()))
        if requested:
            log.warning("spec.resources.gpus is %d but no CUDA device is visible: training on CPU "
                        "(simulated GPUs, the chart's trainer.simulatedGpus)", requested)  # fmt: skip
        return 0
    if requested and visible < requested:
        raise TrainerError(f"spec.resources.gpus is {requested} but this pod sees {visible} CUDA devices; the "
                           "node's GPU plugin or driver is at fault", ExitCode.TRAINING_ERROR)  # fmt: skip
    if visible > 1 and not ddp:
        raise ConfigInvalid(f"{visible} GPUs but this image's torch has no torch.distributed, which DDP "
                            "needs: use the project's trainer image (spec.image)")  # fmt: skip
    return visible


def no_gpu_message(requested: int, node: str | None, diagnosis: str) -> str:
    """GPUNotVisible's message: what the pod holds, the node, what torch saw and the likely causes (pure)."""
    where = f"node {node}" if node else "this node"
    return (
        f"spec.resources.gpus is {requested} but the pod on {where} sees no CUDA device ({diagnosis}); likely "
        "cause: the node's NVIDIA driver is older than this torch's CUDA build needs, or the container runtime "
        "does not expose the GPU (NVIDIA container toolkit, the node's RuntimeClass, the device plugin). "
        f"Check `nvidia-smi` on {where}; not retried, as training on CPU would hold the GPU for hours"
    )


def cuda_diagnosis() -> str:
    """What torch and the container see of CUDA, for GPUNotVisible: torch's CUDA build, the driver version
    (/proc/driver/nvidia/version), /dev/nvidia* devices, torch's own warning (e.g. "driver too old")."""
    import glob
    import warnings

    parts: list[str] = []
    try:
        import torch

        parts.append(f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none (a CPU build)'}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.is_available()
        parts.extend(f"torch: {str(w.message).strip().splitlines()[0][:200]}" for w in caught[:1])
    except Exception as e:
        parts.append(f"torch unusable: {type(e).__name__}: {e}"[:200])
    try:
        driver = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
        parts.append(f"driver: {' '.join(driver.split())[:160]}")
    except (OSError, IndexError):
        parts.append("no NVIDIA kernel driver visible (/proc/driver/nvidia/version)")
    devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
    parts.append(f"devices: {', '.join(devices)}" if devices else "no /dev/nvidia* device in the container")
    return "; ".join(parts)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def _download_checkpoint(store: S3Store, state: CheckpointState, dest: Path, save_dir: Path) -> str | None:
    """Fetches exactly the objects state.json names; results.csv goes where Ultralytics appends to it."""
    bucket, key = parse_s3_uri(state.uri)
    path = dest / "last.pt"
    try:
        store.download(bucket, key, path)
    except S3NotFound:
        log.warning("checkpoint %s named by state.json is gone; starting fresh", state.uri)
        return None
    if state.results:
        rb, rk = parse_s3_uri(state.results)
        csv = save_dir / "results.csv"
        try:
            store.download(rb, rk, csv)
        except S3NotFound:
            log.warning("checkpoint results %s missing; results.csv restarts at the resumed epoch", state.results)
        else:  # a checkpoint staged by an older trainer may hold the row of the epoch about to be redone
            csv.write_text(results_through(csv.read_text(errors="replace"), state.epoch))
    return str(path)


__all__ = ["Interruption", "join_key", "run"]
