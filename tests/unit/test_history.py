"""status.history: the bounded per-epoch points (yolo_contract.progress.downsample) and their size."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yolo_contract.progress import (
    HISTORY_MAX,
    HistoryPoint,
    TrainerReport,
    best_epoch,
    downsample,
    point_from_results,
    rounded,
    stride_for,
)

pytestmark = pytest.mark.unit


def results_row(epoch: int, epochs: int) -> dict[str, str]:
    """A results.csv row as Ultralytics writes it (full float precision), mAP rising with a dip near the end."""
    x = epoch / epochs
    m = 0.6 * (1 - math.exp(-5 * x)) - (0.05 if x > 0.9 else 0.0)
    return {
        "epoch": str(epoch),
        "train/box_loss": f"{1.5 - x:.6f}",
        "train/cls_loss": f"{2.5 * (1 - x) + 0.3:.6f}",
        "train/dfl_loss": f"{1.2 - 0.3 * x:.6f}",
        "metrics/precision(B)": f"{0.3 + 0.5 * x:.6f}",
        "metrics/recall(B)": f"{0.2 + 0.5 * x:.6f}",
        "metrics/mAP50(B)": f"{m * 1.6:.6f}",
        "metrics/mAP50-95(B)": f"{m:.6f}",
        "lr/pg0": f"{0.01 * (1 - 0.99 * x) + 1.23456e-7:.8f}",
    }


def run(epochs: int, gpu: bool = True) -> list[HistoryPoint]:
    return [
        point_from_results(e, results_row(e, epochs), gpu_util=87 if gpu else None, gpu_mem_mib=10240 if gpu else None)
        for e in range(1, epochs + 1)
    ]


def epochs_of(points: list[HistoryPoint]) -> list[int]:
    return [p.epoch for p in points]


def test_1000_epochs_keep_at_most_the_bound_with_first_best_and_last() -> None:
    points = run(1000)
    kept = downsample(points)
    best = max(points, key=lambda p: (p.map50_95, -p.epoch)).epoch
    assert best < 1000  # the dip near the end: the best epoch is not the last one
    assert len(kept) <= HISTORY_MAX
    assert {1, best, 1000} <= set(epochs_of(kept))
    assert epochs_of(kept) == sorted(epochs_of(kept))
    # an even spread: no gap between kept epochs wider than the stride
    assert max(b - a for a, b in zip(epochs_of(kept), epochs_of(kept)[1:], strict=False)) <= stride_for(1000)
    size = len(json.dumps(TrainerReport(history=kept).to_patch()["status"]["history"], separators=(",", ":")))
    print(f"HISTORY-SIZE 1000 epochs: {len(kept)} points, {size} bytes of JSON in status.history")
    assert size < 100 * 1024  # far below etcd's 1.5 MiB object limit


def test_appending_epoch_by_epoch_keeps_what_downsampling_at_once_keeps() -> None:
    points = run(1000)
    kept: list[HistoryPoint] = []
    for i, p in enumerate(points):
        kept = downsample([*kept, p])
        if i % 97 == 0 or i == len(points) - 1:  # spot checks; the last is the one that matters most
            assert kept == downsample(points[: i + 1])
    assert kept == downsample(points)


@given(st.lists(st.floats(0, 1, allow_nan=False) | st.none(), min_size=1, max_size=400), st.integers(4, 60))
def test_any_run_stays_bounded_and_appending_agrees(maps: list[float | None], limit: int) -> None:
    points = [HistoryPoint(epoch=e, map50_95=m) for e, m in enumerate(maps, start=1)]
    kept: list[HistoryPoint] = []
    for p in points:
        kept = downsample([*kept, p], limit)
        assert len(kept) <= limit
    assert kept == downsample(points, limit)
    assert kept[0].epoch == 1 and kept[-1].epoch == len(maps)
    assert best_epoch(points) in (None, *epochs_of(kept))


def test_short_runs_keep_every_epoch() -> None:
    assert epochs_of(downsample(run(HISTORY_MAX))) == list(range(1, HISTORY_MAX + 1))
    assert downsample([]) == []


def test_a_later_point_of_an_epoch_replaces_the_earlier() -> None:
    # an epoch trained again after a restart from an older checkpoint
    kept = downsample(
        [HistoryPoint(epoch=1, map50=0.1), HistoryPoint(epoch=2, map50=0.2), HistoryPoint(epoch=2, map50=0.3)]
    )
    assert [(p.epoch, p.map50) for p in kept] == [(1, 0.1), (2, 0.3)]


def test_a_point_from_results_is_short_and_rounded_and_gpu_figures_are_optional() -> None:
    p = point_from_results(7, {**results_row(7, 10), "metrics/mAP50(B)": "nan"})
    wire = p.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert set(wire) == {"epoch", "precision", "recall", "map50-95", "boxLoss", "clsLoss", "dflLoss", "lr"}
    assert all(len(repr(v)) <= 10 for v in wire.values()), wire  # 4 significant digits
    assert rounded("0.00012345678") == 0.0001235 and rounded("nan") is None and rounded("") is None
    gpu = point_from_results(7, results_row(7, 10), gpu_util=93, gpu_mem_mib=20480)
    assert gpu.model_dump(by_alias=True, exclude_none=True)["gpuUtil"] == 93
    assert gpu.model_dump(by_alias=True, exclude_none=True)["gpuMemMib"] == 20480


def test_the_bound_is_the_crd_bound_and_a_tiny_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        stride_for(10, 3)
    with pytest.raises(ValueError):
        TrainerReport(history=[HistoryPoint(epoch=e) for e in range(1, HISTORY_MAX + 2)])


def test_the_operators_view_of_a_trainingjob_leaves_the_history_out() -> None:
    # the operator keeps a view of every TrainingJob, finished ones too: up to 100 points each would add up
    from yolo_operator.controller.derive import trainingjob_view

    points = [p.model_dump(by_alias=True, exclude_none=True) for p in downsample(run(1000))]
    view = trainingjob_view({"metadata": {"name": "a"}, "status": {"phase": "Training", "history": points}})
    assert view["status"] == {"phase": "Training"}
