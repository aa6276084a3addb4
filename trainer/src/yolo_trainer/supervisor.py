"""The supervisor: runs the training process (``child.py``) and does everything that must outlive it.

One code path for CPU, one GPU, N GPUs, N CPU ranks and N nodes: the training process is the child itself, or
torch's launcher (torchrun) starting one child per rank (``launch.py``). Progress comes from the
``results.csv`` global rank 0 appends, checkpoints from the ``last.pt`` it wrote (taken only when the child's
``saved.json`` says the write finished), the stop request goes in as a file. So the reporter, the uploader
thread and the SIGTERM flush live here, in a process that holds no GPU while the child trains, whatever the
child does.

On SIGTERM the child's process group and every rank's (torchrun starts each in a session of its own) get
SIGTERM (they die at once; their GPUs are freed) and the caller flushes the newest complete checkpoint. Every
process the training process started is remembered while it runs, and whatever is left of them once it ended
is killed: no rank outlives it. The child's end is classified into the trainer's exit codes from its
``error.json`` (or a rank's), its signal, the failed rank torchrun names (its rank, exit code or signal), the
cgroup's OOM-kill counter and the tail of its output (CUDA out of memory, NCCL errors, torchrun's rendezvous).
Across nodes, a pod whose ranks all failed because a rank of another node went away ends PeerLost: the gang
restarts from the checkpoint; a rank of its own that failed first makes it this pod's failure instead.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_contract.base import now_rfc3339
from yolo_contract.exitcodes import ExitCode, Interrupted, PeerLost, TrainerError
from yolo_contract.progress import (
    Checkpoint,
    HistoryPoint,
    Progress,
    TrainerReport,
    downsample,
    point_from_results,
)

from . import child
from .gpu import GpuSampler
from .launch import RankFailure, failed_rank, launcher_error, parse_failures
from .results import ResultsRow, best_from_results, parse_results
from .train import _f, epoch_metrics

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
TERM_WAIT_SECONDS = 5.0  # SIGTERM to SIGKILL for the child's process group
TAIL_LINES = 200
TEE_JOIN_SECONDS = 2.0  # after the child is gone, for its last lines to reach the log
OOM_EVENTS = Path("/sys/fs/cgroup/memory.events")

CUDA_OOM = re.compile(r"CUDA out of memory|torch\.OutOfMemoryError|CUDA error: out of memory|cudaErrorMemoryAllocation")
NCCL = re.compile(r"NCCL (?:error|WARN)|nccl[A-Z][A-Za-z]*Error|ProcessGroupNCCL|Watchdog caught collective")
# torchrun's static rendezvous (node 0's TCP store) when the other nodes never came: node 0 waited for them,
# another node could not reach node 0. Only torchrun's agent prints these, outside any rank's failure report.
RENDEZVOUS = re.compile(
    r"Timed out after \d+ seconds waiting for clients\. \d+/\d+ clients joined"
    r"|client socket has timed out after \d+ ?ms while trying to connect to \(.*?\)"
)


@dataclass
class ChildEnd:
    """How the training process ended (the inputs of ``classify_child_end``)."""

    returncode: int
    error: dict[str, Any] | None = None  # its error.json
    tail: str = ""  # its last lines of output
    oom_kills: int = 0  # kernel OOM kills in this cgroup while it ran
    rank: RankFailure | None = None  # under torchrun: the rank that failed
    launcher_message: str | None = None  # under torchrun: the failed rank's error, from torchrun's error file
    failures: list[RankFailure] = field(default_factory=list)  # under torchrun: every failed rank it reported


def classify_child_end(end: ChildEnd, shm_bytes: int | None = None) -> TrainerError | None:
    """None for success, else the error the trainer exits with (pure). Under torchrun, a failed rank's own exit
    code or signal stands for the training process' (torchrun itself exits 1) and the message names the rank."""
    if end.returncode == 0:
        return None
    lost = _peer_lost(end)
    if lost:
        return lost
    if end.rank is not None:
        return _classify_rank(end, end.rank, shm_bytes)
    known = _oom_or_own_error(end, "the training process")
    if known:
        return known
    rendezvous = _last_match(RENDEZVOUS, end.tail)
    if rendezvous:
        return PeerLost(f"the job's nodes did not all meet at torchrun's rendezvous ({rendezvous}): a peer pod "
                        "never started training (still Pending, failed before training, or it cannot reach node "
                        "0 at PET_MASTER_ADDR:PET_MASTER_PORT); each waits PET_RDZV_CONF's timeout for the "
                        "others")  # fmt: skip
    nccl = _last_match(NCCL, end.tail)
    if nccl:
        return TrainerError(f"NCCL error between the GPUs ({nccl}): a GPU, its driver or the node's "
                            "interconnect failed; the Job retries on another pod", ExitCode.TRAINING_ERROR)  # fmt: skip
    if end.returncode < 0:
        sig = signal.Signals(-end.returncode)
        if sig == signal.SIGKILL and end.oom_kills > 0:
            return TrainerError("the training process was killed by the kernel's out-of-memory killer; raise "
                                "spec.resources.memory or reduce spec.training.batch",
                                ExitCode.OUT_OF_MEMORY)  # fmt: skip
        if sig == signal.SIGBUS:
            size = f" ({shm_bytes // 2**20} MiB)" if shm_bytes else ""
            return TrainerError(f"Bus error in the training process: /dev/shm{size} is too small for the "
                                "DataLoader workers; raise spec.resources.shmSize or lower "
                                "spec.training.workers", ExitCode.OUT_OF_MEMORY)  # fmt: skip
        return TrainerError(f"the training process was killed by {sig.name}", ExitCode.TRAINING_ERROR)
    if end.error is not None:
        return TrainerError(str(end.error.get("message", "training failed")), ExitCode.TRAINING_ERROR)
    last = _last_error_line(end.tail)
    return TrainerError(f"the training process exited {end.returncode}" + (f": {last}" if last else ""),
                        ExitCode.TRAINING_ERROR)  # fmt: skip


