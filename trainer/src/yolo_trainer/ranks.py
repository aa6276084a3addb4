"""Ultralytics' trainer for a rank that torch's launcher started (``torch.distributed.run``, ``PET_*`` settings).

Ultralytics 8.4 assumes it launches DDP itself, on one node: it writes a temp script and runs torchrun with
``--nproc_per_node`` = the devices of ``device=``. Under an outside launcher every process already is a rank,
and Ultralytics gets three things wrong, which :class:`LaunchedRankMixin` fixes through the trainer's public
methods (``YOLO.train(trainer=...)`` takes the class):

- the world size: Ultralytics counts the local ``device=`` list (0 on CPU) but passes the global ``RANK`` to
  ``init_process_group``; across nodes, ranks of node 1 die (``rank < size``) and node 0 trains alone. Here it
  is ``WORLD_SIZE``, what the launcher says, and Ultralytics' own launcher is never used (``ddp = False``);
- the final validation of ``best.pt`` is distributed, but only global rank 0's node has the file: ranks elsewhere
  skip it and rank 0 waits for them forever. Rank 0's ``last.pt`` and ``best.pt`` are sent to every node first;
- CPU ranks (gloo): see :mod:`yolo_trainer.cpu_ddp_shims`.

Imports Ultralytics: only the training process (child.py) imports this module, after the supervisor set
Ultralytics' environment.

Resume needs nothing here: every pod downloads ``last.pt`` to the same path before training (pipeline.py), and
Ultralytics loads it on every rank.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from ultralytics.models.yolo.detect import DetectionTrainer

#: Bound on one collective (a rank that stopped answering): Ultralytics sets 3 hours for NCCL. The operator sets
#: a multi-node job's own bound in COLLECTIVE_TIMEOUT_ENV (a node gone dark closes no connection: only this ends it).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def collective_timeout(environ: dict[str, str] | None = None) -> timedelta:
    """COLLECTIVE_TIMEOUT_ENV's seconds where set (a whole number > 0), else COLLECTIVE_TIMEOUT."""
    from yolo_contract.trainer_config import COLLECTIVE_TIMEOUT_ENV

    raw = (os.environ if environ is None else environ).get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    return timedelta(seconds=int(raw)) if raw.isdigit() and int(raw) > 0 else COLLECTIVE_TIMEOUT


@contextmanager
def bounded_init(timeout: timedelta):
    """Ultralytics' own ``init_process_group`` call (NCCL, 3 hours) with ``timeout`` instead."""
    import torch.distributed as dist

    init = dist.init_process_group

    def bounded(*args, **kwargs):
        return init(*args, **{**kwargs, "timeout": timeout})

    dist.init_process_group = bounded
    try:
        yield
    finally:
        dist.init_process_group = init


def rank_env() -> dict[str, int]:
    """Where this rank sits: global rank, local rank, world size, node rank and node count (torchrun's names:
    a node is a ``GROUP``)."""
    e = os.environ
    return {
        "rank": int(e.get("RANK", "0")),
        "localRank": int(e.get("LOCAL_RANK", "0")),
        "worldSize": int(e.get("WORLD_SIZE", "1")),
        "nodeRank": int(e.get("GROUP_RANK", "0")),
        "nodes": int(e.get("GROUP_WORLD_SIZE", "1")),
    }


def _event(event: str, **fields) -> None:
    """One JSON line on stdout, in one write: every rank shares the launcher's stdout (unbuffered, ``-u``), and
    ``print`` writes the line and its newline separately, so two ranks' lines written at the same moment
    (right after a collective) would interleave."""
    line = json.dumps({"event": event, **rank_env(), **fields}, default=str) + "\n"
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), line.encode())


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class LaunchedRankMixin:
    """Mixed into an Ultralytics task trainer (``BaseTrainer`` subclass) for launcher-spawned ranks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.world_size = int(os.environ["WORLD_SIZE"])  # the whole world, every node; also on CPU
        self.ddp = False  # the launcher started the ranks: never Ultralytics' own temp-file launcher

    def _setup_ddp(self):
        import torch.distributed as dist
        from ultralytics.utils import RANK

        if self.device.type == "cpu":
            from .cpu_ddp_shims import init_cpu_process_group

            init_cpu_process_group(RANK, self.world_size, collective_timeout())
        else:
            with bounded_init(collective_timeout()):
                super()._setup_ddp()  # device LOCAL_RANK of device=, NCCL, RANK of self.world_size (set above)
        _event("rank", backend=dist.get_backend(), device=str(self.device))

    def _setup_train(self):
        if self.device.type == "cpu" and self.world_size > 1:
            from .cpu_ddp_shims import ddp_without_device_ids_on_cpu

            with ddp_without_device_ids_on_cpu():
                return super()._setup_train()
        return super()._setup_train()

    def final_eval(self):
        self.share_weights_with_every_node()
        validated = self.best.exists()
        if self.device.type == "cpu" and self.world_size > 1:
            from .cpu_ddp_shims import validator_on_cpu

            with validator_on_cpu():
                super().final_eval()
        else:
            super().final_eval()
        _event("finalValidation", weights=str(self.best) if validated else None)

    def share_weights_with_every_node(self) -> None:
        """Rank 0's ``last.pt`` and ``best.pt`` written on every other node, all ranks waiting at a barrier
        until they are; a no-op on one node (its ranks share the run directory)."""
        import torch.distributed as dist
        from ultralytics.utils import LOCAL_RANK, RANK

        env = rank_env()
        if env["nodes"] <= 1 or not dist.is_initialized():
            return
        files = [None]
        if RANK == 0:
            files = [{p.name: p.read_bytes() for p in (self.last, self.best) if p.exists()}]
        dist.broadcast_object_list(files, src=0)
        if env["nodeRank"] != 0 and LOCAL_RANK == 0:
            self.wdir.mkdir(parents=True, exist_ok=True)
            for name, data in (files[0] or {}).items():
                _write_atomically(self.wdir / name, data)
        dist.barrier()


def trainer_class(task_trainer: type) -> type:
    """``task_trainer`` (an Ultralytics task trainer) made a launched-rank trainer."""
    if issubclass(task_trainer, LaunchedRankMixin):
        return task_trainer
    if task_trainer is DetectionTrainer:
        return LaunchedRankTrainer
    return type(f"LaunchedRank{task_trainer.__name__}", (LaunchedRankMixin, task_trainer), {})


class LaunchedRankTrainer(LaunchedRankMixin, DetectionTrainer):
    """``DetectionTrainer`` for launcher-spawned ranks (what the trainer trains: detection)."""
