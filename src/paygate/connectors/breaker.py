"""A circuit breaker, pure: no I/O, an injectable clock.

    CLOSED ──N consecutive failures──> OPEN ──cool-down elapsed──> HALF_OPEN
      ^                                  ^                           │ one probe let through
      └──────────── probe succeeds ──────┼───────────────────────────┤
                                         └─────── probe fails ───────┘

While OPEN, `allow()` is False and callers fail fast without touching the network. In HALF_OPEN
exactly one call (the probe) is let through at a time; its success closes the breaker, its failure
opens it for another cool-down. A probe that never reports (its task was cancelled and `release`
was not called) stops blocking others after one more cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Listener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Counts consecutive failures of one dependency and stops calls to it while it is down."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Listener | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout_s < 0:
            raise ValueError("reset_timeout_s must not be negative")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._open = False
        self._opened_at = 0.0
        self._failures = 0
        self._probe_since: float | None = None

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cool-down has elapsed reads as half-open."""
        if not self._open:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go out now. In half-open, True only for the single probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._probe_since is not None and now - self._probe_since < self.reset_timeout_s:
            return False
        self._probe_since = now
        return True

    def record_success(self) -> None:
        """A call got an answer from the dependency (approved or declined alike)."""
        before = self.state
        if before is BreakerState.OPEN:
            # A call that left before the breaker opened; only the probe may close it.
            return
        self._failures = 0
        self._probe_since = None
        self._open = False
        self._changed(before)

    def record_failure(self) -> None:
        """A call failed for the dependency's sake: no connection, 5xx, timeout."""
        before = self.state
        self._failures += 1
        if before is BreakerState.HALF_OPEN or (
            before is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._trip()
        self._changed(before)

    def release(self) -> None:
        """A call ended without a verdict on the dependency (cancelled, or failed locally):
        free the probe slot if it held it."""
        self._probe_since = None

    def _trip(self) -> None:
        self._open = True
        self._opened_at = self._clock()
        self._probe_since = None

    def _changed(self, before: BreakerState) -> None:
        after = self.state
        if after is not before and self._on_change is not None:
            self._on_change(before, after)