def _peer_lost(end: ChildEnd) -> PeerLost | None:
    """PeerLost when every rank of this pod that failed did so because a rank of another node went away (or was
    stopped by torchrun after such a failure). A rank of this pod that died on its own (a signal, the OOM
    killer, its own error) makes the pod's end its failure: its peers' broken connections follow from it."""
    lost = [f for f in end.failures if f.exitcode == ExitCode.PEER_LOST]
    if not lost or end.oom_kills or _last_match(CUDA_OOM, end.tail):
        return None
    stopped = (signal.SIGTERM, signal.SIGINT)
    if any(f.exitcode != ExitCode.PEER_LOST and f.signal not in stopped for f in end.failures):
        return None
    error = end.error if end.error and int(end.error.get("code", 0)) == ExitCode.PEER_LOST else {}
    why = error.get("message") or end.launcher_message or lost[0].message
    return PeerLost(f"{lost[0].who()}: {why}" if why else f"{lost[0].who()} lost a rank of another node")


def _oom_or_own_error(end: ChildEnd, who: str) -> TrainerError | None:
    """What the child's end says first, in whichever process failed: CUDA out of memory in its output, or a
    failure the child classified itself (error.json) other than the generic TrainingError (or PeerLost, which
    only ``_peer_lost`` decides)."""
    cuda_oom = _last_match(CUDA_OOM, end.tail)
    if cuda_oom:
        return TrainerError(f"CUDA out of memory in {who} ({cuda_oom}); reduce spec.training.batch or "
                            "spec.training.imgsz", ExitCode.OUT_OF_MEMORY)  # fmt: skip
    if end.error is not None and int(end.error.get("code", 0)) not in (ExitCode.TRAINING_ERROR, ExitCode.PEER_LOST):
        code = ExitCode(int(end.error["code"]))
        return TrainerError(str(end.error.get("message", code.reason)), code)
    return None


def _classify_rank(end: ChildEnd, rank: RankFailure, shm_bytes: int | None) -> TrainerError:
    who = rank.who()
    known = _oom_or_own_error(end, who)
    if known:
        return known
    sig = rank.signal
    if sig is not None:
        if sig == signal.SIGKILL and end.oom_kills > 0:
            return TrainerError(f"{who} was killed by the kernel's out-of-memory killer; raise "
                                "spec.resources.memory or reduce spec.training.batch",
                                ExitCode.OUT_OF_MEMORY)  # fmt: skip
        if sig == signal.SIGBUS:
            size = f" ({shm_bytes // 2**20} MiB)" if shm_bytes else ""
            return TrainerError(f"Bus error in {who}: /dev/shm{size} is too small for the DataLoader workers; "
                                "raise spec.resources.shmSize or lower spec.training.workers",
                                ExitCode.OUT_OF_MEMORY)  # fmt: skip
        return TrainerError(f"{who} was killed by {sig.name}; the other ranks were stopped", ExitCode.TRAINING_ERROR)
    nccl = _last_match(NCCL, end.tail)
    if nccl:
        return TrainerError(f"NCCL error between the GPUs in {who} ({nccl}): a GPU, its driver or the node's "
                            "interconnect failed; the Job retries on another pod", ExitCode.TRAINING_ERROR)  # fmt: skip
    why = (end.error or {}).get("message") or end.launcher_message or rank.message or _last_error_line(end.tail)
    return TrainerError(f"{who} exited {rank.exitcode}" + (f": {why}" if why else ""), ExitCode.TRAINING_ERROR)


