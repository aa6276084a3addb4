"""DataLoader workers and ``/dev/shm``: one model of what the loader needs, used by both sides.

The operator sizes the pod's memory-backed ``/dev/shm`` with :func:`pod_shm_bytes` for the workers it plans
(:func:`planned_workers`); the trainer then runs :func:`dataloader_workers`, which never uses more than what
fits the ``/dev/shm`` it finds, so a pod sized here cannot die with "Bus error" in a worker.

PyTorch DataLoader workers hand finished batches to the training process through shared memory. Each worker
keeps ``PREFETCH_FACTOR`` (2) collated batches in flight; a batch of uint8 images is
``batch x imgsz x imgsz x 3`` bytes; with DDP every rank runs its own workers on its share of the batch::

    shm = SHM_SAFETY (2) x ranks x workers x PREFETCH_FACTOR (2) x (batch / ranks) x imgsz^2 x 3 + 256 MiB

Example: one GPU, 8 workers, batch 16, imgsz 640 -> 2x8x2x16x640x640x3 B = 600 MiB + 256 MiB = 896 MiB.

AutoBatch (``batch`` -1 or a fraction in (0, 1)) picks the batch only once training starts, after the pod is
sized and the workers are started, so both sides size for the most it can pick: 1024 (``MAX_BATCH``, where
Ultralytics clamps its estimate). That usually hits the 16 GiB clamp, and the trainer then starts the workers
that fit it: fewer workers, never a "Bus error". The operator adds the size to the pod's memory request, so
AutoBatch asks for up to 16 GiB more; ``spec.resources.shmSize`` caps it (fewer workers again).

Dataset limits (:func:`dataset_limits`, what staging stops an archive bomb or a runaway prefix at) follow the
scratch volume the dataset is staged into (``spec.resources.scratchSize``, else the chart's
``trainer.scratchSize``): at most its size in bytes, and one file per 4 KiB of it (every non-empty file takes
at least one 4 KiB filesystem block, so no dataset that fits is refused). Without a scratch size: 100 GiB and
5,000,000 files. ``spec.resources.maxDatasetSize`` / ``maxDatasetFiles`` set either outright.
"""

from __future__ import annotations

import math

from yolo_contract.training import MAX_BATCH, auto_batch

MIB = 1024 * 1024
DEFAULT_WORKERS = 8  # Ultralytics' default, and a ceiling: more rarely helps, each holds a dataset copy
PREFETCH_FACTOR = 2  # torch DataLoader default: batches queued per worker
SHM_SAFETY = 2  # collate copy + pinned-memory overlap
SHM_BASE_MIB = 256  # interpreter, NCCL and torch bookkeeping
SHM_ROUND_MIB = 64
SHM_MAX_MIB = 16384
GIB = 1 << 30
DEFAULT_MAX_DATASET_BYTES = 100 * GIB  # without a scratch size: bounds a bomb on the node's own disk
DEFAULT_MAX_DATASET_FILES = 5_000_000
FILE_BLOCK_BYTES = 4096  # the smallest a non-empty file takes on ext4/xfs: the most files a volume can hold


def processes_per_node(gpus: int, cpu_processes: int | None = None) -> int:
    """Training processes (DDP ranks) in one pod: one per GPU; on CPU (``gpus == 0``) ``cpu_processes``
    (``TrainerConfig.cpu_processes``, unset = 1). The one place the rank count of a pod is decided."""
    if gpus > 0:
        return gpus
    return max(1, cpu_processes or 1)


def ranks(gpus: int, cpu_processes: int | None = None) -> int:
    """Training processes in a pod (see :func:`processes_per_node`)."""
    return processes_per_node(gpus, cpu_processes)


def planned_workers(requested: int | None, gpus: int) -> int:
    """Workers per rank the operator sizes for: 0 on CPU (Ultralytics loads in the main process there, the
    model and not loading is the bottleneck), else ``spec.training.workers`` or Ultralytics' default."""
    if gpus <= 0:
        return 0
    return DEFAULT_WORKERS if requested is None else requested


def sized_batch(batch: float) -> int:
    """The batch ``/dev/shm`` is sized for: the given one, or the most AutoBatch can pick."""
    return MAX_BATCH if auto_batch(batch) else int(batch)


def shm_needed_bytes(workers: int, gpus: int, batch: float, imgsz: int) -> int:
    """Bytes of ``/dev/shm`` that ``workers`` loader workers per rank hold at most."""
    n = ranks(gpus)
    per_rank_batch = max(1, sized_batch(batch) // n)
    batch_bytes = per_rank_batch * imgsz * imgsz * 3
    return SHM_SAFETY * n * workers * PREFETCH_FACTOR * batch_bytes + SHM_BASE_MIB * MIB


def pod_shm_bytes(
    requested_workers: int | None,
    gpus: int,
    batch: float,
    imgsz: int,
    *,
    min_mib: int = SHM_BASE_MIB,
    max_mib: int = SHM_MAX_MIB,
) -> int:
    """The ``/dev/shm`` sizeLimit for a pod: what the planned workers need, rounded up to 64 MiB and clamped
    to [min_mib, max_mib]. A clamp below the need is safe: the trainer then starts fewer workers."""
    need = shm_needed_bytes(planned_workers(requested_workers, gpus), gpus, batch, imgsz)
    mib = math.ceil(need / MIB / SHM_ROUND_MIB) * SHM_ROUND_MIB
    return max(min_mib, min(max_mib, mib)) * MIB


def dataloader_workers(
    requested: int | None, gpus: int, batch: float, imgsz: int, *, cpus: int, shm_bytes: int | None
) -> int:
    """Workers per rank the trainer starts: the planned ones, fewer when the CPUs or ``/dev/shm`` cannot take them.

    - CPU bound: one core per rank stays with the training loop (``cpus // ranks - 1``).
    - ``/dev/shm`` bound: the most workers whose :func:`shm_needed_bytes` fits ``shm_bytes`` (a pod without a
      memory-backed ``/dev/shm`` has 64 MiB: that yields 0 workers, loading in the main process, not a crash).
    """
    want = planned_workers(requested, gpus)
    if want == 0:
        return 0
    n = ranks(gpus)
    by_cpu = max(0, cpus // n - 1)
    if shm_bytes is None:
        by_shm = want
    else:
        per_worker = shm_needed_bytes(1, gpus, batch, imgsz) - SHM_BASE_MIB * MIB
        by_shm = max(0, (shm_bytes - SHM_BASE_MIB * MIB) // per_worker)
    return int(min(want, by_cpu, by_shm))


def dataset_limits(
    scratch_bytes: int | None, max_bytes: int | None = None, max_files: int | None = None
) -> tuple[int, int]:
    """(bytes, files) the staged dataset may reach: the explicit limits, else derived from the scratch volume's
    size, else the defaults (see the module docstring). The one place the trainer's dataset limits are set."""
    if scratch_bytes is None:
        derived = (DEFAULT_MAX_DATASET_BYTES, DEFAULT_MAX_DATASET_FILES)
    else:
        derived = (scratch_bytes, max(1, scratch_bytes // FILE_BLOCK_BYTES))
    return (derived[0] if max_bytes is None else max_bytes, derived[1] if max_files is None else max_files)
