"""The processor applying a batch of events (`Processor.on_events`): the screening decisions of
several payments in one transaction, their bank calls side by side, the answers that come back
together applied in one transaction, and every other event beside them. Each payment reaches the
outcome it reaches alone, the bank applies each operation once, and a batch delivered again
(whole, or one by one after a failed batch) changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.connectors import PaymentRequest
from paygate.ledger.models import Pricing
from paygate.ledger.tables import balance_transactions
from paygate.platform.db.tables import vault_cvcs
from paygate.processor import answers
from paygate.processor.service import Processor
from paygate.runtime import Runtime
from tests.conftest import ADMIN_KEY, new_merchant
from tests.processor.conftest import assessed, create, hold_sales, payment_of
from tests.processor.records import attempt_states, bank_ops, event_payload, events_of, set_faults
from tests.support import statements

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


async def test_a_batch_reads_its_cards_and_cvcs_in_one_statement(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bank calls of a batch's decisions take their card numbers and CVCs from one read of
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
    with statements(runtime.db) as seen:
        await processor.on_events(decisions)
    assert len([s for s in seen if s.startswith("SELECT") and "vault_" in s]) == 1
    assert sent == dict(zip(pids, cards, strict=True))
    outcomes = [(await payment_of(client, auth, pid))["status"] for pid in pids]
    assert outcomes == ["succeeded", "failed", "succeeded"]


def count_transactions(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    opened: list[int] = []
    real = runtime.db.transaction

    @asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        opened.append(1)
        async with real() as conn:
            yield conn

    monkeypatch.setattr(runtime.db, "transaction", transaction)
    return opened


async def test_answers_that_come_back_together_are_applied_in_one_transaction(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cards = ["4242424242424242", "4000000000000002", "5555555555554444", "4242424242424242"]
    pids = [await create(client, auth, card={"number": n}) for n in cards]
    decisions = [await assessed(runtime, pid) for pid in pids]
    hold_sales(processor, monkeypatch, len(pids))
    opened = count_transactions(runtime, monkeypatch)
    with statements(runtime.db) as seen:
        await processor.on_events(decisions)

    assert len(opened) == 2  # the decisions, then every answer (one transaction each before)
    # The merchant's terms, read with the answers' lock of their payments: no read of their own.
    assert len([s for s in seen if "JOIN merchant_terms" in s]) == 1
    assert [s for s in seen if "FROM merchant_terms" in s] == []
    # Each transaction's log entries go in one statement (`deferred`), not one per entry: an
    # insert of their own on SQLite, in the one statement of every table on PostgreSQL.
    assert len([s for s in seen if "INSERT INTO transaction_log" in s]) == 2
    # The decisions' four attempts too: with the first transaction's other rows, before the
    # bank calls that follow its commit.
    assert len([s for s in seen if "INSERT INTO bank_attempts" in s]) == 1
    # The answers' four CVCs are destroyed together: on PostgreSQL in the answers' one insert,
    # on SQLite in one delete of their own.
    # Their attempts' outcomes too (on SQLite one update for the four).
    assert len([s for s in seen if "UPDATE bank_attempts" in s]) == 1
    destroyed = [s for s in seen if "DELETE FROM vault_cvcs" in s]
    assert len(destroyed) == 1
    assert destroyed[0].startswith("DELETE" if runtime.db.is_sqlite else "WITH")
    async with runtime.db.read() as conn:
        kept = (await conn.execute(sa.select(vault_cvcs.c.payment_id))).scalars().all()
    assert not set(kept) & set(pids)
    outcomes = [(await payment_of(client, auth, pid))["status"] for pid in pids]
    assert outcomes == ["succeeded", "failed", "succeeded", "succeeded"]
    for pid, status in zip(pids, outcomes, strict=True):
        assert await bank_ops(bank, pid) == [
            ("sale", "sale", "approved" if status == "succeeded" else "declined", 1999)
        ]
        assert (await events_of(runtime.db, pid))[-1] == f"payment.{status}"
    # Delivered again, the batch changes nothing.
    await processor.on_events(decisions)
    assert [(await payment_of(client, auth, pid))["status"] for pid in pids] == outcomes
    assert [len(await bank_ops(bank, pid)) for pid in pids] == [1, 1, 1, 1]


async def test_an_answer_that_cannot_be_applied_fails_alone(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch's transaction fails on one answer: the others are applied each in its own,
    and the one that failed is applied when its event comes again, through a bank lookup,
    with no second sale."""
    pids = [await create(client, auth) for _ in range(3)]
    decisions = [await assessed(runtime, pid) for pid in pids]
    bad = pids[1]
    hold_sales(processor, monkeypatch, len(pids))
    real_apply_final = answers.apply_final

    async def apply_final(*args: Any, **kwargs: Any) -> Any:
        if args[3]["id"] == bad:  # the payment's row
            raise RuntimeError("cannot apply")
        return await real_apply_final(*args, **kwargs)

    monkeypatch.setattr(answers, "apply_final", apply_final)
    with pytest.raises(RuntimeError, match="cannot apply"):
        await processor.on_events(decisions)
    statuses = {pid: (await payment_of(client, auth, pid))["status"] for pid in pids}
    assert statuses == {pids[0]: "succeeded", bad: "processing", pids[2]: "succeeded"}
    assert list((await attempt_states(runtime.db, bad)).values()) == ["pending"]

    monkeypatch.setattr(answers, "apply_final", real_apply_final)
    await processor.on_events([decisions[1]])
    assert (await payment_of(client, auth, bad))["status"] == "succeeded"
    assert [op for _, op, _, _ in await bank_ops(bank, bad)] == ["sale"]


