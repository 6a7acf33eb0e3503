"""The processor applying a batch of events (`Processor.on_events`): the screening decisions of
several payments in one transaction, their bank calls side by side, and every other event beside
them. Each payment reaches the outcome it reaches alone, the bank applies each operation once,
and a batch delivered again (whole, or one by one after a failed batch) changes nothing."""

from __future__ import annotations

import asyncio

import httpx

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
