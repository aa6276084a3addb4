"""Shims that let Ultralytics 8.4 train DDP ranks on CPU (gloo), each with why it is needed.

Ultralytics only knows DDP across CUDA (or NPU/XPU) devices; a CPU rank started by torch's launcher trips over
four assumptions, all checked against Ultralytics 8.4.190 (``engine/trainer.py``, ``engine/validator.py``):

1. ``BaseTrainer.__init__`` maps ``device=cpu`` to world size 0, so ``_do_train`` never sets up DDP. Fixed in
   :class:`yolo_trainer.ranks.LaunchedRankTrainer`, which takes the world size from ``WORLD_SIZE`` for every
   device (the same fix multi-node GPUs need): an attribute of the trainer, not a patch.
2. ``BaseTrainer._setup_ddp`` picks a CUDA/NPU/XPU device and NCCL: on CPU the process group must be gloo
   (:func:`init_cpu_process_group`, called by that trainer's ``_setup_ddp`` override: a public method).
3. ``BaseTrainer._setup_train`` wraps the model as ``DistributedDataParallel(model, device_ids=[device.index])``;
   a CPU device's index is None and torch refuses ``device_ids=[None]`` for a CPU module (it wants None).
   No hook: :func:`ddp_without_device_ids_on_cpu` swaps the ``nn`` name that line reads, for that call only.
4. ``BaseValidator.__call__`` outside training under DDP (the final validation of best.pt) builds its model on
   ``torch.device("cuda", torch.cuda.current_device())`` whatever the device, which fails without a GPU.
   No hook: :func:`validator_on_cpu` swaps the two names that line reads, for that call only.

Everything here applies only to CPU ranks; a GPU rank never enters these functions. When Ultralytics changes
the lines named above, the real-rank tests (tests/integration/test_trainer_ranks.py) fail rather than train
wrongly.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from datetime import timedelta


def init_cpu_process_group(rank: int, world_size: int, timeout: timedelta) -> None:
    """Shim 2: the gloo process group a CPU rank needs (Ultralytics would ask for NCCL and a CUDA device).
    ``MASTER_ADDR``/``MASTER_PORT`` come from torch's launcher (``env://``)."""
    import torch.distributed as dist

    dist.init_process_group(backend="gloo", init_method="env://", rank=rank, world_size=world_size, timeout=timeout)


def _ddp_without_device_ids(module, *args, device_ids=None, **kwargs):
    """``DistributedDataParallel`` for a CPU module: ``device_ids`` must be None there, never ``[None]``."""
    import torch

    if device_ids is not None and all(d is None for d in device_ids):
        device_ids = None
    return torch.nn.parallel.DistributedDataParallel(module, *args, device_ids=device_ids, **kwargs)


@contextlib.contextmanager
def ddp_without_device_ids_on_cpu() -> Iterator[None]:
    """Shim 3: while Ultralytics' ``_setup_train`` runs, its module's ``nn`` is torch.nn with a
    ``parallel.DistributedDataParallel`` that turns ``device_ids=[None]`` (a CPU device's index) into None.
    Private internals (no hook exists): the name ``nn`` in ``ultralytics.engine.trainer``."""
    import torch
    import ultralytics.engine.trainer as trainer_module

    saved = trainer_module.nn
    parallel = types.SimpleNamespace(**vars(torch.nn.parallel))
    parallel.DistributedDataParallel = _ddp_without_device_ids
    proxy = types.SimpleNamespace(**vars(torch.nn))
    proxy.parallel = parallel
    trainer_module.nn = proxy
    try:
        yield
    finally:
        trainer_module.nn = saved


class _NoAccelerator:
    """Stands in for ``torch.cuda`` where the validator asks for the current CUDA device on a CPU rank."""

    @staticmethod
    def current_device() -> int:
        return 0


@contextlib.contextmanager
def validator_on_cpu() -> Iterator[None]:
    """Shim 4: while the validator runs outside training on a CPU rank (final validation of best.pt), the device
    it builds its ``AutoBackend`` on is the CPU instead of ``cuda:<current device>``. Private internals (no hook
    exists): the names ``AutoBackend`` and ``get_torch_device_backend`` in ``ultralytics.engine.validator``."""
    import torch
    import ultralytics.engine.validator as validator_module

    saved = validator_module.AutoBackend, validator_module.get_torch_device_backend
    real_backend = saved[0]

    def autobackend_on_cpu(*args, device=None, **kwargs):
        return real_backend(*args, device=torch.device("cpu"), **kwargs)

    validator_module.AutoBackend = autobackend_on_cpu
    validator_module.get_torch_device_backend = lambda _device: _NoAccelerator
    try:
        yield
    finally:
        validator_module.AutoBackend, validator_module.get_torch_device_backend = saved

