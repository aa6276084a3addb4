"""What the trainer reports into the TrainingJob's status: the status half of the operator/trainer contract.

The trainer sends a JSON merge patch ``{"status": TrainerReport}`` to the ``status`` subresource of its own
TrainingJob (the per-job Role allows ``get``/``patch`` on that one name only). The operator owns every other
status field (conditions, Pending/Succeeded/Failed/Suspended, restarts, times) and never writes these.
"""

from __future__ import annotations

from typing import Literal

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

    def to_patch(self) -> dict:
        return {"status": self.model_dump(by_alias=True, exclude_none=True, mode="json")}
