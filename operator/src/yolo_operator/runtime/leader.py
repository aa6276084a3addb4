"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's (and so controller-runtime's) semantics.

Two or more replicas run; one leads (its work queue reconciles and writes), the others stand by: they run
kopf's watches and fill their queue with keys, but start no worker, so a takeover begins with every
TrainingJob queued, as a restart would, and with the indexes already listed.

* ``holderIdentity``: the pod's name plus a random suffix (controller-runtime's ``<hostname>_<uuid>``): a
  container restarted in the same pod is a new candidate and waits like any standby.
* Expiry is judged on this process's own clock: a lease is expired ``leaseDurationSeconds`` after this
  process last *saw it change* (client-go's observedTime), never by comparing the holder's renewTime with
  our clock, so clock skew between nodes does not matter.
* A candidate acquires only a lease that is absent, released (no holder) or expired; every write is a PUT
  carrying the resourceVersion it read (optimistic concurrency: of two candidates one gets 409 and waits).
* The leader renews every retry period. If no renew succeeds within the renew deadline, or a read shows
  another holder, the process exits at once (crash-only, as controller-runtime does): it stops writing
  before any standby can consider the lease expired (renew deadline < lease duration), so two leaders never
  act, and the restarted container comes back as a standby.
* On shutdown (SIGTERM: a rolling upgrade, a drain) the leader first stops its workers, then releases the
  lease (no holder, leaseDurationSeconds 1): a standby takes over within a retry period, not a lease duration.

Why not a library: kopf's peering is a priority freeze (same-priority operators all pause, and a KopfPeering
CRD is needed), not leader election; the ``kubernetes`` client's ``leaderelection`` locks a ConfigMap
annotation (no Lease lock), runs in threads on the synchronous client, has no release on shutdown, and
importing ``kubernetes`` costs ~40 MiB the operator keeps out of its process (``kube.py``). This is the
pure decision (``lease_decision``, unit-tested) plus a thin loop over the operator's own HTTP client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from yolo_operator.runtime import kube
from yolo_operator.runtime.kube import ApiError
from yolo_operator.runtime.lease import (
    LEASES,
    Action,
    LeaseRecord,
    Timing,
    deadline_missed,
    lease_decision,
    lease_spec,
    released_spec,
)

log = logging.getLogger("yolo_operator.runtime.leader")

DEFAULT_TIMING = Timing()  # client-go's: 15 s lease, 10 s renew deadline, 2 s retry


def crash(reason: str) -> None:
    """Leadership lost: exit now, before anything else is written (controller-runtime exits the same way)."""
    log.critical("leader election lost (%s): exiting so that the new leader alone acts", reason)
    for h in logging.getLogger().handlers:
        h.flush()
    sys.stderr.flush()
    os._exit(1)


REQUEST_ERRORS: tuple[type[BaseException], ...] = (ApiError, aiohttp.ClientError, TimeoutError, OSError)


