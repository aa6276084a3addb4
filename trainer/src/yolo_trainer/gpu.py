"""GPU utilisation and memory per epoch, from NVML (nvidia-ml-py), for status.history.

The supervisor samples while the child trains; it holds no CUDA context (NVML reads the driver's counters), so
sampling costs the GPUs nothing. Where NVML cannot start (no driver, CPU training) there is no sampler and the
history points carry no GPU figures. Utilisation is NVML's "percent of time a kernel ran" averaged over the
samples and the visible GPUs; memory is the peak of the busiest GPU (what decides an out-of-memory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 1.0
MIB = 2**20


class GpuWindow:
    """What the samples since the last ``take`` say (pure)."""

    def __init__(self) -> None:
        self._utils: list[float] = []
        self._peak: int | None = None

    def add(self, devices: Sequence[tuple[int, int]]) -> None:
        """One sample: (utilisation percent, memory used in bytes) of each visible GPU."""
        if not devices:
            return
        self._utils.append(sum(u for u, _ in devices) / len(devices))
        busiest = max(m for _, m in devices)
        self._peak = busiest if self._peak is None else max(self._peak, busiest)

    def take(self) -> tuple[int | None, int | None]:
        """(mean utilisation percent, peak MiB) since the last take, None for each without samples; resets."""
        util = round(sum(self._utils) / len(self._utils)) if self._utils else None
        peak = None if self._peak is None else -(-self._peak // MIB)
        self._utils, self._peak = [], None
        return util, peak


class GpuSampler:
    """Samples every visible GPU at most every ``interval`` seconds; ``open()`` is None without NVML or GPUs."""

    def __init__(self, nvml: Any, handles: list[Any], interval: float = SAMPLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.nvml = nvml
        self.handles = handles
        self.interval = interval
        self.clock = clock
        self.window = GpuWindow()
        self._last = -float("inf")
        self.failed = False

    @classmethod
    def open(cls) -> GpuSampler | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as e:  # no driver, no library, no device: CPU training
            log.debug("no GPU figures in status.history: NVML unavailable (%s)", e)
            return None
        if not handles:
            return None
        log.info("sampling %d GPU(s) with NVML for status.history", len(handles))
        return cls(pynvml, handles)

    def sample(self) -> None:
        now = self.clock()
        if self.failed or now - self._last < self.interval:
            return
        self._last = now
        try:
            devices = [
                (int(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu), int(self.nvml.nvmlDeviceGetMemoryInfo(h).used))
                for h in self.handles
            ]
        except Exception as e:  # a GPU lost mid-run: training goes on (or fails) on its own; stop sampling
            log.warning("NVML sampling stopped: %s", e)
            self.failed = True
            return
        self.window.add(devices)

    def take(self) -> tuple[int | None, int | None]:
        return self.window.take()
