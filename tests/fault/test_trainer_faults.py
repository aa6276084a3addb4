"""S3 outages seen by the real ``yolo-trainer``: a fault-injecting proxy (tests/fault/faultproxy.py) sits
between the trainer and the test bed's S3 and refuses or resets connections at chosen moments; the shared
SeaweedFS itself is never stopped.

- Outages shorter than the retry budget (``YOLO_TRAINER_S3_RETRY_BUDGET``) are ridden out: backoff, retry,
  the run succeeds with every epoch and its outputs committed.
- An outage longer than the budget fails the run with exit 21 / ``S3Unavailable``, and what S3 holds stays
  consistent: the last committed checkpoint is intact and resumable, nothing final is published.

Design decision proven here: a checkpoint upload that exhausts its budget does not stop training (the
upload is a safety net, the epochs are the expensive part; the next epoch's checkpoint tries again). The run
fails only when an S3 operation it cannot do without (staging, publishing) exhausts its budget.
"""

from __future__ import annotations

import re
import time

import pytest
from yolo_dev.testbed import wait_until
from yolo_trainer.testing import upload_dir, write_yolo_dataset

from tests.fault.faultproxy import FaultProxy
from tests.trainer_fixtures import Result, TrainerRunner, list_keys, parse_events, read_json

pytestmark = [pytest.mark.fault]


