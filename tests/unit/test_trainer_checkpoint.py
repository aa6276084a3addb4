"""Checkpoint uploader (newest wins, state.json last, flush) and the final-output commit protocol, with a fake
in-memory S3 store that records the order of operations."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from yolo_contract.exitcodes import ConfigInvalid, S3AccessDenied, S3Unavailable
from yolo_contract.trainer_config import TrainerConfig
from yolo_trainer.checkpoint import (
    CheckpointState,
    CheckpointUploader,
    config_fingerprint,
    read_state,
)
from yolo_trainer.outputs import check_export_formats, collect_files, publish
from yolo_trainer.results import results_through
from yolo_trainer.s3 import S3Object

pytestmark = pytest.mark.unit


class FakeStore:
    def __init__(self, gate: threading.Event | None = None, fail: Exception | None = None):
        self.objects: dict[str, bytes] = {}
        self.ops: list[tuple[str, str]] = []
        self.gate = gate
        self.fail = fail
        self.uploading = threading.Event()

    def upload_file(self, path: Path, bucket: str, key: str, content_type=None):
        self.uploading.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.objects[key] = Path(path).read_bytes()
        self.ops.append(("put", key))
        return f'"etag-{key}"'

    def put_bytes(self, bucket, key, data, content_type="application/json"):
        self.objects[key] = data
        self.ops.append(("put", key))
        return f'"etag-{key}"'

    def get_bytes_or_none(self, bucket, key):
        return self.objects.get(key)

    def delete(self, bucket, key):
        self.objects.pop(key, None)
        self.ops.append(("delete", key))

    def list(self, bucket, prefix):
        return [S3Object(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]


def _ckpt(tmp_path: Path, epoch: int) -> tuple[Path, Path]:
    d = tmp_path / "run" / "weights"
    d.mkdir(parents=True, exist_ok=True)
    (d / "last.pt").write_bytes(f"weights-{epoch}".encode())
    (tmp_path / "run" / "results.csv").write_text(f"epoch\n{epoch + 1}\n")
    return d / "last.pt", tmp_path / "run" / "results.csv"


def test_state_json_is_written_after_the_checkpoint_and_names_it(tmp_path):
    store = FakeStore()
    up = CheckpointUploader(store, "s3://b/out/ns/job", tmp_path / "staging", "run1", "fp")
    up.submit(1, *_ckpt(tmp_path, 0))
    assert up.flush(10)
    up.close()
    keys = [k for _, k in store.ops]
    assert keys == [
        "out/ns/job/checkpoints/e000001/last.pt",
        "out/ns/job/checkpoints/e000001/results.csv",
        "out/ns/job/checkpoints/state.json",
    ]
    state = json.loads(store.objects["out/ns/job/checkpoints/state.json"])
    assert state["epoch"] == 1 and state["uri"] == "s3://b/out/ns/job/checkpoints/e000001/last.pt"
    assert store.objects["out/ns/job/checkpoints/e000001/last.pt"] == b"weights-0"
    assert read_state(store, "s3://b/out/ns/job") == CheckpointState(
        1, state["uri"], state["results"], "run1", "fp"
    )


def test_newest_wins_while_an_upload_is_in_flight(tmp_path):
    gate = threading.Event()
    store = FakeStore(gate=gate)
    up = CheckpointUploader(store, "s3://b/p", tmp_path / "staging", "r", "fp")
    up.submit(1, *_ckpt(tmp_path, 0))
    assert store.uploading.wait(5)  # epoch 1 is in flight (blocked)
    for e in (1, 2, 3):
        up.submit(e + 1, *_ckpt(tmp_path, e))  # local files are overwritten each time, like Ultralytics does
    assert not up.flush(0.2)  # still blocked
    gate.set()
    assert up.flush(10)
    up.close()
    uploaded = [k for op, k in store.ops if op == "put" and k.endswith("last.pt")]
    assert uploaded == ["p/checkpoints/e000001/last.pt", "p/checkpoints/e000004/last.pt"]
    # The staged copy was taken at submit time: epoch 4's object holds epoch 4's bytes.
    assert store.objects["p/checkpoints/e000004/last.pt"] == b"weights-3"
    # The superseded epoch's objects are deleted only after state.json moved on.
    assert "p/checkpoints/e000001/last.pt" not in store.objects
    assert json.loads(store.objects["p/checkpoints/state.json"])["epoch"] == 4
    ops = [k for _, k in store.ops]
    assert ops.index("p/checkpoints/e000001/last.pt", 1) > ops.index("p/checkpoints/state.json", 3)
    assert not list((tmp_path / "staging").iterdir()), "staging copies must be removed"


def test_weights_are_staged_at_submit_and_a_file_rewritten_meanwhile_is_never_uploaded(tmp_path, monkeypatch):
    """submit() copies last.pt at once (the supervisor calls it when the training process says the write is
    done) and drops a checkpoint whose file changed during the copy: its object would mix two epochs."""
    import yolo_trainer.checkpoint as ckpt

    store = FakeStore()
    up = CheckpointUploader(store, "s3://b/p", tmp_path / "staging", "r", "fp")
    real_copy = ckpt.shutil.copyfile

    def copy_while_rewritten(src, dst):
        real_copy(src, dst)
        if Path(src).name == "last.pt":
            Path(src).write_bytes(b"weights-1 being written")  # the next epoch's save began meanwhile

    monkeypatch.setattr(ckpt.shutil, "copyfile", copy_while_rewritten)
    assert up.submit(1, *_ckpt(tmp_path, 0)) is False
    monkeypatch.setattr(ckpt.shutil, "copyfile", real_copy)
    assert not list((tmp_path / "staging").iterdir())
    last, csv = _ckpt(tmp_path, 1)
    assert up.submit(2, last, csv) is True
    last.write_bytes(b"weights-2, torn")  # rewritten after staging: the staged copy is what is uploaded
    assert up.flush(10)
    up.close()
    assert [k for op, k in store.ops if op == "put" and k.endswith("last.pt")] == ["p/checkpoints/e000002/last.pt"]
    assert store.objects["p/checkpoints/e000002/last.pt"] == b"weights-1"
    assert json.loads(store.objects["p/checkpoints/state.json"])["epoch"] == 2
    assert not list((tmp_path / "staging").iterdir())


def test_a_file_rewritten_since_its_saved_signature_is_not_staged(tmp_path):
    """saved.json names last.pt as it was when complete; once the next save has begun (even if it stalls and
    the file stops changing) it is not that checkpoint any more."""
    from yolo_trainer.child import file_signature

    up = CheckpointUploader(FakeStore(), "s3://b/p", tmp_path / "staging", "r", "fp")
    last, csv = _ckpt(tmp_path, 2)
    signature = file_signature(last)
    last.write_bytes(b"weights-3, half written")
    assert up.submit(3, last, csv, signature) is False
    assert up.submit(3, last, csv, file_signature(last)) is True  # the version it names, whatever it holds
    up.close()


CSV = "                  epoch,         train/box_loss\n                      1,    1.5\n2,1.4\n3,1.3\n"


def test_results_through_keeps_the_header_and_the_checkpoints_epochs():
    assert results_through(CSV, 2) == "".join(CSV.splitlines(keepends=True)[:3])
    assert results_through(CSV, 3) == CSV
    assert results_through(CSV, 0) == CSV.splitlines(keepends=True)[0]
    assert results_through(CSV + "4,1.", 9) == CSV  # a row still being written
    assert results_through("", 3) == ""


def test_a_row_appended_ahead_of_last_pt_is_not_staged_with_it(tmp_path):
    """Ultralytics appends epoch 3's row, then rewrites last.pt: a checkpoint of epoch 2 staged in between
    must not carry row 3, or the run resumed from it (which redoes epoch 3) has that row twice."""
    store = FakeStore()
    up = CheckpointUploader(store, "s3://b/p", tmp_path / "staging", "r", "fp")
    last, csv = _ckpt(tmp_path, 1)
    csv.write_text("epoch,loss\n1,1.5\n2,1.4\n3,1.3\n")
    assert up.submit(2, last, csv) is True
    assert up.flush(10)
    staged = next(v for k, v in store.objects.items() if k.endswith("/results.csv"))
    assert staged.decode() == "epoch,loss\n1,1.5\n2,1.4\n"
    up.close()


def test_access_denied_is_fatal_unavailable_is_not(tmp_path):
    up = CheckpointUploader(FakeStore(fail=S3AccessDenied("denied")), "s3://b/p", tmp_path / "s1", "r", "fp")
    up.submit(1, *_ckpt(tmp_path, 0))
    up.flush(10)
    assert isinstance(up.error, S3AccessDenied)
    up.close()
    up = CheckpointUploader(FakeStore(fail=S3Unavailable("down")), "s3://b/p", tmp_path / "s2", "r", "fp")
    up.submit(1, *_ckpt(tmp_path, 0))
    up.flush(10)
    assert up.error is None and up.uploaded is None
    up.close()


def test_fingerprint_changes_with_training_config():
    a = TrainerConfig(name="j", model="m.yaml", dataset="s3://b/d", output="s3://b/o", training={"epochs": 3})
    b = TrainerConfig(name="j", model="m.yaml", dataset="s3://b/d", output="s3://b/o", training={"epochs": 4})
    c = TrainerConfig(
        name="j",
        model="m.yaml",
        dataset="s3://b/d",
        output="s3://b/o",
        training={"epochs": 3},
        status={"namespace": "x", "name": "y"},
    )
    assert config_fingerprint(a) != config_fingerprint(b)
    assert config_fingerprint(a) == config_fingerprint(c)


def test_publish_uncommits_first_uploads_then_commits_last(tmp_path):
    store = FakeStore()
    store.objects["out/ns/j/metrics.json"] = b"{}"  # an earlier run
    store.objects["out/ns/j/plots/old_plot.png"] = b"old"
    store.objects["out/ns/j/checkpoints/state.json"] = b"{}"
    save = tmp_path / "run"
    (save / "weights").mkdir(parents=True)
    for rel in (
        "weights/best.pt",
        "weights/last.pt",
        "results.csv",
        "args.yaml",
        "results.png",
        "labels.jpg",
    ):
        (save / rel).write_bytes(rel.encode())
    files = collect_files(save, [])
    assert {r for _, r in files} == {
        "weights/best.pt",
        "weights/last.pt",
        "results.csv",
        "args.yaml",
        "plots/results.png",
        "plots/labels.jpg",
    }
    art = publish(store, "s3://b/out/ns/j", files, {"map50": 0.5}, "run2")
    ops = [f"{op}:{k}" for op, k in store.ops]
    assert ops[0] == "delete:out/ns/j/metrics.json"
    commit = ops.index("put:out/ns/j/metrics.json")
    assert all(ops.index(f"put:out/ns/j/{r}") < commit for _, r in files)
    assert "delete:out/ns/j/plots/old_plot.png" in ops[commit:]  # stale object of the earlier run removed
    assert "out/ns/j/checkpoints/state.json" in store.objects  # not an output: left to the uploader
    body = json.loads(store.objects["out/ns/j/metrics.json"])
    assert body["runId"] == "run2" and set(body["objects"]) == {r for _, r in files}
    assert art.best_weights == "s3://b/out/ns/j/weights/best.pt" and art.plots == "s3://b/out/ns/j/plots/"


def test_publish_failure_leaves_nothing_committed(tmp_path):
    store = FakeStore(fail=S3Unavailable("down"))
    store.objects["out/j/metrics.json"] = b"{}"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/best.pt").write_bytes(b"x")
    with pytest.raises(S3Unavailable):
        publish(store, "s3://b/out/j", collect_files(tmp_path, []), {}, "r")
    assert "out/j/metrics.json" not in store.objects


def test_check_export_formats():
    check_export_formats(["torchscript"], has_module=lambda m: False)
    with pytest.raises(ConfigInvalid, match=r"needs the Python package.* onnx"):
        check_export_formats(["onnx"], has_module=lambda m: False)
    check_export_formats(["onnx"], has_module=lambda m: True)
    with pytest.raises(ConfigInvalid, match=r"unknown export format 'onxx'"):
        check_export_formats(["onxx"])


def test_read_state_ignores_garbage():
    store = FakeStore()
    assert read_state(store, "s3://b/p") is None
    store.objects["p/checkpoints/state.json"] = b"not json"
    assert read_state(store, "s3://b/p") is None
