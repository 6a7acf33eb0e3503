"""Rate limits and quotas per API key and merchant tier, checked once per authenticated request
(one round trip to Redis at most; none for the `unlimited` tier).

Limits: `requests` (every request of the key), `payments` (requests that bring card data: payment
creation and card tokenization, also per key) and `daily` (the merchant's requests in this mode
per UTC day, all keys together). A refusal is `429 rate_limit_error` with `Retry-After` (RFC 9110
section 10.2.3); every limited response carries the `RateLimit-Policy` and `RateLimit` fields of
draft-ietf-httpapi-ratelimit-headers. When the limiter's store is unreachable the request goes
through: limits protect the gateway, they must not stop payments.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from paygate.edge.gcra import (
    Clock,
    Decision,
    Limiter,
    MemoryLimiter,
    PolicyState,
    Quota,
    Rate,
    RedisLimiter,
)
from paygate.edge.principal import Principal
from paygate.edge.tiers import ADMIN, Tiers
from paygate.errors import RateLimited
from paygate.platform.cache import Cache, RedisCache
from paygate.platform.logging import log

CARD_INTAKE = frozenset({("POST", "/v1/payments"), ("POST", "/v1/tokens")})
DAY_S = 86_400


@dataclass
class LimitStats:
    """Counters for the metrics endpoint: checks made, refused, and let through unchecked."""

    checked: int = 0
    limited: int = 0
    store_errors: int = 0


STATS = LimitStats()


def limiter_for(cache: Cache, clock: Clock | None = None) -> Limiter:
    """Redis limits when the cache is Redis (shared by every process), else in memory."""
    if isinstance(cache, RedisCache):
        return RedisLimiter(cache.script, clock)
    return MemoryLimiter(clock or time.time)


def policies(
    tiers: Tiers, principal: Principal, method: str, path: str, now: float
) -> tuple[list[Rate], Quota | None]:
    tier = tiers.get(principal.tier or (ADMIN if principal.kind == "admin" else tiers.default))
    who = principal.key_id or principal.kind
    rates = []
    if tier.requests_per_s is not None:
        rates.append(Rate("requests", f"rl:{who}:r", tier.requests_per_s, tier.request_burst))
    if tier.payments_per_s is not None and (method, path.rstrip("/")) in CARD_INTAKE:
        rates.append(Rate("payments", f"rl:{who}:p", tier.payments_per_s, tier.payment_burst))
    quota = None
    if tier.daily_quota is not None and principal.merchant_id:
        day = int(now // DAY_S)
        mode = "live" if principal.livemode else "test"
        quota = Quota(
            "daily",
            f"quota:{principal.merchant_id}:{mode}:{day}",
            tier.daily_quota,
            DAY_S,
            (day + 1) * DAY_S * 1_000_000,
        )
    return rates, quota


async def check(
    limiter: Limiter, tiers: Tiers, principal: Principal, method: str, path: str, clock: Clock
) -> Decision | None:
    """Check and consume the request's limits: the decision (None when nothing limits this
    principal, or the limiter's store is unreachable) for the response's headers and `enforce`."""
    rates, quota = policies(tiers, principal, method, path, clock())
    if not rates and quota is None:
        return None
    try:
        decision = await limiter.check(rates, quota)
    except (RedisError, OSError) as exc:
        STATS.store_errors += 1
        log.warning("ratelimit.store_unavailable", error=type(exc).__name__)
        return None
    STATS.checked += 1
    return decision


def enforce(decision: Decision | None) -> None:
    """Refuse a request whose limits are used up: `429` with `Retry-After`."""
    if decision is None or decision.allowed:
        return
    STATS.limited += 1
    retry = max(1, math.ceil(decision.retry_after_s))
    raise RateLimited(_message(decision, retry), headers={"Retry-After": str(retry)})


def _message(decision: Decision, retry: int) -> str:
    if "daily" in decision.denied_by:
        return (
            "This merchant's daily request quota is used up in this mode; "
            f"it resets in {retry} seconds (UTC midnight)."
        )
    if decision.denied_by == ("payments",):
        return "Too many payment or card requests with this API key; retry after a moment."
    return "Too many requests with this API key; retry after a moment."


def _item(name: str, **params: int) -> str:
    # A Structured Field list item (RFC 9651): a String with Integer parameters.
    return f'"{name}"' + "".join(f";{k}={v}" for k, v in params.items())


def headers(states: tuple[PolicyState, ...]) -> list[tuple[bytes, bytes]]:
    """`RateLimit-Policy` (the limits) and `RateLimit` (where this key stands in each)."""
    if not states:
        return []
    policy = ", ".join(_item(s.name, q=s.quota, w=s.window_s) for s in states)
    current = ", ".join(_item(s.name, r=s.remaining, t=s.reset_s) for s in states)
    return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", current.encode())]


class FailedAuthThrottle:
    """Key guessing: failed authentications per client address, on the shared limiter (GCRA,
    `per_min` with a burst of as many). Once a client has used them up it gets `429` without its
    key being looked at until its retry time; each process remembers that locally, so a blocked
    client costs no store round trip, and another process learns it at the client's next
    failure there (the count is shared)."""

    def __init__(self, per_min: int | None, max_items: int = 10_000) -> None:
        self.rate = None if per_min is None else per_min / 60
        self.burst = per_min or 1
        self.max_items = max_items
        self._blocked: dict[str, float] = {}

    def check_blocked(self, client: str, now: float) -> None:
        until = self._blocked.get(client)
        if until is None:
            return
        if now >= until:
            del self._blocked[client]
            return
        self._refuse(until - now)

    async def failed(self, limiter: Limiter, client: str, now: float) -> None:
        """Count one failure; refuse with `429` when this client has used up its allowance."""
        if self.rate is None:
            return
        rate = Rate("auth_failures", f"rl:authfail:{client}", self.rate, self.burst)
        try:
            decision = await limiter.check([rate], None)
        except (RedisError, OSError):
            return
        if decision.allowed:
            return
        if len(self._blocked) >= self.max_items:
            self._blocked.pop(next(iter(self._blocked)))
        self._blocked[client] = now + decision.retry_after_s
        self._refuse(decision.retry_after_s)

    def _refuse(self, retry_after_s: float) -> None:
        STATS.limited += 1
        retry = max(1, math.ceil(retry_after_s))
        raise RateLimited(
            "Too many failed authentications from this address; retry after a while.",
            headers={"Retry-After": str(retry)},
        )
