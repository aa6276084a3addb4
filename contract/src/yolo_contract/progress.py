"""What the trainer reports into the TrainingJob's status: the status half of the operator/trainer contract.

The trainer sends a JSON merge patch ``{"status": TrainerReport}`` (progress, and with it the bounded per-epoch
``history``) to the ``status`` subresource of its own TrainingJob (the per-job Role allows ``get``/``patch`` on
that one name only). The operator owns every other status field (conditions, Pending/Succeeded/Failed/Suspended,
restarts, times) and never writes these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import Field

from yolo_contract.base import Model as _Model

TrainerStage = Literal["Staging", "Training", "Uploading"]
#: Why training ended (``status.outcome.reason``): the reason of the Succeeded condition.
#: Completed: all epochs ran; StopRequested: spec.stop; TimeBudgetReached: hyperparameters.time;
#: EarlyStopping: no improvement for spec.training.patience epochs.
OutcomeReason = Literal["Completed", "StopRequested", "TimeBudgetReached", "EarlyStopping"]
COMPLETED: OutcomeReason = "Completed"
STOP_REQUESTED: OutcomeReason = "StopRequested"
TIME_BUDGET_REACHED: OutcomeReason = "TimeBudgetReached"
EARLY_STOPPING: OutcomeReason = "EarlyStopping"


class Metrics(_Model):
    precision: float | None = Field(None, description="Box precision on the validation split.")
    recall: float | None = Field(None, description="Box recall on the validation split.")
    map50: float | None = Field(None, description="mAP at IoU 0.5.")
    map50_95: float | None = Field(None, alias="map50-95", description="mAP at IoU 0.5:0.95.")
    box_loss: float | None = Field(None, description="Training box loss.")
    cls_loss: float | None = Field(None, description="Training classification loss.")
    dfl_loss: float | None = Field(None, description="Training distribution focal loss.")


class Progress(_Model):
    epoch: int = Field(0, ge=0, description="Epochs completed.")
    epochs: int = Field(0, ge=0, description="Epochs requested.")
    epoch_display: str | None = Field(None, description="'epoch/epochs', for the printer column.")
    metrics: Metrics | None = Field(None, description="Metrics of the latest completed epoch.")
    best_map50_95: float | None = Field(None, alias="bestMap50-95", description="Best mAP50-95 so far.")
    best_epoch: int | None = Field(None, description="Epoch of the best mAP50-95.")
    percent: int | None = Field(None, ge=0, le=100, description="Epochs completed, in percent of those requested.")
    eta_seconds: int | None = Field(None, ge=0, description="Estimated seconds to finish training.")
    eta: str | None = Field(None, description="eta_seconds for people (1h02m, 45s), for the printer column.")
    updated_at: str | None = Field(None, description="RFC 3339 time of this report.")

    @classmethod
    def of(cls, epoch: int, epochs: int, eta_seconds: int | None = None, **fields) -> Progress:
        """Progress after ``epoch`` of ``epochs``, with the display fields derived (one place for both)."""
        return cls(
            epoch=epoch,
            epochs=epochs,
            epoch_display=f"{epoch}/{epochs}",
            percent=min(100, 100 * epoch // epochs) if epochs else None,
            eta_seconds=eta_seconds,
            eta=None if eta_seconds is None else human_duration(eta_seconds),
            **fields,
        )


def human_duration(seconds: int) -> str:
    """90 -> '1m30s', 3720 -> '1h02m', 45 -> '45s' (kubectl's style of ages)."""
    h, rest = divmod(max(0, int(seconds)), 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


# --- status.history ---------------------------------------------------------------------------------------
# ``status.history``: one point per kept epoch, for the curves users watch (mAP, losses, learning rate, GPU).
#
# The trainer writes the whole list with each epoch's progress report (a JSON merge patch replaces a list), from
# its results.csv (every epoch, a resumed run's earlier ones too) and the GPU figures it sampled. The list stays
# bounded however many epochs run: ``downsample`` keeps at most ``HISTORY_MAX`` points. Pure, no I/O.
#
# Which epochs are kept (a function of the epoch numbers and mAP50-95 alone, so deterministic):
# every epoch while the last is at most ``HISTORY_MAX``; beyond that the first, the best (highest mAP50-95,
# the earliest of equals), the last, and every epoch that is a multiple of a power-of-two stride, the smallest
# for which at most ``HISTORY_MAX - 3`` multiples fit under the last epoch. The stride only doubles as epochs
# grow and its multiples are a subset of the previous stride's, so downsampling the kept list plus one new epoch
# keeps exactly what downsampling all epochs at once keeps: appending epoch by epoch needs no other memory.

#: Most points in status.history (about 200 bytes each as JSON: ~20 KB at most in the object).
HISTORY_MAX = 100
#: The results.csv columns of a point (Ultralytics' names) and the learning rate column: lr/pg0 is the
#: parameter group with weight decay (the conv weights), the one whose schedule the hyperparameters set.
RESULTS_COLUMNS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map50_95": "metrics/mAP50-95(B)",
    "box_loss": "train/box_loss",
    "cls_loss": "train/cls_loss",
    "dfl_loss": "train/dfl_loss",
    "lr": "lr/pg0",
}
SIGNIFICANT = 4  # digits kept of each float: curves need no more, and `kubectl get -o yaml` stays readable


class HistoryPoint(Metrics):
    """One epoch: its validation metrics and training losses (the fields of progress.metrics), learning rate,
    and on a GPU what NVML saw while it ran."""

    epoch: int = Field(..., ge=1, description="The epoch (1-based, as in results.csv).")
    lr: float | None = Field(None, description="Learning rate at the end of the epoch (results.csv lr/pg0).")
    gpu_util: int | None = Field(
        None, ge=0, le=100, description="Mean GPU utilisation during the epoch, percent (NVML; absent on CPU)."
    )
    gpu_mem_mib: int | None = Field(
        None, ge=0, description="Peak GPU memory used during the epoch, MiB, the busiest GPU (NVML; absent on CPU)."
    )


P = TypeVar("P", bound=HistoryPoint)


def rounded(v: Any) -> float | None:
    """A finite float to SIGNIFICANT significant digits (0.512345 -> 0.5123, 0.00012345 -> 0.0001235); None
    for anything else (Ultralytics writes nan for metrics it could not compute)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return float(f"{v:.{SIGNIFICANT}g}") if math.isfinite(v) else None


def point_from_results(
    epoch: int, row: Mapping[str, Any], gpu_util: int | None = None, gpu_mem_mib: int | None = None
) -> HistoryPoint:
    """The point of one results.csv row (column names stripped), with the GPU figures sampled for it."""
    values = {field: rounded(row.get(column)) for field, column in RESULTS_COLUMNS.items()}
    return HistoryPoint(epoch=epoch, gpu_util=gpu_util, gpu_mem_mib=gpu_mem_mib, **values)


def stride_for(last_epoch: int, limit: int = HISTORY_MAX) -> int:
    """1 while every epoch fits, else the smallest power of two whose multiples up to ``last_epoch`` number
    at most ``limit - 3`` (room for the first, best and last epochs)."""
    if limit < 4:
        raise ValueError(f"history limit {limit}: at least 4 points are needed (first, best, last and one more)")
    if last_epoch <= limit:
        return 1
    stride = 2
    while last_epoch // stride > limit - 3:
        stride *= 2
    return stride


def best_epoch(points: Iterable[HistoryPoint]) -> int | None:
    """The epoch with the highest mAP50-95 (the earliest of equals), None when no point has one."""
    best: tuple[float, int] | None = None
    for p in points:
        if p.map50_95 is not None and (best is None or (p.map50_95, -p.epoch) > (best[0], -best[1])):
            best = (p.map50_95, p.epoch)
    return None if best is None else best[1]


def downsample(points: Iterable[P], limit: int = HISTORY_MAX) -> list[P]:
    """At most ``limit`` points, by epoch: first, best, last and an even (power-of-two) spread (see the section's
    comment). A later point of an epoch replaces an earlier one (an epoch trained again after a restart)."""
    by_epoch: dict[int, P] = {}
    for p in points:
        by_epoch[p.epoch] = p
    if not by_epoch:
        return []
    epochs = sorted(by_epoch)
    stride = stride_for(epochs[-1], limit)
    keep = {e for e in epochs if e % stride == 0}
    keep |= {epochs[0], epochs[-1]}
    best = best_epoch(by_epoch.values())
    if best is not None:
        keep.add(best)
    return [by_epoch[e] for e in sorted(keep)]


class TestMetrics(_Model):
    """The best weights evaluated on the dataset's test split after training (per-class figures, the
    confusion matrix and the PR curves are in <job>/test/)."""

    precision: float | None = Field(None, description="Box precision on the test split.")
    recall: float | None = Field(None, description="Box recall on the test split.")
    map50: float | None = Field(None, description="mAP at IoU 0.5 on the test split.")
    map50_95: float | None = Field(None, alias="map50-95", description="mAP at IoU 0.5:0.95 on the test split.")
    images: int | None = Field(None, ge=0, description="Images in the test split.")
    instances: int | None = Field(None, ge=0, description="Labeled objects in the test split.")
    uri: str | None = Field(None, description="s3:// prefix holding the test results (test/).")


class Outcome(_Model):
    """How training ended; the operator uses reason as the Succeeded condition's reason."""

    reason: OutcomeReason = Field(..., description="Completed, StopRequested, TimeBudgetReached or EarlyStopping.")
    message: str = Field("", max_length=1024, description="Human-readable details.")
    epochs: int | None = Field(None, ge=0, description="Epochs completed.")
    best_epoch: int | None = Field(None, ge=0, description="Epoch whose weights were published as best.pt.")