async def test_a_batchs_cached_reads_are_dropped_at_the_versions_it_wrote(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decisions' and the answers' transactions record the versions they write: their
    cached reads are dropped with no read of the versions back, and a status read then answers
    the outcome."""
    monkeypatch.setattr(runtime, "read_cache", True)
    pids = [await create(client, auth) for _ in range(3)]
    before = [await payment_of(client, auth, pid) for pid in pids]  # cached, `pending`
    decisions = [await assessed(runtime, pid) for pid in pids]
    with statements(runtime.db) as seen:
        await processor.on_events(decisions)
        await runtime.drain()
    assert [s for s in seen if "payments.version \nFROM" in s] == []
    for pid, old in zip(pids, before, strict=True):
        assert old["status"] == "pending"
        assert (await payment_of(client, auth, pid))["status"] == "succeeded"


async def test_a_batch_of_answers_locks_its_payments_with_their_merchants_terms(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, processor: Processor
) -> None:
    """One statement locks the answers' payments and reads their merchants' terms: the fee
    booked is each merchant's own, custom or default."""
    priced = await new_merchant(client, "Priced")
    r = await client.post(
        f"/v1/merchants/{priced['id']}",
        json={"pricing": {"percent_bps": 150, "fixed": {"usd": 10}}},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert r.status_code == 200, r.text
    priced_auth = {"Authorization": f"Bearer {priced['api_key']}"}
    pids = [await create(client, auth), await create(client, priced_auth)]
    decisions = [await assessed(runtime, pid) for pid in pids]
    with statements(runtime.db) as seen:
        await processor.on_events(decisions)
    assert [s for s in seen if "FROM merchant_terms" in s] == []
    async with runtime.db.read() as conn:
        rows = await conn.execute(
            sa.select(balance_transactions.c.source, balance_transactions.c.fee).where(
                balance_transactions.c.source.in_(pids)
            )
        )
        fees = dict(rows.all())
    custom = Pricing(percent_bps=150, fixed={"usd": 10})
    assert fees == {pids[0]: Pricing().fee(1999, "usd"), pids[1]: custom.fee(1999, "usd")}
