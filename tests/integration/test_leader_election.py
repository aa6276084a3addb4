"""Two operator processes with leader election against the bed's API server: one leads, the other stands by
(healthy, writing nothing); SIGKILL the leader and the standby takes the Lease over and reconciles what came
meanwhile, one Job per TrainingJob; SIGTERM the new leader and it releases the Lease at once.

Shorter durations than the chart's (lease 10 s, renew deadline 7 s, retry 1 s) keep it quick; a shorter renew
deadline made a leader on a loaded test machine give up (and exit, as it must) during the burst. The chart's
defaults (15/10/2 s) are measured on the real node by tests/e2e/test_ha.py.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.operator_fixtures import OperatorProcess, apply, get, install_crd, items, trainingjob, wait_for

pytestmark = pytest.mark.integration
LABEL = "yolo-operator.io/training-job"
NOWHERE = {"nodeSelector": {"yolo-operator.io/test": "no-such-node"}}  # pods stay Pending: no churn
BURST = 20


def election_env(namespace: str) -> dict[str, str]:
    return {
        "YOLO_OPERATOR_LEADER_ELECTION": "true",
        "YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE": namespace,
        "YOLO_OPERATOR_LEASE_DURATION_SECONDS": "10",
        "YOLO_OPERATOR_RENEW_DEADLINE_SECONDS": "7",
        "YOLO_OPERATOR_RETRY_PERIOD_SECONDS": "1",
        "YOLO_OPERATOR_LOG_LEVEL": "INFO",
    }


def probe(op: OperatorProcess) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5) as r:
        assert r.status == 200
        return json.loads(r.read())["watches"]


def leader_gauge(op: OperatorProcess) -> float:
    (line,) = [m for m in op.metrics().splitlines() if m.startswith("yolo_operator_leader ")]
    return float(line.split()[1])


def lease(kubectl, namespace: str) -> dict:
    return (get(kubectl, namespace, "lease", f"yolo-operator-{namespace}") or {}).get("spec") or {}


def test_standby_takes_over_after_sigkill_and_release_on_sigterm(kubectl, namespace, kubeconfig, tmp_path):
    install_crd(kubectl)
    ns = namespace
    ops = [OperatorProcess(kubeconfig, [ns], tmp_path / f"op-{i}.log", **election_env(ns)) for i in range(3)]
    try:
        first = ops[0].start()
        wait_for(lambda: probe(first)["leader"], 30, what="the first operator to lead")
        second = ops[1].start()  # Ready as a standby: /healthz answers 200
        standby = probe(second)
        assert standby["leader"] is False and standby["holder"] == lease(kubectl, ns)["holderIdentity"]
        assert (leader_gauge(first), leader_gauge(second)) == (1.0, 0.0)

        apply(kubectl, ns, trainingjob("before", scheduling=NOWHERE))
        wait_for(lambda: items(kubectl, ns, "jobs", f"{LABEL}=before"), 60, what="the leader's Job")
        assert "before ensure" in first.logs() and "ensure:" not in second.logs()  # the standby reconciled nothing

        first.kill()  # SIGKILL: no release; the standby waits for the lease to expire
        apply(kubectl, ns, *(trainingjob(f"burst-{i}", scheduling=NOWHERE) for i in range(BURST)))
        wait_for(lambda: probe(second)["leader"], 60, what="the standby to take the lease over")
        spec = lease(kubectl, ns)
        assert spec["holderIdentity"] == probe(second)["holder"] and spec["leaseTransitions"] >= 1

        def settled():
            tjs = get(kubectl, ns, "trainingjobs")["items"]
            return len(tjs) == BURST + 1 and all((t.get("status") or {}).get("jobName") for t in tjs) and tjs

        wait_for(settled, 120, what="every TrainingJob's Job recorded in its status")
        jobs = get(kubectl, ns, "jobs")["items"]
        owners = [j["metadata"]["labels"][LABEL] for j in jobs]
        assert sorted(owners) == sorted({*owners}) and len(owners) == BURST + 1, "one Job per TrainingJob"
        assert leader_gauge(second) == 1.0

        ops[1].stop()  # SIGTERM: workers stop, then the lease is released
        assert "holderIdentity" not in lease(kubectl, ns), lease(kubectl, ns)
        assert "released by" in second.logs()
        third = ops[2].start()
        wait_for(lambda: probe(third)["leader"], 10, what="a new candidate to take a released lease")
    finally:
        for op in ops:
            op.stop()
        print("--- standby's log (tail) ---\n" + ops[1].logs()[-4000:])
