from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.routing.breaker import BreakerSettings, CircuitBreaker


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock, **kw: float) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**kw), clock=clock)  # type: ignore[arg-type]


def trip(b: CircuitBreaker, n: int = 5) -> None:
    for _ in range(n):
        b.record_failure()


def test_starts_closed_and_allows() -> None:
    b = CircuitBreaker()
    assert b.state == "closed"
    assert b.allow() is True
    assert b.allow() is True
    snap = b.snapshot()
    assert snap["state"] == "closed"
    assert snap["consecutive_failures"] == 0
    assert snap["error_rate"] is None
    assert snap["opened_for_s"] is None
    assert snap["cooldown_remaining_s"] == 0.0


def test_opens_after_consecutive_failures() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=3)
    b.record_failure()
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open"
    assert b.allow() is False


def test_success_resets_consecutive_count() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=3, min_requests=1000)
    for _ in range(10):
        b.record_failure()
        b.record_failure()
        b.record_success()
    assert b.state == "closed"
    assert b.snapshot()["consecutive_failures"] == 0


def test_cooldown_moves_to_half_open_on_read() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown_s=10)
    b.record_failure()
    clock.advance(9.99)
    assert b.state == "open"
    snap = b.snapshot()
    assert snap["cooldown_remaining_s"] == pytest.approx(0.01)
    assert snap["opened_for_s"] == pytest.approx(9.99)
    clock.advance(0.01)
    assert b.state == "half_open"
    assert b.snapshot()["cooldown_remaining_s"] == 0.0


def test_allow_performs_the_transition_too() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown_s=5)
    b.record_failure()
    clock.advance(5)
    assert b.allow() is True  # the probe, without reading .state first
    assert b.state == "half_open"


def test_half_open_admits_exactly_one_probe() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown_s=1)
    b.record_failure()
    clock.advance(1)
    assert b.allow() is True
    assert b.snapshot()["probe_in_flight"] is True
    assert b.allow() is False
    assert b.allow() is False


def test_probe_success_closes_and_resets() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=2, cooldown_s=1)
    trip(b, 2)
    clock.advance(1)
    assert b.allow()
    b.record_success()
    assert b.state == "closed"
    snap = b.snapshot()
    assert snap["consecutive_failures"] == 0
    assert snap["window_requests"] == 0
    assert snap["probe_in_flight"] is False
    assert b.allow() and b.allow()
    b.record_failure()  # one failure after reset does not re-open a threshold-2 breaker
    assert b.state == "closed"


def test_probe_failure_reopens_with_new_cooldown() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown_s=10)
    b.record_failure()
    clock.advance(10)
    assert b.allow()
    clock.advance(3)
    b.record_failure()
    assert b.state == "open"
    clock.advance(9.9)
    assert b.state == "open"
    assert b.allow() is False
    clock.advance(0.1)
    assert b.state == "half_open"


def test_release_probe_lets_another_probe_through() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown_s=1)
    b.record_failure()
    clock.advance(1)
    assert b.allow()
    assert not b.allow()
    b.release_probe()
    assert b.state == "half_open"
    assert b.allow()
    assert not b.allow()


def test_release_probe_is_harmless_when_closed_or_open() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown_s=1)
    b.release_probe()
    assert b.state == "closed"
    b.record_failure()
    b.release_probe()
    assert b.state == "open"
    assert not b.allow()


def test_outcomes_while_open_are_ignored() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown_s=10)
    b.record_failure()
    clock.advance(6)
    b.record_success()  # a request that started before the breaker opened
    assert b.state == "open"
    b.record_failure()  # does not extend the cooldown
    clock.advance(4)
    assert b.state == "half_open"


def test_error_rate_opens_once_window_has_min_requests() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=100, error_rate=0.5, min_requests=10)
    for _ in range(4):
        b.record_success()
        b.record_failure()
    assert b.state == "closed"  # 8 outcomes < min_requests
    b.record_success()
    b.record_failure()  # 10 outcomes, 5 failures -> 50 %
    assert b.state == "open"


def test_error_rate_below_threshold_stays_closed() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=100, error_rate=0.5, min_requests=10)
    for _ in range(30):
        b.record_success()
        b.record_success()
        b.record_failure()
    assert b.state == "closed"
    assert b.snapshot()["error_rate"] == pytest.approx(1 / 3)


