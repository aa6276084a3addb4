"""An exception escaping training -> the exit code and message the operator sees (pure).

Its own module so that both the CLI and the training child (a rank under torchrun) use it without the child
importing the CLI, and with it the pipeline."""

from __future__ import annotations

import errno
import re

from yolo_contract.exitcodes import ExitCode, TrainerError, causes

SHM_DIR = "/dev/shm"  # full means shmSize, not scratch, is too small

#: What gloo, NCCL and torch's TCP store raise in a rank when another rank's connection broke (its process
#: died, its pod went away) or it stopped answering for the collective timeout.
PEER_ERROR = re.compile(
    r"Connection closed by peer|Connection reset by peer|Connection refused|Broken pipe"
    r"|Timed out waiting \d+ ?ms for (?:send|recv) operation|wait timeout after \d+ ?ms"
    r"|[Ss]ocket [Tt]imeout|timed out after \d+ ?ms while trying to connect"
    r"|remote process exited or there was a network error|ncclRemoteError|NCCL communicator was aborted"
    r"|Watchdog caught collective operation timeout|Some NCCL operations have failed or timed out"
)


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


def peer_error(exc: BaseException) -> str | None:
    """The line of a torch.distributed error that says another rank broke its connection or went silent."""
    for e in causes(exc):
        for line in str(e).splitlines():
            if PEER_ERROR.search(line):
                line = re.sub(r"\[[^\]\s]+\.(?:cc|cpp|h):\d+\]\s*", "", line)  # gloo's source file and line
                return " ".join(line.split())[:300]
    return None


def classify(exc: BaseException, nodes: int = 1) -> tuple[ExitCode, str]:
    """Exit code and message for an exception escaping the pipeline, or a rank's training (pure, unit-tested).

    ``nodes``: the nodes of the rank's world. Across several, a broken connection to a peer rank means
    PeerLost (another node's pod died or went away: the gang restarts); on one node every peer is this pod's
    own, and its failure is reported by the rank that failed (the supervisor names it)."""
    for e in causes(exc):
        if isinstance(e, TrainerError):
            return e.code, str(e)
    lost = peer_error(exc) if nodes > 1 else None
    if lost:
        return ExitCode.PEER_LOST, (f"lost the connection to a rank of another node ({lost}): that node's pod "
                                    "died, was evicted or stopped answering; the gang restarts from the last "
                                    "checkpoint")  # fmt: skip
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
