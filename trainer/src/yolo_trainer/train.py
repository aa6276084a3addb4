"""Running Ultralytics: argument building/validation, device and worker choice, per-epoch hooks.

Ultralytics is imported lazily (inside functions): importing it fixes its settings (config dir, offline,
auto-install) from the environment, which ``prepare_environment`` must set first.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolo_contract import hyperparameters
from yolo_contract.base import now_rfc3339
from yolo_contract.exitcodes import ConfigInvalid, Interrupted, TrainerError
from yolo_contract.progress import Checkpoint, Metrics, Progress, TrainerReport
from yolo_contract.trainer_config import TrainerConfig

log = logging.getLogger(__name__)


def prepare_environment(cfg: TrainerConfig, environ: dict[str, str] | None = None) -> None:
    """Offline-friendly Ultralytics settings; must run before ``import ultralytics``."""
    env = os.environ if environ is None else environ
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if not env.get("YOLO_CONFIG_DIR"):
        env["YOLO_CONFIG_DIR"] = str(work / ".ultralytics")  # the image's HOME may be read-only
    env.setdefault("MPLCONFIGDIR", str(work / ".matplotlib"))
    env["YOLO_AUTOINSTALL"] = "false"  # never pip-install inside a training pod
    if cfg.offline:
        env["YOLO_OFFLINE"] = "1"  # no hub, update or font downloads
    env.setdefault("YOLO_VERBOSE", "true")


def validate_hyperparameters(hp: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``hp`` checked against the contract's table (what admission enforces) and then Ultralytics'
    own ``check_cfg``; raises ConfigInvalid naming every bad key."""
    from ultralytics.cfg import check_cfg

    bad = hyperparameters.problems(hp)
    if bad:
        raise ConfigInvalid("; ".join(bad))
    out = {k: v for k, v in hp.items() if v is not None}
    try:
        check_cfg(out, hard=True)
    except (TypeError, ValueError) as e:
        raise ConfigInvalid(f"spec.training.hyperparameters: {e}") from e
    return out


def choose_device(n_gpus: int) -> str | int | list[int]:
    """All visible GPUs: ``[0, 1, ...]`` makes Ultralytics run DDP inside the pod; none means CPU."""
    if n_gpus <= 0:
        return "cpu"
    if n_gpus == 1:
        return 0
    return list(range(n_gpus))


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this container may use: the CPU affinity, further capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def shm_bytes(path: str = "/dev/shm") -> int | None:
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
    except OSError:
        return None


def train_args(
    cfg: TrainerConfig,
    data_yaml: Path,
    project: Path,
    name: str,
    device,
    workers: int,
    hyperparameters: dict[str, Any],
) -> dict[str, Any]:
    """The keyword arguments for ``YOLO.train`` (pure)."""
    t = cfg.training
    args: dict[str, Any] = {
        **hyperparameters,
        "data": str(data_yaml),
        "epochs": t.epochs,
        "imgsz": t.imgsz,
        "batch": t.batch,
        "patience": t.patience,
        "optimizer": t.optimizer,
        "seed": t.seed,
        "workers": workers,
        "device": device,
        "project": str(project),
        "name": name,
        "exist_ok": True,
        "plots": True,
        "save": True,
        "val": hyperparameters.get("val", True),
    }
    if t.freeze is not None:
        args["freeze"] = t.freeze
    return args


def best_from_results(csv_text: str) -> tuple[float | None, int | None]:
    """(best mAP50-95, its 1-based epoch) from an Ultralytics results.csv."""
    best, best_epoch = None, None
    reader = csv.DictReader(io.StringIO(csv_text))
    for row in reader:
        row = {k.strip(): v for k, v in row.items() if k}
        try:
            m = float(row["metrics/mAP50-95(B)"])
            e = int(float(row["epoch"]))
        except (KeyError, ValueError, TypeError):
            continue
        if math.isfinite(m) and (best is None or m > best):
            best, best_epoch = m, e
    return best, best_epoch


