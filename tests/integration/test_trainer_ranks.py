"""Real DDP ranks under torch's launcher, on CPU with gloo: the real ``yolo-trainer`` CLI with ``cpuProcesses: 2``
(one "pod", 2 ranks under torchrun) and two trainers as two "nodes" of one rank each (``PET_NNODES=2`` on
loopback), against the test bed's S3, on a tiny generated dataset (16 images at imgsz 64, models from YAML).

Each test prints one ``ranks:`` line (world size, ranks, epochs, exit codes, wall time) for the record.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from yolo_contract.exitcodes import ExitCode
from yolo_dev.testbed import wait_until
from yolo_trainer.testing import upload_dir, write_yolo_dataset

from tests.trainer_fixtures import Result, StatusSink, TrainerRunner, list_keys, parse_events, read_json

pytestmark = pytest.mark.integration

EPOCHS = 5


@pytest.fixture(scope="module")
def dataset(bucket, s3_client, tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("ranks-data")
    write_yolo_dataset(tmp / "yolo", n_train=16, n_val=8, seed=3)
    upload_dir(s3_client, bucket, "ranks/yolo", tmp / "yolo")
    return {"prefix": f"s3://{bucket}/ranks/yolo", "output": f"s3://{bucket}/ranks-out"}


def _config(runner: TrainerRunner, name: str, ds: dict[str, str], epochs: int = EPOCHS, ranks: int = 2) -> dict:
    cfg = runner.config(name, "yolov8n.yaml", ds["prefix"], ds["output"], epochs=epochs, imgsz=64, batch=8,
                        workers=0)  # fmt: skip
    if ranks > 1:
        cfg["cpuProcesses"] = ranks
    return cfg


def _rows(s3_client, bucket: str, key: str) -> list[dict[str, str]]:
    text = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def _rank_processes(work_dir: str) -> list[psutil.Process]:
    """Living training ranks (and launchers) of the run in ``work_dir``: their command line names its spec."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "yolo_trainer.child" in cmd and work_dir in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


def _env(p: psutil.Process) -> dict[str, str]:
    try:
        return p.environ()
    except psutil.Error:
        return {}


def _rank_events(events: list[dict]) -> list[tuple[int, int, int, int]]:
    return sorted((e["rank"], e["localRank"], e["nodeRank"], e["worldSize"]) for e in events if e["event"] == "rank")


