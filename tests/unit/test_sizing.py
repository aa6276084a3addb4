"""The one worker and /dev/shm model (yolo_contract.sizing): what the trainer starts always fits the pod."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yolo_contract.sizing import (
    MIB,
    dataloader_workers,
    dataset_limits,
    pod_shm_bytes,
    shm_needed_bytes,
    sized_batch,
)

pytestmark = pytest.mark.unit
GiB = 1024 * MIB


def test_documented_example():
    assert pod_shm_bytes(8, 1, 16, 640) == 896 * MIB  # the module docstring's worked example
    assert pod_shm_bytes(None, 1, 16, 640) == pod_shm_bytes(8, 1, 16, 640)  # Ultralytics' default workers
    assert pod_shm_bytes(0, 1, 16, 640) == 256 * MIB  # main-process loading: base only
    assert pod_shm_bytes(8, 0, 16, 640) == 256 * MIB  # CPU training loads in the main process
    assert pod_shm_bytes(64, 1, 1024, 4096) == 16384 * MIB  # clamped


@pytest.mark.parametrize("auto", [-1, 0.5, 0.9])
def test_autobatch_is_sized_for_the_most_it_can_pick(auto):
    # AutoBatch chooses after the pod is sized: both sides assume Ultralytics' 1024 ceiling.
    assert sized_batch(auto) == 1024
    assert pod_shm_bytes(None, 1, auto, 640) == pod_shm_bytes(None, 1, 1024, 640) == 16384 * MIB
    # 16 GiB fits 3 workers of (2x2x1024x640x640x3 B = 4.7 GiB) each at imgsz 640: fewer workers, no Bus error.
    assert dataloader_workers(None, 1, auto, 640, cpus=16, shm_bytes=16384 * MIB) == 3
    assert dataloader_workers(None, 1, auto, 320, cpus=16, shm_bytes=16384 * MIB) == 8


@pytest.mark.parametrize(
    ("requested", "gpus", "cpus", "shm", "expected"),
    [
        (None, 0, 16, 32 * GiB, 0),  # CPU training: no workers
        (None, 1, 16, 32 * GiB, 8),  # Ultralytics' default
        (None, 1, 4, 32 * GiB, 3),  # one core stays with the training loop
        (None, 4, 16, 32 * GiB, 3),  # 16 CPUs / 4 ranks - 1
        (None, 1, 16, 64 * MIB, 0),  # a container runtime's default 64 MiB /dev/shm: main-process loading
        (None, 1, 16, 1 * GiB, 8),  # (1024 - 256) MiB / 75 MiB per worker = 10, capped at the planned 8
        (None, 1, 16, 512 * MIB, 3),  # (512 - 256) MiB / 75 MiB per worker
        (None, 1, 16, None, 8),  # /dev/shm unknown: CPU bound only
        (12, 1, 32, 32 * GiB, 12),  # an explicit count is honoured where it fits
        (2, 1, 32, 32 * GiB, 2),
    ],
)
def test_dataloader_workers(requested, gpus, cpus, shm, expected):
    assert dataloader_workers(requested, gpus, 16, 640, cpus=cpus, shm_bytes=shm) == expected


@given(
    requested=st.one_of(st.none(), st.integers(0, 64)),
    gpus=st.integers(0, 16),
    batch=st.one_of(st.integers(1, 1024), st.just(-1), st.floats(0.01, 0.99)),  # with AutoBatch's two forms
    imgsz=st.integers(1, 128).map(lambda k: k * 32),
    cpus=st.integers(1, 256),
    min_mib=st.sampled_from([64, 256]),
    max_mib=st.sampled_from([256, 4096, 16384]),
)
def test_what_the_trainer_uses_fits_what_the_operator_allocated(requested, gpus, batch, imgsz, cpus, min_mib, max_mib):
    allocated = pod_shm_bytes(requested, gpus, batch, imgsz, min_mib=min_mib, max_mib=max_mib)
    workers = dataloader_workers(requested, gpus, batch, imgsz, cpus=cpus, shm_bytes=allocated)
    assert workers >= 0
    if workers:
        assert shm_needed_bytes(workers, gpus, batch, imgsz) <= allocated
    # Unclamped, the operator allocates for every worker it planned: only the CPUs can cut them.
    if allocated < max_mib * MIB:
        planned = 0 if gpus == 0 else (8 if requested is None else requested)
        assert workers == min(planned, max(0, cpus // max(1, gpus) - 1))


@given(st.integers(0, 64), st.integers(1, 1024), st.integers(1, 128).map(lambda k: k * 32), st.integers(0, 8))
def test_pod_shm_is_clamped_rounded_and_monotonic(workers, batch, imgsz, gpus):
    s1 = pod_shm_bytes(workers, gpus, batch, imgsz)
    assert 256 * MIB <= s1 <= 16384 * MIB
    assert s1 % (64 * MIB) == 0
    assert pod_shm_bytes(workers + 1, gpus, batch, imgsz) >= s1
    assert pod_shm_bytes(workers, gpus, batch + 1, imgsz) >= s1


def test_dataset_limits_follow_the_scratch_size():
    gib = 1 << 30
    assert dataset_limits(None) == (100 * gib, 5_000_000)  # no scratch size: the fixed defaults
    assert dataset_limits(20 * gib) == (20 * gib, 20 * gib // 4096)  # one file per 4 KiB block
    assert dataset_limits(500 * gib) == (500 * gib, 500 * gib // 4096)  # a bigger volume raises both
    assert dataset_limits(20 * gib, max_bytes=gib) == (gib, 20 * gib // 4096)  # explicit fields win
    assert dataset_limits(None, max_files=10) == (100 * gib, 10)
