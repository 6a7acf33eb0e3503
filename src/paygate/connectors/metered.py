"""A `BankConnector` that times and counts every operation of the connector it wraps, and
reports that connector's circuit breaker (if it has one) at every scrape."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from paygate.connectors.base import (
    BankConnector,
    BankResult,
    CaptureRequest,
    Outcome,
    PaymentRequest,
    RefundRequest,
    VoidRequest,
)
from paygate.platform import metrics

# A failed call's detail (paygate.connectors.http) → a bounded label value.
_KINDS = (
    ("circuit breaker open", "breaker_open"),
    ("could not connect", "connect"),
    ("no answer in time", "timeout"),
    ("connection lost", "connection_lost"),
    ("connection pool exhausted", "pool_exhausted"),
    ("bank answered 429", "rate_limited"),
    ("bank answered 5", "server_error"),
    ("bank refused the API key", "auth"),
)


def error_kind(result: BankResult) -> str | None:
    """None for an answer (approved, declined, not found); else what went wrong, from a fixed
    set of kinds."""
    if result.outcome not in (Outcome.UNKNOWN, Outcome.UNAVAILABLE):
        return None
    detail = result.detail or ""
    for prefix, kind in _KINDS:
        if detail.startswith(prefix):
            return kind
    return str(result.outcome)


class MeteredConnector:
    def __init__(self, inner: BankConnector) -> None:
        self.inner = inner
        breaker = getattr(inner, "breaker", None)
        if breaker is not None:
            metrics.track_breaker(breaker)

    async def authorize(self, request: PaymentRequest) -> BankResult:
        return await self._timed("authorize", self.inner.authorize(request))

    async def sale(self, request: PaymentRequest) -> BankResult:
        return await self._timed("sale", self.inner.sale(request))

    async def capture(self, request: CaptureRequest) -> BankResult:
        return await self._timed("capture", self.inner.capture(request))

    async def void(self, request: VoidRequest) -> BankResult:
        return await self._timed("void", self.inner.void(request))

    async def refund(self, request: RefundRequest) -> BankResult:
        return await self._timed("refund", self.inner.refund(request))

    async def lookup(self, reference: str) -> BankResult:
        return await self._timed("lookup", self.inner.lookup(reference))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _timed(self, operation: str, call: Awaitable[BankResult]) -> BankResult:
        started = time.perf_counter()
        result = await call
        seconds = time.perf_counter() - started
        metrics.BANK_DURATION.labels(operation, str(result.outcome)).observe(seconds)
        kind = error_kind(result)
        if kind is not None:
            metrics.BANK_ERRORS.labels(operation, kind).inc()
        return result