def _f(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None


def epoch_metrics(val: dict[str, Any], losses: dict[str, Any]) -> Metrics:
    return Metrics(
        precision=_f(val.get("metrics/precision(B)")),
        recall=_f(val.get("metrics/recall(B)")),
        map50=_f(val.get("metrics/mAP50(B)")),
        map50_95=_f(val.get("metrics/mAP50-95(B)")),
        box_loss=_f(losses.get("train/box_loss")),
        cls_loss=_f(losses.get("train/cls_loss")),
        dfl_loss=_f(losses.get("train/dfl_loss")),
    )


class TrainingHooks:
    """Ultralytics callbacks: progress every epoch, checkpoint hand-off, interruption between batches."""

    def __init__(
        self,
        report: Callable[[TrainerReport], None],
        submit_checkpoint,
        interrupt: threading.Event,
        uploader_error: Callable[[], TrainerError | None] = lambda: None,
        last_checkpoint: Callable[[], Checkpoint | None] = lambda: None,
        stream=None,
        stop: threading.Event | None = None,
    ):
        self.report = report
        self.stop = stop or threading.Event()
        #: 1-based epoch at whose end a stop request (spec.stop) ended training; None if none did.
        self.stopped_at: int | None = None
        self.submit_checkpoint = submit_checkpoint
        self.interrupt = interrupt
        self.uploader_error = uploader_error
        self.last_checkpoint = last_checkpoint
        self.stream = stream or sys.stdout
        self.saved_epoch: int | None = None
        self.final_metrics: dict[str, Any] | None = None
        self.epoch_times: list[float] = []
        self._t0 = time.monotonic()
        self.epochs_reported: list[int] = []

    def __reduce__(self):
        # Multi-GPU: Ultralytics pickles the callbacks into its DDP worker processes. The uploader thread and
        # the reporter cannot follow; the workers get inert hooks instead (see ddp_supported()).
        return (_InertHooks, ())

    def attach(self, model) -> None:
        model.add_callback("on_train_start", self.on_train_start)
        model.add_callback("on_train_batch_end", self.on_train_batch_end)
        model.add_callback("on_train_epoch_end", self.on_train_epoch_end)
        model.add_callback("on_model_save", self.on_model_save)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)

    def _check(self) -> None:
        if self.interrupt.is_set():
            raise Interrupted("interrupted by SIGTERM")
        err = self.uploader_error()
        if err is not None:
            raise err

    def on_train_start(self, trainer) -> None:
        self._t0 = time.monotonic()
        log.info("training epochs %d..%d", trainer.start_epoch + 1, trainer.epochs)

    def on_train_batch_end(self, trainer) -> None:
        self._check()

    def _stop_if_requested(self, trainer) -> None:
        """A stop request ends training at the end of this epoch: Ultralytics then validates and saves it,
        validates best.pt and returns as after its last epoch."""
        if self.stop.is_set() and not trainer.stop:
            trainer.stop = True
            self.stopped_at = trainer.epoch + 1
            log.warning("stop requested: training ends after epoch %d", self.stopped_at)

    def on_train_epoch_end(self, trainer) -> None:
        self._stop_if_requested(trainer)  # before validation, so this epoch is validated and saved as the last

    def on_model_save(self, trainer) -> None:
        self.saved_epoch = trainer.epoch
        # The last epoch is not checkpointed: training ends right after it and the final outputs follow; if
        # the pod dies in between, resuming from the previous epoch loses that one epoch only.
        if not trainer.stop:
            self.submit_checkpoint(trainer.epoch, Path(trainer.last), Path(trainer.csv))
        self._check()

    def on_fit_epoch_end(self, trainer) -> None:
        if self.saved_epoch is None or trainer.epoch != self.saved_epoch:
            # Ultralytics calls this once more after training, for the final validation of best.pt.
            self.final_metrics = dict(trainer.metrics or {})
            return
        self._stop_if_requested(trainer)  # a request that came during validation
        now = time.monotonic()
        self.epoch_times.append(now - self._t0)
        self._t0 = now
        done, total = trainer.epoch + 1, trainer.epochs
        mean = sum(self.epoch_times) / len(self.epoch_times)
        losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
        metrics = epoch_metrics(dict(trainer.metrics or {}), losses)
        try:
            best, best_epoch = best_from_results(Path(trainer.csv).read_text())
        except OSError:
            best, best_epoch = None, None
        progress = Progress.of(
            done,
            total,
            eta_seconds=max(0, round(mean * (total - done))),
            metrics=metrics,
            best_map50_95=_f(best),
            best_epoch=best_epoch,
            updated_at=now_rfc3339(),
        )
        self.epochs_reported.append(done)
        line = {"event": "epoch", **progress.model_dump(by_alias=True, exclude_none=True, mode="json")}
        print(json.dumps(line), file=self.stream, flush=True)
        self.report(TrainerReport(stage="Training", progress=progress, last_checkpoint=self.last_checkpoint()))
        self._check()


class _InertHooks:
    """What TrainingHooks become inside DDP worker processes: nothing."""

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda trainer: None
        raise AttributeError(name)


def ddp_supported() -> bool:
    """Ultralytics' DDP launcher needs cloudpickle; without it (and offline) it cannot start at all."""
    import importlib.util

    return importlib.util.find_spec("cloudpickle") is not None


def run_ultralytics(model_path: str, kwargs: dict[str, Any], hooks: TrainingHooks, resume: bool) -> Path:
    """Trains (or resumes) and returns the run's save_dir."""
    from ultralytics import YOLO

    try:
        model = YOLO(model_path)
    except Exception as e:
        from yolo_contract.exitcodes import ModelUnavailable

        raise ModelUnavailable(f"cannot load model {model_path}: {e}") from e
    hooks.attach(model)
    if resume:
        allowed = {k: kwargs[k] for k in ("data", "device", "workers") if k in kwargs}
        model.train(resume=True, **allowed)
    else:
        model.train(**kwargs)
    return Path(model.trainer.save_dir)
