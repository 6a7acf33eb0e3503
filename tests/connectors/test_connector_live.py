"""The connector against the simulator served by uvicorn on a loopback port: real read timeouts
and a real outage, driven through the admin endpoint."""

from __future__ import annotations

import aiohttp

from paygate.connectors import (
    BreakerState,
    Card,
    CircuitBreaker,
    HttpBankConnector,
    Outcome,
    PaymentRequest,
    RetryPolicy,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CARD = Card("4242424242424242", 12, 2030, "123")


def counting_session() -> tuple[aiohttp.ClientSession, list[str]]:
    """A client session that notes the path of every request it sends."""
    sent: list[str] = []

    async def note(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
        sent.append(params.url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(note)
    return aiohttp.ClientSession(trace_configs=[trace]), sent


async def test_read_timeout_is_unknown_and_lookup_finds_it_applied(live_bank) -> None:
    session, sent = counting_session()
    bank = HttpBankConnector(
        live_bank.url, "bank_sk_test", read_timeout=0.3, session=session, breaker=CircuitBreaker(5)
    )
    async with live_bank.admin() as admin:
        await admin.put("/v1/admin/faults", json={"timeout_rate": 1, "hang_s": 0.8})
        try:
            result = await bank.authorize(PaymentRequest("pay_to:authorize", 1234, "usd", CARD))
        finally:
            await admin.put("/v1/admin/faults", json={})
    try:
        assert (result.outcome, result.applied) == (Outcome.UNKNOWN, None)
        assert sent == ["/v1/authorize"]  # never blindly re-sent
        assert bank.breaker.consecutive_failures == 1
        found = await bank.lookup("pay_to:authorize")
        assert (found.outcome, found.amount, found.currency) == (Outcome.APPROVED, 1234, "usd")
        assert bank.breaker_state is BreakerState.CLOSED
    finally:
        await session.close()


async def test_breaker_opens_when_the_bank_is_down_and_closes_when_back(live_bank) -> None:
    session, sent = counting_session()
    clock = Clock()
    bank = HttpBankConnector(
        live_bank.url,
        "bank_sk_test",
        session=session,
        retry=RetryPolicy(attempts=1),
        breaker=CircuitBreaker(failure_threshold=3, reset_timeout_s=30, clock=clock),
    )

    def sale(n: int) -> PaymentRequest:
        return PaymentRequest(f"pay_b{n}:sale", 100, "usd", CARD)

    async with live_bank.admin() as admin:
        await admin.put("/v1/admin/faults", json={"down": True})
        try:
            for n in range(3):
                assert (await bank.sale(sale(n))).outcome is Outcome.UNAVAILABLE
            assert bank.breaker_state is BreakerState.OPEN
            before = len(sent)
            fast = await bank.sale(sale(3))
            assert fast.outcome is Outcome.UNAVAILABLE and fast.detail == "circuit breaker open"
            assert len(sent) == before  # failed fast, no request sent
        finally:
            await admin.put("/v1/admin/faults", json={"down": False})
        # Nothing was applied while the bank was down.
        audit = await admin.get("/v1/operations", params={"payment": "pay_b0"})
        assert audit.json()["data"] == []

    assert (await bank.sale(sale(4))).outcome is Outcome.UNAVAILABLE  # still cooling down
    clock.now = 30
    assert bank.breaker_state is BreakerState.HALF_OPEN
    probe = await bank.sale(sale(0))
    assert probe.approved
    assert bank.breaker_state is BreakerState.CLOSED
    assert (await bank.sale(sale(5))).approved
    await session.close()
