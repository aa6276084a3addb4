"""Preparing the Ultralytics run: argument building/validation, device and worker choice, metrics parsing.

Ultralytics is imported lazily (inside functions): importing it fixes its settings (config dir, offline,
auto-install) from the environment, which ``prepare_environment`` must set first.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from yolo_contract import hyperparameters
from yolo_contract.exitcodes import ConfigInvalid
from yolo_contract.progress import RESULTS_COLUMNS, Metrics
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
    """All visible GPUs: ``[0, 1, ...]`` (one rank per GPU under torch's launcher, each on the GPU of its local
    rank); none means CPU (one process, or ``cpuProcesses`` gloo ranks)."""
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


def _f(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None


def epoch_metrics(val: dict[str, Any], losses: dict[str, Any]) -> Metrics:
    """progress.metrics from results.csv columns (yolo_contract.progress.RESULTS_COLUMNS, shared with history)."""
    c = RESULTS_COLUMNS
    return Metrics(
        precision=_f(val.get(c["precision"])),
        recall=_f(val.get(c["recall"])),
        map50=_f(val.get(c["map50"])),
        map50_95=_f(val.get(c["map50_95"])),
        box_loss=_f(losses.get(c["box_loss"])),
        cls_loss=_f(losses.get(c["cls_loss"])),
        dfl_loss=_f(losses.get(c["dfl_loss"])),
    )


def ddp_supported() -> bool:
    """Several ranks need torch.distributed (and its launcher, torch.distributed.run): a torch built without
    it cannot train on more than one GPU."""
    try:
        import torch.distributed as dist

        return dist.is_available()
    except ImportError:
        return False
