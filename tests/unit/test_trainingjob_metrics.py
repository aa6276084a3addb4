"""The yolo_trainingjob_* series: one set per TrainingJob from its status, gone when it is deleted."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from yolo_operator.api.reasons import PHASES
from yolo_operator.runtime import metrics as M

pytestmark = pytest.mark.unit

STATUS = {
    "phase": "Training",
    "restartCount": 1,
    "progress": {
        "epoch": 3,
        "epochs": 50,
        "bestMap50-95": 0.31,
        "etaSeconds": 940,
        "metrics": {"map50": 0.52, "map50-95": 0.3, "precision": 0.6, "recall": 0.5, "boxLoss": 1.2,
                    "clsLoss": 2.1, "dflLoss": 1.1},
    },
    "history": [{"epoch": 2, "lr": 0.002}, {"epoch": 3, "lr": 0.0031, "gpuUtil": 91, "gpuMemMib": 2048}],
}  # fmt: skip


def scrape(series: M.TrainingJobSeries) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(series)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def job(ns: str, name: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"trainingjob_namespace": ns, "trainingjob": name, **extra}.items()))


def test_every_series_of_a_training_job_comes_from_its_status() -> None:
    series = M.TrainingJobSeries()
    series.observe("team-a", "helmets", STATUS)
    got = scrape(series)
    assert got[("yolo_trainingjob_epoch", job("team-a", "helmets"))] == 3
    assert got[("yolo_trainingjob_epochs", job("team-a", "helmets"))] == 50
    assert got[("yolo_trainingjob_map50_95", job("team-a", "helmets"))] == 0.3
    assert got[("yolo_trainingjob_box_loss", job("team-a", "helmets"))] == 1.2
    assert got[("yolo_trainingjob_learning_rate", job("team-a", "helmets"))] == 0.0031
    assert got[("yolo_trainingjob_gpu_memory_peak_bytes", job("team-a", "helmets"))] == 2048 * 2**20
    assert got[("yolo_trainingjob_restarts", job("team-a", "helmets"))] == 1
    phases = {p: got[("yolo_trainingjob_phase", job("team-a", "helmets", phase=p))] for p in PHASES}
    assert phases == {p: (1 if p == "Training" else 0) for p in PHASES}
    assert len(got) == len(M.JOB_SERIES) + len(PHASES)  # a fixed set per job: cardinality = jobs x this


def test_series_follow_the_status_and_go_when_the_job_is_deleted() -> None:
    series = M.TrainingJobSeries()
    series.observe("team-a", "helmets", STATUS)
    series.observe("team-b", "cones", {"phase": "Pending"})
    got = scrape(series)
    assert ("yolo_trainingjob_epoch", job("team-b", "cones")) not in got  # nothing reported: no series, not 0
    assert got[("yolo_trainingjob_phase", job("team-b", "cones", phase="Pending"))] == 1
    series.observe(
        "team-a", "helmets", {**STATUS, "phase": "Succeeded", "progress": {**STATUS["progress"], "epoch": 4}}
    )
    got = scrape(series)
    assert got[("yolo_trainingjob_epoch", job("team-a", "helmets"))] == 4
    assert ("yolo_trainingjob_learning_rate", job("team-a", "helmets")) not in got  # history is of epoch 3
    assert got[("yolo_trainingjob_phase", job("team-a", "helmets", phase="Succeeded"))] == 1
    series.observe("team-a", "helmets", None)
    assert {labels for _, labels in scrape(series)} == {
        job("team-b", "cones", phase=p) for p in PHASES
    }  # only the other job's phase set is left


@pytest.mark.parametrize(
    "status", [None, "garbage", {"progress": "x"}, {"progress": {"epoch": True}, "history": [1]}, {"phase": "Nope"}]
)
def test_garbage_in_status_gives_no_series_rather_than_an_error(status) -> None:
    values, phase = M.job_values(status)
    assert set(values) == {None} and phase is None


def test_the_operators_registry_serves_them() -> None:
    M.JOBS.observe("team-z", "served", STATUS)
    try:
        assert b'yolo_trainingjob_map50{trainingjob="served",trainingjob_namespace="team-z"} 0.52' in generate_latest()
    finally:
        M.JOBS.observe("team-z", "served", None)
