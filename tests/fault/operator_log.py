"""Reading an operator's log (OperatorProcess.logs()) for exceptions its handlers did not anticipate."""

from __future__ import annotations

import re
from collections.abc import Iterable


def log_records(log: str) -> list[str]:
    """An operator log split into records: a line with a timestamp plus its continuation (traceback) lines."""
    records: list[str] = []
    for line in log.splitlines():
        if records and not re.match(r"\d{4}-\d\d-\d\d ", line):
            records[-1] += "\n" + line
        else:
            records.append(line)
    return records


def operator_problems(log: str, unwritable: Iterable[str] = ()) -> list[str]:
    """Unexpected exceptions in an operator log. kopf logs "failed temporarily" (waiting for a source job)
    and "failed permanently: <reason>" (a PermanentError) without a traceback: those are expected; an
    exception the handlers did not anticipate shows as "failed with an exception" plus a traceback.
    ``unwritable``: TrainingJobs the API server refuses every write to (see test_stored_garbage.py); kopf's
    own failure to store its annotations on them (a 422, logged with a traceback) is expected."""
    tolerated = tuple(f'Error(\'TrainingJob.yolo-operator.io "{n}" is invalid' for n in unwritable)
    bad = []
    for rec in log_records(log):
        first = rec.split("\n", 1)[0]
        if "Throttling for" in first and any(t in first for t in tolerated):
            continue
        if "Traceback" in rec or "failed with an exception" in first or "Unhandled exception" in first:
            bad.append(first[:300])
        elif "failed permanently:" in first and not first.split("failed permanently:", 1)[1].strip():
            bad.append(f"permanent failure without a reason: {first[:300]}")
    return bad
