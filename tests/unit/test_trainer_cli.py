"""Exit codes, termination messages, model resolution and the status reporter (local fake API server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from yolo_contract.exitcodes import DatasetInvalid, ExitCode, ModelUnavailable, S3AccessDenied, TrainerError
from yolo_contract.model_source import FileModel, HubModel, UriModel, YamlModel, model_ref_from_string
from yolo_contract.progress import Progress, TrainerReport
from yolo_contract.trainer_config import StatusTarget
from yolo_trainer.classify import classify
from yolo_trainer.cli import main, termination_message, write_termination_message
from yolo_trainer.model import resolve_model
from yolo_trainer.report import KubeStatusReporter, LogReporter, make_reporter

from tests.trainer_fixtures import StatusSink

pytestmark = pytest.mark.unit


def test_classify_trainer_errors_even_when_wrapped():
    assert classify(DatasetInvalid("bad"))[0] == ExitCode.DATASET_INVALID
    try:
        try:
            raise S3AccessDenied("denied on s3://b")
        except S3AccessDenied as e:
            raise RuntimeError("Dataset error") from e
    except RuntimeError as wrapped:
        assert classify(wrapped) == (ExitCode.S3_ACCESS_DENIED, "denied on s3://b")


def test_classify_oom_and_others():
    import torch

    assert classify(torch.cuda.OutOfMemoryError("CUDA out of memory"))[0] == ExitCode.OUT_OF_MEMORY
    assert classify(MemoryError())[0] == ExitCode.OUT_OF_MEMORY
    assert classify(RuntimeError("CUDA error: out of memory"))[0] == ExitCode.OUT_OF_MEMORY
    code, msg = classify(ValueError("boom"))
    assert code == ExitCode.TRAINING_ERROR and msg == "ValueError: boom"
    assert classify(TrainerError("x", code=ExitCode.S3_UNAVAILABLE))[0] == ExitCode.S3_UNAVAILABLE


def test_classify_a_full_disk_as_scratch_too_small_but_not_a_full_shm():
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", "/tmp/yolo-trainer/runs/run/weights/last.pt")
    try:
        try:
            raise full
        except OSError as e:
            raise RuntimeError("saving failed") from e
    except RuntimeError as wrapped:
        code, msg = classify(wrapped)
    assert code == ExitCode.SCRATCH_TOO_SMALL and "raise spec.resources.scratchSize" in msg
    assert termination_message(code, msg).startswith("ScratchTooSmall: the work directory's disk is full")
    shm = OSError(errno.ENOSPC, "No space left on device", "/dev/shm/torch_123")
    assert classify(shm)[0] == ExitCode.TRAINING_ERROR
    assert classify(OSError(errno.EACCES, "Permission denied"))[0] == ExitCode.TRAINING_ERROR


def test_termination_message_is_one_line_with_reason():
    msg = termination_message(ExitCode.DATASET_INVALID, "labels/a.txt:3: class id 9\n  out of range")
    assert msg == "DatasetInvalid: labels/a.txt:3: class id 9 out of range"
    assert len(termination_message(ExitCode.TRAINING_ERROR, "x" * 10000)) <= 3500


def test_write_termination_message(tmp_path, capsys):
    path = tmp_path / "termination-log"
    write_termination_message("ConfigInvalid: nope", {"YOLO_TERMINATION_LOG": str(path)})
    assert path.read_text() == "ConfigInvalid: nope\n"
    assert "ConfigInvalid: nope" in capsys.readouterr().err
    write_termination_message("x", {"YOLO_TERMINATION_LOG": str(tmp_path / "no" / "dir" / "log")})  # no crash


def test_main_with_invalid_config_exits_10(tmp_path, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps({"name": "j", "model": "m.yaml", "dataset": "http://x", "output": "s3://b", "bogus": 1})
    )
    log = tmp_path / "term"
    monkeypatch.setenv("YOLO_TERMINATION_LOG", str(log))
    assert main(["--config", str(cfg)]) == 10
    text = log.read_text()
    assert text.startswith("ConfigInvalid: ") and "dataset" in text and "bogus" in text


def test_a_gpu_job_without_a_visible_gpu_exits_22_before_any_s3_request(tmp_path, monkeypatch):
    """spec.resources.gpus 1 on a machine without CUDA: GPUNotVisible, before S3 (whose endpoint here refuses
    connections: S3Unreachable, exit 19, had it been asked first)."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"name": "j", "model": "m.yaml", "dataset": "s3://d/x/", "output": "s3://b/out/",
                               "gpus": 1, "s3": {"endpoint": "http://127.0.0.1:9"},
                               "workDir": str(tmp_path / "work")}))  # fmt: skip
    log = tmp_path / "term"
    monkeypatch.setenv("YOLO_TERMINATION_LOG", str(log))
    monkeypatch.setenv("YOLO_TRAINER_S3_RETRY_BUDGET", "1")
    monkeypatch.setenv("YOLO_NODE_NAME", "gpu-node-0")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    from yolo_trainer import pipeline

    monkeypatch.setattr(pipeline, "_gpu_count", lambda: 0)  # also on a machine with CUDA
    assert main(["--config", str(cfg)]) == ExitCode.GPU_NOT_VISIBLE == 22
    text = log.read_text()
    print(text)
    assert text.startswith("GPUNotVisible: spec.resources.gpus is 1 but the pod on node gpu-node-0 sees no CUDA")


