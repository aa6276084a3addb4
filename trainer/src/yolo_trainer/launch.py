"""How the training process is started: one plain process, or torch's launcher for every multi-process job.

One process (CPU, or one GPU, on one node): ``python -m yolo_trainer.child SPEC``. Anything more (several GPUs,
``cpuProcesses`` > 1, several nodes): ``python -m torch.distributed.run --module yolo_trainer.child SPEC``
(torchrun, elastic agent), configured only through its ``PET_*`` environment variables, the contract Kubeflow
Trainer's torch plugin uses, so the same image runs under Kubeflow and under the operator's Indexed Job:

- ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``: read from the pod's environment
  (set by whatever runs the pods); unset = one node, and torchrun picks a free local port itself.
- ``PET_NPROC_PER_NODE``: the ranks this pod runs (one per GPU, or ``cpuProcesses`` on CPU:
  :func:`yolo_contract.sizing.processes_per_node`). Where the pod's environment already sets it, it must
  say the same number: a mismatch is a configuration error, never a silently different world.
- ``PET_MAX_RESTARTS=0``: a failed rank ends this pod's run; restarting the gang from the last checkpoint is the
  Job's (or Kubeflow's) business, where a resumed run starts from S3.
- ``PET_SHUTDOWN_TIMEOUT``: after SIGTERM torchrun gives the ranks this long before SIGKILL; below the
  supervisor's own wait, so torchrun, not the supervisor, ends its ranks.
- ``PET_RDZV_CONF`` ``timeout=N`` (several nodes): how long node 0 waits for the other nodes at the
  rendezvous, and another node tries to reach node 0, before torchrun gives up and the pod exits PeerLost
  (never a hang). Read from the pod's environment (the operator sets it); unset, torch's own 600 s. It counts
  from this pod's start of training, after its staging: it must cover the other pods' start-up and staging.
- ``TORCHELASTIC_ERROR_FILE`` for torchrun itself: where it copies the first failed rank's error;
  ``PET_LOG_DIR``: where the ranks' own error files go (the control directory, not a fresh /tmp folder).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolo_contract.exitcodes import ConfigInvalid

PET = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
LAUNCHER_ERROR = "launcher-error.json"
SHUTDOWN_TIMEOUT_SECONDS = 3  # torchrun: SIGTERM to SIGKILL of its ranks; < supervisor.TERM_WAIT_SECONDS
DEFAULT_MASTER_PORT = 29500  # torchrun's and Kubeflow's
DEFAULT_RENDEZVOUS_TIMEOUT = 600  # seconds; torch's default for its static rendezvous


@dataclass(frozen=True)
class LaunchPlan:
    """The ranks of this job as this pod sees them."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rendezvous_timeout: int = DEFAULT_RENDEZVOUS_TIMEOUT  # seconds, several nodes only

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def launcher(self) -> bool:
        """Whether torch's launcher starts the ranks (anything but one process on one node)."""
        return self.world_size > 1

    @property
    def first_node(self) -> bool:
        """Node 0 holds global rank 0: it reports progress, uploads checkpoints and publishes the outputs."""
        return self.node_rank == 0

    def describe(self) -> dict[str, Any]:
        out = {"launcher": "torchrun" if self.launcher else "none", "nnodes": self.nnodes,
               "nprocPerNode": self.nproc_per_node, "nodeRank": self.node_rank,
               "worldSize": self.world_size}  # fmt: skip
        if self.nnodes > 1:
            out["rendezvousTimeoutSeconds"] = self.rendezvous_timeout
        return out


