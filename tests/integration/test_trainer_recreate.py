"""Runs never collide: a TrainingJob deleted and re-created with the same name (a new metadata.uid) starts fresh
and never overwrites what the earlier incarnation published; and spec.s3.region unset is the bucket's own.

Real ``yolo-trainer`` processes against the test bed's S3, as the operator would start them (``uid`` in the
config); a pod deleted mid-run is a SIGKILL of the trainer. Each test prints the S3 listings before and after
the re-created run (``-s``: RECREATE-LISTING lines).
"""

from __future__ import annotations

import signal
import uuid

import pytest
from yolo_dev.testbed import wait_until

from tests.trainer_fixtures import TrainerRunner, list_keys, read_json

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(bucket, s3_client, tmp_path_factory) -> str:
    from yolo_trainer.testing import upload_dir, write_yolo_dataset

    tmp = tmp_path_factory.mktemp("recreate")
    write_yolo_dataset(tmp / "ds", n_train=32, n_val=8, seed=3)
    upload_dir(s3_client, bucket, "ds/recreate", tmp / "ds")
    return f"s3://{bucket}/ds/recreate"


def listing(s3_client, bucket: str, prefix: str, when: str) -> list[str]:
    keys = sorted(list_keys(s3_client, bucket, prefix))
    print(f"\nRECREATE-LISTING {when} (s3://{bucket}/{prefix}):")
    for k in keys:
        print(f"RECREATE-LISTING   {k}")
    return keys


def etags(s3_client, bucket: str, keys: list[str]) -> dict[str, str]:
    return {k: s3_client.head_object(Bucket=bucket, Key=k)["ETag"] for k in keys}


def incarnation(runner: TrainerRunner, name: str, dataset: str, output: str, epochs: int) -> dict:
    cfg = runner.config(name, "yolov8n.yaml", dataset, output, epochs=epochs, imgsz=64)
    cfg["uid"] = str(uuid.uuid4())  # what the operator passes: the TrainingJob's metadata.uid
    return cfg


def test_a_job_recreated_after_success_starts_fresh_beside_the_first_run(
    s3_env, dataset, s3_client, bucket, tmp_path
):
    runner = TrainerRunner(s3_env, tmp_path)
    first = incarnation(runner, "again", dataset, f"s3://{bucket}/out", epochs=2)
    res = runner.run(first)
    assert res.rc == 0, res.stderr[-4000:]
    job = "out/ns1/again/"
    before = listing(s3_client, bucket, job, "after the first incarnation succeeded")
    assert f"{job}{first['uid']}/metrics.json" in before and f"{job}{first['uid']}/weights/best.pt" in before
    kept = etags(s3_client, bucket, before)

    second = incarnation(runner, "again", dataset, f"s3://{bucket}/out", epochs=2)
    res2 = runner.run(second)
    assert res2.rc == 0, res2.stderr[-4000:]
    after = listing(s3_client, bucket, job, "after the re-created job (new uid) succeeded")
    assert not res2.of("resume"), "a re-created job must not resume"
    assert etags(s3_client, bucket, before) == kept, "the first incarnation's outputs changed"
    mine = read_json(s3_client, bucket, f"{job}{second['uid']}/metrics.json")
    assert mine["trainingJob"] == {"namespace": "ns1", "name": "again", "uid": second["uid"]}
    assert mine["resumedFromEpoch"] is None and mine["runId"] != read_json(
        s3_client, bucket, f"{job}{first['uid']}/metrics.json")["runId"]  # fmt: skip
    assert set(before) < set(after) and not [k for k in after if "/checkpoints/" in k]


def test_a_job_recreated_after_a_mid_run_delete_starts_fresh_and_leaves_the_old_checkpoint(
    s3_env, dataset, s3_client, bucket, tmp_path
):
    runner = TrainerRunner(s3_env, tmp_path)
    old = incarnation(runner, "deleted", dataset, f"s3://{bucket}/out", epochs=4)
    state_key = f"out/ns1/deleted/{old['uid']}/checkpoints/state.json"
    proc, _, _ = runner.start(old)
    try:
        wait_until(lambda: (s := read_json(s3_client, bucket, state_key)) and s["epoch"] >= 1, timeout=240,
                   what="the first incarnation's checkpoint")  # fmt: skip
        proc.send_signal(signal.SIGKILL)  # kubectl delete tj: the pod goes, its checkpoint stays in S3
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    job = "out/ns1/deleted/"
    before = listing(s3_client, bucket, job, "after the first incarnation was deleted mid-run")
    assert state_key in before
    kept = etags(s3_client, bucket, before)

    new = incarnation(runner, "deleted", dataset, f"s3://{bucket}/out", epochs=2)
    res = runner.run(new)
    assert res.rc == 0, res.stderr[-4000:]
    after = listing(s3_client, bucket, job, "after the re-created job (new uid) succeeded")
    assert not res.of("resume"), "the re-created job resumed the deleted one's checkpoint"
    assert [e["epoch"] for e in res.of("epoch")] == [1, 2]
    assert etags(s3_client, bucket, before) == kept, "the deleted incarnation's objects changed"
    assert f"{job}{new['uid']}/metrics.json" in after

    # The same incarnation (same uid: a retried pod) still resumes its own checkpoint.
    again = runner.run(old)
    assert again.rc == 0, again.stderr[-4000:]
    assert again.of("resume"), "a retried pod of the same TrainingJob must resume"