def _record(what: str, **fields) -> None:
    print(f"\nranks: {what}: " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def uninterrupted(s3_env, dataset, tmp_path_factory) -> tuple[Result, StatusSink, dict, float]:
    """One pod, 2 ranks, EPOCHS epochs: the run the other tests compare with."""
    sink = StatusSink()
    runner = TrainerRunner(s3_env, tmp_path_factory.mktemp("ranks-whole"), sink)
    cfg = _config(runner, "ranks-whole", dataset)
    t0 = time.monotonic()
    res = runner.run(cfg, timeout=600)
    wall = time.monotonic() - t0
    assert res.rc == 0, res.stderr[-4000:] + res.stdout[-4000:]
    assert not _rank_processes(cfg["workDir"])
    yield res, sink, cfg, wall
    sink.close()


def test_two_cpu_ranks_report_every_epoch_from_rank_0_only_and_upload_checkpoints(
    uninterrupted, s3_client, bucket
):
    res, sink, _cfg, wall = uninterrupted
    (plan,) = res.of("ranks")
    assert (plan["launcher"], plan["worldSize"], plan["nprocPerNode"], plan["nnodes"]) == ("torchrun", 2, 2, 1)
    assert _rank_events(res.events) == [(0, 0, 0, 2), (1, 1, 0, 2)]
    assert {e["backend"] for e in res.of("rank")} == {"gloo"}
    # on_fit_epoch_end runs on both ranks; progress comes from global rank 0 alone: each epoch once.
    epochs = [e["epoch"] for e in res.of("epoch")]
    assert epochs == list(range(1, EPOCHS + 1))
    training = [s["progress"]["epoch"] for s in sink.statuses() if s.get("stage") == "Training"]
    assert training == epochs
    # best.pt validated by both ranks (distributed validation), then published by the pod.
    assert sorted(e["rank"] for e in res.of("finalValidation")) == [0, 1]
    assert all(e["weights"] for e in res.of("finalValidation"))
    uploaded = sorted(set(_uploaded(res.stderr)))
    assert uploaded and set(uploaded) <= set(range(1, EPOCHS)), res.stderr[-3000:]
    reported = [s["lastCheckpoint"]["epoch"] for s in sink.statuses() if "lastCheckpoint" in s]
    assert set(reported) == set(uploaded)
    rows = _rows(s3_client, bucket, "ranks-out/ns1/ranks-whole/results.csv")
    assert [int(float(r["epoch"])) for r in rows] == list(range(1, EPOCHS + 1))
    keys = set(list_keys(s3_client, bucket, "ranks-out/ns1/ranks-whole/"))
    assert {"ranks-out/ns1/ranks-whole/weights/best.pt", "ranks-out/ns1/ranks-whole/metrics.json"} <= keys
    assert not [k for k in keys if "/checkpoints/" in k]
    _record("1 pod x 2 CPU ranks", worldSize=plan["worldSize"], ranks=_rank_events(res.events), epochs=epochs,
            progress=training, checkpoints=uploaded, finalValidation=[e["rank"] for e in res.of("finalValidation")],
            exit=res.rc, wall=f"{wall:.0f}s")  # fmt: skip


def _uploaded(stderr: str) -> list[int]:
    return [int(m[1]) for m in re.finditer(r"checkpoint of epoch (\d+) uploaded to", stderr)]


def test_sigterm_flushes_the_checkpoint_exits_75_and_the_resumed_run_equals_an_uninterrupted_one(
    uninterrupted, s3_env, dataset, s3_client, bucket, tmp_path
):
    whole, _, _, _ = uninterrupted
    sink = StatusSink()
    runner = TrainerRunner(s3_env, tmp_path, sink)
    cfg = _config(runner, "ranks-resume", dataset)
    state_key = "ranks-out/ns1/ranks-resume/checkpoints/state.json"
    t0 = time.monotonic()
    proc, out, term = runner.start(cfg)
    try:
        wait_until(lambda: (s := read_json(s3_client, bucket, state_key)) and s["epoch"] >= 1, timeout=300,
                   what="a committed checkpoint")  # fmt: skip
        ranks = _rank_processes(cfg["workDir"])
        assert len([p for p in ranks if "torch.distributed.run" not in " ".join(p.cmdline())]) == 2
        proc.send_signal(signal.SIGTERM)  # the pod's SIGTERM: the supervisor forwards it to every rank
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    term_wall = time.monotonic() - t0
    assert rc == 75, out.read_text()[-3000:]
    assert term.read_text().startswith("Interrupted: ")
    assert not _rank_processes(cfg["workDir"]), "a rank outlived the SIGTERM"
    events = parse_events(out.read_text())
    done = [e["epoch"] for e in events if e["event"] == "epoch"]
    assert events[-1]["event"] == "interrupted" and events[-1]["flushed"] is True
    state = read_json(s3_client, bucket, state_key)
    assert done and state["epoch"] >= done[-1] and state["epoch"] < EPOCHS, (state, done)

    t1 = time.monotonic()
    res = runner.run(cfg, timeout=600)
    resume_wall = time.monotonic() - t1
    assert res.rc == 0, res.stderr[-4000:]
    assert res.of("resume")[0]["fromEpoch"] == state["epoch"]
    resumed = [e["epoch"] for e in res.of("epoch")]
    assert resumed == list(range(state["epoch"] + 1, EPOCHS + 1))
    assert _rank_events(res.events) == [(0, 0, 0, 2), (1, 1, 0, 2)]
    rows = _rows(s3_client, bucket, "ranks-out/ns1/ranks-resume/results.csv")
    whole_rows = _rows(s3_client, bucket, "ranks-out/ns1/ranks-whole/results.csv")
    # Like the uninterrupted run: the same epochs, one row each, the same columns.
    assert [int(float(r["epoch"])) for r in rows] == [int(float(r["epoch"])) for r in whole_rows]
    assert list(rows[0]) == list(whole_rows[0])
    metrics = read_json(s3_client, bucket, "ranks-out/ns1/ranks-resume/metrics.json")
    assert metrics["epochs"] == EPOCHS and metrics["resumedFromEpoch"] == state["epoch"]
    assert [e["epoch"] for e in whole.of("epoch")] == list(range(1, EPOCHS + 1))
    sink.close()
    _record("SIGTERM then resume, 2 CPU ranks", worldSize=2, epochsBeforeSigterm=done, checkpoint=state["epoch"],
            sigtermExit=rc, sigtermWall=f"{term_wall:.0f}s", resumedEpochs=resumed,
            rows=[int(float(r["epoch"])) for r in rows], resumeExit=res.rc,
            resumeWall=f"{resume_wall:.0f}s")  # fmt: skip


def test_a_sigkilled_rank_is_classified_by_name_and_no_rank_is_left(s3_env, dataset, s3_client, bucket, tmp_path):
    import torch

    runner = TrainerRunner(s3_env, tmp_path)
    cfg = _config(runner, "ranks-kill", dataset, epochs=30)
    state_key = "ranks-out/ns1/ranks-kill/checkpoints/state.json"
    t0 = time.monotonic()
    proc, out, term = runner.start(cfg)
    try:
        wait_until(lambda: (s := read_json(s3_client, bucket, state_key)) and s["epoch"] >= 1, timeout=300,
                   what="a committed checkpoint")  # fmt: skip
        by_rank = {int(_env(p)["RANK"]): p for p in _rank_processes(cfg["workDir"]) if "RANK" in _env(p)}
        assert sorted(by_rank) == [0, 1]
        by_rank[1].send_signal(signal.SIGKILL)  # the kernel's OOM killer picks one rank
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.monotonic() - t0
    assert rc == 20, out.read_text()[-3000:]
    message = term.read_text().strip()
    assert message.startswith("TrainingError: training rank 1 (local rank 1") and "killed by SIGKILL" in message
    assert not _rank_processes(cfg["workDir"]), "a rank outlived its killed peer"
    state = read_json(s3_client, bucket, state_key)
    ckpt = tmp_path / "ckpt.pt"
    s3_client.download_file(bucket, state["uri"].split(f"{bucket}/", 1)[1], str(ckpt))
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == state["epoch"] - 1
    epochs = [e["epoch"] for e in parse_events(out.read_text()) if e["event"] == "epoch"]
    _record("SIGKILL of rank 1 of 2", worldSize=2, epochsBeforeKill=epochs, exit=rc, message=message,
            ranksLeft=0, wall=f"{wall:.0f}s")  # fmt: skip


def test_two_nodes_of_one_rank_on_loopback_train_and_validate_on_both(
    s3_env, dataset, s3_client, bucket, tmp_path
):
    """Two trainers as the two pods of a 2-node job (PET_NNODES=2, PET_NODE_RANK 0 and 1, master 127.0.0.1):
    one world of 2; node 0 reports, checkpoints and publishes; both validate best.pt (node 1 gets it from
    rank 0 before final validation)."""
    sink = StatusSink()
    runner = TrainerRunner(s3_env, tmp_path, sink)
    port = _free_port()
    started = []
    t0 = time.monotonic()
    for node in (0, 1):
        cfg = _config(runner, "ranks-nodes", dataset, epochs=2, ranks=1)
        cfg["workDir"] = str(tmp_path / f"node-{node}")  # a pod's own disk
        pet = {"PET_NNODES": "2", "PET_NODE_RANK": str(node), "PET_MASTER_ADDR": "127.0.0.1",
               "PET_MASTER_PORT": str(port)}  # fmt: skip
        started.append((cfg, *runner.start(cfg, **pet)))
    try:
        rcs = [proc.wait(600) for _, proc, _, _ in started]
    finally:
        for _, proc, _, _ in started:
            if proc.poll() is None:
                proc.kill()
    wall = time.monotonic() - t0
    outs = [out.read_text() for _, _, out, _ in started]
    assert rcs == [0, 0], "\n\n".join(o[-3000:] for o in outs)
    events = [parse_events(o) for o in outs]
    for node, ev in enumerate(events):
        (plan,) = [e for e in ev if e["event"] == "ranks"]
        assert (plan["nnodes"], plan["nodeRank"], plan["worldSize"]) == (2, node, 2)
        assert _rank_events(ev) == [(node, 0, node, 2)]
        (final,) = [e for e in ev if e["event"] == "finalValidation"]
        assert final["rank"] == node and final["weights"], f"node {node} skipped the final validation"
        assert not _rank_processes(started[node][0]["workDir"])
    assert [e["epoch"] for e in events[0] if e["event"] == "epoch"] == [1, 2]
    assert not [e for e in events[1] if e["event"] == "epoch"]  # progress from global rank 0 only
    assert next(e for e in events[1] if e["event"] == "done")["nodeRank"] == 1
    training = [s["progress"]["epoch"] for s in sink.statuses() if s.get("stage") == "Training"]
    assert training == [1, 2]  # one progress stream
    assert (tmp_path / "node-1" / "runs" / "run" / "weights" / "best.pt").is_file()  # sent by rank 0
    metrics = read_json(s3_client, bucket, "ranks-out/ns1/ranks-nodes/metrics.json")
    assert metrics["epochs"] == 2
    sink.close()
    _record("2 nodes x 1 CPU rank on loopback", worldSize=2, ranks=[_rank_events(ev) for ev in events],
            epochs=[e["epoch"] for e in events[0] if e["event"] == "epoch"], progress=training,
            finalValidation=[[e["rank"] for e in ev if e["event"] == "finalValidation"] for ev in events],
            exits=rcs, wall=f"{wall:.0f}s")  # fmt: skip


def _start_nodes(runner: TrainerRunner, name: str, ds: dict[str, str], work: Path, epochs: int, nodes=(0, 1),
                 **env: str) -> list[tuple[dict, subprocess.Popen, Path, Path]]:  # fmt: skip
    """The trainers of a 2-node job of one rank each, as pods on loopback: each its own work directory."""
    port = _free_port()
    started = []
    for node in nodes:
        cfg = _config(runner, name, ds, epochs=epochs, ranks=1)
        cfg["workDir"] = str(work / f"node-{node}")
        pet = {"PET_NNODES": "2", "PET_NODE_RANK": str(node), "PET_MASTER_ADDR": "127.0.0.1",
               "PET_MASTER_PORT": str(port)}  # fmt: skip
        started.append((cfg, *runner.start(cfg, **pet, **env)))
    return started


def _wait_all(started, timeout: float) -> list[int]:
    try:
        return [proc.wait(timeout) for _, proc, _, _ in started]
    finally:
        for _, proc, _, _ in started:
            if proc.poll() is None:
                proc.kill()


def _kill_pod(proc: subprocess.Popen) -> int:
    """SIGKILL to the trainer and every process under it at once, as when a node dies or its pod's cgroup is
    killed: nothing gets to say goodbye."""
    root = psutil.Process(proc.pid)
    family = [root, *root.children(recursive=True)]
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    proc.wait(30)
    return len(family)


def test_a_lost_node_ends_the_other_with_peer_lost_and_the_gang_resumes_from_the_checkpoint(
    s3_env, dataset, s3_client, bucket, tmp_path
):
    """Node 1's pod dies whole after the first checkpoint: node 0's rank sees gloo's broken connection, the pod
    keeps the newest complete checkpoint and exits PeerLost (the operator restarts the gang, not counted as a
    failure); both nodes started again resume from it and finish, one results.csv row per epoch."""
    epochs = 6
    sink = StatusSink()
    runner = TrainerRunner(s3_env, tmp_path, sink)
    state_key = "ranks-out/ns1/ranks-lost/checkpoints/state.json"
    started = _start_nodes(runner, "ranks-lost", dataset, tmp_path / "first", epochs)
    try:
        wait_until(lambda: (s := read_json(s3_client, bucket, state_key)) and s["epoch"] >= 1, timeout=300,
                   what="a committed checkpoint")  # fmt: skip
        t0 = time.monotonic()
        killed = _kill_pod(started[1][1])
        rc = started[0][1].wait(120)  # a hang fails here: gloo notices the closed connection at once
        lost_wall = time.monotonic() - t0
    finally:
        for _, proc, _, _ in started:
            if proc.poll() is None:
                proc.kill()
    out = started[0][2].read_text()
    assert rc == ExitCode.PEER_LOST, out[-3000:] + started[0][3].read_text()
    message = started[0][3].read_text().strip()
    assert message.startswith("PeerLost: training rank 0 (local rank 0"), message
    assert "lost the connection to a rank of another node" in message
    assert not _rank_processes(started[0][0]["workDir"]), "a rank outlived the lost peer"
    events = parse_events(out)
    done = [e["epoch"] for e in events if e["event"] == "epoch"]
    assert events[-1]["event"] == "peerLost" and events[-1]["flushed"] is True, events[-1]
    state = read_json(s3_client, bucket, state_key)
    # Every epoch the status showed is in the checkpoint: the restart redoes at most the epoch in progress.
    assert done and state["epoch"] >= done[-1] and state["epoch"] < epochs, (state, done)
    assert events[-1]["checkpointEpoch"] == state["epoch"]

    t1 = time.monotonic()
    again = _start_nodes(runner, "ranks-lost", dataset, tmp_path / "again", epochs)
    rcs = _wait_all(again, 600)
    resume_wall = time.monotonic() - t1
    outs = [out.read_text() for _, _, out, _ in again]
    assert rcs == [0, 0], "\n\n".join(o[-3000:] for o in outs)
    resumed = [parse_events(o) for o in outs]
    for node, ev in enumerate(resumed):
        assert [e["fromEpoch"] for e in ev if e["event"] == "resume"] == [state["epoch"]], f"node {node}"
        assert _rank_events(ev) == [(node, 0, node, 2)]
    trained = [e["epoch"] for e in resumed[0] if e["event"] == "epoch"]
    assert trained == list(range(state["epoch"] + 1, epochs + 1))
    rows = _rows(s3_client, bucket, "ranks-out/ns1/ranks-lost/results.csv")
    assert [int(float(r["epoch"])) for r in rows] == list(range(1, epochs + 1))  # one row per epoch
    metrics = read_json(s3_client, bucket, "ranks-out/ns1/ranks-lost/metrics.json")
    assert metrics["epochs"] == epochs and metrics["resumedFromEpoch"] == state["epoch"]
    sink.close()
    _record("2 nodes x 1 CPU rank, node 1 SIGKILLed whole, then both restarted", worldSize=2,
            epochsBeforeKill=done, processesKilled=killed, node0Exit=rc, node0ExitAfter=f"{lost_wall:.0f}s",
            message=message[:160], checkpoint=state["epoch"], resumedEpochs=trained,
            rows=[int(float(r["epoch"])) for r in rows], resumeExits=rcs,
            resumeWall=f"{resume_wall:.0f}s")  # fmt: skip


def test_a_node_whose_peers_never_come_fails_at_the_rendezvous_bound(s3_env, dataset, tmp_path):
    """Node 0 alone (its peer never starts) and node 1 alone (node 0 never listens), each with PET_NNODES=2 and
    a 10 s rendezvous bound (PET_RDZV_CONF, as the operator sets it): torchrun gives up, the pod exits PeerLost
    naming the rendezvous, nothing is left running."""
    runner = TrainerRunner(s3_env, tmp_path)
    alone = [
        *_start_nodes(runner, "ranks-alone-0", dataset, tmp_path / "n0", 2, nodes=(0,),
                      PET_RDZV_CONF="timeout=10"),
        *_start_nodes(runner, "ranks-alone-1", dataset, tmp_path / "n1", 2, nodes=(1,),
                      PET_RDZV_CONF="timeout=10"),
    ]  # fmt: skip
    t0 = time.monotonic()
    rcs = _wait_all(alone, 300)  # a hang fails here
    wall = time.monotonic() - t0
    messages = [term.read_text().strip() for _, _, _, term in alone]
    assert rcs == [ExitCode.PEER_LOST] * 2, messages  # the operator restarts the gang, a bounded number of times
    for m in messages:
        assert m.startswith("PeerLost: the job's nodes did not all meet at torchrun's rendezvous ("), m
        assert "PET_RDZV_CONF" in m
    assert "1/2 clients joined" in messages[0]  # node 0 waited for node 1
    assert "while trying to connect to (127.0.0.1" in messages[1]  # node 1 never reached node 0
    for cfg, _, out, _ in alone:
        assert not _rank_processes(cfg["workDir"])
        (plan,) = [e for e in parse_events(out.read_text()) if e["event"] == "ranks"]
        assert plan["rendezvousTimeoutSeconds"] == 10
    _record("a node alone in a 2-node job", rendezvousTimeout="10s", exits=rcs, wall=f"{wall:.0f}s",
            messages=[m[:140] for m in messages])  # fmt: skip
