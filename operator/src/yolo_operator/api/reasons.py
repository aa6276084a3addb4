"""Phases, condition types and condition reasons of a TrainingJob: the vocabulary users see.

Conditions follow metav1.Condition (type, status, reason, message, lastTransitionTime, observedGeneration).
Reasons are CamelCase constants; the trainer's exit-code reasons (``yolo_contract.exitcodes.REASONS``) are
used verbatim as reasons of the ``Failed`` condition.
"""

from __future__ import annotations

from typing import Literal

from yolo_contract.progress import COMPLETED, EARLY_STOPPING, STOP_REQUESTED, TIME_BUDGET_REACHED

# --- phases -------------------------------------------------------------------------------------------
PENDING = "Pending"
STAGING = "Staging"
TRAINING = "Training"
UPLOADING = "Uploading"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
QUEUED = "Queued"  # spec.queueName: Kueue holds the Job (not admitted yet, or preempted and requeued)

Phase = Literal["Pending", "Staging", "Training", "Uploading", "Succeeded", "Failed", "Suspended", "Queued"]
PHASES: tuple[str, ...] = (PENDING, STAGING, TRAINING, UPLOADING, SUCCEEDED, FAILED, SUSPENDED, QUEUED)
TERMINAL_PHASES: frozenset[str] = frozenset({SUCCEEDED, FAILED})
RUNNING_PHASES: frozenset[str] = frozenset({STAGING, TRAINING, UPLOADING})

# --- condition types ----------------------------------------------------------------------------------
MODEL_RESOLVED = "ModelResolved"  # the model source resolved to weights the trainer can load
JOB_CREATED = "JobCreated"  # the batch/v1 Job (and its ServiceAccount/Role/RoleBinding) exist
RUNNING = "Running"  # a training pod is running
UNSCHEDULABLE = "Unschedulable"  # the scheduler cannot place the training pod
STALLED = "Stalled"  # the pod cannot start: image pull failure, missing Secret/ConfigMap key, ...
COND_SUSPENDED = "Suspended"  # the Job is suspended (spec.suspend, or waiting for Kueue admission)
COND_SUCCEEDED = "Succeeded"
COND_FAILED = "Failed"
COND_FINISHED = "Finished"  # True with Succeeded or Failed: `kubectl wait --for=condition=Finished` ends on both

# --- reasons ------------------------------------------------------------------------------------------
# ModelResolved
REASON_MODEL_RESOLVED = "Resolved"
REASON_WAITING_FOR_SOURCE = "WaitingForSourceTrainingJob"  # fromTrainingJob is not Succeeded yet
REASON_SOURCE_NOT_FOUND = "SourceTrainingJobNotFound"
REASON_SOURCE_FAILED = "SourceTrainingJobFailed"
REASON_SOURCE_HAS_NO_WEIGHTS = "SourceTrainingJobHasNoWeights"
# JobCreated
REASON_JOB_CREATED = "JobCreated"
# Running
REASON_POD_RUNNING = "PodRunning"
REASON_POD_PENDING = "PodPending"
REASON_JOB_FINISHED = "JobFinished"
# Unschedulable / Stalled
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_SCHEDULED = "Scheduled"
REASON_IMAGE_PULL_FAILED = "ImagePullFailed"
REASON_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"  # typically a missing Secret or key
REASON_CONTAINER_CREATE_ERROR = "CreateContainerError"
REASON_CA_BUNDLE_MISSING = "CABundleMissing"  # spec.s3.caBundle's ConfigMap or key does not exist: the pod waits
# The API server refused the Job's pod (ResourceQuota, LimitRange, an admission webhook): the Job controller's
# FailedCreate event says why, and nothing else does
REASON_POD_REFUSED = "PodRefused"
# spec.queueName on a cluster whose Kueue serves no Workload version the operator speaks: its Job is not created
REASON_KUEUE_VERSION_UNSUPPORTED = "KueueVersionUnsupported"
REASON_POD_CREATED = "PodCreated"
REASON_RECOVERED = "Recovered"
# Suspended
REASON_JOB_SUSPENDED = "JobSuspended"
REASON_QUEUED = "QueuedByKueue"
REASON_PREEMPTED = "PreemptedByKueue"  # Kueue evicted the admitted Workload (preemption) and requeued it
REASON_RESUMED = "Resumed"
# Succeeded / Failed (plus yolo_contract.exitcodes.REASONS for failures classified by exit code)
REASON_COMPLETED = COMPLETED
# Succeeded early, as the trainer reports it in status.outcome.reason (best weights published all the same)
REASON_STOP_REQUESTED = STOP_REQUESTED  # spec.stop
REASON_TIME_BUDGET_REACHED = TIME_BUDGET_REACHED  # spec.training.hyperparameters.time
REASON_EARLY_STOPPING = EARLY_STOPPING  # no improvement for spec.training.patience epochs
REASON_DEADLINE_EXCEEDED = "DeadlineExceeded"
REASON_BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
REASON_JOB_FAILED = "JobFailed"  # the Job failed and no pod told us why
REASON_JOB_DELETED = "JobDeleted"  # the Job disappeared before finishing
REASON_OOM_KILLED = "OOMKilled"  # the kernel killed the container (exit 137 with reason OOMKilled)
# A multi-node gang restarted more than spec.maxGangRestarts times: the operator fails the TrainingJob and keeps
# its Job suspended (with Kueue: its Workload deactivated), so no pod holds a GPU any longer
REASON_GANG_RESTART_LIMIT = "GangRestartLimitExceeded"

# Kubernetes Event reasons posted on the TrainingJob
EVENT_JOB_CREATED = "JobCreated"
EVENT_WAITING_FOR_MODEL = "WaitingForModel"
EVENT_PHASE_CHANGED = "PhaseChanged"
EVENT_SUCCEEDED = "Succeeded"
EVENT_FAILED = "Failed"
EVENT_UNSCHEDULABLE = "Unschedulable"
EVENT_STALLED = "Stalled"
