"""hack/daemon.sh's ``detach``: a daemon the bed starts under someone's ``flock`` holds neither that lock nor any
other descriptor of its parent (a containerd restarted under the e2e lock once held it for an hour)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_a_detached_daemon_keeps_only_stdio_and_not_the_callers_lock(tmp_path):
    lock, pidfile = tmp_path / "lock", tmp_path / "pid"
    script = (f'source {ROOT}/hack/daemon.sh; exec 7>{tmp_path}/extra; '
              f'detach sleep 60 >/dev/null 2>&1 </dev/null & echo $! >{pidfile}')  # fmt: skip
    subprocess.run(["flock", str(lock), "bash", "-c", script], check=True, timeout=30)
    pid = int(pidfile.read_text())
    try:
        # $! is the background shell; it closes descriptors and execs setsid, which execs sleep: check the daemon
        # itself, not the shell on its way there (in CI the check once ran before setsid and saw the caller's session)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline, "the detached command never started"
            time.sleep(0.02)
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
        assert os.getsid(pid) == pid  # a session of its own: the bed stops it by its process group
        assert subprocess.run(["flock", "-n", str(lock), "true"], timeout=10).returncode == 0  # the lock is free
    finally:
        os.kill(pid, signal.SIGKILL)
