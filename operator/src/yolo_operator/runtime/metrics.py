"""Prometheus metrics of the operator (served by prometheus_client on $YOLO_OPERATOR_METRICS_PORT).

``yolo_operator_*``: the operator itself. ``yolo_trainingjob_*``: one series set per TrainingJob, read from its
status (the trainer's progress report and the operator's phase) on every TrainingJob event, so they follow
what ``kubectl get tj`` shows; removed when the TrainingJob is deleted, rebuilt from status after a restart
(the watch lists every TrainingJob again). Cardinality: TrainingJobs x (len(JOB_SERIES) + len(PHASES)).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from yolo_operator.api.reasons import PHASES

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
LEADER = Gauge(
    "yolo_operator_leader",
    "1 while this replica reconciles (it holds the leader Lease, or runs without leader election); 0 on standby",
)
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


# --- per TrainingJob -----------------------------------------------------------------------------------
#: The job's labels. Not ``namespace``: a ServiceMonitor's target carries the operator's own namespace in that
#: label, and OpenShift's user-workload monitoring enforces it (overrideHonorLabels, enforcedNamespaceLabel),
#: which would rename the job's to exported_namespace; these names survive every scrape setup unchanged.
JOB_LABELS = ("trainingjob_namespace", "trainingjob")
MIB = 2**20
#: (metric name, help, status path, scale). The latest point of status.history supplies what progress lacks.
JOB_SERIES: tuple[tuple[str, str, tuple[str, ...], float], ...] = (
    ("yolo_trainingjob_epoch", "Epochs completed (status.progress.epoch)", ("progress", "epoch"), 1),
    ("yolo_trainingjob_epochs", "Epochs requested (status.progress.epochs)", ("progress", "epochs"), 1),
    ("yolo_trainingjob_map50", "mAP50 of the latest epoch", ("progress", "metrics", "map50"), 1),
    ("yolo_trainingjob_map50_95", "mAP50-95 of the latest epoch", ("progress", "metrics", "map50-95"), 1),
    ("yolo_trainingjob_precision", "Box precision of the latest epoch", ("progress", "metrics", "precision"), 1),
    ("yolo_trainingjob_recall", "Box recall of the latest epoch", ("progress", "metrics", "recall"), 1),
    ("yolo_trainingjob_box_loss", "Training box loss of the latest epoch", ("progress", "metrics", "boxLoss"), 1),
    ("yolo_trainingjob_cls_loss", "Training class loss of the latest epoch", ("progress", "metrics", "clsLoss"), 1),
    ("yolo_trainingjob_dfl_loss", "Training DFL loss of the latest epoch", ("progress", "metrics", "dflLoss"), 1),
    ("yolo_trainingjob_best_map50_95", "Best mAP50-95 so far", ("progress", "bestMap50-95"), 1),
    ("yolo_trainingjob_eta_seconds", "Estimated seconds to finish training", ("progress", "etaSeconds"), 1),
    ("yolo_trainingjob_learning_rate", "Learning rate of the latest epoch (lr/pg0)", ("last", "lr"), 1),
    ("yolo_trainingjob_gpu_utilization_percent", "Mean GPU utilisation during the latest epoch (NVML)",
     ("last", "gpuUtil"), 1),
    ("yolo_trainingjob_gpu_memory_peak_bytes", "Peak GPU memory used during the latest epoch (NVML)",
     ("last", "gpuMemMib"), MIB),
    ("yolo_trainingjob_restarts", "Pods replaced so far (status.restartCount)", ("restartCount",), 1),
)  # fmt: skip
PHASE_SERIES = "yolo_trainingjob_phase"


def job_values(status: Mapping[str, Any] | None) -> tuple[tuple[float | None, ...], str | None]:
    """(one value or None per JOB_SERIES, phase) from a TrainingJob's status (pure; tolerates any garbage)."""
    status = status if isinstance(status, Mapping) else {}
    progress = status.get("progress") if isinstance(status.get("progress"), Mapping) else {}
    history = status.get("history") if isinstance(status.get("history"), list) else []
    last = history[-1] if history and isinstance(history[-1], Mapping) else {}
    if last.get("epoch") != progress.get("epoch"):
        last = {}  # a history from before the latest epoch says nothing of it
    roots = {"progress": progress, "last": last}
    values: list[float | None] = []
    for _, _, path, scale in JOB_SERIES:
        node: Any = roots.get(path[0], status.get(path[0]))
        for key in path[1:]:
            node = node.get(key) if isinstance(node, Mapping) else None
        ok = isinstance(node, int | float) and not isinstance(node, bool)
        values.append(node * scale if ok else None)
    phase = status.get("phase")
    return tuple(values), phase if phase in PHASES else None


class TrainingJobSeries:
    """The yolo_trainingjob_* series: a collector that reads the latest values at scrape time. Written in the
    event loop, read by prometheus_client's server thread: each job's entry is replaced whole (atomic)."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], tuple[tuple[float | None, ...], str | None]] = {}

    def observe(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """The job's status as last seen; None: it was deleted (its series go)."""
        if status is None:
            self._jobs.pop((namespace, name), None)
        else:
            self._jobs[(namespace, name)] = job_values(status)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = self._jobs.copy()
        for i, (metric, help_, _, _) in enumerate(JOB_SERIES):
            family = GaugeMetricFamily(metric, help_, labels=JOB_LABELS)
            for key, (values, _) in jobs.items():
                if values[i] is not None:
                    family.add_metric(key, values[i])
            yield family
        family = GaugeMetricFamily(PHASE_SERIES, "1 for the TrainingJob's phase, 0 for the others",
                                   labels=(*JOB_LABELS, "phase"))  # fmt: skip
        for key, (_, phase) in jobs.items():
            if phase is not None:
                for p in PHASES:
                    family.add_metric((*key, p), 1 if p == phase else 0)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # no eager collect at registration


JOBS = TrainingJobSeries()
REGISTRY.register(JOBS)


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
