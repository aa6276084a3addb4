"""After training, without Ultralytics runs: the serving layout, stop requests, the outcome, lineage."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from yolo_trainer.control import StopWatcher
from yolo_trainer.lineage import dataset_lineage
from yolo_trainer.outputs import collect_files, publish
from yolo_trainer.pipeline import training_outcome
from yolo_trainer.s3 import S3Object

from tests.unit.test_trainer_checkpoint import FakeStore

pytestmark = pytest.mark.unit


def test_exports_and_test_results_are_published_in_the_model_repository_layout(tmp_path):
    save = tmp_path / "run"
    (save / "weights").mkdir(parents=True)
    (save / "weights/best.pt").write_bytes(b"pt")
    onnx = save / "weights/best.onnx"
    onnx.write_bytes(b"onnx")
    ts = save / "weights/best.torchscript"
    ts.write_bytes(b"ts")
    ov = save / "weights/best_openvino_model"
    ov.mkdir()
    for name in ("best.xml", "best.bin", "metadata.yaml"):
        (ov / name).write_bytes(name.encode())
    test = tmp_path / "test"
    test.mkdir()
    for name in ("metrics.json", "confusion_matrix.png", "BoxPR_curve.png"):
        (test / name).write_bytes(b"{}")
    files = collect_files(save, {"onnx": onnx, "openvino": ov, "torchscript": ts}, test)
    assert {r for _, r in files} == {
        "weights/best.pt",
        "serving/onnx/1/model.onnx",
        "serving/openvino/1/model.xml",
        "serving/openvino/1/model.bin",
        "serving/openvino/1/metadata.yaml",
        "serving/torchscript/1/model.pt",
        "test/metrics.json",
        "test/confusion_matrix.png",
        "test/BoxPR_curve.png",
    }
    store = FakeStore()
    store.objects["out/ns/j/exports/best.onnx"] = b"old layout"
    art = publish(store, "s3://b/out/ns/j", files, {}, "run1")
    assert art.exports == [
        "s3://b/out/ns/j/serving/onnx/1/model.onnx",
        "s3://b/out/ns/j/serving/openvino/1/model.xml",
        "s3://b/out/ns/j/serving/torchscript/1/model.pt",
    ]
    assert art.serving == "s3://b/out/ns/j/serving/" and art.test == "s3://b/out/ns/j/test/"
    assert art.run_id == "run1"
    assert "out/ns/j/exports/best.onnx" not in store.objects  # an earlier run's export, tidied


def _hooks(done: int | None, stopped_at: int | None = None):
    return SimpleNamespace(epochs_reported=list(range(1, done + 1)) if done else [], stopped_at=stopped_at)


@pytest.mark.parametrize(
    ("hooks", "hyper", "reason"),
    [
        (_hooks(3, stopped_at=3), {}, "StopRequested"),
        (_hooks(7), {"time": 0.5}, "TimeBudgetReached"),
        (_hooks(12), {}, "EarlyStopping"),
        (_hooks(30), {}, "Completed"),
    ],
)
def test_training_outcome(tmp_path, hooks, hyper, reason):
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,metrics/mAP50-95(B)\n1,0.1\n2,0.3\n3,0.2\n")
    o = training_outcome(hooks, hyper, SimpleNamespace(epochs=30, patience=10), csv)
    assert o.reason == reason and o.best_epoch == 2
    assert "best.pt is epoch 2" in o.message


def test_stop_watcher_reads_spec_stop_and_the_trainer_image():
    bodies = [None, {"spec": {}}, {"spec": {"stop": True}, "status": {"lineage": {"trainerImage": "img@sha256:1"}}}]

    def fetch():
        b = bodies.pop(0)
        if b is None:
            raise OSError("API server unreachable")
        return b

    w = StopWatcher(fetch, interval=1)
    assert w.poll() is False and w.failures == 1
    assert w.poll() is False
    assert w.poll() is True and w.requested.is_set()
    assert w.trainer_image() == "img@sha256:1"
    assert StopWatcher(None).start().poll() is False


class ListStore:
    def __init__(self, objects):
        self.objects = objects

    def list(self, bucket, prefix):
        return [o for o in self.objects if o.key.startswith(prefix)]


def test_dataset_fingerprint_changes_with_any_object_and_not_with_the_prefix():
    a = [S3Object("ds/v1/data.yaml", 10, '"e1"'), S3Object("ds/v1/images/a.jpg", 99, '"e2"')]
    b = [S3Object("other/data.yaml", 10, '"e1"'), S3Object("other/images/a.jpg", 99, '"e2"')]
    c = [S3Object("ds/v1/data.yaml", 10, '"e1"'), S3Object("ds/v1/images/a.jpg", 99, '"e3"')]
    fa = dataset_lineage(ListStore(a), "s3://bk/ds/v1", archive=False)
    assert fa.objects == 2 and fa.fingerprint.startswith("sha256:")
    assert dataset_lineage(ListStore(b), "s3://bk/other/", archive=False).fingerprint == fa.fingerprint
    assert dataset_lineage(ListStore(c), "s3://bk/ds/v1", archive=False).fingerprint != fa.fingerprint
    z = dataset_lineage(ListStore([S3Object("ds/v1.zip", 5, '"zz"'), S3Object("ds/v1.zip.bak", 5, '"y"')]),
                        "s3://bk/ds/v1.zip", archive=True)  # fmt: skip
    assert z.etag == "zz" and z.objects is None
    assert json.loads(z.model_dump_json(by_alias=True, exclude_none=True)).keys() == {"uri", "fingerprint", "etag"}




def test_a_parent_trainingjob_is_named_by_the_typed_model_not_by_its_key():
    """fromTrainingJob arrives typed (TrainingJobModel: the parent's bestWeights, namespace, name, uid and its
    metrics.json): the lineage names that job, and its run when its metrics.json lists these very bytes. The same
    key as a plain URI names no job: nothing is parsed back out of an S3 key."""
    from yolo_contract.model_source import TrainingJobModel, UriModel
    from yolo_trainer.lineage import base_model_lineage

    class ParentStore(ListStore):
        def __init__(self, key, metrics):
            super().__init__([S3Object(key, 9, '"e1"')])
            self.metrics = metrics
            self.read = []

        def get_bytes_or_none(self, bucket, key):
            self.read.append(f"s3://{bucket}/{key}")
            return json.dumps(self.metrics).encode()

    key = "runs/team-a/base/0d1e2f3a-uid/weights/best.pt"
    metrics = "s3://bk/runs/team-a/base/0d1e2f3a-uid/metrics.json"
    parent = TrainingJobModel(uri=f"s3://bk/{key}", namespace="team-a", name="base", uid="0d1e2f3a-uid",
                              metrics=metrics)  # fmt: skip
    store = ParentStore(key, {"runId": "r1", "objects": {"weights/best.pt": {"etag": '"e1"'}}})
    found = base_model_lineage(store, parent, None)
    assert (found.uri, found.etag, found.training_job, found.run_id) == (f"s3://bk/{key}", "e1", "base", "r1")
    assert store.read == [metrics]
    # the parent published other bytes since: still its job, but no run vouches for these
    other = ParentStore(key, {"runId": "r2", "objects": {"weights/best.pt": {"etag": '"e9"'}}})
    since = base_model_lineage(other, parent, None)
    assert (since.training_job, since.run_id) == ("base", None)
    plain = base_model_lineage(store, UriModel(uri=f"s3://bk/{key}"), None)
    assert plain.etag == "e1" and plain.training_job is None and plain.run_id is None
