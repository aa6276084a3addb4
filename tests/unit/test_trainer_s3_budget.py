"""The S3 retry budget (YOLO_TRAINER_S3_RETRY_BUDGET) means: a call gives up with S3Unavailable only once S3
has been failing it for the whole budget, counted from the call's own first failure.

A fake clock stands in for time (the backoff sleeps and slow attempts advance it), so these run in
milliseconds; each scenario is repeated because the backoff delays are random.
"""

from __future__ import annotations

import threading
import time
import types

import pytest
from yolo_contract.exitcodes import S3Unavailable
from yolo_trainer import s3 as s3mod
from yolo_trainer.s3 import S3Store

pytestmark = pytest.mark.unit

BUDGET = 10.0
RUNS = 100  # random backoff paths per scenario
EPS = 1e-6


class FakeTime:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.t += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    # The module's own clock, whatever the store reads it through.
    monkeypatch.setattr(s3mod, "time", types.SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


def store(clock: FakeTime, budget: float = BUDGET) -> S3Store:
    return S3Store(client=None, retry_budget=budget, sleep=clock.sleep)


class Outage:
    """``fn`` for ``S3Store.call``: each attempt takes ``attempt_s`` (then fails while S3 is down), S3 is down
    in [start, end); records when attempts started and failed."""

    def __init__(
        self, clock: FakeTime, start: float, end: float | None, attempt_s: float = 0.0, first_s: float | None = None
    ):
        self.clock, self.start, self.end, self.attempt_s = clock, start, end, attempt_s
        self.first_s = attempt_s if first_s is None else first_s  # how long the first attempt takes
        self.attempts: list[float] = []
        self.failures: list[float] = []

    def down(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def __call__(self) -> str:
        took = self.attempt_s if self.attempts else self.first_s
        self.attempts.append(self.clock.t)
        self.clock.t += took
        if self.down(self.clock.t):
            self.failures.append(self.clock.t)
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"


def test_an_outage_just_shorter_than_the_budget_is_ridden_out(clock):
    for _ in range(RUNS):
        t0 = clock.t
        o = Outage(clock, t0, t0 + BUDGET - 0.01)
        assert store(clock).call("put", "b", "k", o) == "ok"
        assert o.attempts[-1] >= o.end
        # and not by sleeping past the budget: the try that got through came no later than the budget's end
        assert o.attempts[-1] <= o.failures[0] + BUDGET + EPS
        clock.t += 100


def test_a_longer_outage_gives_up_exactly_at_the_budget_not_before(clock):
    for _ in range(RUNS):
        t0 = clock.t
        o = Outage(clock, t0, None)
        with pytest.raises(S3Unavailable) as e:
            store(clock).call("delete", "b", "out/metrics.json", o)
        gave_up = clock.t - o.failures[0]
        assert BUDGET - EPS <= gave_up <= BUDGET + EPS, gave_up
        assert o.attempts[-1] == pytest.approx(o.failures[0] + BUDGET), "no last try at the budget's end"
        msg = str(e.value)
        assert "s3://b/out/metrics.json" in msg and "kept failing for 10.0s (budget 10s)" in msg, msg
        clock.t += 100


def test_the_budget_starts_at_the_first_failure_not_at_the_call(clock):
    """A slow first attempt (an upload streaming for 8 s until the reset) is no outage time."""
    for _ in range(RUNS):
        t0 = clock.t
        # S3 breaks at t0+8, as the first attempt ends, and is back 9.5 s later: ridden out
        o = Outage(clock, t0 + 8, t0 + 8 + 9.5, first_s=8.0)
        assert store(clock).call("upload", "b", "ckpt/last.pt", o) == "ok"
        assert o.failures[0] == pytest.approx(t0 + 8)
        clock.t += 100

        t0 = clock.t
        o = Outage(clock, t0 + 8, None, first_s=8.0)  # down for good: gives up 10 s after t0+8, not t0+10
        with pytest.raises(S3Unavailable):
            store(clock).call("upload", "b", "ckpt/last.pt", o)
        assert clock.t - o.failures[0] >= BUDGET - EPS, clock.t - o.failures[0]
        clock.t += 100


def test_hung_attempts_count_into_the_outage_and_end_it_within_one_attempt(clock):
    """Attempts that each hang 3 s (a connect timeout) before failing: the outage is the time they took."""
    for _ in range(RUNS):
        t0 = clock.t
        o = Outage(clock, t0, None, attempt_s=3.0)
        with pytest.raises(S3Unavailable):
            store(clock).call("get", "b", "k", o)
        gave_up = clock.t - o.failures[0]
        assert BUDGET - EPS <= gave_up <= BUDGET + 3.0 + EPS, gave_up
        clock.t += 100


def test_an_earlier_hiccup_does_not_shorten_a_later_calls_budget(clock):
    s = store(clock)
    for _ in range(RUNS):
        t0 = clock.t
        hiccup = Outage(clock, t0, t0 + 0.01)  # one failed try, then fine
        assert s.call("get", "b", "ds/a.jpg", hiccup) == "ok" and len(hiccup.failures) >= 1
        clock.t += 7.0  # 7 s later (inside a budget counted from the hiccup) a real outage begins
        o = Outage(clock, clock.t, None)
        with pytest.raises(S3Unavailable):
            s.call("delete", "b", "out/metrics.json", o)
        assert clock.t - o.failures[0] >= BUDGET - EPS
        clock.t += 100


def test_a_call_started_during_another_calls_retries_gets_its_own_budget(clock):
    """Call B runs (to its end) inside one of call A's attempts, 4 s into A's outage: as if concurrent."""
    s = store(clock)
    for _ in range(RUNS):
        t0 = clock.t
        b = Outage(clock, t0, None)
        b_gave_up: list[float] = []
        a = Outage(clock, t0, None)

        def fn_a(a=a, b=b, b_gave_up=b_gave_up):
            if clock.t >= a.start + 4 and not b_gave_up:
                with pytest.raises(S3Unavailable):
                    s.call("put", "b", "other", b)
                b_gave_up.append(clock.t)
            return a()

        with pytest.raises(S3Unavailable):
            s.call("put", "b", "k", fn_a)
        assert b_gave_up, "B never ran"
        assert b_gave_up[0] - b.failures[0] >= BUDGET - EPS
        assert clock.t - a.failures[0] >= BUDGET - EPS
        clock.t += 100


def test_concurrent_threads_each_wait_out_their_own_budget():
    """Real threads, real clock and sleep: two calls starting 0.2 s apart in a permanent outage."""
    budget = 0.4
    s = S3Store(client=None, retry_budget=budget)
    results: dict[str, tuple[float, float]] = {}

    def run(name: str, delay: float) -> None:
        time.sleep(delay)
        first: list[float] = []

        def fn():
            now = time.monotonic()
            if not first:
                first.append(now)
            raise ConnectionResetError(104, "reset")

        try:
            s.call("get", "b", name, fn)
        except S3Unavailable:
            results[name] = (first[0], time.monotonic())

    threads = [threading.Thread(target=run, args=(n, d)) for n, d in (("a", 0.0), ("b", 0.2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert set(results) == {"a", "b"}
    for name, (first, gave_up) in results.items():
        assert gave_up - first >= budget - 0.01, (name, gave_up - first)
        assert gave_up - first < budget + 1.0, (name, gave_up - first)


def test_the_configs_retry_budget_wins_over_the_environment(monkeypatch):
    """spec.s3.retryBudgetSeconds reaches the store through the config; the variable is for standalone runs."""
    from yolo_contract.trainer_config import S3Config

    monkeypatch.setenv(s3mod.RETRY_BUDGET_ENV, "7")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    endpoint = {"endpoint": "http://127.0.0.1:9", "region": "us-east-1"}
    assert S3Store.from_config(S3Config(**endpoint, retry_budget_seconds=900)).retry_budget == 900
    assert S3Store.from_config(S3Config(**endpoint)).retry_budget == 7
    monkeypatch.delenv(s3mod.RETRY_BUDGET_ENV)
    assert S3Store.from_config(S3Config(**endpoint)).retry_budget == 120
