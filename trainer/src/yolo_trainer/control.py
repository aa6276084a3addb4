"""Stop requests: ``spec.stop: true`` on the trainer's own TrainingJob ends training after the current epoch.

A background thread GETs the TrainingJob (the per-job Role allows ``get`` on that one name) every
``$YOLO_TRAINER_STOP_POLL_SECONDS`` (default 10) and sets :attr:`StopWatcher.requested` once ``spec.stop`` is
true; the training hooks then set Ultralytics' ``trainer.stop`` at the end of the epoch, so it validates,
saves, runs its final validation of best.pt and returns normally, and the trainer publishes as after a full
run and exits 0. A failing GET is logged and retried at the next poll: a stop may then arrive late, never
wrongly. The same reads give the operator's ``status.lineage.trainerImage`` (the pod's image digest).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from yolo_contract.trainer_config import StatusTarget

log = logging.getLogger(__name__)

POLL_ENV = "YOLO_TRAINER_STOP_POLL_SECONDS"
DEFAULT_POLL = 10.0


def poll_seconds(environ: dict[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    try:
        return max(0.05, float(env.get(POLL_ENV, DEFAULT_POLL)))
    except ValueError:
        return DEFAULT_POLL


class StopWatcher:
    """Polls ``fetch()`` (the TrainingJob as a dict, or None) in a daemon thread."""

    def __init__(self, fetch: Callable[[], dict[str, Any] | None] | None, interval: float | None = None):
        self.fetch = fetch
        self.interval = poll_seconds() if interval is None else interval
        self.requested = threading.Event()
        self.last: dict[str, Any] | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def poll(self) -> bool:
        """One GET; True when a stop is requested."""
        if self.fetch is None:
            return False
        try:
            body = self.fetch()
        except Exception as e:
            self.failures += 1
            if self.failures <= 3 or self.failures % 20 == 0:
                log.warning("could not read the TrainingJob for a stop request (%d failures): %s", self.failures, e)
            return self.requested.is_set()
        if body is not None:
            self.last = body
            if (body.get("spec") or {}).get("stop") is True and not self.requested.is_set():
                log.warning("spec.stop is true: training ends after the current epoch")
                self.requested.set()
        return self.requested.is_set()

    def start(self) -> StopWatcher:
        if self.fetch is None or self._thread is not None:
            return self
        self.poll()
        self._thread = threading.Thread(target=self._loop, name="stop-watcher", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._closed.wait(self.interval):
            self.poll()

    def close(self) -> None:
        self._closed.set()

    def trainer_image(self) -> str | None:
        """status.lineage.trainerImage as the operator wrote it (read fresh, once more, if it is not seen yet)."""
        def image() -> str | None:
            lineage = ((self.last or {}).get("status") or {}).get("lineage") or {}
            return lineage.get("trainerImage") if isinstance(lineage, dict) else None

        if image() is None:
            self.poll()
        return image()


def kube_fetcher(target: StatusTarget | None, environ: dict[str, str] | None = None):
    """A ``fetch`` for StopWatcher reading the TrainingJob from the API server; None without a cluster."""
    if target is None:
        return None
    try:
        from kubernetes import client

        from .report import kube_api_client

        api_client = kube_api_client(environ)
        if api_client is None:
            return None
        api = client.CustomObjectsApi(api_client)
    except Exception as e:
        log.warning("stop requests disabled: %s", e)
        return None

    def fetch() -> dict[str, Any] | None:
        t = target
        return api.get_namespaced_custom_object(
            t.group, t.version, t.namespace, t.plural, t.name, _request_timeout=5.0
        )

    return fetch
