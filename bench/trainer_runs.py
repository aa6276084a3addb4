"""Running `yolo-trainer` and plain `yolo train` as processes, with every stdout line time-stamped on arrival."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import VENV_BIN, log, testbed
from bench.staging import generate, upload_once

OUTPUT = "s3://bench-runs/"


@dataclass
class Run:
    started: float
    proc: subprocess.Popen
    lines: list[tuple[float, str]] = field(default_factory=list)
    events: list[tuple[float, dict]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            t = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self.lines.append((t, line))
                if line.startswith('{"event"'):
                    with contextlib.suppress(ValueError):
                        self.events.append((t, json.loads(line)))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_event(self, pred, timeout: float) -> tuple[float, dict] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, ev in self.events:
                    if pred(ev):
                        return t, ev
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._more()):
                    return None
                self._cond.wait(min(left, 0.5))

    def _more(self) -> bool:
        return bool(self.proc.stdout and not self.proc.stdout.closed and self.proc.returncode is None)

    def epoch_times(self) -> list[tuple[int, float]]:
        return [(ev["epoch"], t - self.started) for t, ev in self.events if ev.get("event") == "epoch"]


def start(cmd: list[str], env: dict[str, str], log_path: Path) -> Run:
    err = open(log_path, "ab")  # noqa: SIM115 - the child holds it
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, cwd=testbed.ROOT,
                            start_new_session=True)  # fmt: skip
    err.close()
    run = Run(t0, proc)
    threading.Thread(target=run.pump, daemon=True).start()
    return run


def base_env(workdir: Path) -> dict[str, str]:
    s3 = testbed.s3_env()
    env = {**os.environ, **s3.as_environ()}
    env.pop("KUBECONFIG", None)  # no status target: the trainer logs progress only
    env["YOLO_CONFIG_DIR"] = str(workdir / ".ultralytics")
    env["MPLCONFIGDIR"] = str(workdir / ".matplotlib")
    env["YOLO_OFFLINE"] = "1"
    env["YOLO_AUTOINSTALL"] = "false"
    env["YOLO_TERMINATION_LOG"] = str(workdir / "termination.log")
    return env


def prepare_dataset(images: int) -> tuple[Path, str]:
    """The staging benchmark's generator at `images` images; returns (local data.yaml, its S3 prefix URI)."""
    work = testbed.TESTBED / "bench" / "staging"
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"data-{images}"
    generate(data, images)
    uris = upload_once(data, work, images, [])
    return data / "data.yaml", uris["prefix"]


def trainer_config(workdir: Path, dataset: str, epochs: int, imgsz: int, batch: int, name: str | None = None) -> Path:
    s3 = testbed.s3_env()
    cfg = {
        "namespace": "bench",
        "name": name or f"bench-{uuid.uuid4().hex[:8]}",
        "model": "yolov8n.yaml",
        "dataset": dataset,
        "output": OUTPUT,
        "s3": {"endpoint": s3.endpoint, "region": s3.region},
        "training": {"epochs": epochs, "imgsz": imgsz, "batch": batch, "workers": 0},
        "offline": True,
        "workDir": str(workdir / "work"),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def start_trainer(workdir: Path, config: Path) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    return start([str(VENV_BIN / "yolo-trainer"), "--config", str(config)], base_env(workdir),
                 workdir / "trainer.log")  # fmt: skip


def yolo_cli_args(data_yaml: Path, project: Path, epochs: int, imgsz: int, batch: int) -> list[str]:
    """The same Ultralytics arguments yolo_trainer.train.train_args produces for the trainer's run on CPU."""
    return [str(VENV_BIN / "yolo"), "train", "model=yolov8n.yaml", f"data={data_yaml}", f"epochs={epochs}",
            f"imgsz={imgsz}", f"batch={batch}", "patience=100", "optimizer=auto", "seed=0", "workers=0",
            "device=cpu", f"project={project}", "name=run", "exist_ok=True", "plots=True", "save=True",
            "val=True"]  # fmt: skip


def start_yolo(workdir: Path, data_yaml: Path, epochs: int, imgsz: int, batch: int) -> Run:
    """Trains on a fresh copy of the dataset (made before the clock starts): Ultralytics writes label caches
    next to the labels, and the trainer always starts from a freshly staged copy without them."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = data_yaml.parent
    copy = workdir / "dataset"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("*.cache", ".complete"))
    data_yaml = copy / data_yaml.name
    return start(yolo_cli_args(data_yaml, workdir / "runs", epochs, imgsz, batch), base_env(workdir),
                 workdir / "yolo.log")  # fmt: skip


def train_seconds(results_csv: Path) -> float:
    """Ultralytics' own clock: the `time` column of the last results.csv row (train start -> last epoch end)."""
    with open(results_csv) as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["time"].strip() if "time" in rows[-1] else rows[-1][" time"])


def finish(run: Run, timeout: float) -> int:
    try:
        return run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"process {run.proc.pid} ran past {timeout}s; killing it")
        run.proc.kill()
        return run.proc.wait()


def delete_prefix(uri: str) -> None:
    from bench.staging import s3_client

    c = s3_client()
    bucket, _, prefix = uri[5:].partition("/")
    keys = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]  # fmt: skip
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})


def ensure_output_bucket() -> None:
    from bench.staging import s3_client

    c = s3_client()
    with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
        c.create_bucket(Bucket=OUTPUT[5:].strip("/"))
