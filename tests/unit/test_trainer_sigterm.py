"""The pipeline's SIGTERM semantics, with fake stores (the training process' own: test_trainer_supervisor.py)."""

from __future__ import annotations

import threading

import pytest
from yolo_contract.exitcodes import Interrupted
from yolo_contract.trainer_config import TrainerConfig
from yolo_trainer.pipeline import Interruption, run

pytestmark = pytest.mark.unit


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
