"""The processor applying a batch of events (`Processor.on_events`): the screening decisions of
several payments in one transaction, their bank calls side by side, and every other event beside
them. Each payment reaches the outcome it reaches alone, the bank applies each operation once,
and a batch delivered again (whole, or one by one after a failed batch) changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.connectors import PaymentRequest
from paygate.processor.service import Processor
from paygate.runtime import Runtime
from tests.processor.conftest import assessed, create, payment_of
from tests.processor.records import bank_ops, event_payload, events_of, set_faults

CASES = [
    # (card, capture, status, bank operations)
    ("4242424242424242", True, "succeeded", [("sale", "sale", "approved", 1999)]),
    ("4242424242424242", False, "requires_capture", [("authorize", "authorize", "approved", 1999)]),
    ("4000000000000002", True, "failed", [("sale", "sale", "declined", 1999)]),
    ("4100000000000019", True, "failed", []),  # declined by screening: no bank call
    ("4000000000009235", True, "requires_review", [("authorize", "authorize", "approved", 1999)]),
]


async def test_a_batch_of_decisions_reaches_each_payments_own_outcome_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    pids = [await create(client, auth, card={"number": n}, capture=c) for n, c, _, _ in CASES]
    decisions = [await assessed(runtime, pid) for pid in pids]
    # A capture requested of a payment authorized earlier arrives in the same batch.
    held = await create(client, auth, capture=False)
    await processor.on_event(await assessed(runtime, held))
    r = await client.post(f"/v1/payments/{held}/capture", headers=auth)
    assert r.status_code == 202, r.text
    capture = await event_payload(runtime.db, held, "payment.capture_requested")

    # Latency keeps the batch's bank calls in flight together.
    await set_faults(bank, latency_median_ms=50, latency_sigma=0)
    batch = [*decisions, capture, decisions[0]]  # the first decision twice
    await processor.on_events(batch)
    await asyncio.gather(processor.on_events(batch), *(processor.on_event(e) for e in batch))

    for pid, (_, _, status, ops) in zip(pids, CASES, strict=True):
        assert (await payment_of(client, auth, pid))["status"] == status, pid
        assert await bank_ops(bank, pid) == ops, pid
        assert (await events_of(runtime.db, pid)).count("payment.processing") == (1 if ops else 0)
    assert (await payment_of(client, auth, held))["status"] == "succeeded"
    assert [op for _, op, _, _ in await bank_ops(bank, held)] == ["authorize", "capture"]


async def test_a_batch_reads_its_cards_and_cvcs_in_one_statement_each(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bank calls of a batch's decisions take their card numbers and CVCs from two reads of
    the vault, not two per payment, and each call carries its own payment's card and CVC."""
    cards = [("4242424242424242", "123"), ("4000000000000002", "4567"), ("5555555555554444", "987")]
    pids = [await create(client, auth, card={"number": n, "cvc": c}) for n, c in cards]
    decisions = [await assessed(runtime, pid) for pid in pids]
    sent: dict[str, tuple[str, str | None]] = {}
    real_sale = processor.bank.sale

    async def sale(request: PaymentRequest) -> Any:
        sent[request.reference.split(":")[0]] = (request.card.number, request.card.cvc)
        return await real_sale(request)

    monkeypatch.setattr(processor.bank, "sale", sale)
    vault_reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "vault_" in statement:
            vault_reads.append(statement)

    engine = runtime.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        await processor.on_events(decisions)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(vault_reads) == 2
    assert sent == dict(zip(pids, cards, strict=True))
    outcomes = [(await payment_of(client, auth, pid))["status"] for pid in pids]
    assert outcomes == ["succeeded", "failed", "succeeded"]
