"""The HTTP connector against the real simulator app, served on a loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.testing import capture_logs
from tests.live import serving

from paygate.connectors import (
    BreakerState,
    CaptureRequest,
    Card,
    CircuitBreaker,
    HttpBankConnector,
    Outcome,
    PaymentRequest,
    RefundRequest,
    RetryPolicy,
    VoidRequest,
)
from paygate.connectors.base import failure_code

PAN = "4242424242424242"
CARD = Card(PAN, 12, 2030, "123")


def pay(payment: str, amount: int = 1000, card: Card = CARD) -> PaymentRequest:
    return PaymentRequest(f"{payment}:authorize", amount, "usd", card)


async def test_authorize_capture_refund_void(connector) -> None:
    auth = await connector.authorize(pay("pay_1"))
    assert (auth.outcome, auth.operation, auth.amount, auth.currency) == (
        Outcome.APPROVED,
        "authorize",
        1000,
        "usd",
    )
    assert auth.approved and auth.applied and auth.failure_code is None and auth.bank_id
    cap = await connector.capture(CaptureRequest("pay_1:capture", "pay_1:authorize", 800))
    assert (cap.outcome, cap.amount, cap.currency) == (Outcome.APPROVED, 800, "usd")
    ref = await connector.refund(RefundRequest("pay_1:refund:re_1", "pay_1:capture", 300))
    assert ref.approved and ref.amount == 300
    over = await connector.refund(RefundRequest("pay_1:refund:re_2", "pay_1:capture", 501))
    assert (over.outcome, over.failure_code) == (Outcome.DECLINED, "amount_exceeds_captured")
    assert over.applied is True

    await connector.authorize(pay("pay_2"))
    void = await connector.void(VoidRequest("pay_2:void", "pay_2:authorize"))
    assert (void.outcome, void.amount) == (Outcome.APPROVED, 1000)
    late = await connector.capture(CaptureRequest("pay_2:capture", "pay_2:authorize", 10))
    assert (late.outcome, late.failure_code) == (Outcome.DECLINED, "already_voided")


async def test_sale_and_replay(connector) -> None:
    request = PaymentRequest("pay_s:sale", 500, "eur", CARD)
    first = await connector.sale(request)
    again = await connector.sale(request)
    assert first.approved and again == first


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("4242424242424242", None),
        ("5555555555554444", None),
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
        ("4000000000000127", "incorrect_cvc"),
        ("4000000000000119", "processing_error"),
        ("4000000000009987", "lost_card"),
        ("4000000000009979", "stolen_card"),
        ("4100000000000019", None),
        ("4000000000009235", None),
        ("4242424242424241", "card_declined"),
    ],
)
async def test_test_card_failure_codes(connector, number: str, code: str | None) -> None:
    result = await connector.authorize(pay("pay_card", card=Card(number, 12, 2030, "123")))
    assert result.outcome is (Outcome.APPROVED if code is None else Outcome.DECLINED)
    assert result.failure_code == code
    assert number not in repr(result)


async def test_capture_refusal_codes_pass_through(connector) -> None:
    await connector.authorize(pay("pay_r"))
    over = await connector.capture(CaptureRequest("pay_r:capture", "pay_r:authorize", 1001))
    assert over.failure_code == "amount_exceeds_authorized"
    unknown = await connector.capture(CaptureRequest("pay_x:capture", "pay_x:authorize", 1))
    assert unknown.failure_code == "unknown_authorization"


def test_unexpected_bank_codes_become_processing_error() -> None:
    assert failure_code("do_not_honor") == "processing_error"
    assert failure_code(None) == "processing_error"
    assert failure_code("stolen_card") == "stolen_card"


async def test_lookup(connector) -> None:
    await connector.authorize(pay("pay_l", card=Card("4000000000000002", 12, 2030)))
    found = await connector.lookup("pay_l:authorize")
    assert (found.outcome, found.failure_code, found.operation) == (
        Outcome.DECLINED,
        "card_declined",
        "authorize",
    )
    missing = await connector.lookup("pay_l:capture")
    assert (missing.outcome, missing.operation, missing.applied) == (
        Outcome.NOT_FOUND,
        "capture",
        False,
    )


async def test_503_is_retried_with_jitter_then_unavailable(connector, admin, sleeps) -> None:
    await admin.put("/v1/admin/faults", json={"error_rate": 1})
    result = await connector.authorize(pay("pay_e"))
    assert (result.outcome, result.applied) == (Outcome.UNAVAILABLE, False)
    assert len(sleeps.delays) == 2
    assert 0 <= sleeps.delays[0] <= 0.1 and 0 <= sleeps.delays[1] <= 0.2
    await admin.put("/v1/admin/faults", json={})
    assert (await connector.lookup("pay_e:authorize")).outcome is Outcome.NOT_FOUND
    # The same reference may be sent again once the bank is back.
    assert (await connector.authorize(pay("pay_e"))).approved


class Scripted:
    """The bank behind a script: the first requests get the given statuses, the rest reach the
    bank."""

    def __init__(self, bank: ASGIApp, statuses: list[int]) -> None:
        self.bank = bank
        self.statuses = statuses
        self.sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.sent += 1
            if self.statuses:
                status = self.statuses.pop(0)
                answer = JSONResponse({"error": {"code": "scripted"}}, status_code=status)
                return await answer(scope, receive, send)
        await self.bank(scope, receive, send)


@pytest.fixture
async def connect(sleeps) -> AsyncIterator[Callable[..., HttpBankConnector]]:
    """Connectors made by a test, each to an app served for it on a loopback port; all closed
    after it."""
    made: list[HttpBankConnector] = []
    with ExitStack() as servers:

        def make(app: ASGIApp, path: str = "", key: str = "bank_sk_test") -> HttpBankConnector:
            url = servers.enter_context(serving(app)) + path
            made.append(HttpBankConnector(url, key, sleep=sleeps))
            return made[-1]

        yield make
        for bank in made:
            await bank.aclose()


@pytest.fixture
def scripted(bank_app, connect):
    def make(statuses: list[int]) -> tuple[HttpBankConnector, Scripted]:
        script = Scripted(bank_app, statuses)
        return connect(script), script

    return make


async def test_503_then_success(scripted, sleeps) -> None:
    bank, transport = scripted([503, 503])
    assert (await bank.authorize(pay("pay_ok"))).approved
    assert transport.sent == 3 and len(sleeps.delays) == 2
    assert bank.breaker_state is BreakerState.CLOSED


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_other_5xx_is_unknown_and_not_retried(scripted, sleeps, status: int) -> None:
    bank, transport = scripted([status])
    result = await bank.authorize(pay("pay_5xx"))
    assert (result.outcome, result.applied) == (Outcome.UNKNOWN, None)
    assert transport.sent == 1 and sleeps.delays == []
    assert bank.breaker.consecutive_failures == 1


async def test_lookup_retries_any_transient_failure(scripted) -> None:
    bank, transport = scripted([500, 503])
    assert (await bank.lookup("pay_n:authorize")).outcome is Outcome.NOT_FOUND
    assert transport.sent == 3


async def test_conflicting_reference_is_unknown(connector) -> None:
    await connector.authorize(pay("pay_c", 1000))
    result = await connector.authorize(pay("pay_c", 999))
    assert result.outcome is Outcome.UNKNOWN
    looked = await connector.lookup("pay_c:authorize")
    assert (looked.outcome, looked.amount) == (Outcome.APPROVED, 1000)


async def test_malformed_request_is_declined_invalid_request(connector) -> None:
    result = await connector.authorize(PaymentRequest("pay_m:authorize", 10, "USD", CARD))
    assert (result.outcome, result.failure_code) == (Outcome.DECLINED, "invalid_request")


async def test_wrong_key_is_unavailable_and_not_a_bank_failure(bank_app, sleeps, connect) -> None:
    bank = connect(bank_app, key="wrong")
    result = await bank.authorize(pay("pay_k"))
    assert result.outcome is Outcome.UNAVAILABLE and "API key" in (result.detail or "")
    assert sleeps.delays == [] and bank.breaker.consecutive_failures == 0


async def test_lookup_on_a_wrong_base_path_is_not_not_found(bank_app, connect) -> None:
    bank = connect(bank_app, path="/x")
    assert (await bank.lookup("pay_w:authorize")).outcome is Outcome.UNAVAILABLE


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connect_error_is_retried_then_unavailable_and_leaks_no_card(sleeps) -> None:
    bank = HttpBankConnector(
        f"http://127.0.0.1:{_closed_port()}",
        "bank_sk_test",
        connect_timeout=1,
        retry=RetryPolicy(attempts=4, base_delay_s=0.01),
        breaker=CircuitBreaker(10),
        sleep=sleeps,
    )
    try:
        with capture_logs() as logs:
            result = await bank.authorize(pay("pay_down"))
    finally:
        await bank.aclose()
    assert (result.outcome, result.applied) == (Outcome.UNAVAILABLE, False)
    assert len(sleeps.delays) == 3
    assert bank.breaker.consecutive_failures == 4
    assert logs and logs[-1]["event"] == "bank.call_failed"
    assert PAN not in repr(result) + repr(logs)
    assert "123" not in repr(logs)


async def test_mounted_under_a_path(bank_app, connect) -> None:
    # As in `paygate serve`: the simulator mounted under /bank of another app.
    host = FastAPI()
    host.mount("/bank", bank_app)
    bank = connect(host, path="/bank/")
    assert (await bank.authorize(pay("pay_mount"))).approved
    assert (await bank.lookup("pay_mount:authorize")).approved


async def test_a_full_pool_sends_nothing_and_does_not_blame_the_bank(bank_app, sleeps) -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(0.5)
        await bank_app(scope, receive, send)

    with serving(slow) as url:
        bank = HttpBankConnector(
            url, "bank_sk_test", max_connections=1, pool_timeout=0.05, sleep=sleeps
        )
        try:
            first, second = await asyncio.gather(
                bank.authorize(pay("pay_p1")), bank.authorize(pay("pay_p2"))
            )
            assert (await bank.lookup("pay_p2:authorize")).outcome is Outcome.NOT_FOUND
        finally:
            await bank.aclose()
    assert first.approved
    assert (second.outcome, second.applied) == (Outcome.UNAVAILABLE, False)
    assert second.detail == "connection pool exhausted"
    assert sleeps.delays == [] and bank.breaker.consecutive_failures == 0


async def test_a_connection_the_bank_closed_while_idle_is_not_a_failure(bank_app) -> None:
    # The bank closes an idle kept-alive connection after 0.1 s; the next call must open a new
    # one, not fail on the old.
    with serving(bank_app, timeout_keep_alive=0.1) as url:
        bank = HttpBankConnector(url, "bank_sk_test", retry=RetryPolicy(attempts=1))
        try:
            for n in range(3):
                assert (
                    await bank.sale(PaymentRequest(f"pay_k{n}:sale", 100, "usd", CARD))
                ).approved
                await asyncio.sleep(0.3)
        finally:
            await bank.aclose()
    assert bank.breaker.consecutive_failures == 0


async def test_a_connection_idle_past_keepalive_is_not_used_again(bank_app) -> None:
    # The bank's answer does not say which connection carried it: the server's view does.
    ports: list[int] = []

    async def noting(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            ports.append(scope["client"][1])
        await bank_app(scope, receive, send)

    with serving(noting) as url:
        bank = HttpBankConnector(url, "bank_sk_test", keepalive_s=0.2)
        try:
            for n, pause in enumerate((0.0, 0.05, 0.4)):
                await asyncio.sleep(pause)
                assert (
                    await bank.sale(PaymentRequest(f"pay_i{n}:sale", 100, "usd", CARD))
                ).approved
        finally:
            await bank.aclose()
    # Reused after 0.05 s; after 0.4 s idle (past 0.2), a new connection.
    assert ports[0] == ports[1] and ports[2] != ports[1]


def test_card_repr_masks_the_number() -> None:
    card = Card("4000056655665556", 1, 2031, "4321")
    for text in (repr(card), str(card), f"{card}", repr(pay("pay_1", card=card))):
        assert "4000056655665556" not in text and "4321" not in text
        assert "5556" in text


@given(st.integers(0, 20), st.floats(0, 1))
def test_full_jitter_bounds(retry: int, draw: float) -> None:
    policy = RetryPolicy(attempts=5, base_delay_s=0.05, max_delay_s=1.0)
    assert 0 <= policy.delay(retry, draw) <= min(1.0, 0.05 * 2**retry)
