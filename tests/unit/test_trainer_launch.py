"""How the training process is launched (one process, or torchrun through its PET_* settings), how a failed
rank is read from torchrun's report and classified, and that no process the training process started outlives
it. The real ranks run in tests/integration/test_trainer_ranks.py; these cover the pure decisions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from yolo_contract.exitcodes import ConfigInvalid, ExitCode
from yolo_contract.sizing import processes_per_node, ranks
from yolo_contract.trainer_config import TrainerConfig
from yolo_trainer import launch
from yolo_trainer.supervisor import ChildEnd, ProcessFamily, Supervisor, classify_child_end, read_error

pytestmark = pytest.mark.unit

BASE = {"name": "j", "model": "m.yaml", "dataset": "s3://b/d", "output": "s3://b/o"}

# What torchrun 2.14 prints when local rank 1 of 2 was SIGKILLed (rank 0 then got its SIGTERM).
REPORT = """Traceback (most recent call last):
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
=======================================================
yolo_trainer.child FAILED
-------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-07_02:25:48
  host      : pod-a
  rank      : 2 (local_rank: 0)
  exitcode  : -15 (pid: 30655)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 30655
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_02:25:48
  host      : pod-a
  rank      : 3 (local_rank: 1)
  exitcode  : -9 (pid: 30656)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 30656
