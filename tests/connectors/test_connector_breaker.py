"""The circuit breaker's state machine, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygate.connectors.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the count is of consecutive failures
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock, changes = Clock(), []
    breaker = CircuitBreaker(1, 10, clock=clock, on_change=lambda a, b: changes.append((a, b)))
    breaker.record_failure()
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert changes == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_failed_probe_opens_for_another_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, 5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now = 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow()


def test_released_or_lost_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()  # the released slot is taken again
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10  # a probe silent for a whole cool-down no longer blocks
    assert breaker.allow()


def test_late_success_does_not_close_an_open_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state is BreakerState.OPEN


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, -1)


EVENTS = st.one_of(
    st.just("allow"),
    st.just("success"),
    st.just("failure"),
    st.just("release"),
    st.floats(0, 20).map(lambda s: ("advance", s)),
)


@given(st.integers(1, 5), st.floats(0.5, 10), st.lists(EVENTS, max_size=60))
def test_invariants_under_any_sequence(threshold: int, cool_down: float, events: list) -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold, cool_down, clock=clock)
    streak = 0  # consecutive failures while closed
    for event in events:
        before = breaker.state
        if isinstance(event, tuple):
            clock.now += event[1]
            continue
        if event == "allow":
            allowed = breaker.allow()
            # Closed always lets calls through; open never does.
            if before is BreakerState.CLOSED:
                assert allowed
            if before is BreakerState.OPEN:
                assert not allowed
            if before is BreakerState.HALF_OPEN and allowed:
                assert not breaker.allow()  # a second concurrent probe is refused
        elif event == "success":
            breaker.record_success()
            if before is not BreakerState.OPEN:
                assert breaker.state is BreakerState.CLOSED
                streak = 0
        elif event == "failure":
            breaker.record_failure()
            if before is BreakerState.CLOSED:
                streak += 1
                expected_open = streak >= threshold
                assert (breaker.state is not BreakerState.CLOSED) == expected_open
            elif before is BreakerState.HALF_OPEN:
                assert breaker.state is BreakerState.OPEN
        else:
            breaker.release()
        if breaker.state is not BreakerState.CLOSED and before is BreakerState.CLOSED:
            streak = 0