@pytest.fixture(scope="module")
def dataset(bucket, s3_client, tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("ds")
    write_yolo_dataset(tmp / "ds", n_train=16, n_val=8)
    upload_dir(s3_client, bucket, "ds", tmp / "ds")
    return f"s3://{bucket}/ds"


@pytest.fixture
def proxy(s3_env):
    p = FaultProxy(s3_env.endpoint)
    yield p
    p.close()


def _config(runner: TrainerRunner, proxy: FaultProxy, name: str, dataset: str, bucket: str, epochs: int):
    cfg = runner.config(name, "yolov8n.yaml", dataset, f"s3://{bucket}/out", epochs=epochs, imgsz=64)
    cfg["s3"]["endpoint"] = proxy.endpoint
    return cfg


def _is_dataset_get(bucket: str):
    return lambda method, path: method == "GET" and path.startswith(f"/{bucket}/ds/")


def _is_checkpoint_put(bucket: str, name: str, folder: str = ""):
    return lambda method, path: method == "PUT" and f"/{bucket}/out/ns1/{name}/checkpoints/{folder}" in path


class _CheckpointPutAfterACommit:
    """Matches the first PUT of a checkpoint object after state.json was first written, i.e. the upload after the
    first committed checkpoint (``committed``: its folder). Which epoch that is depends on timing: the uploader
    and the supervisor coalesce checkpoints by design (newest wins)."""

    def __init__(self, bucket: str, name: str):
        self.base = f"/{bucket}/out/ns1/{name}/checkpoints/"
        self.last_folder: str | None = None
        self.committed: str | None = None

    def __call__(self, method: str, path: str) -> bool:
        if method != "PUT" or self.base not in path:
            return False
        rel = path.split(self.base, 1)[1]
        if rel.startswith("state.json"):
            self.committed = self.committed or self.last_folder
            return False
        folder = rel.split("/", 1)[0]
        self.last_folder = folder
        return self.committed is not None and folder != self.committed


def _assert_committed(s3_client, bucket: str, name: str, epochs: int) -> None:
    """metrics.json exists, lists objects that exist with its sizes, and no checkpoint is left behind."""
    prefix = f"out/ns1/{name}/"
    metrics = read_json(s3_client, bucket, prefix + "metrics.json")
    assert metrics is not None, "metrics.json (the commit marker) missing"
    assert metrics["epochs"] == epochs
    objects = metrics["objects"]
    assert "weights/best.pt" in objects, objects
    for rel, o in objects.items():
        head = s3_client.head_object(Bucket=bucket, Key=prefix + rel)
        assert (head["ContentLength"], head["ETag"]) == (o["size"], o["etag"]), (rel, o)
    leftovers = [k for k in list_keys(s3_client, bucket, prefix) if "/checkpoints/" in k]
    assert leftovers == [], f"checkpoints left after a successful run: {leftovers}"


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_30s_outages_in_staging_and_in_a_checkpoint_upload_are_ridden_out(
    s3_env, s3_client, bucket, dataset, proxy, tmp_path
):
    name, epochs = "ride", 4
    runner = TrainerRunner(s3_env, tmp_path)
    cfg = _config(runner, proxy, name, dataset, bucket, epochs)
    # Connections refused for 30 s from the first GET of a dataset object; reset for 30 s from the first PUT
    # of a checkpoint object. Each triggering request itself fails.
    staging = proxy.arm(_is_dataset_get(bucket), 30, mode="refuse")
    ckpt = proxy.arm(_is_checkpoint_put(bucket, name), 30, mode="reset")

    t0 = time.monotonic()
    res = runner.run(cfg, timeout=540, YOLO_TRAINER_S3_RETRY_BUDGET="120")
    took = time.monotonic() - t0

    assert res.rc == 0, f"rc={res.rc} {res.termination}\n{res.stderr[-4000:]}"
    for o, what in ((staging, "staging"), (ckpt, "checkpoint upload")):
        assert o.started.is_set() and o.ended.is_set(), f"the {what} outage never happened"
        assert o.duration >= 29.9, (what, o.duration)
    # Both outages were retried through, not skipped: the very request that met each outage was sent again
    # (and answered) after the outage ended.
    recovered = []
    for o in (staging, ckpt):
        method, path = o.trigger
        again = [r for r in proxy.forwarded(method, path) if r.at > o.end_at]
        assert again, f"{method} {path} was not retried after the outage"
        recovered.append(again[0].at - o.end_at)
    assert "retrying in" in res.stderr
    assert res.stderr.count("S3 download") + res.stderr.count("S3 get") >= 1, res.stderr[-3000:]
    assert "S3 upload" in res.stderr  # the checkpoint PUT's retries were logged
    assert [e["epoch"] for e in res.of("epoch")] == list(range(1, epochs + 1))
    _assert_committed(s3_client, bucket, name, epochs)
    print(
        f"FAULT-FIGURE s3-outages-ridden-out: staging {staging.duration:.0f}s refused + checkpoint upload "
        f"{ckpt.duration:.0f}s reset (budget 120s); the failed request went through {recovered[0]:.1f}s / "
        f"{recovered[1]:.1f}s after each outage; rc 0, {epochs}/{epochs} epochs, committed, run {took:.0f}s"
    )


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_checkpoint_upload_still_retrying_after_the_last_epoch_lands_before_publishing(
    s3_env, s3_client, bucket, dataset, proxy, tmp_path
):
    """Checkpoint PUTs fail from the first checkpoint's upload on until the grace (5 s here) has passed after the
    last epoch; the rest of S3 works. Which checkpoint is in flight at the end depends on timing (they coalesce,
    newest wins); that one is still retrying when training ends.

    Publishing must wait for that upload: one still retrying while the outputs are published and
    checkpoints/ deleted can write state.json afterwards, and a re-created job of the same name would then
    resume a finished run instead of starting fresh. (Before the fix the trainer waited only the SIGTERM
    grace, then published beside the retrying upload, which either died with the process or, if a
    retry landed after the clean-up, left a stale checkpoint.)
    """
    name, epochs, grace = "lateckpt", 4, 5
    runner = TrainerRunner(s3_env, tmp_path)
    cfg = _config(runner, proxy, name, dataset, bucket, epochs)
    outage = proxy.arm(
        _is_checkpoint_put(bucket, name),
        None,
        scope=lambda method, path: method == "PUT" and f"/ns1/{name}/checkpoints/" in path,
    )
    proc, out, _ = runner.start(cfg, YOLO_TRAINER_S3_RETRY_BUDGET="120", YOLO_TRAINER_GRACE_SECONDS=str(grace))
    try:
        wait_until(
            lambda: proc.poll() is not None or epochs in [e["epoch"] for e in _events(out) if e["event"] == "epoch"],
            timeout=240,
            what="the last epoch",
        )
        started_before_the_end = outage.started.is_set()
        time.sleep(grace + 2)
        proxy.end_outage(outage)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stderr = (tmp_path / f"stderr-{runner.n}.txt").read_text()
    assert rc == 0, f"rc={rc}\n{stderr[-4000:]}"
    assert started_before_the_end, "no checkpoint upload started before the last epoch"
    retried = [r for r in proxy.forwarded("PUT", f"/ns1/{name}/checkpoints/") if r.at > outage.end_at]
    assert retried, "no checkpoint upload was retried after the outage"
    metrics_put = proxy.forwarded("PUT", f"/ns1/{name}/metrics.json")
    assert metrics_put and metrics_put[0].at > outage.end_at, "published while the checkpoint upload was retrying"
    assert metrics_put[0].at > max(r.at for r in retried), "published before the checkpoint upload landed"
    _assert_committed(s3_client, bucket, name, epochs)
    print(
        f"FAULT-FIGURE checkpoint-before-publish: checkpoint PUTs failed {outage.duration:.0f}s, until {grace + 2}s "
        f"after the last epoch; metrics.json written {metrics_put[0].at - outage.end_at:.1f}s after they worked "
        "again; rc 0"
    )


def _events(out) -> list[dict]:
    return parse_events(out.read_text()) if out.exists() else []


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_staging_outage_longer_than_the_budget_is_s3_unavailable(
    s3_env, s3_client, bucket, dataset, proxy, tmp_path
):
    runner = TrainerRunner(s3_env, tmp_path)
    cfg = _config(runner, proxy, "stagedown", dataset, bucket, 2)
    outage = proxy.arm(_is_dataset_get(bucket), 40, mode="refuse")
    t0 = time.monotonic()
    res = runner.run(cfg, timeout=240, YOLO_TRAINER_S3_RETRY_BUDGET="10")
    took = time.monotonic() - t0
    gave_up = outage.duration

    assert outage.started.is_set(), "no dataset GET reached the proxy"
    assert not outage.ended.is_set(), f"the trainer outlived a 40 s outage with a 10 s budget ({took:.0f}s)"
    assert res.rc == 21, f"rc={res.rc} {res.termination}\n{res.stderr[-3000:]}"
    assert res.termination.startswith("S3Unavailable: "), res.termination
    assert f"s3://{bucket}/ds/" in res.termination and "10s" in res.termination, res.termination
    assert "Traceback" not in res.stderr
    assert not res.of("epoch")
    assert list_keys(s3_client, bucket, "out/ns1/stagedown/") == []
    print(
        f"FAULT-FIGURE s3-outage-staging-over-budget: budget 10s, 40s refused from the first dataset GET: "
        f"exit 21 {gave_up:.1f}s into the outage ({took:.0f}s run), nothing published"
    )


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_outage_longer_than_the_budget_after_a_checkpoint_keeps_it_intact_and_publishes_nothing(
    s3_env, s3_client, bucket, dataset, proxy, tmp_path
):
    import torch

    name, epochs = "ckptdown", 4
    runner = TrainerRunner(s3_env, tmp_path)
    cfg = _config(runner, proxy, name, dataset, bucket, epochs)
    prefix = f"out/ns1/{name}/"
    # The outage starts when the upload after the first committed checkpoint begins and lasts until the trainer
    # has given up: far longer than the 10 s budget.
    after_commit = _CheckpointPutAfterACommit(bucket, name)
    outage = proxy.arm(after_commit, None, mode="reset")
    proc, out, term = runner.start(cfg, YOLO_TRAINER_S3_RETRY_BUDGET="10")
    try:
        rc = proc.wait(420)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert outage.started.is_set(), f"no checkpoint upload after the first commit ({after_commit.committed})"
    down_for = outage.duration
    proxy.end_outage(outage)
    stderr = (tmp_path / f"stderr-{runner.n}.txt").read_text()
    assert down_for > 10, down_for
    assert rc == 21, f"rc={rc}\n{stderr[-4000:]}"
    termination = term.read_text().strip()
    assert termination.startswith("S3Unavailable: ") and f"s3://{bucket}/{prefix}" in termination, termination
    assert "Traceback" not in stderr
    # Training went on past the failed checkpoint upload; publishing could not.
    assert re.search(r"checkpoint upload of epoch \d+ failed: S3 unavailable", stderr), stderr[-3000:]
    assert max(e["epoch"] for e in parse_events(out.read_text()) if e["event"] == "epoch") == epochs

    # Nothing final, not even half of it: only the first committed checkpoint, complete and named by state.json.
    folder = after_commit.committed
    done = int(folder[1:])  # epochs completed in that checkpoint
    keys = sorted(list_keys(s3_client, bucket, prefix))
    assert keys == [
        f"{prefix}checkpoints/{folder}/last.pt",
        f"{prefix}checkpoints/{folder}/results.csv",
        f"{prefix}checkpoints/state.json",
    ], keys
    state = read_json(s3_client, bucket, f"{prefix}checkpoints/state.json")
    assert state["epoch"] == done and state["uri"] == f"s3://{bucket}/{prefix}checkpoints/{folder}/last.pt", state
    ckpt_file = tmp_path / "last.pt"
    s3_client.download_file(bucket, f"{prefix}checkpoints/{folder}/last.pt", str(ckpt_file))
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == done - 1 and (ckpt.get("ema") or ckpt.get("model")) is not None

    # The retried pod (S3 back) resumes from that checkpoint and finishes the job.
    res: Result = runner.run(cfg, timeout=300, YOLO_TRAINER_S3_RETRY_BUDGET="10")
    assert res.rc == 0, f"rc={res.rc} {res.termination}\n{res.stderr[-3000:]}"
    assert res.of("resume") and res.of("resume")[0]["fromEpoch"] == done
    assert [e["epoch"] for e in res.of("epoch")] == list(range(done + 1, epochs + 1))
    _assert_committed(s3_client, bucket, name, epochs)
    print(
        f"FAULT-FIGURE s3-outage-checkpoint-over-budget: budget 10s, reset from the first checkpoint upload "
        f"after a commit: exit 21 {down_for:.0f}s into the outage after all {epochs} epochs; state.json -> "
        f"{folder} intact, nothing final published; the rerun resumed at epoch {done + 1} and committed"
    )


@pytest.mark.timeout(60)
def test_connection_reset_while_a_body_streams_is_transient():
    """A reset in the middle of a response body (botocore's ResponseStreamingError) is retried, not exit 20."""
    from botocore.exceptions import ResponseStreamingError
    from urllib3.exceptions import ProtocolError
    from yolo_contract.exitcodes import S3Unavailable
    from yolo_trainer.s3 import S3Store, classify_error

    exc = ResponseStreamingError(error=ProtocolError("Connection broken", ConnectionResetError(104, "reset")))
    assert classify_error(exc, "b", "k") is None

    calls = []

    def fn():
        calls.append(1)
        raise exc

    with pytest.raises(S3Unavailable):
        S3Store(client=None, retry_budget=5, sleep=lambda s: None).call("get", "b", "k", fn)
    assert len(calls) > 1


@pytest.mark.timeout(60)
def test_fault_proxy_refuses_resets_and_recovers():
    """The proxy itself: refused and reset connections are real socket errors, and traffic flows afterwards."""
    import socket

    sock_server = socket.create_server(("127.0.0.1", 0))
    sock_server.settimeout(5)
    port = sock_server.getsockname()[1]
    try:
        with FaultProxy(f"http://127.0.0.1:{port}") as p:
            def attempt() -> str:
                try:
                    with socket.create_connection(("127.0.0.1", p.port), timeout=1) as c:
                        c.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
                        if p.mode == "pass":
                            conn, _ = sock_server.accept()
                            with conn:
                                if conn.recv(100).startswith(b"GET /x"):  # nothing: the proxy reset it
                                    conn.sendall(b"ok")
                        return c.recv(10).decode() or "closed"
                except ConnectionRefusedError:
                    return "refused"
                except ConnectionResetError:
                    return "reset"
                except TimeoutError:
                    return "hung"

            assert attempt() == "ok"
            o = p.outage(None, mode="refuse")
            assert attempt() == "refused"
            p.end_outage(o)
            assert attempt() == "ok"
            o = p.outage(None, mode="reset")
            assert attempt() == "reset"
            p.end_outage(o)
            assert attempt() == "ok"
            o = p.outage(None, mode="hang")
            assert attempt() == "hung"
            p.end_outage(o)
            assert attempt() == "ok"
            o = p.arm(lambda m, path: path == "/x", None, scope=lambda m, path: path == "/x")
            assert attempt() == "reset" and o.started.is_set()  # a partial outage: only /x fails
            p.end_outage(o)
            assert attempt() == "ok"
            assert [r.forwarded for r in p.requests] == [True, True, True, True, False, True]
    finally:
        sock_server.close()


@pytest.mark.timeout(60)
def test_after_training_the_uploader_drops_the_waiting_checkpoint_and_waits_for_the_one_in_flight(tmp_path):
    """Nothing may be written under checkpoints/ once publishing starts (it ends with deleting them all)."""
    import threading

    from yolo_trainer.checkpoint import CheckpointUploader

    started, release = threading.Event(), threading.Event()
    writes: list[str] = []

    class SlowStore:  # an upload retrying through an outage
        def upload_file(self, path, bucket, key, content_type=None):
            started.set()
            assert release.wait(30)
            writes.append(key)

        def put_bytes(self, bucket, key, data, content_type="application/json"):
            writes.append(key)

    last = tmp_path / "last.pt"
    last.write_bytes(b"weights")
    up = CheckpointUploader(SlowStore(), "s3://b/job", tmp_path / "staging", "run", "fp")
    up.submit(1, last, None)
    assert started.wait(10)
    up.submit(2, last, None)  # waits behind the upload in flight
    finisher = threading.Thread(target=up.finish)
    finisher.start()
    finisher.join(0.5)
    assert finisher.is_alive(), "finish() returned while an upload was still in flight"
    release.set()
    finisher.join(10)
    assert not finisher.is_alive()
    assert writes == ["job/checkpoints/e000001/last.pt", "job/checkpoints/state.json"]
    assert not list((tmp_path / "staging").iterdir()), "staged checkpoint files left behind"