def _int(environ: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigInvalid(f"{name}={raw!r}: the trainer needs a whole number here (no elastic ranges)") from None
    if value < minimum:
        raise ConfigInvalid(f"{name}={raw!r}: must be at least {minimum}")
    return value


def plan(processes_per_node: int, environ: dict[str, str] | None = None) -> LaunchPlan:
    """The launch plan for ``processes_per_node`` ranks here and the nodes the ``PET_*`` environment names."""
    env = os.environ if environ is None else environ
    nproc = _int(env, "PET_NPROC_PER_NODE", processes_per_node, 1)
    if nproc != processes_per_node:
        raise ConfigInvalid(f"PET_NPROC_PER_NODE={nproc} but this pod runs {processes_per_node} training "
                            "processes (one per GPU it holds, or cpuProcesses on CPU)")  # fmt: skip
    nnodes = _int(env, "PET_NNODES", 1, 1)
    node_rank = _int(env, "PET_NODE_RANK", 0, 0)
    if node_rank >= nnodes:
        raise ConfigInvalid(f"PET_NODE_RANK={node_rank} is not below PET_NNODES={nnodes}")
    addr = env.get("PET_MASTER_ADDR", "").strip() or None
    port = _int(env, "PET_MASTER_PORT", 0, 1) or None
    if nnodes > 1 and addr is None:
        raise ConfigInvalid(f"PET_NNODES={nnodes} but PET_MASTER_ADDR is not set: the nodes cannot meet")
    if nnodes > 1 and port is None:
        port = DEFAULT_MASTER_PORT
    return LaunchPlan(nproc, nnodes, node_rank, addr, port, rendezvous_timeout(env))


def _rdzv_conf(raw: str) -> dict[str, str]:
    """torchrun's ``--rdzv-conf``: ``key=value`` pairs separated by commas."""
    out = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigInvalid(f"PET_RDZV_CONF={raw!r}: torchrun wants key=value pairs separated by commas")
        out[key.strip()] = value.strip()
    return out


def rendezvous_timeout(environ: dict[str, str]) -> int:
    """Seconds torchrun's rendezvous waits for every node: ``PET_RDZV_CONF``'s ``timeout``, else torch's 600."""
    raw = _rdzv_conf(environ.get("PET_RDZV_CONF", "")).get("timeout", "")
    if not raw:
        return DEFAULT_RENDEZVOUS_TIMEOUT
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigInvalid(f"PET_RDZV_CONF timeout={raw!r}: the rendezvous wait in seconds, a whole number above 0")
    return int(raw)


def first_node(environ: dict[str, str] | None = None) -> bool:
    """Whether this pod is node 0 (``PET_NODE_RANK`` unset or 0), the one holding global rank 0."""
    return _int(os.environ if environ is None else environ, "PET_NODE_RANK", 0, 0) == 0


def command(launch: LaunchPlan, spec_path: Path) -> list[str]:
    """The training process' command line."""
    if not launch.launcher:
        return [sys.executable, "-m", "yolo_trainer.child", str(spec_path)]
    return [sys.executable, "-m", "torch.distributed.run", "--module", "yolo_trainer.child", str(spec_path)]


def environment(
    launch: LaunchPlan, control: Path, cpu_threads: int | None = None, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """The training process' environment: ours, plus torchrun's ``PET_*`` settings when it launches."""
    env = dict(os.environ if environ is None else environ)
    if not launch.launcher:
        return env
    env.update({
        "PET_NNODES": str(launch.nnodes),
        "PET_NPROC_PER_NODE": str(launch.nproc_per_node),
        "PET_NODE_RANK": str(launch.node_rank),
        "PET_MAX_RESTARTS": "0",
        "PET_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT_SECONDS),
        "TORCHELASTIC_ERROR_FILE": str(control / LAUNCHER_ERROR),
        "PET_LOG_DIR": str(control / "torchelastic"),  # the ranks' error files: in the work dir, not /tmp
    })  # fmt: skip
    for name, value in (("PET_MASTER_ADDR", launch.master_addr), ("PET_MASTER_PORT", launch.master_port)):
        if value is None:
            env.pop(name, None)  # one node: torchrun's standalone rendezvous on a free local port
        else:
            env[name] = str(value)
    if launch.nnodes > 1:
        # Bounded: a node whose peers never come ends with PeerLost (the supervisor reads torchrun's error).
        conf = {**_rdzv_conf(env.get("PET_RDZV_CONF", "")), "timeout": str(launch.rendezvous_timeout)}
        env["PET_RDZV_CONF"] = ",".join(f"{k}={v}" for k, v in conf.items())
    if cpu_threads is not None and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(cpu_threads)  # torchrun would set 1 whatever the pod holds
    return env


def cpu_threads_per_rank(cpus: int, ranks: int) -> int:
    """Threads each CPU rank's torch may use: the pod's CPUs shared out, at least one."""
    return max(1, cpus // max(1, ranks))


# --- a failed rank, as torchrun reports it ----------------------------------------------------------------------


@dataclass(frozen=True)
class RankFailure:
    """One failed rank from torchrun's failure report."""

    rank: int
    local_rank: int
    exitcode: int
    pid: int | None = None
    host: str = ""
    message: str = ""

    def who(self) -> str:
        where = f"local rank {self.local_rank}" + (f" on {self.host}" if self.host else "")
        return f"training rank {self.rank} ({where})"

    @property
    def signal(self) -> signal.Signals | None:
        if self.exitcode < 0:
            try:
                return signal.Signals(-self.exitcode)
            except ValueError:
                return None
        return None


_ENTRY = re.compile(
    r"^\s*rank\s*:\s*(?P<rank>-?\d+)\s*\(local_rank:\s*(?P<local>-?\d+)\)\s*$"
    r"|^\s*exitcode\s*:\s*(?P<code>-?\d+)\s*\(pid:\s*(?P<pid>\d+)\).*$"
    r"|^\s*host\s*:\s*(?P<host>\S+)\s*$"
    r"|^\s*traceback\s*:\s*(?P<tb>.*)$",
)


def parse_failures(text: str) -> list[RankFailure]:
    """The failed ranks in torchrun's last ``ChildFailedError`` report in ``text``, root cause first (pure).

    The report lists ``Failures:`` and then ``Root Cause (first observed failure):``, each entry as
    ``[0]:`` followed by ``host : ...``, ``rank : 1 (local_rank: 1)``, ``exitcode : -9 (pid: 123)``,
    ``traceback : Signal 9 (SIGKILL) received by PID 123``."""
    start = text.rfind("ChildFailedError")
    if start < 0:
        return []
    roots: list[RankFailure] = []
    others: list[RankFailure] = []
    cur: dict[str, Any] = {}
    in_root = False

    def close() -> None:
        if "rank" in cur and "code" in cur:
            f = RankFailure(cur["rank"], cur["local"], cur["code"], cur.get("pid"), cur.get("host", ""),
                            cur.get("tb", ""))  # fmt: skip
            (roots if in_root else others).append(f)
        cur.clear()

    for line in text[start:].splitlines():
        if line.startswith("Root Cause"):
            close()
            in_root = True
            continue
        if re.match(r"^\s*\[\d+\]:\s*$", line) or line.startswith("===="):
            close()
            continue
        m = _ENTRY.match(line)
        if not m:
            continue
        if m["rank"] is not None:
            cur["rank"], cur["local"] = int(m["rank"]), int(m["local"])
        elif m["code"] is not None:
            cur["code"], cur["pid"] = int(m["code"]), int(m["pid"])
        elif m["host"] is not None:
            cur["host"] = m["host"]
        elif m["tb"] is not None:
            cur["tb"] = m["tb"].strip()
    close()
    return roots + others


def failed_rank(text: str) -> RankFailure | None:
    """The rank to blame: one that a signal killed (the others then fail on the broken connection to it, and may
    be reported first), else torchrun's root cause."""
    failures = parse_failures(text)
    for f in failures:
        if f.signal is not None and f.signal not in (signal.SIGTERM, signal.SIGINT):
            return f
    return failures[0] if failures else None


def launcher_error(control: Path) -> str | None:
    """The message in torchrun's error file (the first failed rank's own error), if it wrote one."""
    try:
        body = json.loads((control / LAUNCHER_ERROR).read_text())
    except (OSError, ValueError):
        return None
    message = body.get("message")
    if isinstance(message, dict):
        message = message.get("message")
    return " ".join(str(message).split())[:500] if message else None
