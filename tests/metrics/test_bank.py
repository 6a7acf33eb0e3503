"""Bank metrics: every operation timed by outcome, failures counted by kind, and the circuit
breaker's state at scrape time, over a real HTTP connector."""

from __future__ import annotations

import socket

from prometheus_client import REGISTRY

from paygate.connectors import Card, HttpBankConnector, RetryPolicy
from paygate.connectors.base import BankResult, Outcome, PaymentRequest
from paygate.connectors.breaker import CircuitBreaker
from paygate.connectors.metered import MeteredConnector, error_kind
from paygate.platform import exposition
from tests.metrics.support import Samples


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_refused_calls_count_as_connect_errors_then_breaker_open() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=3600)
    inner = HttpBankConnector(
        f"http://127.0.0.1:{closed_port()}",
        "key",
        retry=RetryPolicy(attempts=1),
        breaker=breaker,
    )
    bank = MeteredConnector(inner)
    request = PaymentRequest("pay_m1:authorize", 100, "usd", Card("4242424242424242", 12, 2030))
    connect = value("paygate_bank_errors_total", operation="authorize", kind="connect")
    fast = value("paygate_bank_errors_total", operation="authorize", kind="breaker_open")
    timed = value(
        "paygate_bank_request_duration_seconds_count", operation="authorize", outcome="unavailable"
    )
    try:
        for _ in range(3):
            result = await bank.authorize(request)
            assert result.outcome is Outcome.UNAVAILABLE
        state = Samples.parse(exposition.render([exposition.breaker_family()]).decode())
        assert state.get("paygate_bank_circuit_state", state="open") >= 1
    finally:
        await bank.aclose()
    assert value("paygate_bank_errors_total", operation="authorize", kind="connect") - connect == 2
    assert (
        value("paygate_bank_errors_total", operation="authorize", kind="breaker_open") - fast == 1
    )
    count = value(
        "paygate_bank_request_duration_seconds_count", operation="authorize", outcome="unavailable"
    )
    assert count - timed == 3


def test_error_kinds_are_a_fixed_set() -> None:
    def kind(outcome: Outcome, detail: str | None) -> str | None:
        return error_kind(BankResult("pay_1:sale", "sale", outcome, detail=detail))

    assert kind(Outcome.APPROVED, None) is None
    assert kind(Outcome.DECLINED, None) is None
    assert kind(Outcome.NOT_FOUND, "never applied") is None
    assert kind(Outcome.UNKNOWN, "no answer in time (ReadTimeout)") == "timeout"
    assert kind(Outcome.UNKNOWN, "bank answered 502") == "server_error"
    assert kind(Outcome.UNAVAILABLE, "bank answered 503") == "server_error"
    assert kind(Outcome.UNAVAILABLE, "bank answered 429") == "rate_limited"
    assert kind(Outcome.UNKNOWN, "connection lost (RemoteProtocolError)") == "connection_lost"
    # Anything else (a detail with data in it, say) is reduced to the outcome.
    assert kind(Outcome.UNKNOWN, "answer for another reference") == "unknown"
    assert kind(Outcome.UNAVAILABLE, None) == "unavailable"