class DatasetLineage(_Model):
    uri: str = Field(..., description="spec.dataset as staged.")
    fingerprint: str = Field(
        ..., description="sha256 of the archive's ETag and size, or of every key, ETag and size under the prefix."
    )
    etag: str | None = Field(None, description="ETag of the archive (archives only).")
    objects: int | None = Field(None, ge=0, description="Objects under the prefix (prefixes only).")


class BaseModelLineage(_Model):
    uri: str = Field(..., description="The model the trainer started from (hub name, s3:// or https:// URI, YAML).")
    etag: str | None = Field(None, description="ETag of the s3:// weights.")
    sha256: str | None = Field(None, description="sha256 of the weights file (none for a YAML).")
    training_job: str | None = Field(None, description="The TrainingJob that published these weights, if any.")
    run_id: str | None = Field(None, description="Its run (runId of its metrics.json), if the weights are its.")


class Lineage(_Model):
    """What the results were made from. trainerImage is written by the operator (the pod's imageID);
    everything else by the trainer."""

    dataset: DatasetLineage | None = None
    base_model: BaseModelLineage | None = None
    trainer_image: str | None = Field(None, description="Image the trainer ran, by digest (containerStatuses imageID).")
    ultralytics: str | None = Field(None, description="Ultralytics version.")
    torch: str | None = Field(None, description="PyTorch version.")