class LeaderElector:
    """The loop: candidate until it acquires the Lease (then ``on_started_leading()``), leader until the
    process ends or loses it (then ``on_lost(reason)``, which does not return in production)."""

    def __init__(
        self,
        client: kube.Client,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing = DEFAULT_TIMING,
        on_started_leading: Callable[[], None] = lambda: None,
        on_lost: Callable[[str], None] = crash,
        on_change: Callable[[bool], None] = lambda _: None,
    ):
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.on_started_leading = on_started_leading
        self.on_lost = on_lost
        self.on_change = on_change
        self.leader = False
        self.holder = ""  # the last holder seen
        self._seen: LeaseRecord | None = None
        self._seen_at = 0.0
        self._last_renew = 0.0
        self._task: asyncio.Task | None = None

    @property
    def path(self) -> str:
        return kube.path(LEASES[0], LEASES[1], self.namespace, self.name)

    # --- one round -------------------------------------------------------------------------------------

    async def _read(self) -> LeaseRecord | None:
        lease = await self.client.get_or_none(self.path)
        record = None if lease is None else LeaseRecord.of(lease)
        now = time.monotonic()
        if record is not None and record.changed_from(self._seen):
            self._seen_at = now
        self._seen = record
        self.holder = record.holder if record is not None else ""
        return record

    async def try_acquire_or_renew(self) -> bool:
        """One round: read, decide, write. True when this process holds the lease afterwards."""
        record = await self._read()
        decision = lease_decision(record, self._seen_at, time.monotonic(), self.identity)
        if decision.action is Action.WAIT:
            if self.leader:  # someone else took it: we lost it (our renews failed for longer than we knew)
                self._lose(decision.why)
            return False
        spec = lease_spec(record, decision.action, self.identity, self.timing, time.time())
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
        try:
            if decision.action is Action.CREATE:
                meta["labels"] = {"app.kubernetes.io/part-of": "yolo-operator"}
                written = await self.client.create(kube.path(*LEASES, self.namespace), body)
            else:
                assert record is not None
                meta["resourceVersion"] = record.resource_version
                written = await self.client.request("PUT", self.path, body)
        except ApiError as e:
            if e.status == 409:  # another candidate wrote first (or the leader renewed): read again next round
                log.debug("lease %s/%s: %s lost a race (409)", self.namespace, self.name, decision.action)
                return False
            raise
        self._seen = LeaseRecord.of(written)
        self._seen_at = time.monotonic()
        self.holder = self.identity
        if decision.action is not Action.RENEW:
            log.info("lease %s/%s acquired by %s (%s)", self.namespace, self.name, self.identity, decision.why)
        return True

    # --- the loop --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Runs the loop as a task of the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="leader election")

    def failure(self) -> str | None:
        """Why the loop is no longer running (it never ends by itself), or None."""
        t = self._task
        if t is None or not t.done() or t.cancelled():
            return None
        exc = t.exception()
        return f"the leader election loop has ended: {type(exc).__name__}: {exc}" if exc else "it returned"

    async def run(self) -> None:
        log.info("lease %s/%s: candidate %s (%s)", self.namespace, self.name, self.identity, self.timing)
        while True:
            now = time.monotonic()
            if self.leader and deadline_missed(self._last_renew, now, self.timing):
                self._lose(f"no renew succeeded for {now - self._last_renew:.1f}s")
            # A request may not outlast the leader's deadline (nor, for a candidate, the renew deadline).
            budget = self.timing.renew_deadline - (now - self._last_renew if self.leader else 0.0)
            try:
                held = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=max(budget, 0.1))
            except REQUEST_ERRORS as e:
                log.warning("lease %s/%s: %s", self.namespace, self.name, f"{type(e).__name__}: {e}"[:300])
                held = False
            if held:
                # From when the round began, not when the answer came: the write may have landed (and a standby
                # started counting) at any moment in between, and the deadline must end before its count does.
                self._last_renew = now
                if not self.leader:
                    self.leader = True
                    self.on_change(True)
                    self.on_started_leading()
            # client-go: the leader renews every retry period; candidates retry with jitter (less here than
            # client-go's factor 1.2, to keep takeovers short: two candidates still rarely collide).
            pause = self.timing.retry_period * (1 if self.leader else 1 + 0.2 * random.random())
            await asyncio.sleep(pause)

    def _lose(self, reason: str) -> None:
        self.leader = False
        self.on_change(False)
        self.on_lost(reason)  # production: exits the process

    async def stop(self) -> None:
        """Stops the loop (no more renews, no takeover); call ``release`` after the workers have stopped."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def release(self) -> bool:
        """Gives the lease up if this process holds it: a PUT at the resourceVersion of a fresh read (a renew
        cancelled by ``stop`` may have landed after the last one this process saw)."""
        if not self.leader:
            return False
        self.leader = False
        self.on_change(False)
        try:
            for _ in range(2):  # a 409: a renew landed between the read and the write; read again, once
                record = await asyncio.wait_for(self._read(), timeout=self.timing.renew_deadline)
                if record is None or record.holder != self.identity:
                    return False  # no longer ours: nothing to release
                meta = {"name": self.name, "namespace": self.namespace, "resourceVersion": record.resource_version}
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                        "spec": released_spec(record, time.time())}  # fmt: skip
                try:
                    await asyncio.wait_for(self.client.request("PUT", self.path, body), self.timing.renew_deadline)
                except ApiError as e:
                    if e.status == 409:
                        continue
                    raise
                log.info("lease %s/%s released by %s", self.namespace, self.name, self.identity)
                return True
        except REQUEST_ERRORS as e:  # the standby takes over when the lease expires instead
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, e)
        return False