def test_main_without_config_exits_10(tmp_path, monkeypatch):
    monkeypatch.delenv("YOLO_TRAINER_CONFIG", raising=False)
    monkeypatch.setenv("YOLO_TERMINATION_LOG", str(tmp_path / "term"))
    assert main([]) == 10
    assert "YOLO_TRAINER_CONFIG" in (tmp_path / "term").read_text()


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("yolov8n.yaml", {"kind": "yaml", "yaml": "yolov8n.yaml"}),
        ("s3://b/m.pt", {"kind": "uri", "uri": "s3://b/m.pt"}),
        ("https://x/m.pt", {"kind": "uri", "uri": "https://x/m.pt"}),
        ("yolov8n.pt", {"kind": "hub", "hub": "yolov8n.pt"}),
        ("/models/m.pt", {"kind": "file", "path": "/models/m.pt"}),
    ],
)
def test_a_plain_string_model_is_read_as_before_it_was_typed(spec, kind):
    """The compatibility path (a Job of the previous operator release, a hand-written --config): the one place a
    model's kind is read off a string."""
    assert model_ref_from_string(spec) == kind


def test_offline_hub_and_https_models_are_unavailable_with_alternatives(tmp_path):
    for model in (HubModel(hub="yolov8n.pt"), UriModel(uri="https://example.com/m.pt")):
        with pytest.raises(ModelUnavailable) as e:
            resolve_model(model, None, tmp_path, offline=True)
        assert "offline" in str(e.value) and "s3://" in str(e.value) and "yolov8n.yaml" in str(e.value)
        assert e.value.code == ExitCode.MODEL_UNAVAILABLE


def test_yaml_models(tmp_path):
    assert resolve_model(YamlModel(yaml="yolov8n.yaml"), None, tmp_path, offline=True) == "yolov8n.yaml"
    with pytest.raises(ModelUnavailable, match=r"nosuchmodel.yaml"):
        resolve_model(YamlModel(yaml="nosuchmodel.yaml"), None, tmp_path, offline=True)
    with pytest.raises(ModelUnavailable, match=r"does not exist"):
        resolve_model(FileModel(path="/nope/m.pt"), None, tmp_path, offline=True)


def test_reporter_selection(tmp_path):
    target = StatusTarget(namespace="ns", name="j")
    assert isinstance(make_reporter(None, {}), LogReporter)
    assert isinstance(make_reporter(target, {}), LogReporter)
    sink = StatusSink()
    try:
        kc = sink.kubeconfig(tmp_path / "kc.json")
        assert isinstance(make_reporter(target, {"KUBECONFIG": str(kc)}), KubeStatusReporter)
    finally:
        sink.close()


def test_kube_reporter_sends_merge_patch_to_status_subresource(tmp_path):
    sink = StatusSink()
    try:
        rep = make_reporter(
            StatusTarget(namespace="ns", name="job"),
            {"KUBECONFIG": str(sink.kubeconfig(tmp_path / "kc.json"))},
        )
        rep.report(TrainerReport(stage="Training", progress=Progress(epoch=1, epochs=3, epoch_display="1/3")))
    finally:
        sink.close()
    (patch,) = sink.patches
    assert patch.path == "/apis/yolo-operator.io/v1alpha1/namespaces/ns/trainingjobs/job/status"
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {
        "status": {"stage": "Training", "progress": {"epoch": 1, "epochs": 3, "epochDisplay": "1/3"}}
    }


def test_kube_reporter_failures_never_raise(tmp_path):
    sink = StatusSink()
    kc = sink.kubeconfig(tmp_path / "kc.json")
    sink.close()  # the API server is gone
    rep = make_reporter(StatusTarget(namespace="ns", name="job"), {"KUBECONFIG": str(kc)})
    assert isinstance(rep, KubeStatusReporter)
    rep.report(TrainerReport(stage="Training"))  # must not raise
    assert rep.failures == 1
    assert Path(kc).exists()


def test_interrupted_exits_75_at_once_without_interpreter_teardown(tmp_path):
    """After SIGTERM the grace period may be seconds: exit 75 skips the teardown (atexit handlers, final GC)."""
    import subprocess
    import sys

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"name": "j", "model": "m.yaml", "dataset": "s3://b/d/", "output": "s3://b/o/"}))
    script = (
        "import atexit, sys, yolo_trainer.pipeline as p\n"
        "from yolo_trainer import cli\n"
        "from yolo_contract.exitcodes import Interrupted\n"
        "atexit.register(lambda: print('TEARDOWN RAN', flush=True))\n"
        "def run(cfg): print('flushed', flush=True); raise Interrupted('interrupted by signal SIGTERM')\n"
        "p.run = run\n"
        "sys.exit(cli.main(['--config', sys.argv[1]]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "YOLO_TERMINATION_LOG": str(tmp_path / "term")}
    proc = subprocess.run([sys.executable, "-c", script, str(cfg)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 75, proc.stderr
    assert proc.stdout == "flushed\n"  # printed output survives os._exit; the atexit handler never ran
    assert (tmp_path / "term").read_text() == "Interrupted: interrupted by signal SIGTERM\n"