def _last_match(rx: re.Pattern[str], text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if rx.search(line):
            return " ".join(line.split())[:300]
    return None


def _last_error_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if "Error" in line or "error" in line:
            return " ".join(line.split())[:300]
    return None


def oom_kills(path: Path = OOM_EVENTS) -> int:
    """The cgroup's count of processes the kernel OOM-killed (0 where it cannot be read)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_error(control: Path) -> dict[str, Any] | None:
    """The classified error a training process recorded: rank 0's (or the only process'), else the lowest
    other rank's; a rank's own failure before a PeerLost (a rank that lost its connection to the one that
    failed)."""
    ranks = [(-1, control / child.ERROR)]
    for p in control.glob(child.RANK_ERROR.format(rank="*")):
        m = re.fullmatch(r"error\.rank(\d+)\.json", p.name)
        if m:
            ranks.append((int(m[1]), p))
    errors = [e for _, p in sorted(ranks) if (e := _read_json(p)) is not None]
    own = [e for e in errors if int(e.get("code", 0)) != ExitCode.PEER_LOST]
    return (own or errors or [None])[0]


class ProcessFamily:
    """Every process the training process started (torchrun's ranks and their DataLoader workers), remembered
    while it runs: a rank in a session of its own, orphaned when torchrun dies, is still found and killed."""

    def __init__(self, root: int):
        self.root = root
        self.members: dict[int, float] = {}  # pid -> create time (a reused pid is not ours)

    def refresh(self) -> None:
        try:
            import psutil

            for p in psutil.Process(self.root).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.members.setdefault(p.pid, p.create_time())
        except Exception:  # gone, or no psutil: the process groups are still signalled
            pass

    def alive(self) -> list[int]:
        try:
            import psutil
        except ImportError:
            return []
        out = []
        for pid, created in list(self.members.items()):
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
                    continue
            except psutil.Error:
                pass
            del self.members[pid]
        return out

    def signal(self, sig: int, groups: bool = True) -> list[int]:
        """``sig`` to every living member (and its process group: a rank's session); the pids signalled."""
        pids = self.alive()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if groups:
                    pgid = os.getpgid(pid)
                    if pgid == pid:  # a group leader: a rank torchrun started with its DataLoader workers
                        os.killpg(pgid, sig)
                        continue
                os.kill(pid, sig)
        return pids


def _pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    """The child dies with the supervisor, even when the supervisor is SIGKILLed (outside a pod, which
    would otherwise kill both)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class TrainingResult:
    save_dir: Path
    final_metrics: dict[str, Any] = field(default_factory=dict)
    epochs_reported: list[int] = field(default_factory=list)  # 1-based epochs this run completed
    stopped_at: int | None = None  # the epoch at whose end spec.stop ended training


class Supervisor:
    """Starts ``command`` (the child), mirrors its progress and checkpoints until it exits; raises the
    classified error if it failed, Interrupted on SIGTERM (after terminating it)."""

    def __init__(
        self,
        command: list[str],
        control: Path,
        save_dir: Path,
        epochs: int,
        report: Callable[[TrainerReport], None],
        submit_checkpoint: Callable[[int, Path, Path | None, list[int] | None], bool],
        interrupt: threading.Event,
        stop: threading.Event | None = None,
        uploader_error: Callable[[], TrainerError | None] = lambda: None,
        last_checkpoint: Callable[[], Checkpoint | None] = lambda: None,
        stream=None,
        err_stream=None,
        shm_bytes: int | None = None,
        env: dict[str, str] | None = None,
        describe: dict[str, Any] | None = None,
    ):
        self.command = command
        self.control = control
        self.save_dir = save_dir
        self.epochs = epochs
        self.report = report
        self.submit_checkpoint = submit_checkpoint
        self.interrupt = interrupt
        self.stop = stop or threading.Event()
        self.uploader_error = uploader_error
        self.last_checkpoint = last_checkpoint
        self.stream = stream or sys.stdout
        self.err_stream = err_stream or sys.stderr
        self.shm_bytes = shm_bytes
        self.env = env
        self.describe = describe or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.family: ProcessFamily | None = None
        self.result = TrainingResult(save_dir)
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._tees: list[threading.Thread] = []
        self._csv_seen: tuple[int, int] | None = None  # (results.csv size, _saved_through) last looked at
        self._saved_through = 0  # epochs completed whose last.pt the child finished writing
        self._rows_before: set[int] | None = None  # epochs already in results.csv (a resumed run's)
        self._reported: set[int] = set()
        self._submitted = 0  # epochs completed by the newest checkpoint handed to submit_checkpoint
        self._started = time.monotonic()
        self.gpu: GpuSampler | None = None
        self._gpu_figures: dict[int, tuple[int | None, int | None]] = {}  # epoch -> (util %, peak MiB)

    # --- running -------------------------------------------------------------------------------------------
    def run(self) -> TrainingResult:
        shutil.rmtree(self.control, ignore_errors=True)
        self.control.mkdir(parents=True)
        self._rows_before = {r.epoch for r in self._rows()}
        self.gpu = GpuSampler.open()
        ooms_before = oom_kills()
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_pdeathsig, env=self.env,
        )  # fmt: skip
        self.family = ProcessFamily(self.proc.pid)
        print(json.dumps({"event": "trainingProcess", "pid": self.proc.pid, **self.describe}), file=self.stream,
              flush=True)  # fmt: skip
        self._tees = [
            threading.Thread(target=self._copy_output, args=(pipe, out), name="child-output", daemon=True)
            for pipe, out in ((self.proc.stdout, self.stream), (self.proc.stderr, self.err_stream))
        ]
        for t in self._tees:
            t.start()
        try:
            while True:
                if self.interrupt.is_set():
                    raise Interrupted("interrupted by SIGTERM")
                if self.stop.is_set() and not (self.control / child.STOP).exists():
                    (self.control / child.STOP).touch()
                self.family.refresh()
                if self.gpu is not None:
                    self.gpu.sample()
                self.poll()
                err = self.uploader_error()
                if err is not None:
                    raise err
                if self.proc.poll() is not None:
                    break
                self.interrupt.wait(POLL_SECONDS)
        except BaseException:
            self.terminate()
            for t in self._tees:  # the child's last output precedes whatever the caller logs next
                t.join(TEE_JOIN_SECONDS)
            raise
        self._end_leftovers()
        for t in self._tees:
            t.join(10)
        self.poll(final=True)  # the rows and the checkpoint written just before it exited
        tail = "".join(self._tail)
        failed = self.proc.returncode != 0
        end = ChildEnd(self.proc.returncode, read_error(self.control), tail, oom_kills() - ooms_before,
                       failed_rank(tail) if failed else None, launcher_error(self.control),
                       parse_failures(tail) if failed else [])  # fmt: skip
        err = classify_child_end(end, self.shm_bytes)
        if err is not None:
            raise err
        final = _read_json(self.control / child.FINAL) or {}
        self.result.final_metrics = dict(final.get("metrics") or {})
        if final.get("saveDir"):
            self.result.save_dir = Path(final["saveDir"])
        stopped = _read_json(self.control / child.STOPPED)
        self.result.stopped_at = int(stopped["epoch"]) if stopped else None
        return self.result

    def terminate(self) -> None:
        """SIGTERM to the child's process group and to every rank's (DataLoader workers with them), SIGKILL
        after TERM_WAIT_SECONDS to whatever is left. The checkpoint it saved last is taken first."""
        with contextlib.suppress(Exception):
            self.poll()
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self._end_leftovers()
            return
        if self.family is not None:
            self.family.refresh()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        if self.family is not None:
            self.family.signal(signal.SIGTERM)
        try:
            self.proc.wait(TERM_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._end_leftovers(wait=TERM_WAIT_SECONDS)

    def _end_leftovers(self, wait: float = TERM_WAIT_SECONDS) -> None:
        """After the training process ended: any process it started that is still alive (a rank its launcher
        did not stop) gets SIGTERM, then SIGKILL."""
        if self.family is None:
            return
        deadline = time.monotonic() + wait
        left = self.family.signal(signal.SIGTERM)
        if left:
            log.warning("processes %s of the training process outlived it: terminating them", left)
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.family.alive()
        if left:
            self.family.signal(signal.SIGKILL)
            deadline = time.monotonic() + TERM_WAIT_SECONDS  # SIGKILL is delivered, not waited for
            while self.family.alive() and time.monotonic() < deadline:
                time.sleep(0.05)

    def _copy_output(self, pipe, stream) -> None:
        """The child's output, line by line, to ours (the pod's log); the last lines kept for classifying."""
        out = getattr(stream, "buffer", None)
        for line in iter(pipe.readline, b""):
            if not line.endswith(b"\n"):
                # The child ended mid-line (a progress bar when it was killed): end the line here, or the
                # supervisor's next event line (e.g. 'interrupted') is glued to it and lost to log parsers.
                line += b"\n"
            text = line.decode(errors="replace")
            self._tail.append(text)
            try:
                if out is not None:
                    out.write(line)
                    out.flush()
                else:
                    stream.write(text)
                    stream.flush()
            except (OSError, ValueError):
                pass

    # --- what rank 0 wrote ---------------------------------------------------------------------------------
    def _csv(self) -> Path:
        return self.save_dir / "results.csv"

    def _rows(self) -> list[ResultsRow]:
        try:
            return parse_results(self._csv().read_text())
        except OSError:
            return []

    def poll(self, final: bool = False) -> None:
        """Reports new epochs and hands over a newly completed checkpoint (idempotent).

        An epoch is reported once its checkpoint is complete (or the child has exited): Ultralytics appends the
        row before it writes last.pt, and an epoch the status shows must be one a SIGTERM flush can keep."""
        self._poll_checkpoint()
        try:
            size = self._csv().stat().st_size
        except OSError:
            return
        seen = (size, self._saved_through if not final else -1)
        if seen == self._csv_seen:
            return
        self._csv_seen = seen
        text = self._csv().read_text()
        rows = parse_results(text)
        before = self._rows_before or set()
        for r in rows:
            if r.epoch in before or r.epoch in self._reported:
                continue
            if not final and r.epoch > self._saved_through:
                break
            self._report_epoch(r, rows, text)

    def _poll_checkpoint(self) -> None:
        saved = _read_json(self.control / child.SAVED)
        if not saved or int(saved["epoch"]) <= self._submitted:
            return
        epoch = int(saved["epoch"])
        expected = (self._submitted or len(self._rows_before or ())) + 1
        if epoch > expected:  # polled every POLL_SECONDS: shorter epochs are saved over before they are seen
            skipped = str(expected) if epoch == expected + 1 else f"{expected} to {epoch - 1}"
            log.info("checkpoint of epoch %s was saved over by epoch %d before it was seen", skipped, epoch)
        self._submitted = epoch
        self.epochs = int(saved.get("epochs") or self.epochs)
        # The last epoch is not checkpointed: training ends right after it and the final outputs follow.
        final = epoch >= self.epochs or bool(saved.get("stop"))
        last = Path(saved["last"])
        if final or self.submit_checkpoint(epoch, last, Path(saved["csv"]), saved.get("signature")):
            self._saved_through = epoch
        else:
            # Rewritten by the next epoch before it was seen: that epoch is reported with the next checkpoint.
            log.info("checkpoint of epoch %d was overwritten before it was staged", epoch)

    def _report_epoch(self, row: ResultsRow, rows: list[ResultsRow], text: str) -> None:
        self._reported.add(row.epoch)
        self.result.epochs_reported.append(row.epoch)
        done, total = row.epoch, max(self.epochs, row.epoch)
        ran = len(self._reported)
        elapsed = row.time if row.time is not None else time.monotonic() - self._started
        best, best_epoch = best_from_results(text)
        progress = Progress.of(
            done,
            total,
            eta_seconds=max(0, round(elapsed / ran * (total - done))),
            metrics=epoch_metrics(row.values, row.values),
            best_map50_95=_f(best),
            best_epoch=best_epoch,
            updated_at=now_rfc3339(),
        )
        line = {"event": "epoch", **progress.model_dump(by_alias=True, exclude_none=True, mode="json")}
        print(json.dumps(line), file=self.stream, flush=True)
        history = self.history(row.epoch, rows)
        self.report(TrainerReport(stage="Training", progress=progress, last_checkpoint=self.last_checkpoint(),
                                  history=history))  # fmt: skip

    def history(self, through: int, rows: list[ResultsRow]) -> list[HistoryPoint]:
        """status.history after epoch ``through``: every row of results.csv up to it (a resumed run's earlier
        epochs too), downsampled. The GPU figures are those sampled since the previous report, and only for the
        epochs this process trained (not kept across a restart)."""
        if self.gpu is not None:
            self._gpu_figures[through] = self.gpu.take()
        return downsample(
            point_from_results(r.epoch, r.values, *self._gpu_figures.get(r.epoch, (None, None)))
            for r in rows
            if r.epoch <= through
        )


def child_command(spec_path: Path) -> list[str]:
    """The one-process command (``launch.command`` chooses between it and torch's launcher)."""
    return [sys.executable, "-m", "yolo_trainer.child", str(spec_path)]