class Checkpoint(_Model):
    epoch: int = Field(..., ge=0, description="Epoch the checkpoint was written after.")
    uri: str = Field(..., description="s3:// URI of the checkpoint.")


class Artifacts(_Model):
    best_weights: str | None = Field(None, description="s3:// URI of weights/best.pt.")
    last_weights: str | None = Field(None, description="s3:// URI of weights/last.pt.")
    results: str | None = Field(None, description="s3:// URI of results.csv.")
    metrics: str | None = Field(None, description="s3:// URI of metrics.json.")
    plots: str | None = Field(None, description="s3:// prefix holding the plots.")
    exports: list[str] | None = Field(
        None, description="s3:// URIs of the exported models, in the model-repository layout (serving/<format>/1/)."
    )
    serving: str | None = Field(None, description="s3:// prefix of the model repository (serving/).")
    test: str | None = Field(None, description="s3:// prefix of the test-split evaluation (test/).")
    run_id: str | None = Field(None, description="The run that published these (runId of metrics.json).")


class TrainerReport(_Model):
    """The fields of TrainingJob.status that the trainer writes."""

    stage: TrainerStage | None = Field(None, description="What the trainer is doing now.")
    progress: Progress | None = None
    last_checkpoint: Checkpoint | None = None
    artifacts: Artifacts | None = None
    test_metrics: TestMetrics | None = Field(None, description="The best weights on the test split.")
    lineage: Lineage | None = None
    outcome: Outcome | None = Field(None, description="How training ended (set when it did).")
    history: list[HistoryPoint] | None = Field(
        None,
        max_length=HISTORY_MAX,
        description=f"One point per kept epoch, oldest first: every epoch up to {HISTORY_MAX}, beyond that the "
        "first, the best (mAP50-95), the last and an even spread. All epochs are in artifacts.results.",
    )

    def to_patch(self) -> dict:
        return {"status": self.model_dump(by_alias=True, exclude_none=True, mode="json")}
