"""Prometheus metrics of the operator (served by prometheus_client on $YOLO_OPERATOR_METRICS_PORT)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from yolo_operator.reasons import PHASES

TRAININGJOBS = Gauge("yolo_operator_trainingjobs", "TrainingJobs seen by this operator, by phase", ["phase"])
RECONCILE_ERRORS = Counter(
    "yolo_operator_reconcile_errors_total",
    "Reconciles (handler=reconcile) and watch-event handler runs that raised",
    ["handler"],
)
RECONCILE_SECONDS = Histogram(
    "yolo_operator_reconcile_duration_seconds",
    "Handler run time",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS_CREATED = Counter("yolo_operator_jobs_created_total", "batch/v1 Jobs created for TrainingJobs")
HANDLERS = ("reconcile", "trainingjob_event", "job_event", "pod_event", "workload_event", "refusal_event")
for _h in HANDLERS:  # export every series from the start (0 rather than absent)
    RECONCILE_ERRORS.labels(handler=_h)
for _p in PHASES:
    TRAININGJOBS.labels(phase=_p).set(0)

_phases: dict[tuple[str, str], str] = {}
_counts: dict[str, int] = dict.fromkeys(PHASES, 0)  # updated only in the event loop: no lock


def observe_phase(namespace: str, name: str, phase: str | None) -> None:
    """Records a TrainingJob's phase (None = deleted) and updates the by-phase gauge (O(1): it runs on
    every TrainingJob event)."""
    old = _phases.pop((namespace, name), None) if phase is None else _phases.get((namespace, name))
    if old == phase:
        return
    if phase is not None:
        _phases[(namespace, name)] = phase
        _counts[phase] = _counts.get(phase, 0) + 1
    if old is not None:
        _counts[old] -= 1
    changed = {p: _counts[p] for p in (old, phase) if p is not None}
    for p, n in changed.items():
        TRAININGJOBS.labels(phase=p).set(n)


@contextmanager
def timed(handler: str, expected: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Times a handler run; exceptions other than ``expected`` ones (e.g. waiting) count as errors."""
    start = time.monotonic()
    try:
        yield
    except expected:
        raise
    except Exception:
        RECONCILE_ERRORS.labels(handler=handler).inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(handler=handler).observe(time.monotonic() - start)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=addr)
