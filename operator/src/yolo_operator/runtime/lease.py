"""The pure half of leader election (yolo_operator.runtime.leader runs it): the Lease's timings, what a candidate
does with the Lease it observed, and the Lease specs it writes. No I/O, so the operator's configuration can check
the timings without importing the election's client."""

from __future__ import annotations

import enum
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LEASES = ("coordination.k8s.io/v1", "leases")


@dataclass(frozen=True)
class Timing:
    """client-go's LeaderElectionConfig durations (controller-runtime's defaults: 15 s, 10 s, 2 s)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problem(self) -> str | None:
        """Why these durations are unsafe, or None (client-go's checks: a leader must give up before its lease
        can look expired to anyone, and must be able to retry within its deadline)."""
        lease, renew, retry = self.lease_duration, self.renew_deadline, self.retry_period
        if lease <= renew:
            return f"leaseDuration ({lease:g}s) must be greater than renewDeadline ({renew:g}s)"
        if renew <= 1.2 * retry:
            return f"renewDeadline ({renew:g}s) must be greater than 1.2 x retryPeriod ({retry:g}s)"
        return None


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says (spec), and the resourceVersion it was read at."""

    holder: str = ""  # "" = released
    duration: float = 0.0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str | None = None

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=(lease.get("metadata") or {}).get("resourceVersion"),
        )

    def changed_from(self, other: LeaseRecord | None) -> bool:
        """A new write by anyone (client-go compares the whole record: a renew changes renewTime)."""
        return other is None or (self.holder, self.renew_time, self.resource_version) != (
            other.holder, other.renew_time, other.resource_version)  # fmt: skip


class Action(enum.StrEnum):
    CREATE = "create"  # no Lease yet: create it, holding it
    ACQUIRE = "acquire"  # released or expired: take it over (PUT at the read resourceVersion)
    RENEW = "renew"  # ours: write a new renewTime
    WAIT = "wait"  # someone else's and still valid


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str


def lease_decision(record: LeaseRecord | None, observed_at: float, now: float, identity: str) -> Decision:
    """What a candidate does with the Lease it just read. ``observed_at``: when this process first saw the
    record as it is now (its own monotonic clock); ``now``: the same clock."""
    if record is None:
        return Decision(Action.CREATE, "no lease")
    if record.holder == identity:
        return Decision(Action.RENEW, "held by us")
    if not record.holder:
        return Decision(Action.ACQUIRE, "released")
    unrenewed = now - observed_at
    if unrenewed >= record.duration:
        return Decision(Action.ACQUIRE, f"expired: {record.holder} has not renewed it for {unrenewed:.1f}s")
    return Decision(Action.WAIT, f"held by {record.holder}, valid for {record.duration - unrenewed:.1f}s more")


def deadline_missed(last_renew: float, now: float, timing: Timing) -> bool:
    """The leader's rule: no successful renew for the renew deadline means leadership is lost."""
    return now - last_renew >= timing.renew_deadline


def micro_time(wall: float) -> str:
    """A metav1.MicroTime (RFC 3339 with microseconds, UTC), as the Lease's times are written."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(record: LeaseRecord | None, action: Action, identity: str, timing: Timing, wall: float) -> dict:
    """The spec written for CREATE, ACQUIRE or RENEW (client-go's LeaderElectionRecord)."""
    now = micro_time(wall)
    spec: dict[str, Any] = {
        "holderIdentity": identity,
        "leaseDurationSeconds": round(timing.lease_duration),
        "acquireTime": now,
        "renewTime": now,
        "leaseTransitions": 0 if record is None else record.transitions,
    }
    if record is not None and action is Action.RENEW and record.acquire_time:
        spec["acquireTime"] = record.acquire_time
    elif record is not None and record.holder != identity:
        spec["leaseTransitions"] = record.transitions + 1
    return spec


def released_spec(record: LeaseRecord, wall: float) -> dict:
    """client-go's release: no holder, a 1 s duration, the transitions kept."""
    now = micro_time(wall)
    return {"leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now, "leaseTransitions": record.transitions}


def default_identity(pod_name: str | None = None) -> str:
    """``<pod name>_<random>``: unique per process, and the pod is readable from it (``split('_')[0]``)."""
    base = pod_name or os.environ.get("HOSTNAME") or "yolo-operator"
    return f"{base}_{uuid.uuid4().hex[:8]}"
