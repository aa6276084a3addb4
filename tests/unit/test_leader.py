"""yolo_operator.runtime.lease: the Lease decision (client-go's rules), the records it writes, the durations it
accepts."""

from __future__ import annotations

import pytest
from yolo_operator.runtime.config import OperatorConfig
from yolo_operator.runtime.lease import (
    Action,
    LeaseRecord,
    Timing,
    deadline_missed,
    default_identity,
    lease_decision,
    lease_spec,
    micro_time,
    released_spec,
)

pytestmark = pytest.mark.unit
ME, OTHER = "op-a_1234", "op-b_5678"


def held(holder: str, duration: float = 15, rv: str = "7", renew: str = "t1") -> LeaseRecord:
    return LeaseRecord(holder=holder, duration=duration, acquire_time="t0", renew_time=renew, transitions=3,
                       resource_version=rv)  # fmt: skip


def test_no_lease_is_created():
    assert lease_decision(None, 0, 100, ME).action is Action.CREATE


def test_own_lease_is_renewed_whatever_its_age():
    assert lease_decision(held(ME), observed_at=0, now=1000, identity=ME).action is Action.RENEW


def test_released_lease_is_acquired_at_once():
    assert lease_decision(held(""), observed_at=99.9, now=100, identity=ME).action is Action.ACQUIRE


def test_someone_elses_lease_is_waited_for_until_unrenewed_for_its_whole_duration():
    seen = 100.0
    waiting = lease_decision(held(OTHER), seen, seen + 14.9, ME)
    assert waiting.action is Action.WAIT and OTHER in waiting.why
    taken = lease_decision(held(OTHER), seen, seen + 15, ME)
    assert taken.action is Action.ACQUIRE and "expired" in taken.why and OTHER in taken.why


def test_expiry_follows_the_duration_the_holder_wrote():
    assert lease_decision(held(OTHER, duration=60), 0, 30, ME).action is Action.WAIT
    assert lease_decision(held(OTHER, duration=1), 0, 1, ME).action is Action.ACQUIRE  # a released-style 1 s lease


def test_a_renew_is_a_change_that_restarts_the_observed_clock():
    before = held(OTHER, renew="t1", rv="7")
    assert held(OTHER, renew="t2", rv="8").changed_from(before)
    assert not held(OTHER, renew="t1", rv="7").changed_from(before)
    assert held(OTHER).changed_from(None)


def test_lease_record_reads_the_api_object():
    lease = {"metadata": {"resourceVersion": "42"},
             "spec": {"holderIdentity": OTHER, "leaseDurationSeconds": 15, "renewTime": "r", "acquireTime": "a",
                      "leaseTransitions": 2}}  # fmt: skip
    r = LeaseRecord.of(lease)
    assert (r.holder, r.duration, r.renew_time, r.acquire_time, r.transitions, r.resource_version) == (
        OTHER, 15.0, "r", "a", 2, "42")  # fmt: skip
    assert LeaseRecord.of({"metadata": {}, "spec": {}}).holder == ""  # a released lease has no holderIdentity


def test_written_specs_follow_client_go():
    t = Timing()
    created = lease_spec(None, Action.CREATE, ME, t, 0.0)
    assert created == {"holderIdentity": ME, "leaseDurationSeconds": 15, "acquireTime": "1970-01-01T00:00:00.000000Z",
                       "renewTime": "1970-01-01T00:00:00.000000Z", "leaseTransitions": 0}  # fmt: skip
    renewed = lease_spec(held(ME), Action.RENEW, ME, t, 1.5)
    assert renewed["acquireTime"] == "t0" and renewed["renewTime"] == micro_time(1.5)
    assert renewed["leaseTransitions"] == 3  # a renew is no transition
    taken = lease_spec(held(OTHER), Action.ACQUIRE, ME, t, 2.0)
    assert taken["holderIdentity"] == ME and taken["leaseTransitions"] == 4 and taken["acquireTime"] == micro_time(2.0)
    released = released_spec(held(ME), 3.0)
    assert "holderIdentity" not in released and released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 3


def test_the_leader_gives_up_at_the_renew_deadline():
    t = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
    assert not deadline_missed(last_renew=100, now=109.9, timing=t)
    assert deadline_missed(last_renew=100, now=110, timing=t)


def test_unsafe_durations_are_refused_naming_the_setting():
    assert Timing().problem() is None
    assert "leaseDuration" in (Timing(10, 10, 2).problem() or "")
    assert "retryPeriod" in (Timing(15, 2, 2).problem() or "")
    with pytest.raises(ValueError, match="leaderElection"):
        OperatorConfig.from_env({"YOLO_OPERATOR_LEADER_ELECTION": "true", "YOLO_OPERATOR_LEASE_DURATION_SECONDS": "5"})
    # without leader election the durations are not used, and not checked
    assert not OperatorConfig.from_env({"YOLO_OPERATOR_LEASE_DURATION_SECONDS": "5"}).leader_election


def test_config_reads_the_election_settings(tmp_path):
    c = OperatorConfig.from_env({
        "YOLO_OPERATOR_LEADER_ELECTION": "true", "YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE": "ops",
        "YOLO_OPERATOR_LEADER_ELECTION_ID": "rel-yolo-operator", "YOLO_OPERATOR_POD_NAME": "rel-abc",
        "YOLO_OPERATOR_RETRY_PERIOD_SECONDS": "1",
    })  # fmt: skip
    assert (c.leader_election, c.lease_namespace(), c.lease_name, c.pod_name) == (True, "ops", "rel-yolo-operator",
                                                                                   "rel-abc")  # fmt: skip
    assert c.timing() == Timing(15, 10, 1)
    # defaults: one Lease per operator instance, in the ServiceAccount's namespace
    d = OperatorConfig.from_env({"YOLO_OPERATOR_INSTANCE": "team-a"})
    assert d.lease_name == "yolo-operator-team-a" and OperatorConfig().lease_name == "yolo-operator"
    sa = tmp_path / "namespace"
    sa.write_text("yolo-ops\n")
    assert d.lease_namespace(str(sa)) == "yolo-ops"
    with pytest.raises(ValueError, match="YOLO_OPERATOR_LEADER_ELECTION_NAMESPACE"):
        d.lease_namespace(str(tmp_path / "absent"))


def test_identity_is_the_pod_name_and_unique_per_process():
    a, b = default_identity("rel-abc"), default_identity("rel-abc")
    assert a.split("_")[0] == "rel-abc" and a != b
