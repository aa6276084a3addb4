"""Ultralytics' results.csv, read in one place.

The epoch convention of the trainer: an epoch number is a count of epochs completed (1-based), as in results.csv,
state.json, status and the logs. Ultralytics' own ``trainer.epoch`` and ``ckpt["epoch"]`` are 0-based indexes;
they are converted where they are read (``child.py``), nowhere else.

A row is complete only with its newline: Ultralytics appends a row in one write, but a reader may see it half
written, and the live file can be one row ahead of the ``last.pt`` beside it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

EPOCH = "epoch"
MAP50_95 = "metrics/mAP50-95(B)"


@dataclass(frozen=True)
class ResultsRow:
    epoch: int  # epochs completed
    time: float | None  # seconds since this process started training (Ultralytics' "time" column)
    values: dict[str, str]  # every column, names and values stripped


def _complete(text: str) -> str:
    return text if text.endswith("\n") else text[: text.rfind("\n") + 1]


def parse_results(text: str) -> list[ResultsRow]:
    """The complete rows of a results.csv, in file order (pure); rows without an epoch number are left out."""
    rows = []
    for raw in csv.DictReader(io.StringIO(_complete(text))):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        try:
            epoch = int(float(row[EPOCH]))
        except (KeyError, ValueError):
            continue
        try:
            t = float(row.get("time", "nan"))
        except ValueError:
            t = math.nan
        rows.append(ResultsRow(epoch, t if math.isfinite(t) else None, row))
    return rows


def results_through(text: str, epochs: int) -> str:
    """results.csv as it stood when ``epochs`` epochs were done: the header and those epochs' complete rows, bytes
    unchanged (pure). A run resumed from a checkpoint redoes the epochs after it and would otherwise append their
    rows twice."""
    lines = _complete(text).splitlines(keepends=True)
    if not lines:
        return ""
    kept = [lines[0]]
    for line in lines[1:]:
        try:
            epoch = int(float(line.split(",", 1)[0]))
        except ValueError:
            continue
        if epoch <= epochs:
            kept.append(line)
    return "".join(kept)


def best_from_results(text: str) -> tuple[float | None, int | None]:
    """(best mAP50-95, the epoch that reached it first) over the complete rows."""
    best, best_epoch = None, None
    for row in parse_results(text):
        try:
            m = float(row.values[MAP50_95])
        except (KeyError, ValueError):
            continue
        if math.isfinite(m) and (best is None or m > best):
            best, best_epoch = m, row.epoch
    return best, best_epoch
