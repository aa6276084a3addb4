"""Bad inputs: each fails fast with its own exit code and a termination message naming the problem, and
nothing final is published. Real trainer processes against the test bed's S3."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
import zipfile

import pytest
from yolo_trainer.testing import upload_dir, write_roboflow_dataset, write_yolo_dataset, zip_dir

from tests.trainer_fixtures import Result, list_keys

pytestmark = pytest.mark.integration


def assert_failed(res: Result, code: int, reason: str, *needles: str) -> None:
    assert res.rc == code, f"rc={res.rc}\n{res.stderr[-3000:]}"
    assert res.termination.startswith(f"{reason}: "), res.termination
    assert "\n" not in res.termination
    for n in needles:
        assert n in res.termination, f"{n!r} not in {res.termination!r}"
    assert res.termination in res.stderr  # also on stderr, for kubectl logs
    assert not res.of("epoch"), "failed input must not reach training"


def assert_nothing_published(s3_client, bucket: str, name: str) -> None:
    assert list_keys(s3_client, bucket, f"out/ns1/{name}/") == []


def test_wrong_keys_are_s3_access_denied(runner, good, s3_client, bucket):
    cfg = runner.config("wrongkeys", "yolov8n.yaml", good, f"s3://{bucket}/out")
    res = runner.run(cfg, access_key="AKIDONTEXIST", secret_key="nope")
    assert_failed(res, 12, "S3AccessDenied", bucket, "spec.s3.credentialsSecretRef")
    assert_nothing_published(s3_client, bucket, "wrongkeys")


def test_missing_output_bucket_is_s3_bucket_not_found(runner, good):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    res = runner.run(runner.config("nobucket", "yolov8n.yaml", good, f"s3://{missing}/out"))
    assert_failed(res, 16, "S3BucketNotFound", missing, "does not exist", "spec.output")


def test_missing_dataset_bucket_is_s3_bucket_not_found(runner, bucket):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    res = runner.run(runner.config("nodsbucket", "yolov8n.yaml", f"s3://{missing}/ds", f"s3://{bucket}/out"))
    assert_failed(res, 16, "S3BucketNotFound", missing, "spec.dataset")


def test_missing_data_yaml_is_dataset_invalid(runner, s3_client, bucket, tmp_path):
    write_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1)
    (tmp_path / "ds" / "data.yaml").unlink()
    upload_dir(s3_client, bucket, "noyaml", tmp_path / "ds")
    res = runner.run(runner.config("noyaml", "yolov8n.yaml", f"s3://{bucket}/noyaml", f"s3://{bucket}/out"))
    assert_failed(res, 11, "DatasetInvalid", "no data.yaml", f"s3://{bucket}/noyaml")
    assert_nothing_published(s3_client, bucket, "noyaml")


def test_class_id_out_of_range_names_file_and_line(runner, s3_client, bucket, tmp_path):
    write_yolo_dataset(tmp_path / "ds", n_train=4, n_val=2)
    (tmp_path / "ds/labels/train/train_0003.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n")
    upload_dir(s3_client, bucket, "badcls", tmp_path / "ds")
    res = runner.run(runner.config("badcls", "yolov8n.yaml", f"s3://{bucket}/badcls", f"s3://{bucket}/out"))
    assert_failed(res, 11, "DatasetInvalid", "labels/train/train_0003.txt:2", "class id 7 out of range (nc=2")
    assert_nothing_published(s3_client, bucket, "badcls")


def test_empty_val_split_in_a_zip_is_dataset_invalid(runner, s3_client, bucket, tmp_path):
    write_roboflow_dataset(tmp_path / "rf", n_train=4, n_val=2, n_test=0)
    shutil.rmtree(tmp_path / "rf/valid")
    archive = zip_dir(tmp_path / "rf", tmp_path / "rf.zip")
    with zipfile.ZipFile(archive, "a") as zf:  # an empty valid/images folder, as a Roboflow export can have
        zf.writestr("valid/images/", b"")
        zf.writestr("valid/labels/", b"")
    s3_client.upload_file(str(archive), bucket, "emptyval.zip")
    res = runner.run(
        runner.config("emptyval", "yolov8n.yaml", f"s3://{bucket}/emptyval.zip", f"s3://{bucket}/out")
    )
    assert_failed(res, 11, "DatasetInvalid", "'val' split", "no images")
    assert_nothing_published(s3_client, bucket, "emptyval")


def test_corrupt_archive_is_dataset_invalid(runner, s3_client, bucket, tmp_path):
    write_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1)
    data = zip_dir(tmp_path / "ds", tmp_path / "ds.zip").read_bytes()
    s3_client.put_object(Bucket=bucket, Key="corrupt.zip", Body=data[: len(data) // 2])
    res = runner.run(
        runner.config("corrupt", "yolov8n.yaml", f"s3://{bucket}/corrupt.zip", f"s3://{bucket}/out")
    )
    assert_failed(res, 11, "DatasetInvalid", f"s3://{bucket}/corrupt.zip", "zip")
    assert_nothing_published(s3_client, bucket, "corrupt")


def test_zip_slip_archive_is_dataset_invalid(runner, s3_client, bucket, tmp_path):
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data.yaml", "train: images/train\nval: images/val\nnames: [a]\n")
        zf.writestr("../../../../tmp/pwned.txt", "evil")
    s3_client.upload_file(str(archive), bucket, "slip.zip")
    res = runner.run(runner.config("slip", "yolov8n.yaml", f"s3://{bucket}/slip.zip", f"s3://{bucket}/out"))
    assert_failed(res, 11, "DatasetInvalid", "escapes the dataset")


def test_unknown_hyperparameter_is_config_invalid(runner, good, s3_client, bucket):
    cfg = runner.config("badhp", "yolov8n.yaml", good, f"s3://{bucket}/out", hyperparameters={"lr_zero": 0.1})
    res = runner.run(cfg)
    assert_failed(res, 10, "ConfigInvalid", "hyperparameters.lr_zero: not an Ultralytics train argument")
    assert_nothing_published(s3_client, bucket, "badhp")


def test_unknown_config_field_is_config_invalid(runner, good, bucket):
    cfg = runner.config("badcfg", "yolov8n.yaml", good, f"s3://{bucket}/out")
    cfg["training"]["epochz"] = 3
    res = runner.run(cfg)
    assert_failed(res, 10, "ConfigInvalid", "training.epochz")


def test_missing_export_dependency_fails_before_training(runner, good, bucket, tmp_path):
    # The image has every package yolo_contract.exports names; an image built without onnxruntime is simulated
    # by hiding it (a None in sys.modules makes importlib.util.find_spec return None).
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    cfg = runner.config("onnx", "yolov8n.yaml", good, f"s3://{bucket}/out")
    cfg["exportFormats"] = ["onnx"]
    res = runner.run(cfg, PYTHONPATH=os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")]))
    assert_failed(res, 10, "ConfigInvalid", "'onnx'", "onnxruntime")


def test_hub_model_offline_is_model_unavailable(runner, good, s3_client, bucket):
    res = runner.run(runner.config("hub", "yolov8n.pt", good, f"s3://{bucket}/out"))
    assert_failed(res, 13, "ModelUnavailable", "yolov8n.pt", "offline", "s3://", "yolov8n.yaml")
    assert_nothing_published(s3_client, bucket, "hub")


def test_missing_s3_model_is_model_unavailable(runner, good, bucket):
    uri = f"s3://{bucket}/models/nope.pt"
    res = runner.run(runner.config("nomodel", uri, good, f"s3://{bucket}/out"))
    assert_failed(res, 13, "ModelUnavailable", uri)


def test_an_endpoint_that_never_answers_is_s3_unreachable(runner, good, bucket):
    """Never answered at preflight: spec.s3.endpoint is wrong, not retried (an outage of an S3 that had answered
    is S3Unavailable, retried: tests/fault/test_trainer_faults.py)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = runner.config("down", "yolov8n.yaml", good, f"s3://{bucket}/out")
    cfg["s3"]["endpoint"] = f"http://127.0.0.1:{port}"
    res = runner.run(cfg, YOLO_TRAINER_S3_RETRY_BUDGET="2")
    assert_failed(res, 19, "S3Unreachable", f"s3://{bucket}", "spec.s3.endpoint")
