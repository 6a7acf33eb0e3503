"""GCRA, the generic cell rate algorithm (ITU-T I.371), with a memory and a Redis backend.

Each rate keeps one number per key: the theoretical arrival time (TAT) of the next request. With
an emission interval T = 1/rate and a tolerance of `burst` requests, a request at `now` is let
through when `max(TAT, now) + T - burst·T <= now`, and then moves TAT on by T. That is a leaky
bucket in one stored value: constant memory, no timers, exact at any rate.

A daily quota is a counter per UTC day. One check covers every limit of a request at once, and
only when all of them let it through is any of them consumed: on Redis that is one Lua script,
atomic inside the server, so that the API processes sharing it together stay within the limits,
in one round trip. Times are integer microseconds, the same arithmetic in both backends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Clock = Callable[[], float]  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Rate:
    name: str  # the policy's name in the RateLimit headers
    key: str
    per_s: float
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, round(1_000_000 / self.per_s))

    @property
    def window_s(self) -> int:
        """The time `burst` requests take to be earned back."""
        return max(1, -(-self.burst * self.interval_us // 1_000_000))


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    key: str
    limit: int
    window_s: int
    ends_us: int  # when the current window closes


@dataclass(frozen=True, slots=True)
class PolicyState:
    """One limit as the IETF RateLimit header fields describe it (draft-ietf-httpapi-
    ratelimit-headers): quota `q` over window `w`, remaining `r`, reset in `t` seconds."""

    name: str
    quota: int
    window_s: int
    remaining: int
    reset_s: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float
    states: tuple[PolicyState, ...]
    denied_by: tuple[str, ...] = ()


class Limiter(Protocol):
    backend: str

    async def check(self, rates: Sequence[Rate], quota: Quota | None) -> Decision: ...


def _ceil_s(us: int) -> int:
    return max(0, -(-us // 1_000_000))


def _rate_state(rate: Rate, tat: int, now: int) -> PolicyState:
    interval = rate.interval_us
    remaining = max(0, (now + rate.burst * interval - tat) // interval)
    return PolicyState(rate.name, rate.burst, rate.window_s, remaining, _ceil_s(tat - now))


def decide(
    rates: Sequence[Rate], quota: Quota | None, tats: Sequence[int], used: int, now: int
) -> tuple[Decision, list[int]]:
    """The decision from the stored TATs and quota count; the TATs to store when allowed."""
    new_tats: list[int] = []
    retry = 0
    denied: list[str] = []
    for rate, stored in zip(rates, tats, strict=True):
        tat = max(stored, now)
        new_tat = tat + rate.interval_us
        allow_at = new_tat - rate.burst * rate.interval_us
        if now < allow_at:
            denied.append(rate.name)
            retry = max(retry, allow_at - now)
        new_tats.append(new_tat)
    if quota is not None and used >= quota.limit:
        denied.append(quota.name)
        retry = max(retry, quota.ends_us - now)
    allowed = not denied
    states = [
        _rate_state(rate, new if allowed else max(stored, now), now)
        for rate, stored, new in zip(rates, tats, new_tats, strict=True)
    ]
    if quota is not None:
        count = used + 1 if allowed else used
        remaining = max(0, quota.limit - count)
        states.append(
            PolicyState(
                quota.name, quota.limit, quota.window_s, remaining, _ceil_s(quota.ends_us - now)
            )
        )
    decision = Decision(allowed, retry / 1_000_000, tuple(states), tuple(denied))
    return decision, new_tats


class MemoryLimiter:
    """One process's limits (the embedded default); the clock is injectable for tests."""

    backend = "memory"

    def __init__(self, clock: Clock = time.time, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max = max_keys
        self._tats: dict[str, int] = {}
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window end, count)

    async def check(self, rates: Sequence[Rate], quota: Quota | None) -> Decision:
        now = int(self._clock() * 1_000_000)
        tats = [self._tats.get(rate.key, 0) for rate in rates]
        used = 0
        if quota is not None:
            ends, count = self._counts.get(quota.key, (0, 0))
            used = count if ends > now else 0
        decision, new_tats = decide(rates, quota, tats, used, now)
        if decision.allowed:
            if len(self._tats) >= self._max:
                self._prune(now)
            for rate, tat in zip(rates, new_tats, strict=True):
                self._tats[rate.key] = tat
            if quota is not None:
                self._counts[quota.key] = (quota.ends_us, used + 1)
        return decision

    def _prune(self, now: int) -> None:
        # A TAT in the past is the same as none: forgetting it changes no decision.
        self._tats = {k: v for k, v in self._tats.items() if v > now}
        self._counts = {k: v for k, v in self._counts.items() if v[0] > now}


# KEYS: the rates' keys, then the quota's key when there is one.
# ARGV: now in microseconds ('' for the server's clock, shared by every API process), the number
# of rates, each rate's interval and burst, then the quota's limit and window end.
_CHECK = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local n = tonumber(ARGV[2])
local out = {now}
local tats = {}
local allowed = true
for i = 1, n do
  local interval = tonumber(ARGV[1 + 2 * i])
  local burst = tonumber(ARGV[2 + 2 * i])
  local stored = tonumber(redis.call('GET', KEYS[i]) or '0')
  out[#out + 1] = stored
  local tat = math.max(stored, now)
  tats[i] = tat + interval
  if now < tats[i] - burst * interval then allowed = false end
end
local used = 0
local ends = 0
if #KEYS > n then
  ends = tonumber(ARGV[4 + 2 * n])
  used = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
  if used >= tonumber(ARGV[3 + 2 * n]) then allowed = false end
end
out[#out + 1] = used
if allowed then
  for i = 1, n do
    local ttl = math.ceil((tats[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
  end
  if #KEYS > n then
    redis.call('INCR', KEYS[n + 1])
    redis.call('PEXPIRE', KEYS[n + 1], math.ceil((ends - now) / 1000) + 60000)
  end
end
return out
"""

Script = Callable[[list[str], list[Any]], Awaitable[Any]]


class RedisLimiter:
    """Limits shared by every API process through one Redis; `clock` None uses the server's
    clock, so that processes with skewed clocks still agree."""

    backend = "redis"

    def __init__(self, script: Callable[[str], Script], clock: Clock | None = None) -> None:
        self._check = script(_CHECK)
        self._clock = clock

    async def check(self, rates: Sequence[Rate], quota: Quota | None) -> Decision:
        keys = [rate.key for rate in rates]
        args: list[Any] = [
            "" if self._clock is None else int(self._clock() * 1_000_000),
            len(rates),
        ]
        for rate in rates:
            args += [rate.interval_us, rate.burst]
        if quota is not None:
            keys.append(quota.key)
            args += [quota.limit, quota.ends_us]
        reply = [int(v) for v in await self._check(keys, args)]
        now, tats, used = reply[0], reply[1 : 1 + len(rates)], reply[1 + len(rates)]
        # The same decision the script took, from the same numbers: for the headers.
        decision, _ = decide(rates, quota, tats, used, now)
        return decision
