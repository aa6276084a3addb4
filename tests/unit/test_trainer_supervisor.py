"""The supervisor against a stand-in training process (tests/fake_training_child.py) that speaks the child's
control-file protocol: progress from results.csv, checkpoints only when the child says last.pt is complete,
stop requests, SIGTERM in the middle of a write, a SIGKILLed child, and how each end is classified.

The fake child stays here only for what a real rank cannot produce on demand: a SIGTERM that lands while last.pt
is half rewritten, epochs shorter than the supervisor's poll (checkpoints saved over before they are seen), a
fatal uploader error at a chosen moment, and the classification of outputs only a GPU produces (CUDA out of
memory, NCCL errors). Real ranks under torchrun (progress, checkpoints, SIGTERM, a killed rank, resume, two
nodes) run in tests/integration/test_trainer_ranks.py.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from yolo_contract.exitcodes import ExitCode, Interrupted, S3AccessDenied, TrainerError
from yolo_trainer import child
from yolo_trainer.checkpoint import copy_unchanged
from yolo_trainer.results import parse_results
from yolo_trainer.supervisor import ChildEnd, Supervisor, classify_child_end, oom_kills

pytestmark = pytest.mark.unit

FAKE = Path(__file__).resolve().parents[1] / "fake_training_child.py"
HEADER = "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B),"
HEADER += "metrics/mAP50(B),metrics/mAP50-95(B)\n"  # as tests/fake_training_child.py writes it


class Run:
    """A Supervisor over the fake child, recording reports and submitted checkpoints (staged by copying)."""

    def __init__(self, tmp_path: Path, **spec):
        self.tmp = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.reports, self.submitted, self.staged = [], [], {}
        self.interrupt, self.stop = threading.Event(), threading.Event()
        self.uploader_error: TrainerError | None = None
        spec = {"control": str(tmp_path / "control"), "save_dir": str(tmp_path / "run"), "epochs": 4, **spec}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        self.out = open(tmp_path / "out.log", "w")  # noqa: SIM115
        self.sup = Supervisor(
            [sys.executable, str(FAKE), str(tmp_path / "spec.json")], tmp_path / "control", tmp_path / "run",
            spec["epochs"], self.reports.append, self.submit, self.interrupt, stop=self.stop,
            uploader_error=lambda: self.uploader_error, stream=self.out,
        )  # fmt: skip

    def submit(self, epoch: int, last: Path, csv: Path | None, signature: list[int] | None = None) -> bool:
        staged = self.tmp / f"staged-{epoch}"
        if not copy_unchanged(last, staged, signature):  # as CheckpointUploader.submit stages it
            return False
        self.submitted.append(epoch)
        self.staged[epoch] = staged.read_bytes()
        return True

    def lines(self) -> list[dict]:
        self.out.flush()
        return [json.loads(x) for x in (self.tmp / "out.log").read_text().splitlines() if x.startswith("{")]


def test_every_epoch_is_reported_and_every_complete_checkpoint_but_the_last_submitted(tmp_path):
    r = Run(tmp_path, epochs=4, epoch_seconds=0.5)
    result = r.sup.run()
    # Newest wins: a marker overwritten before a poll saw it is skipped (never the case with real epochs).
    assert r.submitted and r.submitted == sorted(set(r.submitted))
    assert 4 not in r.submitted  # epoch 4 ends training: its weights are the final outputs
    assert all(pickle.loads(b)["epoch"] + 1 == e for e, b in r.staged.items())  # last.pt: Ultralytics' 0-based index
    assert [x.progress.epoch for x in r.reports] == [1, 2, 3, 4]
    p = r.reports[-1].progress
    assert p.epoch_display == "4/4" and p.metrics.map50_95 == pytest.approx(0.13) and p.metrics.box_loss == 1.0
    assert p.best_epoch == 4 and p.eta_seconds == 0
    assert result.final_metrics == {"metrics/mAP50-95(B)": 0.77} and result.epochs_reported == [1, 2, 3, 4]
    assert result.stopped_at is None
    assert [x["epoch"] for x in r.lines() if x["event"] == "epoch"] == [1, 2, 3, 4]
    # status.history grows with each report: every epoch so far, no GPU figures on CPU
    assert [[h.epoch for h in x.history] for x in r.reports] == [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]
    assert r.reports[-1].history[-1].map50_95 == pytest.approx(0.13) and r.reports[-1].history[-1].gpu_util is None


@pytest.mark.parametrize("start", [0, 2])
def test_every_checkpoint_not_submitted_is_named_in_the_log(tmp_path, caplog, start):
    """Epochs shorter than the poll are saved over before the supervisor sees them (newest wins): the log says
    which, so a status without lastCheckpoint can be told from a lost one."""
    if start:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "results.csv").write_text(HEADER + "1,5,1,2,3,.5,.4,.9,.8\n2,9,1,2,3,.5,.4,.2,.1\n")
    caplog.set_level("INFO", logger="yolo_trainer.supervisor")
    r = Run(tmp_path, epochs=start + 8, start=start, epoch_seconds=0.02)
    r.sup.run()
    named: set[int] = set()  # 1-based
    for m in re.finditer(r"checkpoint of epoch (\d+)(?: to (\d+))? was saved over", caplog.text):
        named |= set(range(int(m[1]), int(m[2] or m[1]) + 1))
    for m in re.finditer(r"checkpoint of epoch (\d+) was overwritten", caplog.text):
        named.add(int(m[1]))
    submitted = set(r.submitted)
    assert not named & submitted
    assert named | submitted == set(range(start + 1, start + 8)), caplog.text  # all but the final epoch


def test_a_resumed_run_reports_only_the_epochs_it_trains(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").write_text(HEADER + "1,5,1,2,3,0.5,0.4,0.95,0.9\n2,9,1,2,3,0.5,0.4,0.2,0.1\n")  # downloaded
    r = Run(tmp_path, epochs=4, start=2, epoch_seconds=0.5)
    result = r.sup.run()
    assert result.epochs_reported == [3, 4] and set(r.submitted) <= {3}
    assert r.reports[-1].progress.best_epoch == 1  # best over all rows, also the earlier run's
    assert [h.epoch for h in r.reports[-1].history] == [1, 2, 3, 4]  # the earlier run's epochs stay in the curve


def test_a_stop_request_reaches_the_child_and_ends_training_after_that_epoch(tmp_path):
    r = Run(tmp_path, epochs=50, epoch_seconds=0.3)
    t = threading.Thread(target=lambda: (time.sleep(0.8), r.stop.set()))
    t.start()
    result = r.sup.run()
    t.join()
    assert result.stopped_at is not None and result.stopped_at < 50
    assert result.epochs_reported[-1] == result.stopped_at
    assert result.stopped_at not in r.submitted  # the stopped epoch is the last: not checkpointed


def test_sigterm_while_the_child_rewrites_last_pt_keeps_the_complete_checkpoint(tmp_path):
    r = Run(tmp_path, epochs=10, torn_at=3, epoch_seconds=0.6, bar="  4/10 1.2G 0.91 |####      |")
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(r.sup.run, errors))
    t.start()
    marker = tmp_path / "control" / "torn-write-started"
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the fake child never reached its torn write"
        time.sleep(0.02)
    r.interrupt.set()  # what Interruption's SIGTERM handler does
    t.join(30)
    assert not t.is_alive() and isinstance(errors[0], Interrupted)
    assert max(r.submitted) == 3  # epoch 4's half-written last.pt was never handed over
    # Its row is in results.csv, but an epoch is reported only with its checkpoint: what the status shows,
    # the SIGTERM flush keeps.
    assert [x.progress.epoch for x in r.reports] == [1, 2, 3]
    assert pickle.loads(r.staged[3])["epoch"] == 2  # last.pt keeps Ultralytics' 0-based index
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads((tmp_path / "run" / "weights" / "last.pt").read_bytes())  # it really is torn
    assert r.sup.proc.returncode == -signal.SIGTERM  # the child's group got the SIGTERM
    # The bar it was drawing when killed ends a line of its own: the trainer's 'interrupted' event comes next,
    # and the disruption tests (like any log parser) find event lines by their start.
    r.out.flush()
    assert (tmp_path / "out.log").read_text().endswith("  4/10 1.2G 0.91 |####      |\n")


def test_a_sigkilled_child_is_classified_and_its_checkpoints_kept(tmp_path):
    r = Run(tmp_path, epochs=1000, epoch_seconds=0.2)
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(r.sup.run, errors))
    t.start()
    deadline = time.monotonic() + 30
    while len(r.submitted) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(r.sup.proc.pid, signal.SIGKILL)
    t.join(30)
    (err,) = errors
    assert isinstance(err, TrainerError) and err.code == ExitCode.TRAINING_ERROR
    assert "killed by SIGKILL" in str(err)
    assert all(pickle.loads(r.staged[e])["epoch"] + 1 == e for e in r.submitted)


def test_a_fatal_uploader_error_terminates_the_child(tmp_path):
    r = Run(tmp_path, epochs=1000, epoch_seconds=0.2)
    r.uploader_error = S3AccessDenied("denied to s3://b/ckpt")
    with pytest.raises(S3AccessDenied):
        r.sup.run()
    assert r.sup.proc.returncode is not None


def test_the_childs_own_error_and_output_classify_its_exit(tmp_path):
    r = Run(tmp_path, epochs=1, exit=10, error={"code": 10, "message": "spec.training.hyperparameters: bad"})
    with pytest.raises(TrainerError, match="hyperparameters: bad") as e:
        r.sup.run()
    assert e.value.code == ExitCode.CONFIG_INVALID
    r = Run(tmp_path / "b", epochs=1, exit=20, error={"code": 20, "message": "CalledProcessError: torchrun"},
            print="[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")  # fmt: skip
    with pytest.raises(TrainerError, match="CUDA out of memory") as e:
        r.sup.run()
    assert e.value.code == ExitCode.OUT_OF_MEMORY


def _catch(fn, errors):
    try:
        fn()
    except BaseException as e:
        errors.append(e)


NCCL_TAIL = "[rank2]: RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error"


@pytest.mark.parametrize(
    ("end", "code", "words"),
    [
        (ChildEnd(0), None, ""),
        (ChildEnd(1, tail="x\ntorch.OutOfMemoryError: CUDA out of memory. Tried\n"), 14, "spec.training.batch"),
        (ChildEnd(13, {"code": 13, "message": "cannot load model m.pt"}), 13, "cannot load model"),
        (ChildEnd(20, {"code": 20, "message": "CalledProcessError"}, tail=NCCL_TAIL), 20, "NCCL error between"),
        (ChildEnd(-9, oom_kills=1), 14, "spec.resources.memory"),
        (ChildEnd(-9), 20, "SIGKILL"),
        (ChildEnd(-7), 14, "spec.resources.shmSize"),
        (ChildEnd(-11), 20, "SIGSEGV"),
        (ChildEnd(1, tail="Traceback\nValueError: boom\n"), 20, "exited 1: ValueError: boom"),
    ],
)
def test_classify_child_end(end, code, words):
    err = classify_child_end(end, shm_bytes=64 * 2**20)
    if code is None:
        assert err is None
    else:
        assert int(err.code) == code and words in str(err), str(err)


def test_parse_results_leaves_out_a_row_still_being_written():
    rows = parse_results("epoch,time,metrics/mAP50-95(B)\n1,2.5,0.1\n2,5.0,0.2\n3,7.")
    assert [(r.epoch, r.time) for r in rows] == [(1, 2.5), (2, 5.0)]
    assert rows[1].values["metrics/mAP50-95(B)"] == "0.2"


def test_oom_kills_reads_the_cgroup_counter(tmp_path):
    p = tmp_path / "memory.events"
    p.write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert oom_kills(p) == 2 and oom_kills(tmp_path / "missing") == 0


def test_control_callbacks_stop_at_the_end_of_the_epoch_and_mark_saves(tmp_path):
    cb = child.ControlCallbacks(tmp_path)
    t = SimpleNamespace(epoch=4, epochs=50, stop=False, last=tmp_path / "last.pt", csv=tmp_path / "r.csv",
                        metrics={"metrics/mAP50-95(B)": 0.5}, save_dir=tmp_path)  # fmt: skip
    cb.on_train_epoch_end(t)
    assert t.stop is False and not (tmp_path / child.STOPPED).exists()
    (tmp_path / child.STOP).touch()
    cb.on_train_epoch_end(t)
    assert t.stop is True and json.loads((tmp_path / child.STOPPED).read_text()) == {"epoch": 5}
    (tmp_path / "last.pt").write_bytes(b"epoch 5")  # Ultralytics' save, just before on_model_save
    cb.on_model_save(t)
    saved = json.loads((tmp_path / child.SAVED).read_text())
    assert saved["epoch"] == 5 and saved["signature"] == child.file_signature(tmp_path / "last.pt")
    cb.on_train_end(t)
    assert json.loads((tmp_path / child.FINAL).read_text())["metrics"] == {"metrics/mAP50-95(B)": 0.5}
    assert pickle.loads(pickle.dumps(cb)).control == str(tmp_path)  # plain attributes only


def test_a_multi_gpu_pod_never_falls_back_silently_to_fewer_gpus():
    from yolo_contract.exitcodes import ConfigInvalid
    from yolo_trainer.pipeline import check_gpus

    assert check_gpus(0, 0, ddp=True) == 0  # spec.resources.gpus 0: CPU, as asked
    assert check_gpus(0, 4, ddp=True, simulated=True) == 0  # only a test bed's simulated GPUs fall back to CPU
    assert check_gpus(1, 1, ddp=False) == 1 and check_gpus(4, 4, ddp=True) == 4
    with pytest.raises(TrainerError, match=r"spec\.resources\.gpus is 4 but this pod sees 2") as e:
        check_gpus(2, 4, ddp=True)
    assert e.value.code == ExitCode.TRAINING_ERROR
    with pytest.raises(ConfigInvalid, match=r"torch\.distributed"):
        check_gpus(4, 4, ddp=False)


def test_a_beds_simulated_gpus_are_trained_by_as_many_cpu_ranks():
    from yolo_contract.trainer_config import TrainerConfig
    from yolo_trainer.pipeline import ranks_per_node

    base = {"name": "j", "model": "m.yaml", "dataset": "s3://b/d", "output": "s3://b/o"}
    assert ranks_per_node(TrainerConfig(**base, gpus=2, simulatedGpus=True), 0) == 2  # the world 2 GPUs would have
    assert ranks_per_node(TrainerConfig(**base, gpus=1, simulatedGpus=True), 0) == 1
    assert ranks_per_node(TrainerConfig(**base, gpus=2), 2) == 2  # real GPUs: one rank each
    assert ranks_per_node(TrainerConfig(**base, cpuProcesses=3), 0) == 3
    assert ranks_per_node(TrainerConfig(**base), 0) == 1


def test_a_gpu_pod_that_sees_no_gpu_fails_at_once_naming_the_node_and_the_cause(monkeypatch):
    from yolo_contract.exitcodes import NON_RETRIABLE, GPUNotVisible
    from yolo_trainer import pipeline

    monkeypatch.setenv("YOLO_NODE_NAME", "gpu-node-7")
    monkeypatch.setattr(pipeline, "cuda_diagnosis", lambda: "torch 2.5.1 built for CUDA 12.4; torch: driver too old")
    with pytest.raises(GPUNotVisible) as e:
        pipeline.check_gpus(0, 1, ddp=True)
    msg = str(e.value)
    assert e.value.code == ExitCode.GPU_NOT_VISIBLE == 22 and int(e.value.code) in NON_RETRIABLE
    assert "spec.resources.gpus is 1" in msg and "node gpu-node-7" in msg
    assert "CUDA 12.4" in msg and "driver" in msg and "container runtime" in msg
    print(f"GPUNotVisible (exit {int(e.value.code)}): {msg}")


def test_cuda_diagnosis_names_torchs_cuda_build():
    from yolo_trainer.pipeline import cuda_diagnosis

    text = cuda_diagnosis()
    assert text.startswith("torch ") and "CUDA" in text and "/dev/nvidia" in text
