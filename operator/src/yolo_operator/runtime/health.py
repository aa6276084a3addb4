"""Liveness for /healthz: fail when the operator's watches are dead, so that Kubernetes restarts the pod.

kopf's liveness endpoint only runs the ``@kopf.on.probe`` handlers; it knows nothing about the watch streams.
kopf (1.45) keeps a watch alive through disconnects and refused connections by itself (each request is retried
with backoffs of 1 to 21 s, then the stream is reopened from its last resourceVersion, or re-listed after
410 Gone), but:

* a watcher whose error outlasts those retries (about 54 s of 5xx or 403 answers, or an ERROR event other than
  410) is logged as "Watcher for ... has failed" and never started again: the process lives on, blind to that
  resource (kopf issues #1077, #1276);
* while the API server is unreachable nothing is watched at all.

So the probe "watches" fails when

1. a watcher task that was running has ended other than by cancellation (at once: only a new process
   recovers it). Tasks are recognised by kopf's name "watcher for <resource>@<namespace>"; one that dies
   before the first probe has seen it running goes unnoticed;
2. listing a watched resource (limit 1, the watches' own endpoints and credentials) has failed continuously
   for longer than the grace period, ``$YOLO_OPERATOR_WATCH_GRACE_SECONDS`` (default 60 s): longer than an
   API server restart, so a short outage does not restart the operator, and about kopf's own retry span.
   With the chart's liveness probe (every 20 s, 3 failures) Kubernetes restarts the operator about
   two minutes into an outage.

It reports 200 again with the first successful listing; the watches resume by themselves from their last
resourceVersion, so no status update is lost. It answers promptly either way (a probe handler that raised an
ordinary error would be retried by kopf with a 60 s backoff while /healthz hangs).

With leader election (yolo_operator.runtime.leader) the probe also fails when the election loop has ended (it never
ends by itself), and it says whether this replica leads: a standby answers 200 with "leader": false, since
it is healthy and must be Ready for a rollout of several replicas to proceed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

DEFAULT_GRACE_SECONDS = 60.0
GRACE_ENV = "YOLO_OPERATOR_WATCH_GRACE_SECONDS"
WATCHER_PREFIX = "watcher for "  # kopf's name for a watch-stream task (orchestration.spawn_missing_watchers)
LIST_TIMEOUT_SECONDS = 5


def grace_from_env(environ: Mapping[str, str] | None = None) -> float:
    value = (os.environ if environ is None else environ).get(GRACE_ENV, "").strip()
    return float(value) if value else DEFAULT_GRACE_SECONDS


@dataclass
class WatchHealth:
    """Pure bookkeeping: when the watched endpoints started failing, and the verdict at a given time."""

    grace_seconds: float = DEFAULT_GRACE_SECONDS
    failing_since: float | None = None
    last_error: str = ""

    def record(self, now: float, error: str | None) -> None:
        if error is None:
            self.failing_since, self.last_error = None, ""
        else:
            if self.failing_since is None:
                self.failing_since = now
            self.last_error = error

    def failing_for(self, now: float) -> float:
        return 0.0 if self.failing_since is None else now - self.failing_since

    def problems(self, now: float, dead_watchers: Mapping[str, str]) -> list[str]:
        out = [f"{name} has ended ({why}) and kopf never restarts it" for name, why in sorted(dead_watchers.items())]
        if self.failing_since is not None and self.failing_for(now) > self.grace_seconds:
            out.append(
                f"watched resources unreachable for {self.failing_for(now):.0f}s "
                f"(more than {self.grace_seconds:g}s): {self.last_error}"
            )
        return out


@dataclass
class WatcherTasks:
    """kopf's watcher tasks seen running so far, by name; a done one that was not cancelled is dead."""

    tasks: dict[str, asyncio.Task] = field(default_factory=dict)

    def scan(self, tasks: Iterable[asyncio.Task]) -> None:
        for t in tasks:
            if t.get_name().startswith(WATCHER_PREFIX) and not t.done():
                self.tasks[t.get_name()] = t  # a newer task of the same name replaces a cancelled one

    def running(self) -> int:
        return sum(not t.done() for t in self.tasks.values())

    def dead(self) -> dict[str, str]:
        out = {}
        for name, t in self.tasks.items():
            if t.done() and not t.cancelled():  # cancelled: kopf stopped it on purpose (shutdown, CRD gone)
                exc = t.exception()
                out[name] = f"{type(exc).__name__}: {exc}" if exc else "returned"
        return out


HEALTH = WatchHealth(grace_from_env())
WATCHERS = WatcherTasks()


async def list_watched() -> str | None:
    """Lists each resource the operator watches, where it watches it; None if all answer, else the error."""
    from yolo_operator import GROUP, PLURAL, VERSION
    from yolo_operator.runtime import kube
    from yolo_operator.runtime import wiring as handlers

    api = handlers.controller().client
    try:
        for ns in handlers.controller().config.namespaces or (None,):
            for api_version, plural in ((f"{GROUP}/{VERSION}", PLURAL), ("batch/v1", "jobs"), ("v1", "pods")):
                await api.request("GET", kube.path(api_version, plural, ns), query={"limit": 1},
                                  timeout=LIST_TIMEOUT_SECONDS)  # fmt: skip
    except Exception as e:  # refused, timed out, 5xx, 403: all mean the watches cannot work either
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return None


@kopf.on.probe(id="watches", errors=kopf.ErrorsMode.PERMANENT)
async def probe_watches(**_: Any) -> dict[str, Any]:
    from yolo_operator.runtime import wiring as handlers

    WATCHERS.scan(asyncio.all_tasks())
    error = await list_watched()
    now = time.monotonic()
    HEALTH.record(now, error)
    problems = HEALTH.problems(now, WATCHERS.dead())
    elector = handlers.ELECTOR
    if elector is not None and elector.failure():
        problems.append(str(elector.failure()))
    if problems:
        raise kopf.PermanentError("; ".join(problems))
    result: dict[str, Any] = {"watchers": WATCHERS.running()}
    if elector is not None:
        # A standby is healthy and Ready (a rollout of several replicas waits for Ready pods); it says so here.
        result["leader"] = elector.leader
        result["holder"] = elector.holder
    if error:
        result["failingFor"] = round(HEALTH.failing_for(now), 1)
        result["error"] = error
    return result
