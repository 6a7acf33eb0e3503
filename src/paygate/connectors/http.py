"""The bank connector over HTTP: one pooled `aiohttp.ClientSession`, safe retries, a circuit
breaker.

What is retried, and why:

- the request never left (connect error, connect timeout) or the bank answered 503 (it applies
  nothing when it does): retried with exponential back-off and full jitter, a few attempts;
- the request left and no answer came (read timeout, dropped connection, other 5xx): NOT
  retried. The outcome is UNKNOWN, and the gateway resolves it with `lookup(reference)`
  (DESIGN.md section 2, "Never charge twice"). Look-ups only read, so they are retried on
  anything transient.

The breaker counts connect errors, 5xx and timeouts; while it is open every call answers
UNAVAILABLE at once without touching the network.

Each request (each try) is a client span, and carries the W3C `traceparent` header, so that the
bank's side of the call joins the payment's trace (paygate.platform.tracing).

The client is aiohttp's: every payment makes at least one bank call, and with some thirty calls
in flight it spends a tenth of the CPU httpx does per request (its parser is compiled, and its
pool does not poll each idle connection's socket before every request; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from paygate.connectors.base import (
    BankResult,
    CaptureRequest,
    Outcome,
    PaymentRequest,
    RefundRequest,
    VoidRequest,
    failure_code,
)
from paygate.connectors.breaker import BreakerState, CircuitBreaker

log = structlog.get_logger("paygate.connectors")
tracer = trace.get_tracer("paygate.connectors")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` in all (the first included); before retry k (from 0) wait a uniform random
    time in [0, min(max_delay_s, base_delay_s * 2**k)] ("full jitter", which spreads retries of
    many callers instead of synchronizing them)."""

    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0

    def delay(self, retry: int, draw: float) -> float:
        return draw * min(self.max_delay_s, self.base_delay_s * 2.0**retry)