=======================================================
"""


def test_cpu_processes_is_explicit_and_never_with_gpus():
    assert TrainerConfig(**BASE).processes_per_node == 1
    assert TrainerConfig(**BASE, cpuProcesses=2).processes_per_node == 2
    assert TrainerConfig(**BASE, gpus=4).processes_per_node == 4
    with pytest.raises(ValidationError, match="cpuProcesses"):
        TrainerConfig(**BASE, gpus=1, cpuProcesses=2)
    # unset stays out of the operator's JSON: configs written before it are unchanged
    assert "cpuProcesses" not in TrainerConfig(**BASE).to_env_json()
    assert processes_per_node(0, None) == ranks(0) == 1 and processes_per_node(2, 8) == 2


def test_one_process_on_one_node_is_a_plain_child():
    p = launch.plan(1, {})
    assert not p.launcher and p.world_size == 1 and p.first_node
    cmd = launch.command(p, Path("/w/child.json"))
    assert cmd[1:] == ["-m", "yolo_trainer.child", "/w/child.json"]
    env = launch.environment(p, Path("/w/control"), environ={"A": "1"})
    assert env == {"A": "1"}


def test_several_ranks_on_one_node_go_through_torchrun_standalone():
    p = launch.plan(2, {"PET_MASTER_PORT": ""})
    assert p.launcher and p.world_size == 2 and p.master_addr is None
    assert launch.command(p, Path("/w/c.json"))[1:] == ["-m", "torch.distributed.run", "--module",
                                                        "yolo_trainer.child", "/w/c.json"]  # fmt: skip
    env = launch.environment(p, Path("/w/control"), cpu_threads=3, environ={"PET_MASTER_PORT": "1"})
    assert env["PET_NNODES"] == "1" and env["PET_NPROC_PER_NODE"] == "2" and env["PET_NODE_RANK"] == "0"
    assert env["PET_MAX_RESTARTS"] == "0" and env["TORCHELASTIC_ERROR_FILE"] == "/w/control/launcher-error.json"
    assert "PET_MASTER_PORT" not in env  # torchrun picks a free local port itself
    assert env["OMP_NUM_THREADS"] == "3"
    assert int(env["PET_SHUTDOWN_TIMEOUT"]) < 5  # below the supervisor's SIGTERM-to-SIGKILL wait


def test_nodes_come_from_the_pods_pet_environment_as_kubeflow_sets_it():
    kubeflow = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "job-node-0-0.job",
                "PET_MASTER_PORT": "29500", "PET_NPROC_PER_NODE": "4"}  # fmt: skip
    p = launch.plan(4, kubeflow)
    assert (p.nnodes, p.node_rank, p.world_size, p.first_node) == (2, 1, 8, False)
    env = launch.environment(p, Path("/c"), environ=kubeflow)
    assert env["PET_MASTER_ADDR"] == "job-node-0-0.job" and env["PET_MASTER_PORT"] == "29500"
    assert launch.plan(1, {"PET_NNODES": "2", "PET_MASTER_ADDR": "m"}).master_port == 29500
    assert launch.plan(1, {"PET_NNODES": "2", "PET_MASTER_ADDR": "m"}).launcher  # 2 nodes x 1 rank
    assert not launch.first_node({"PET_NODE_RANK": "1"}) and launch.first_node({})


@pytest.mark.parametrize(
    ("procs", "env", "words"),
    [
        (2, {"PET_NPROC_PER_NODE": "4"}, "PET_NPROC_PER_NODE=4 but this pod runs 2"),
        (1, {"PET_NPROC_PER_NODE": "auto"}, "whole number"),
        (1, {"PET_NNODES": "1:3"}, "no elastic ranges"),
        (1, {"PET_NNODES": "2"}, "PET_MASTER_ADDR is not set"),
        (1, {"PET_NNODES": "2", "PET_NODE_RANK": "2", "PET_MASTER_ADDR": "m"}, "not below PET_NNODES=2"),
    ],
)
def test_a_world_the_pod_cannot_be_part_of_is_a_config_error(procs, env, words):
    with pytest.raises(ConfigInvalid, match=words):
        launch.plan(procs, env)


def test_the_rank_to_blame_is_the_one_a_signal_killed():
    failures = launch.parse_failures(REPORT)
    assert [(f.rank, f.local_rank, f.exitcode, f.pid) for f in failures] == [(3, 1, -9, 30656), (2, 0, -15, 30655)]
    rank = launch.failed_rank(REPORT)
    assert rank.rank == 3 and rank.host == "pod-a" and rank.signal == signal.SIGKILL
    # a survivor's own error may be reported first (it failed on the broken connection): still the killed one
    swapped = REPORT.replace("-15 (pid: 30655)  (SIGTERM)", "1 (pid: 30655)")
    assert launch.failed_rank(swapped).rank == 3
    assert launch.failed_rank("Traceback\nValueError: x\n") is None


@pytest.mark.parametrize(
    ("end", "code", "words"),
    [
        (ChildEnd(1, tail=REPORT), 20, "training rank 3 (local rank 1 on pod-a) was killed by SIGKILL"),
        (ChildEnd(1, tail=REPORT, oom_kills=1), 14, "rank 3 (local rank 1 on pod-a) was killed by the kernel"),
        (ChildEnd(1, tail=REPORT.replace("-9 (pid", "-7 (pid")), 14, "Bus error in training rank 3"),
        (ChildEnd(1, {"code": 13, "message": "cannot load model m.pt"}, REPORT.replace("-9 (pid", "13 (pid")),
         13, "cannot load model"),
        (ChildEnd(1, None, REPORT.replace("-9 (pid", "1 (pid"), launcher_message="ValueError: boom"),
         20, "training rank 3 (local rank 1 on pod-a) exited 1: ValueError: boom"),
    ],
)
def test_a_failed_rank_is_classified_and_named(end, code, words):
    end.rank, end.failures = launch.failed_rank(end.tail), launch.parse_failures(end.tail)
    err = classify_child_end(end, shm_bytes=64 * 2**20)
    assert int(err.code) == code and words in str(err), str(err)


def test_rank_errors_are_read_rank_0_first(tmp_path):
    (tmp_path / "error.rank3.json").write_text('{"code": 20, "message": "three"}')
    (tmp_path / "error.rank1.json").write_text('{"code": 12, "message": "one"}')
    assert read_error(tmp_path)["message"] == "one"
    (tmp_path / "error.json").write_text('{"code": 13, "message": "zero"}')
    assert read_error(tmp_path)["message"] == "zero"
    assert read_error(tmp_path / "none") is None


def test_a_ranks_own_error_is_read_before_a_peer_lost_one(tmp_path):
    (tmp_path / "error.json").write_text('{"code": 23, "message": "lost"}')
    assert read_error(tmp_path)["message"] == "lost"
    (tmp_path / "error.rank1.json").write_text('{"code": 11, "message": "bad labels"}')
    assert read_error(tmp_path)["message"] == "bad labels"  # rank 0 lost its connection to rank 1, which failed


# What a rank raises when another node's rank went away (gloo, torch 2.14), and torchrun's report of it.
GLOO_CLOSED = ("RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection "
               "closed by peer [10.0.0.7]:4515. This is typically caused by a remote worker crashing.")  # fmt: skip
PEER_REPORT = REPORT.replace("-9 (pid: 30656)  (SIGKILL)", "23 (pid: 30656)")


@pytest.mark.parametrize(
    "message",
    [
        GLOO_CLOSED,
        "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error [10.0.0.7]:61090: Connection "
        "reset by peer",
        "RuntimeError: [../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 600000ms for recv operation "
        "to complete",
        "torch.distributed.DistStoreError: wait timeout after 600000ms, keys: /default_pg/0//cpu//0/1",
        "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:3356, remote process exited or "
        "there was a network error, NCCL version 2.27.5",
        "[Rank 2] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=9, OpType=ALLREDUCE) ran for "
        "600012 milliseconds before timing out.",
    ],
)
def test_a_broken_connection_to_a_peer_is_peer_lost_only_across_nodes(message):
    from yolo_trainer.classify import classify

    try:
        try:
            raise RuntimeError(message)
        except RuntimeError as inner:
            raise ValueError("Ultralytics wrapped it") from inner
    except ValueError as e:
        code, text = classify(e, nodes=2)
        assert code == ExitCode.PEER_LOST and "rank of another node" in text, text
        assert ".cc:" not in text  # gloo's source location left out
        # On one node every peer is the pod's own: its failure is reported by the rank that failed.
        assert classify(e, nodes=1)[0] == ExitCode.TRAINING_ERROR


@pytest.mark.parametrize(
    ("end", "code", "words"),
    [
        # every failed rank lost a peer (or torchrun stopped it after one did): the gang restarts
        (ChildEnd(1, {"code": 23, "message": "lost the connection to a rank of another node (x)"}, PEER_REPORT),
         23, "training rank 3 (local rank 1 on pod-a): lost the connection to a rank of another node (x)"),
        (ChildEnd(1, None, PEER_REPORT.replace("-15 (pid: 30655)  (SIGTERM)", "23 (pid: 30655)")), 23, "rank 3"),
        # a rank of this pod died on its own: the others' broken connections follow from it, the pod failed
        (ChildEnd(1, {"code": 23, "message": "lost"}, REPORT.replace("-15 (pid: 30655)  (SIGTERM)", "23 (pid")),
         20, "training rank 3 (local rank 1 on pod-a) was killed by SIGKILL"),
        (ChildEnd(1, {"code": 23, "message": "lost"}, PEER_REPORT, oom_kills=1), 20, "exited 23"),
        (ChildEnd(1, {"code": 11, "message": "bad labels"}, PEER_REPORT.replace("-15 (pid", "11 (pid")),
         11, "bad labels"),
        # torchrun's agent gave up at the rendezvous: node 0 waited, node 1 could not reach it
        (ChildEnd(1, tail="torch.distributed.DistStoreError: Timed out after 601 seconds waiting for clients. 1/2 "
                          "clients joined.\n"), 23, "did not all meet at torchrun's rendezvous (torch.distributed"),
        (ChildEnd(1, tail="torch.distributed.DistNetworkError: The client socket has timed out after 600000ms "
                          "while trying to connect to (job-0.job-rdzv, 29500).\n"), 23, "PET_RDZV_CONF's timeout"),
    ],
)  # fmt: skip
def test_a_pod_ends_peer_lost_only_when_no_rank_of_its_own_failed_first(end, code, words):
    end.rank, end.failures = launch.failed_rank(end.tail), launch.parse_failures(end.tail)
    err = classify_child_end(end)
    assert int(err.code) == code and words in str(err), str(err)


def test_the_rendezvous_wait_is_bounded_by_torchruns_own_setting():
    two = {"PET_NNODES": "2", "PET_MASTER_ADDR": "m"}
    p = launch.plan(1, two)
    assert p.rendezvous_timeout == 600 and p.describe()["rendezvousTimeoutSeconds"] == 600
    assert launch.environment(p, Path("/c"), environ=two)["PET_RDZV_CONF"] == "timeout=600"
    mine = {**two, "PET_RDZV_CONF": "read_timeout=60,timeout=30"}  # the operator's (or Kubeflow's) is kept
    p = launch.plan(1, mine)
    assert p.rendezvous_timeout == 30
    assert launch.environment(p, Path("/c"), environ=mine)["PET_RDZV_CONF"] == "read_timeout=60,timeout=30"
    one = launch.plan(2, {})
    assert "PET_RDZV_CONF" not in launch.environment(one, Path("/c"), environ={})  # standalone, nothing to wait for
    assert "rendezvousTimeoutSeconds" not in one.describe()
    for bad, words in (("timeout=soon", "whole number above 0"), ("timeout", "key=value")):
        with pytest.raises(ConfigInvalid, match=words):
            launch.plan(1, {**two, "PET_RDZV_CONF": bad})


# A "launcher" whose "rank" runs in a session of its own (as torchrun starts them) and ignores SIGTERM: the
# supervisor must still leave nothing behind.
LAUNCHER = """
import subprocess, sys, time
body = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
rank = subprocess.Popen([sys.executable, "-c", body], start_new_session=True)
time.sleep(float(sys.argv[1]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.parametrize("how", ["exits", "sigterm"])
def test_no_process_the_training_process_started_outlives_it(tmp_path, how):
    interrupt = threading.Event()
    out = (tmp_path / "out.log").open("w")
    sup = Supervisor([sys.executable, "-c", LAUNCHER, "2" if how == "exits" else "600"], tmp_path / "control",
                     tmp_path / "run", 1, lambda r: None, lambda *a: True, interrupt, stream=out,
                     err_stream=out)  # fmt: skip
    errors: list[BaseException] = []

    def run():
        try:
            sup.run()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while not (sup.family and sup.family.members):
        assert time.monotonic() < deadline, "the rank never started"
        time.sleep(0.05)
    (rank,) = sup.family.members
    if how == "sigterm":
        interrupt.set()
    t.join(60)
    assert not t.is_alive()
    assert not _alive(rank), f"rank {rank} outlived the training process"
    if how == "sigterm":
        assert errors and errors[0].code == ExitCode.INTERRUPTED


def test_a_process_family_ignores_a_reused_pid(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fam = ProcessFamily(os.getpid())
        fam.members[proc.pid] = 1.0  # recorded with another start time: not the same process
        assert fam.alive() == [] and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_the_cpu_shims_swap_ultralytics_names_for_one_call_only(monkeypatch):
    import torch
    import ultralytics.engine.trainer as trainer_module
    import ultralytics.engine.validator as validator_module
    from ultralytics.models.yolo.detect import DetectionTrainer
    from yolo_trainer import cpu_ddp_shims
    from yolo_trainer.ranks import LaunchedRankTrainer, trainer_class

    before = trainer_module.nn, validator_module.AutoBackend, validator_module.get_torch_device_backend
    seen = {}
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda m, **kw: seen.update(kw) or m)
    with cpu_ddp_shims.ddp_without_device_ids_on_cpu():
        assert trainer_module.nn.Module is torch.nn.Module  # the rest of torch.nn, unchanged
        trainer_module.nn.parallel.DistributedDataParallel("model", device_ids=[None], find_unused_parameters=True)
    assert seen == {"device_ids": None, "find_unused_parameters": True}
    with cpu_ddp_shims.validator_on_cpu():
        assert validator_module.get_torch_device_backend("cuda").current_device() == 0
    assert (trainer_module.nn, validator_module.AutoBackend, validator_module.get_torch_device_backend) == before
    assert trainer_class(DetectionTrainer) is trainer_class(LaunchedRankTrainer) is LaunchedRankTrainer
