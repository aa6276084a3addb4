"""The per-epoch Ultralytics hooks and the pipeline's SIGTERM semantics, with fake trainers and stores."""

from __future__ import annotations

import io
import json
import pickle
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from yolo_contract.exitcodes import Interrupted, S3AccessDenied
from yolo_contract.trainer_config import TrainerConfig
from yolo_trainer.pipeline import Interruption, run
from yolo_trainer.train import TrainingHooks

pytestmark = pytest.mark.unit


def fake_trainer(tmp_path: Path, epoch: int, epochs: int = 3, stop: bool = False, map5095: float = 0.2):
    csv = tmp_path / "results.csv"
    rows = "".join(f"{e + 1},1.0,{0.1 * (e + 1)}\n" for e in range(epoch + 1))
    csv.write_text("epoch,time,metrics/mAP50-95(B)\n" + rows)
    return SimpleNamespace(
        epoch=epoch,
        epochs=epochs,
        stop=stop,
        last=tmp_path / "last.pt",
        csv=csv,
        metrics={
            "metrics/precision(B)": 0.5,
            "metrics/recall(B)": 0.4,
            "metrics/mAP50(B)": 0.3,
            "metrics/mAP50-95(B)": map5095,
        },
        tloss={"box_loss": 1.0, "cls_loss": 2.0, "dfl_loss": 3.0},
        label_loss_items=lambda t, prefix="train": {f"{prefix}/{k}": v for k, v in t.items()},
        start_epoch=0,
    )


def make_hooks(event=None):
    reports, submitted, out = [], [], io.StringIO()
    hooks = TrainingHooks(
        reports.append, lambda e, last, csv: submitted.append(e), event or threading.Event(), stream=out
    )
    return hooks, reports, submitted, out


def test_every_epoch_is_reported_and_checkpointed_except_the_last(tmp_path):
    hooks, reports, submitted, out = make_hooks()
    for e in range(3):
        t = fake_trainer(tmp_path, e, stop=(e == 2))
        hooks.on_model_save(t)
        hooks.on_fit_epoch_end(t)
    final = fake_trainer(tmp_path, 3, map5095=0.9)  # Ultralytics' extra call after validating best.pt
    hooks.on_fit_epoch_end(final)
    assert submitted == [0, 1]  # epoch 3 ends training: its weights are the final outputs
    assert [r.progress.epoch for r in reports] == [1, 2, 3]
    p = reports[-1].progress
    assert p.epoch_display == "3/3" and p.metrics.map50 == 0.3 and p.metrics.box_loss == 1.0
    assert p.best_map50_95 == pytest.approx(0.3) and p.best_epoch == 3
    assert hooks.final_metrics["metrics/mAP50-95(B)"] == 0.9
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3] and all(x["event"] == "epoch" for x in lines)


def test_interrupt_is_raised_between_batches(tmp_path):
    event = threading.Event()
    hooks, *_ = make_hooks(event)
    hooks.on_train_batch_end(fake_trainer(tmp_path, 0))
    event.set()
    with pytest.raises(Interrupted):
        hooks.on_train_batch_end(fake_trainer(tmp_path, 0))


def test_fatal_uploader_error_stops_training(tmp_path):
    hooks, *_ = make_hooks()
    hooks.uploader_error = lambda: S3AccessDenied("denied to s3://b/ckpt")
    with pytest.raises(S3AccessDenied):
        hooks.on_model_save(fake_trainer(tmp_path, 0))


def test_hooks_pickle_to_inert_callbacks_for_ddp_workers(tmp_path):
    hooks, _, submitted, _ = make_hooks()
    clone = pickle.loads(pickle.dumps(hooks.on_model_save))
    clone(fake_trainer(tmp_path, 0))
    assert submitted == []


class _NoSignals(Interruption):
    def install(self) -> None:  # keep the test process's own handlers
        pass


class _BrokenStore:
    def __init__(self, event: threading.Event | None):
        from yolo_trainer.s3 import S3Hints

        self.event = event
        self.hints = S3Hints()

    def check_bucket(self, bucket, prefix="", field=None):
        if self.event is not None:
            self.event.set()  # SIGTERM arrived while this call was running...
        raise ValueError("connection pool is closed")  # ...and surfaced as some other exception


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    for k in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "YOLO_AUTOINSTALL", "YOLO_OFFLINE", "YOLO_VERBOSE"):
        monkeypatch.setenv(k, str(tmp_path / k) if k.endswith("DIR") else "1")
    return TrainerConfig(
        name="j", model="yolov8n.yaml", dataset="s3://b/d", output="s3://b/o", work_dir=str(tmp_path / "work")
    )


def test_any_failure_after_sigterm_is_interrupted(isolated_env):
    intr = _NoSignals()
    with pytest.raises(Interrupted):
        run(isolated_env, interruption=intr, store=_BrokenStore(intr.event))


def test_failure_without_sigterm_keeps_its_type(isolated_env):
    with pytest.raises(ValueError, match="connection pool"):
        run(isolated_env, interruption=_NoSignals(), store=_BrokenStore(None))