def test_window_forgets_old_outcomes() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=100, error_rate=0.5, min_requests=10, window_s=60)
    for _ in range(6):
        b.record_failure()
        b.record_success()
        b.record_success()
    assert b.snapshot()["window_requests"] == 18
    assert b.state == "closed"
    clock.advance(61.5)
    snap = b.snapshot()
    assert snap["window_requests"] == 0
    assert snap["window_failures"] == 0
    for _ in range(5):
        b.record_success()
        b.record_failure()
    # 5 of 10 fresh outcomes failed; counting the old ones it would be 11 of 28
    assert b.state == "open"


def test_window_keeps_recent_outcomes() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=100, error_rate=0.5, min_requests=10, window_s=60)
    for _ in range(5):
        b.record_failure()
        b.record_success()
        clock.advance(5)
    snap = b.snapshot()
    assert snap["window_requests"] == 10
    assert snap["window_failures"] == 5


@pytest.mark.parametrize(
    "kw",
    [
        {"failure_threshold": 0},
        {"error_rate": 0.0},
        {"error_rate": 1.5},
        {"window_s": 0.0},
        {"min_requests": 0},
        {"cooldown_s": -1.0},
    ],
)
def test_invalid_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerSettings(**kw)  # type: ignore[arg-type]


# -- property: the state machine matches a reference model ------------------------------------

OPS = st.lists(
    st.one_of(
        st.sampled_from(["allow", "success", "failure", "release", "state"]),
        st.floats(min_value=0.0, max_value=20.0).map(lambda dt: ("advance", dt)),
    ),
    max_size=80,
)


class Reference:
    """A straightforward model of the documented state machine (consecutive failures only)."""

    def __init__(self, threshold: int, cooldown: float, clock: FakeClock) -> None:
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.state, self.consecutive, self.opened_at, self.probe = "closed", 0, 0.0, False

    def observe(self) -> str:
        if self.state == "open" and self.clock() - self.opened_at >= self.cooldown:
            self.state, self.probe = "half_open", False
        return self.state

    def open(self) -> None:
        self.state, self.opened_at, self.probe = "open", self.clock(), False

    def allow(self) -> bool:
        s = self.observe()
        if s == "closed":
            return True
        if s == "open" or self.probe:
            return False
        self.probe = True
        return True

    def success(self) -> None:
        if self.state == "half_open":
            self.state, self.consecutive, self.probe = "closed", 0, False
        elif self.state == "closed":
            self.consecutive = 0

    def failure(self) -> None:
        if self.state == "half_open":
            self.open()
        elif self.state == "closed":
            self.consecutive += 1
            if self.consecutive >= self.threshold:
                self.open()

    def release(self) -> None:
        if self.state == "half_open":
            self.probe = False


@settings(max_examples=200, deadline=None)
@given(ops=OPS, threshold=st.integers(1, 4), cooldown=st.sampled_from([0.0, 1.0, 7.5]))
def test_state_machine_matches_reference(ops: list[object], threshold: int, cooldown: float) -> None:
    clock = FakeClock()
    b = CircuitBreaker(
        BreakerSettings(failure_threshold=threshold, cooldown_s=cooldown, min_requests=10_000), clock=clock
    )
    ref = Reference(threshold, cooldown, clock)
    probes_without_verdict = 0
    for op in ops:
        if isinstance(op, tuple):
            clock.advance(op[1])
        elif op == "allow":
            before = b.state
            got = b.allow()
            assert got == ref.allow()
            if before == "open":
                assert got is False
            if got and b.state == "half_open":
                probes_without_verdict += 1
                assert probes_without_verdict == 1
        elif op == "success":
            b.record_success()
            ref.success()
        elif op == "failure":
            b.record_failure()
            ref.failure()
        elif op == "release":
            b.release_probe()
            ref.release()
        else:
            assert b.state == ref.observe()
        if op in ("success", "failure", "release") or b.state != "half_open":
            probes_without_verdict = 0
        assert b.state in ("closed", "open", "half_open")
        assert b.state == ref.observe()
        assert b.snapshot()["probe_in_flight"] == ref.probe
