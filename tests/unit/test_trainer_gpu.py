"""Per-epoch GPU figures for status.history (yolo_trainer.gpu): the window arithmetic and the sampling cadence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from yolo_trainer.gpu import MIB, GpuSampler, GpuWindow

pytestmark = pytest.mark.unit


def test_window_averages_utilisation_and_keeps_the_busiest_gpus_peak() -> None:
    w = GpuWindow()
    w.add([(90, 10 * MIB), (70, 30 * MIB)])  # two GPUs: mean 80
    w.add([(100, 12 * MIB), (100, 20 * MIB + 1)])  # mean 100; the peak stays GPU 1's 30 MiB
    assert w.take() == (90, 30)
    assert w.take() == (None, None)  # reset: an epoch with no samples says nothing
    w.add([(0, 1)])
    assert w.take() == (0, 1)  # a byte used rounds up to 1 MiB


class FakeNvml:
    """The two NVML calls the sampler makes, answering from a script (a real GPU is checked by bench/gpu.py)."""

    def __init__(self, util: int, used: int, fail_after: int | None = None):
        self.util, self.used, self.calls, self.fail_after = util, used, 0, fail_after

    def nvmlDeviceGetUtilizationRates(self, h):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("GPU is lost")
        return SimpleNamespace(gpu=self.util)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.used)


def test_sampler_samples_at_most_once_per_interval_and_stops_when_nvml_fails() -> None:
    now = [0.0]
    nvml = FakeNvml(55, 5 * MIB, fail_after=2)
    s = GpuSampler(nvml, ["gpu0"], interval=1.0, clock=lambda: now[0])
    for t in (0.0, 0.25, 0.5, 1.0, 1.25, 2.0, 3.0):
        now[0] = t
        s.sample()
    assert nvml.calls == 3  # t=0 and t=1 sampled, t=2 failed; t=3 not tried
    assert s.failed
    assert s.take() == (55, 5)


def test_open_is_none_without_a_gpu() -> None:
    # this machine and the CI have no NVIDIA driver: CPU training carries no GPU figures
    assert GpuSampler.open() is None
