"""Exit codes of the trainer: the contract with the operator's podFailurePolicy.

Non-retriable codes fail the Job at once (retrying cannot help and burns GPU hours: every S3 misconfiguration
is one, with a message naming the spec field to fix); retriable ones
count against the backoff limit; INTERRUPTED is a disruption (SIGTERM from eviction, preemption or
drain after the checkpoint was flushed) and does not count at all.

PEER_LOST is the gang's: in a multi-node job (spec.resources.nodes > 1) a pod whose ranks lost a peer on another
node (its pod evicted, preempted, its node gone: the collective or the rendezvous broke or timed out) exits with
it. The lost pod carries the cause (DisruptionTarget, or its own exit code); the survivors' exit only completes
the gang restart, so a multi-node Job's podFailurePolicy ignores it (``GANG``) and the operator bounds the gang
restarts (spec.maxGangRestarts). A one-pod Job has no peers on other nodes: there it is not ignored and counts
against the backoff limit like any failure, so a misclassified exit can never loop forever.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    SUCCEEDED = 0
    CONFIG_INVALID = 10
    DATASET_INVALID = 11
    S3_ACCESS_DENIED = 12  # wrong keys, forbidden bucket or prefix, no credentials where they are needed
    MODEL_UNAVAILABLE = 13
    OUT_OF_MEMORY = 14
    SCRATCH_TOO_SMALL = 15  # the dataset cannot fit the work directory's disk (spec.resources.scratchSize)
    S3_BUCKET_NOT_FOUND = 16  # a bucket named in spec.dataset, spec.output or spec.model does not exist
    S3_WRONG_REGION = 17  # spec.s3.region is not the bucket's region (AuthorizationHeaderMalformed, PermanentRedirect)
    S3_TLS_FAILED = 18  # the endpoint's certificate is not trusted (spec.s3.caBundle) or not for its hostname
    S3_UNREACHABLE = 19  # the endpoint never answered in this pod (spec.s3.endpoint): refused, no DNS, timeout
    TRAINING_ERROR = 20
    S3_UNAVAILABLE = 21
    GPU_NOT_VISIBLE = 22  # spec.resources.gpus > 0 but the pod sees no CUDA device: the node's driver or runtime
    PEER_LOST = 23  # multi-node: a peer on another node (pod) was lost or never came; the gang restarts from S3
    INTERRUPTED = 75  # EX_TEMPFAIL

    @property
    def reason(self) -> str:
        """CamelCase reason, as used in the TrainingJob's conditions."""
        return REASONS[self]

    @property
    def retriable(self) -> bool:
        return self in (ExitCode.TRAINING_ERROR, ExitCode.S3_UNAVAILABLE, ExitCode.PEER_LOST)


REASONS: dict[ExitCode, str] = {
    ExitCode.SUCCEEDED: "Succeeded",
    ExitCode.CONFIG_INVALID: "ConfigInvalid",
    ExitCode.DATASET_INVALID: "DatasetInvalid",
    ExitCode.S3_ACCESS_DENIED: "S3AccessDenied",
    ExitCode.MODEL_UNAVAILABLE: "ModelUnavailable",
    ExitCode.OUT_OF_MEMORY: "OutOfMemory",
    ExitCode.SCRATCH_TOO_SMALL: "ScratchTooSmall",
    ExitCode.S3_BUCKET_NOT_FOUND: "S3BucketNotFound",
    ExitCode.S3_WRONG_REGION: "S3WrongRegion",
    ExitCode.S3_TLS_FAILED: "S3TLSFailed",
    ExitCode.S3_UNREACHABLE: "S3Unreachable",
    ExitCode.TRAINING_ERROR: "TrainingError",
    ExitCode.S3_UNAVAILABLE: "S3Unavailable",
    ExitCode.GPU_NOT_VISIBLE: "GPUNotVisible",
    ExitCode.PEER_LOST: "PeerLost",
    ExitCode.INTERRUPTED: "Interrupted",
}

NON_RETRIABLE: tuple[int, ...] = tuple(int(c) for c in ExitCode if c and not c.retriable and c != ExitCode.INTERRUPTED)
DISRUPTION: tuple[int, ...] = (int(ExitCode.INTERRUPTED),)
#: Exit codes a multi-node Job's podFailurePolicy ignores besides DISRUPTION: the survivors of a lost peer.
GANG: tuple[int, ...] = (int(ExitCode.PEER_LOST),)


class TrainerError(Exception):
    """An error with a classified exit code; its message is the termination message."""

    code: ExitCode = ExitCode.TRAINING_ERROR

    def __init__(self, message: str, code: ExitCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigInvalid(TrainerError):
    code = ExitCode.CONFIG_INVALID


class DatasetInvalid(TrainerError):
    code = ExitCode.DATASET_INVALID


class S3AccessDenied(TrainerError):
    code = ExitCode.S3_ACCESS_DENIED


class S3Unavailable(TrainerError):
    code = ExitCode.S3_UNAVAILABLE


class S3BucketNotFound(TrainerError):
    code = ExitCode.S3_BUCKET_NOT_FOUND


class S3WrongRegion(TrainerError):
    code = ExitCode.S3_WRONG_REGION


class S3TLSFailed(TrainerError):
    code = ExitCode.S3_TLS_FAILED


class S3Unreachable(TrainerError):
    """The endpoint has not answered once in this pod, for the whole retry budget: a misconfigured
    spec.s3.endpoint, not an outage (once S3 has answered, the same failure is S3Unavailable)."""

    code = ExitCode.S3_UNREACHABLE


class ScratchTooSmall(TrainerError):
    code = ExitCode.SCRATCH_TOO_SMALL


class ModelUnavailable(TrainerError):
    code = ExitCode.MODEL_UNAVAILABLE


class GPUNotVisible(TrainerError):
    """Not retried: the pod holds a GPU it cannot use, and training on CPU instead would hold it for hours."""

    code = ExitCode.GPU_NOT_VISIBLE


class Interrupted(TrainerError):
    code = ExitCode.INTERRUPTED


class PeerLost(TrainerError):
    """Multi-node only: the ranks of another pod went away (or never joined) - a broken collective, a closed
    connection to the rendezvous store, a rendezvous or collective timeout. Not this pod's fault: the whole gang
    restarts from the newest checkpoint (the operator's Indexed Job ignores this exit and replaces the pod)."""

    code = ExitCode.PEER_LOST


def causes(exc: BaseException):
    """``exc`` and the exceptions behind it: ``__cause__``/``__context__``, and the ``error`` botocore keeps in
    an exception's ``kwargs`` (Ultralytics or botocore may wrap a TrainerError or an SSL error)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        inner = getattr(e, "kwargs", {}).get("error") if isinstance(getattr(e, "kwargs", None), dict) else None
        e = e.__cause__ or e.__context__ or (inner if isinstance(inner, BaseException) else None)
