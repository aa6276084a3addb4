"""An exception escaping training -> the exit code and message the operator sees (pure).

Its own module so that both the CLI and the training child (a rank under torchrun) use it without the child
importing the CLI, and with it the pipeline."""

from __future__ import annotations

import errno

from yolo_contract.exitcodes import ExitCode, TrainerError, causes

SHM_DIR = "/dev/shm"  # full means shmSize, not scratch, is too small


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def classify(exc: BaseException) -> tuple[ExitCode, str]:
    """Exit code and message for an exception escaping the pipeline (pure, unit-tested)."""
    for e in causes(exc):
        if isinstance(e, TrainerError):
            return e.code, str(e)
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and not str(e.filename or "").startswith(SHM_DIR):
            return ExitCode.SCRATCH_TOO_SMALL, (
                f"the work directory's disk is full ({e}); raise spec.resources.scratchSize"
            )
    if is_oom(exc):
        return ExitCode.OUT_OF_MEMORY, f"out of memory: {exc}; reduce training.batch or training.imgsz"
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted"
    return ExitCode.TRAINING_ERROR, f"{type(exc).__name__}: {exc}"
