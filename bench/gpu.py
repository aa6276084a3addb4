"""GPU benchmark (item 5): skipped cleanly where there is no CUDA device.

    .venv/bin/python bench/gpu.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, log


def run() -> list[Row]:
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        n = 0
    if n == 0:
        log("no GPU here: GPU benchmark skipped")
        return [Row("GPU benchmark", "-", "-", "-", "-", "skipped", "no GPU here")]
    # A GPU machine: the overhead comparison on it (same method as on CPU, device chosen by the trainer).
    log(f"{n} GPU(s): GPU benchmarks are not implemented yet beyond detection")
    return [Row("GPU benchmark", "-", "-", "-", "-", "skipped", f"{n} GPU(s) found; GPU figures not implemented")]


if __name__ == "__main__":
    for r in run():
        print(f"{r.figure}: {r.met} ({r.note})")
