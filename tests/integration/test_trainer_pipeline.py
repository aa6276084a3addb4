"""The trainer end to end: real ``yolo-trainer`` processes, real Ultralytics CPU training (tiny images, 1-5
epochs), real S3 (the test bed's SeaweedFS), status reports captured by a fake Kubernetes API."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
from pathlib import Path

import pytest
from yolo_dev.testbed import wait_until
from yolo_trainer.testing import upload_dir, write_roboflow_dataset, write_yolo_dataset, zip_dir

from tests.trainer_fixtures import (
    Result,
    StatusSink,
    TrainerRunner,
    list_keys,
    parse_events,
    read_json,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def datasets(bucket, s3_client, tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("datasets")
    write_yolo_dataset(tmp / "yolo", n_train=16, n_val=8)
    upload_dir(s3_client, bucket, "ds/yolo", tmp / "yolo")
    write_yolo_dataset(tmp / "yolo32", n_train=32, n_val=8, seed=1)
    upload_dir(s3_client, bucket, "ds/yolo32", tmp / "yolo32")
    write_roboflow_dataset(tmp / "rf", n_train=16, n_val=8, n_test=4, seed=2)
    s3_client.upload_file(str(zip_dir(tmp / "rf", tmp / "rf.zip")), bucket, "ds/rf.zip")
    return {
        "prefix": f"s3://{bucket}/ds/yolo",
        "prefix32": f"s3://{bucket}/ds/yolo32",
        "zip": f"s3://{bucket}/ds/rf.zip",
        "output": f"s3://{bucket}/out",
    }


@pytest.fixture(scope="module")
def first_run(s3_env, datasets, tmp_path_factory) -> tuple[Result, StatusSink, dict]:
    """One happy-path run from an S3 prefix, shared by several assertions (and as a base model)."""
    sink = StatusSink()
    runner = TrainerRunner(s3_env, tmp_path_factory.mktemp("first"), sink)
    cfg = runner.config("first", "yolov8n.yaml", datasets["prefix"], datasets["output"], epochs=2)
    res = runner.run(cfg)
    assert res.rc == 0, res.stderr[-4000:]
    yield res, sink, cfg
    sink.close()


def _csv_rows(text: str) -> list[dict[str, str]]:
    return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def test_prefix_run_publishes_weights_results_plots_and_metrics(first_run, s3_client, bucket, tmp_path):
    res, _, _ = first_run
    prefix = "out/ns1/first/"
    keys = set(list_keys(s3_client, bucket, prefix))
    for rel in (
        "weights/best.pt",
        "weights/last.pt",
        "results.csv",
        "args.yaml",
        "metrics.json",
        "plots/results.png",
        "plots/confusion_matrix.png",
        "plots/BoxPR_curve.png",
    ):
        assert prefix + rel in keys, f"{rel} missing from {sorted(keys)}"
    assert not [k for k in keys if "/checkpoints/" in k], "checkpoints must be cleaned up after success"

    metrics = read_json(s3_client, bucket, prefix + "metrics.json")
    assert metrics["runId"] == res.of("done")[0]["runId"]
    assert set(metrics["metrics"]) >= {"precision", "recall", "map50", "map50-95"}
    assert metrics["dataset"]["splits"]["train"]["images"] == 16
    # The commit marker names every object of the run with its ETag: a reader can verify the set.
    for rel, meta in metrics["objects"].items():
        head = s3_client.head_object(Bucket=bucket, Key=prefix + rel)
        assert head["ETag"] == meta["etag"] and head["ContentLength"] == meta["size"], rel

    rows = _csv_rows(s3_client.get_object(Bucket=bucket, Key=prefix + "results.csv")["Body"].read().decode())
    assert [int(float(r["epoch"])) for r in rows] == [1, 2]

    from ultralytics import YOLO

    best = tmp_path / "best.pt"
    s3_client.download_file(bucket, prefix + "weights/best.pt", str(best))
    assert YOLO(str(best)).names == {0: "red", 1: "green"}


def test_progress_is_reported_every_epoch_as_merge_patch(first_run):
    res, sink, _ = first_run
    assert sink.patches, "no status reports received"
    assert {p.content_type for p in sink.patches} == {"application/merge-patch+json"}
    assert {p.path for p in sink.patches} == {
        "/apis/yolo-operator.io/v1alpha1/namespaces/ns1/trainingjobs/first/status"
    }
    statuses = sink.statuses()
    stages = [s["stage"] for s in statuses if "stage" in s]
    assert stages[0] == "Staging" and "Training" in stages and stages[-1] == "Uploading"
    training = [s["progress"] for s in statuses if s.get("stage") == "Training"]
    assert [p["epoch"] for p in training] == [1, 2]
    assert [p["epochDisplay"] for p in training] == ["1/2", "2/2"]
    for p in training:
        assert set(p["metrics"]) >= {
            "precision",
            "recall",
            "map50",
            "map50-95",
            "boxLoss",
            "clsLoss",
            "dflLoss",
        }
        assert p["etaSeconds"] >= 0 and p["updatedAt"].endswith("Z")
    # Every checkpoint the trainer committed is reported, and nothing else. Epoch 2 is the last (its outputs are
    # the final ones) and is never checkpointed; epoch 1's may be coalesced into it by design (newest wins) when
    # epoch 2 saved over last.pt before epoch 1's was staged, which sub-second epochs on a busy machine do.
    uploads = re.finditer(r"checkpoint of epoch (\d+) uploaded to (\S+)", res.stderr)
    uploaded = [{"epoch": int(m[1]), "uri": m[2]} for m in uploads]
    assert [u["epoch"] for u in uploaded] in ([1], []), res.stderr[-4000:]
    reported = [s["lastCheckpoint"] for s in statuses if "lastCheckpoint" in s]  # repeated by later reports
    assert [c for i, c in enumerate(reported) if i == 0 or c != reported[i - 1]] == uploaded
    for u in uploaded:
        assert u["uri"].endswith(f"/out/ns1/first/checkpoints/e{u['epoch']:06d}/last.pt")
    if not uploaded:  # then the log says why epoch 1's checkpoint was not uploaded
        why = r"checkpoint of epoch 1 (was saved over by epoch 2|was overwritten|changed while it was staged)"
        assert re.search(why, res.stderr), res.stderr[-4000:]
    assert statuses[-1]["artifacts"]["bestWeights"].endswith("/out/ns1/first/weights/best.pt")
    assert statuses[-1]["artifacts"]["metrics"].endswith("/out/ns1/first/metrics.json")
    # One structured log line per epoch on stdout.
    assert [e["epoch"] for e in res.of("epoch")] == [1, 2]


def test_roboflow_zip_run_with_torchscript_export(s3_env, datasets, s3_client, bucket, tmp_path):
    runner = TrainerRunner(s3_env, tmp_path)
    cfg = runner.config("fromzip", "yolov8n.yaml", datasets["zip"], datasets["output"], epochs=1)
    cfg["exportFormats"] = ["torchscript"]
    res = runner.run(cfg)
    assert res.rc == 0, res.stderr[-4000:]
    metrics = read_json(s3_client, bucket, "out/ns1/fromzip/metrics.json")
    # The ../train/images style paths of the Roboflow data.yaml were resolved, test split included.
    assert {k: v["images"] for k, v in metrics["dataset"]["splits"].items()} == {
        "train": 16,
        "val": 8,
        "test": 4,
    }
    keys = set(list_keys(s3_client, bucket, "out/ns1/fromzip/"))
    assert "out/ns1/fromzip/weights/best.pt" in keys
    assert "out/ns1/fromzip/serving/torchscript/1/model.pt" in keys
    assert res.of("done")[0]["artifacts"]["exports"] == [
        f"s3://{bucket}/out/ns1/fromzip/serving/torchscript/1/model.pt"
    ]


def _modules_state(path: Path) -> dict[int, dict[str, object]]:
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(str(path))
    return {i: {k: v.clone() for k, v in m.state_dict().items()} for i, m in enumerate(model.model)}


def test_transfer_learning_with_freeze_keeps_the_backbone_bit_for_bit(
    first_run, s3_env, datasets, s3_client, bucket, tmp_path
):
    import torch

    base_uri = f"s3://{bucket}/out/ns1/first/weights/best.pt"
    runner = TrainerRunner(s3_env, tmp_path)
    # nbs=batch: an optimizer step after every batch, so two tiny epochs visibly move the unfrozen weights.
    cfg = runner.config(
        "transfer",
        base_uri,
        datasets["prefix"],
        datasets["output"],
        epochs=2,
        freeze=10,
        hyperparameters={"nbs": 8},
    )
    res = runner.run(cfg)
    assert res.rc == 0, res.stderr[-4000:]

    s3_client.download_file(bucket, "out/ns1/first/weights/best.pt", str(tmp_path / "base.pt"))
    s3_client.download_file(bucket, "out/ns1/transfer/weights/last.pt", str(tmp_path / "tuned.pt"))
    base, tuned = _modules_state(tmp_path / "base.pt"), _modules_state(tmp_path / "tuned.pt")
    for i in range(10):
        for k, v in base[i].items():
            assert torch.equal(v, tuned[i][k]), f"frozen module {i} changed: {k}"
    changed = [
        i for i in range(10, len(base)) if any(not torch.equal(v, tuned[i][k]) for k, v in base[i].items())
    ]
    assert changed, "no module after the frozen backbone changed: the second run did not train"
    assert len(changed) >= (len(base) - 10) // 2, f"only modules {changed} changed"


def test_sigkill_mid_training_resumes_from_s3_checkpoint_losing_at_most_one_epoch(
    s3_env, datasets, s3_client, bucket, tmp_path
):
    n = 5
    sink = StatusSink()
    runner = TrainerRunner(s3_env, tmp_path, sink)
    cfg = runner.config(
        "resume", "yolov8n.yaml", datasets["prefix32"], datasets["output"], epochs=n, imgsz=64
    )
    state_key = "out/ns1/resume/checkpoints/state.json"

    proc, out, _ = runner.start(cfg)
    try:
        state = wait_until(
            lambda: (s := read_json(s3_client, bucket, state_key)) and s["epoch"] >= 2 and s,
            timeout=180,
            what="checkpoint of epoch 2",
        )
        proc.send_signal(signal.SIGKILL)  # no handler runs: the pod vanished
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    # The training process died with its supervisor (outside a pod nothing else would kill it).
    (child,) = [e["pid"] for e in parse_events(out.read_text()) if e["event"] == "trainingProcess"]
    wait_until(lambda: not _alive(child), timeout=30, what=f"training process {child} to exit")
    done_before_kill = max(e["epoch"] for e in parse_events(out.read_text()) if e["event"] == "epoch")
    state = read_json(s3_client, bucket, state_key)  # the newest committed checkpoint at kill time
    assert done_before_kill < n
    assert state["epoch"] >= done_before_kill - 1, "more than one epoch lost"

    res = runner.run(cfg)
    assert res.rc == 0, res.stderr[-4000:]
    assert res.of("resume")[0]["fromEpoch"] == state["epoch"]
    assert [e["epoch"] for e in res.of("epoch")] == list(range(state["epoch"] + 1, n + 1))
    metrics = read_json(s3_client, bucket, "out/ns1/resume/metrics.json")
    assert metrics["resumedFromEpoch"] == state["epoch"] and metrics["epochs"] == n
    # results.csv continues across the restart: one row per epoch 1..N.
    rows = _csv_rows(
        s3_client.get_object(Bucket=bucket, Key="out/ns1/resume/results.csv")["Body"].read().decode()
    )
    assert [int(float(r["epoch"])) for r in rows] == list(range(1, n + 1))
    # The restarted pod reported the epochs already done while staging, not 0.
    staging = [s for s in sink.statuses() if s.get("stage") == "Staging"]
    assert staging[-1]["progress"]["epoch"] == state["epoch"]
    sink.close()

    # Like an uninterrupted run of the same config: as many epochs, one row each, the same columns.
    whole = runner.run({**cfg, "name": "resume-whole"})
    assert whole.rc == 0, whole.stderr[-4000:]
    whole_rows = _csv_rows(
        s3_client.get_object(Bucket=bucket, Key="out/ns1/resume-whole/results.csv")["Body"].read().decode()
    )
    assert [int(float(r["epoch"])) for r in whole_rows] == [int(float(r["epoch"])) for r in rows]
    assert list(whole_rows[0]) == list(rows[0])
    assert read_json(s3_client, bucket, "out/ns1/resume-whole/metrics.json")["epochs"] == metrics["epochs"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_sigkilled_training_process_is_classified_and_its_checkpoint_kept(
    s3_env, datasets, s3_client, bucket, tmp_path
):
    """The training process killed under the supervisor (the kernel's OOM killer picks the biggest process):
    the trainer exits with a classified, retriable code, and the committed checkpoint is whole."""
    import torch

    runner = TrainerRunner(s3_env, tmp_path)
    cfg = runner.config("childkill", "yolov8n.yaml", datasets["prefix32"], datasets["output"], epochs=30, imgsz=64)
    state_key = "out/ns1/childkill/checkpoints/state.json"
    proc, out, term = runner.start(cfg)
    try:
        wait_until(lambda: (s := read_json(s3_client, bucket, state_key)) and s["epoch"] >= 2, timeout=180,
                   what="checkpoint of epoch 2")  # fmt: skip
        (child,) = [e["pid"] for e in parse_events(out.read_text()) if e["event"] == "trainingProcess"]
        os.kill(child, signal.SIGKILL)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 20, out.read_text()[-3000:]
    assert term.read_text().startswith("TrainingError: the training process was killed by SIGKILL")
    state = read_json(s3_client, bucket, state_key)
    ckpt = tmp_path / "ckpt.pt"
    s3_client.download_file(bucket, state["uri"].split(f"{bucket}/", 1)[1], str(ckpt))
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == state["epoch"] - 1


def test_sigterm_flushes_the_newest_checkpoint_and_exits_75(s3_env, datasets, s3_client, bucket, tmp_path):
    import torch

    runner = TrainerRunner(s3_env, tmp_path)
    cfg = runner.config("term", "yolov8n.yaml", datasets["prefix32"], datasets["output"], epochs=30, imgsz=64)
    proc, out, term = runner.start(cfg)
    try:
        wait_until(
            lambda: any(e["event"] == "epoch" and e["epoch"] >= 2 for e in parse_events(out.read_text())),
            timeout=180,
            what="epoch 2",
        )
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 75
    assert term.read_text().startswith("Interrupted: ")
    events = parse_events(out.read_text())
    last_epoch = max(e["epoch"] for e in events if e["event"] == "epoch")
    state = read_json(s3_client, bucket, "out/ns1/term/checkpoints/state.json")
    assert state is not None and state["epoch"] >= last_epoch, (state, last_epoch)
    assert events[-1]["event"] == "interrupted" and events[-1]["flushed"] is True
    ckpt = tmp_path / "ckpt.pt"
    s3_client.download_file(bucket, state["uri"].split(f"{bucket}/", 1)[1], str(ckpt))
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == state["epoch"] - 1
    keys = list_keys(s3_client, bucket, "out/ns1/term/")
    assert not [k for k in keys if "/checkpoints/" not in k], f"final outputs published on interrupt: {keys}"
    assert json.loads(json.dumps(state))["fingerprint"]
