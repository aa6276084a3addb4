"""Helpers for the trainer's integration tests: run the real ``yolo-trainer`` CLI as a subprocess against the
test bed's S3, and capture its status reports with a local fake Kubernetes API (a kubeconfig pointing at an
HTTP server that records every PATCH)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAINER = Path(sys.executable).parent / "yolo-trainer"


@dataclass
class Patch:
    path: str
    content_type: str
    body: dict[str, Any]


class StatusSink:
    """A fake API server: records PATCHes to .../status and answers 200; a GET of the TrainingJob returns
    ``trainingjob`` (set ``sink.trainingjob["spec"]["stop"] = True`` to request a stop)."""

    def __init__(self) -> None:
        self.patches: list[Patch] = []
        self.gets = 0
        self.trainingjob: dict[str, Any] = {
            "apiVersion": "yolo-operator.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "x", "namespace": "ns1"},
            "spec": {},
            "status": {},
        }
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                sink.gets += 1
                out = json.dumps(sink.trainingjob).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_PATCH(self):
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                sink.patches.append(Patch(self.path, self.headers.get("Content-Type", ""), body))
                out = json.dumps({"apiVersion": "yolo-operator.io/v1alpha1", "kind": "TrainingJob"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "sink", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "sink", "user": {"token": "t"}}],
                    "contexts": [{"name": "sink", "context": {"cluster": "sink", "user": "sink"}}],
                    "current-context": "sink",
                }
            )
        )
        return path

    def statuses(self) -> list[dict[str, Any]]:
        return [p.body.get("status", {}) for p in self.patches]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    termination: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]


def parse_events(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        if line.startswith('{"event"'):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


class TrainerRunner:
    """Builds configs and runs the trainer CLI with the bed's S3 credentials."""

    def __init__(self, s3_env, tmp: Path, sink: StatusSink | None = None):
        self.s3_env = s3_env
        self.tmp = tmp
        self.sink = sink
        self.n = 0

    def config(
        self, name: str, model: str | dict[str, Any], dataset: str, output: str, **training: Any
    ) -> dict[str, Any]:
        hyper = training.pop("hyperparameters", {})
        t = {"epochs": 2, "imgsz": 32, "batch": 8, **training}
        t["hyperparameters"] = {"warmup_epochs": 0, **hyper}  # tiny runs: no warmup so every step counts
        cfg = {
            "namespace": "ns1",
            "name": name,
            "model": model,
            "dataset": dataset,
            "output": output,
            "s3": {"endpoint": self.s3_env.endpoint, "region": self.s3_env.region},
            "training": t,
            "offline": True,
            "workDir": str(self.tmp / f"work-{name}"),
            "status": {"namespace": "ns1", "name": name},
        }
        return cfg

    def env(
        self, access_key: str | None = None, secret_key: str | None = None, keys: bool = True, **extra: str
    ) -> dict[str, str]:
        """The trainer's environment; ``keys=False``: no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (as a pod
        without spec.s3.credentialsSecretRef), nor AWS config files: only what ``extra`` sets."""
        self.n += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "YOLO_", "KUBE"))}
        if keys:
            env["AWS_ACCESS_KEY_ID"] = access_key or self.s3_env.access_key
            env["AWS_SECRET_ACCESS_KEY"] = secret_key or self.s3_env.secret_key
        else:
            env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(self.tmp / "no-aws-config")
        env.update(
            {
                "YOLO_CONFIG_DIR": str(self.tmp / "ultralytics-config"),
                "YOLO_TERMINATION_LOG": str(self.tmp / f"termination-{self.n}.log"),
                "YOLO_TRAINER_S3_RETRY_BUDGET": "5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.sink is not None:
            env["KUBECONFIG"] = str(self.sink.kubeconfig(self.tmp / "kubeconfig.json"))
        env.update(extra)
        return env

    def _write(self, cfg: dict[str, Any]) -> Path:
        path = self.tmp / f"config-{cfg['name']}-{self.n}.json"
        path.write_text(json.dumps(cfg))
        return path

    def run(self, cfg: dict[str, Any], timeout: float = 300, **env_kw: Any) -> Result:
        env = self.env(**env_kw)
        path = self._write(cfg)
        proc = subprocess.run(
            [str(TRAINER), "--config", str(path)], capture_output=True, text=True, env=env, timeout=timeout
        )
        term = Path(env["YOLO_TERMINATION_LOG"])
        return Result(
            proc.returncode,
            proc.stdout,
            proc.stderr,
            term.read_text().strip() if term.exists() else "",
            parse_events(proc.stdout),
        )

    def start(self, cfg: dict[str, Any], **env_kw: Any) -> tuple[subprocess.Popen, Path, Path]:
        """Starts the trainer in the background; stdout goes to a file the test can poll."""
        env = self.env(**env_kw)
        path = self._write(cfg)
        out = self.tmp / f"stdout-{self.n}.txt"
        err = self.tmp / f"stderr-{self.n}.txt"
        proc = subprocess.Popen(
            [str(TRAINER), "--config", str(path)],
            stdout=open(out, "w"),  # noqa: SIM115 - owned by the child
            stderr=open(err, "w"),  # noqa: SIM115
            env=env,
        )
        return proc, out, Path(env["YOLO_TERMINATION_LOG"])




def list_keys(s3_client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def read_json(s3_client, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3_client.exceptions.NoSuchKey:
        return None

