"""A real Prometheus (Debian's package, installed by hack/images.sh with the bed's other packages) for tests:
listening on 127.0.0.1 only, its data in a temporary directory, scraping the targets given, killed afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.operator_fixtures import free_port, wait_for

SCRAPE_INTERVAL = "500ms"  # a tiny CPU run's epochs last a second or two: every epoch is scraped


def binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if not found:
        raise AssertionError(
            "prometheus is not installed: `make testbed-up` (hack/images.sh) installs Debian's prometheus "
            "package, or run `apt-get install -y --no-install-recommends prometheus`"
        )
    return found


class Prometheus:
    def __init__(self, tmp: Path, targets: list[str]):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "yolo-operator", "static_configs": [{"targets": targets}]}],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
        self.log = tmp / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Prometheus:
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [binary(), f"--config.file={self.tmp / 'prometheus.yml'}", f"--storage.tsdb.path={self.tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for(self.ready, 60, what=f"prometheus on {self.url}")
        return self

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
            return r.status == 200

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