@dataclass(frozen=True, slots=True)
class _Reply:
    """The bank's answer: its status and body, read whole."""

    status_code: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON; `ValueError` if it is not."""
        return orjson.loads(self.body)


class PoolExhausted(Exception):
    """No connection to the bank came free within the pool timeout."""


@dataclass(frozen=True, slots=True)
class _Failed:
    """A call that got no usable answer: UNKNOWN or UNAVAILABLE, and why."""

    outcome: Outcome
    detail: str


# (outcome, detail, counts against the breaker, may be retried by an operation)
_Verdict = tuple[Outcome, str, bool, bool]


def _classify(exc: Exception) -> _Verdict:
    """Whether a transport error happened before the request left (not applied) or after."""
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return Outcome.UNAVAILABLE, f"could not connect ({name})", True, True
    if isinstance(exc, PoolExhausted):
        # Our own pool is exhausted: the bank is not at fault and more attempts add load.
        return Outcome.UNAVAILABLE, "connection pool exhausted", False, False
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return Outcome.UNAVAILABLE, f"request not sent ({name})", False, False
    if isinstance(exc, TimeoutError):
        return Outcome.UNKNOWN, f"no answer in time ({name})", True, False
    return Outcome.UNKNOWN, f"connection lost ({name})", True, False


class HttpBankConnector:
    """A `BankConnector` for the bank simulator's HTTP API (and any bank speaking it).

    `base_url` may carry a path (`http://127.0.0.1:8080/bank` when the simulator is mounted in
    the main app). Pass `session` to share a pool or to watch the requests in a test; the
    timeouts apply per request either way. `sleep` and `rand` are seams for tests.

    At most `max_connections` requests are out at once; one that finds none free within
    `pool_timeout` is not sent (UNAVAILABLE, and no mark against the bank). `read_timeout` bounds
    each wait for the answer's bytes, and the three timeouts together bound a whole request.

    A connection idle for more than `keepalive_s` is not used again: the bank closes idle
    connections after a time of its own (the simulator, like uvicorn, after 5 s), and a request
    sent just as the bank closes its connection is lost on the way, an UNKNOWN outcome to look
    up. Below the bank's time, the connector never sends on a connection the bank is closing.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        write_timeout: float = 5.0,
        pool_timeout: float = 2.0,
        max_connections: int = 100,
        keepalive_s: float = 4.0,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + write_timeout + read_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._pool_timeout = pool_timeout
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._slots = asyncio.Semaphore(max_connections)
        self._owns_session = session is None
        self._session = session
        self._retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self._sleep = sleep
        self._rand = rand

    @property
    def breaker_state(self) -> BreakerState:
        """The circuit breaker's state, for metrics and readiness."""
        return self.breaker.state

    async def aclose(self) -> None:
        """Close the connection pool, if this connector created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        # Made at the first request, inside the event loop that will use it.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_s,
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def authorize(self, request: PaymentRequest) -> BankResult:
        """Hold the amount on the card."""
        return await self._pay("authorize", request)

    async def sale(self, request: PaymentRequest) -> BankResult:
        """Authorize and capture in one call."""
        return await self._pay("sale", request)

    async def capture(self, request: CaptureRequest) -> BankResult:
        """Capture all or part of an authorization; the rest is released."""
        body = {
            "reference": request.reference,
            "authorization": request.authorization,
            "amount": request.amount,
        }
        return await self._operate("capture", request.reference, body, request.amount, None)

    async def void(self, request: VoidRequest) -> BankResult:
        """Release an uncaptured authorization."""
        body = {"reference": request.reference, "authorization": request.authorization}
        return await self._operate("void", request.reference, body, None, None)

    async def refund(self, request: RefundRequest) -> BankResult:
        """Refund part or all of a sale or capture."""
        body = {
            "reference": request.reference,
            "payment_reference": request.payment_reference,
            "amount": request.amount,
        }
        return await self._operate("refund", request.reference, body, request.amount, None)

    async def lookup(self, reference: str) -> BankResult:
        """What the bank answered under `reference`; NOT_FOUND if it never applied it."""
        guessed = _operation_of(reference)
        url = f"{self._base}/v1/operations/{quote(reference, safe=':')}"
        got = await self._exchange("GET", url, None, read_only=True)
        if isinstance(got, _Failed):
            return self._failed(guessed, reference, got, None, None)
        if got.status_code == 404 and _error_param(got) == "reference":
            return BankResult(reference, guessed, Outcome.NOT_FOUND, detail="never applied")
        return self._answer(guessed, reference, got, None, None)

    async def _pay(self, operation: str, request: PaymentRequest) -> BankResult:
        body = {
            "reference": request.reference,
            "amount": request.amount,
            "currency": request.currency,
            "card": request.card.as_json(),
        }
        return await self._operate(
            operation, request.reference, body, request.amount, request.currency
        )

    async def _operate(
        self,
        operation: str,
        reference: str,
        body: Mapping[str, Any],
        amount: int | None,
        currency: str | None,
    ) -> BankResult:
        got = await self._exchange("POST", f"{self._base}/v1/{operation}", body, read_only=False)
        if isinstance(got, _Failed):
            return self._failed(operation, reference, got, amount, currency)
        return self._answer(operation, reference, got, amount, currency)

    async def _exchange(
        self, method: str, url: str, body: Mapping[str, Any] | None, *, read_only: bool
    ) -> _Reply | _Failed:
        """Send with the retries that are safe; a response with status below 500 (other than
        429) is returned as is, anything else as `_Failed`."""
        attempt = 0
        while True:
            if not self.breaker.allow():
                return _Failed(Outcome.UNAVAILABLE, "circuit breaker open")
            try:
                response = await self._traced(method, url, body, attempt)
            except (aiohttp.ClientError, OSError, TimeoutError, PoolExhausted) as exc:
                outcome, detail, counts, retry_op = _classify(exc)
                self._verdict(counts)
                failed = _Failed(outcome, detail)
                retryable = retry_op or read_only
            except BaseException:
                # Cancelled (or our own bug): no verdict on the bank's health.
                self.breaker.release()
                raise
            else:
                status = response.status_code
                if status < 500 and status != 429:
                    self.breaker.record_success()
                    return response
                if status in (503, 429):
                    # The bank says it applied nothing; a rate limit is no sign of ill health.
                    self._verdict(status == 503)
                    failed = _Failed(Outcome.UNAVAILABLE, f"bank answered {status}")
                    retryable = True
                else:
                    self.breaker.record_failure()
                    failed = _Failed(Outcome.UNKNOWN, f"bank answered {status}")
                    retryable = read_only
            attempt += 1
            if not retryable or attempt >= self._retry.attempts:
                return failed
            await self._sleep(self._retry.delay(attempt - 1, self._rand()))

    async def _traced(
        self, method: str, url: str, body: Mapping[str, Any] | None, attempt: int
    ) -> _Reply:
        path = url[len(self._base) :] if url.startswith(self._base) else url
        route = "/v1/operations/{reference}" if path.startswith("/v1/operations/") else path
        with tracer.start_as_current_span(f"bank {method} {route}", kind=SpanKind.CLIENT) as span:
            headers = self._headers if body is None else self._json_headers
            if span.is_recording():
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "url.path": path,
                        "paygate.bank.try": attempt + 1,
                    }
                )
            if span.get_span_context().is_valid:
                headers = dict(headers)
                propagate.inject(headers)
            response = await self._send(method, url, body, headers)
            if span.is_recording():
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 500:
                    span.set_status(
                        Status(StatusCode.ERROR, f"bank answered {response.status_code}")
                    )
            return response

    async def _send(
        self, method: str, url: str, body: Mapping[str, Any] | None, headers: dict[str, str]
    ) -> _Reply:
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolExhausted from None
        else:
            await self._slots.acquire()
        try:
            data = None if body is None else orjson.dumps(body)
            async with self._client().request(
                method, url, data=data, headers=headers, timeout=self._timeout
            ) as answer:
                return _Reply(answer.status, await answer.read())
        finally:
            self._slots.release()

    def _verdict(self, counts: bool) -> None:
        if counts:
            self.breaker.record_failure()
        else:
            self.breaker.release()

    def _failed(
        self,
        operation: str,
        reference: str,
        failed: _Failed,
        amount: int | None,
        currency: str | None,
    ) -> BankResult:
        log.warning(
            "bank.call_failed",
            reference=reference,
            operation=operation,
            outcome=str(failed.outcome),
            detail=failed.detail,
            breaker=str(self.breaker.state),
        )
        return BankResult(
            reference,
            operation,
            failed.outcome,
            amount=amount,
            currency=currency,
            detail=failed.detail,
        )

    def _answer(
        self,
        operation: str,
        reference: str,
        response: _Reply,
        amount: int | None,
        currency: str | None,
    ) -> BankResult:
        """Translate a bank response below 500 into a result."""
        status = response.status_code
        if status == 200:
            return self._decision(operation, reference, response, amount, currency)
        if status in (400, 422):
            # Refused as malformed: nothing applied, and sending it again will not help.
            return BankResult(
                reference,
                operation,
                Outcome.DECLINED,
                failure_code="invalid_request",
                amount=amount,
                currency=currency,
                detail=f"bank answered {status}",
            )
        if status == 409:
            # The reference holds a different request: what the bank did under it is for
            # `lookup` to say, and the caller to compare.
            failed = _Failed(Outcome.UNKNOWN, "reference used for a different request")
        elif status in (401, 403):
            failed = _Failed(Outcome.UNAVAILABLE, "bank refused the API key")
        else:
            failed = _Failed(Outcome.UNAVAILABLE, f"bank answered {status}")
        return self._failed(operation, reference, failed, amount, currency)

    def _decision(
        self,
        operation: str,
        reference: str,
        response: _Reply,
        amount: int | None,
        currency: str | None,
    ) -> BankResult:
        try:
            data = response.json()
        except ValueError:
            data = None
        status = data.get("status") if isinstance(data, dict) else None
        if not isinstance(data, dict) or status not in ("approved", "declined"):
            failed = _Failed(Outcome.UNKNOWN, "unreadable answer")
            return self._failed(operation, reference, failed, amount, currency)
        if data.get("reference", reference) != reference:
            failed = _Failed(Outcome.UNKNOWN, "answer for another reference")
            return self._failed(operation, reference, failed, amount, currency)
        answered_amount = data.get("amount")
        answered_currency = data.get("currency")
        answered_op = data.get("operation")
        bank_id = data.get("id")
        return BankResult(
            reference=reference,
            operation=answered_op if isinstance(answered_op, str) else operation,
            outcome=Outcome.APPROVED if status == "approved" else Outcome.DECLINED,
            failure_code=None if status == "approved" else failure_code(data.get("decline_code")),
            amount=answered_amount if isinstance(answered_amount, int) else amount,
            currency=answered_currency if isinstance(answered_currency, str) else currency,
            bank_id=bank_id if isinstance(bank_id, str) else None,
            raw=data,
        )


def _operation_of(reference: str) -> str:
    """The operation named by a contract reference, `<payment id>:<operation>[:<refund id>]`."""
    parts = reference.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else "lookup"


def _error_param(response: _Reply) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    return param if isinstance(param, str) else None
