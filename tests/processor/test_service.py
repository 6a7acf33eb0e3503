"""The processor driven directly, without the relay: its decision, drive, look-up and apply paths
against the real bank simulator over HTTP (a uvicorn server on a loopback port), on SQLite and
PostgreSQL. Every test reads the bank's side from the bank's own audit listing.

The pipeline is not running here: events stay in the outbox, where the tests count them (one per
transition), and the tests hand real events from it to `Processor.on_event`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest

from paygate.platform.bus import Event
from paygate.processor.recovery import Recovery
from paygate.processor.service import Processor
from paygate.runtime import Runtime
from tests.e2e.conftest import quick_connector
from tests.processor.conftest import (
    HANG_S,
    PATIENT_READ_S,
    assessed,
    create,
    payment_of,
)
from tests.processor.records import (
    attempt_states,
    bank_log,
    bank_ops,
    event_payload,
    events_of,
    eventually,
    log_of,
    set_faults,
)
from tests.support import idem


async def _past_deadline(rt: Runtime, payment: dict[str, Any]) -> None:
    """Sleep until the payment's authorization deadline has passed."""
    deadline = payment["created"] + rt.settings.auth_deadline_s
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.05)


async def _die_after_bank_call(
    rt: Runtime, bank_url: str, bank: httpx.AsyncClient, pid: str, event: Event
) -> None:
    """Leave the state a worker dying between the bank's answer and our commit leaves: the bank
    applied the attempt, ours is still `pending`. The worker is cancelled while the bank holds
    its answer (what a shutdown, or a crash, does to a call in flight)."""
    # Held long enough for the cancellation to land while the call is still in flight.
    await set_faults(bank, timeout_rate=1, hang_s=1.0)
    patient = quick_connector(bank_url, PATIENT_READ_S)
    task = asyncio.create_task(Processor(rt, patient).on_event(event))
    await eventually(lambda: bank_ops(bank, pid), lambda ops: len(ops) == 1, every_s=0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await patient.aclose()


OUTCOMES = [
    # card, capture, status, failure code, the bank's record
    ("4242424242424242", True, "succeeded", None, [("sale", "sale", "approved", 1999)]),
    (
        "4242424242424242",
        False,
        "requires_capture",
        None,
        [("authorize", "authorize", "approved", 1999)],
    ),
    (
        "4000000000009235",
        True,
        "requires_review",
        None,
        [("authorize", "authorize", "approved", 1999)],
    ),
    ("4000000000000002", True, "failed", "card_declined", [("sale", "sale", "declined", 1999)]),
    (
        "4000000000009995",
        False,
        "failed",
        "insufficient_funds",
        [("authorize", "authorize", "declined", 1999)],
    ),
    ("4100000000000019", True, "failed", "fraud_suspected", []),
]


async def test_decision_drives_one_bank_operation_and_one_event_per_transition(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    for number, capture, status, code, ops in OUTCOMES:
        case = f"{number} capture={capture}"
        pid = await create(client, auth, card={"number": number}, capture=capture)
        await processor.on_event(await assessed(runtime, pid))

        payment = await payment_of(client, auth, pid)
        assert (payment["status"], payment["failure_code"]) == (status, code), case
        assert await bank_ops(bank, pid) == ops, case
        if not ops:  # screening declined: no attempt, no bank call
            assert await attempt_states(runtime.db, pid) == {}, case
            assert await events_of(runtime.db, pid) == [
                "payment.created",
                "payment.fraud_assessed",
                "payment.failed",
            ], case
            continue
        [(suffix, operation, answer, _)] = ops
        assert await attempt_states(runtime.db, pid) == {
            f"{pid}:{suffix}": "succeeded" if answer == "approved" else "failed"
        }, case
        assert await bank_log(runtime.db, pid) == [(f"bank.{operation}", answer)], case
        assert await events_of(runtime.db, pid) == [
            "payment.created",
            "payment.fraud_assessed",
            "payment.processing",
            f"payment.{status}",
        ], case


async def test_timeout_is_resolved_by_lookup_not_by_sending_again(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    hasty_processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    # Every operation is applied, then answered too late; look-ups never hang. The switch stays
    # on to the end, so a second sale would time out again: success can only come from a look-up.
    await set_faults(bank, timeout_rate=1, hang_s=HANG_S)
    pid = await create(client, auth)
    event = await assessed(runtime, pid)
    await hasty_processor.on_event(event)

    assert (await payment_of(client, auth, pid))["status"] == "processing"
    assert await attempt_states(runtime.db, pid) == {f"{pid}:sale": "unknown"}
    assert await bank_ops(bank, pid) == [("sale", "sale", "approved", 1999)]  # applied all the same

    await hasty_processor.on_event(event)  # a redelivery: the attempt is looked up
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["amount_captured"]) == ("succeeded", 1999)
    assert await bank_ops(bank, pid) == [("sale", "sale", "approved", 1999)]
    assert await attempt_states(runtime.db, pid) == {f"{pid}:sale": "succeeded"}
    assert await bank_log(runtime.db, pid) == [("bank.sale", "unknown"), ("bank.sale", "approved")]
    assert (await events_of(runtime.db, pid)).count("payment.succeeded") == 1


async def test_attempt_left_pending_by_a_dead_worker_is_resolved_by_lookup(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    hasty_processor: Processor,
    bank: httpx.AsyncClient,
    bank_url: str,
) -> None:
    pid = await create(client, auth)
    await _die_after_bank_call(runtime, bank_url, bank, pid, await assessed(runtime, pid))
    assert await attempt_states(runtime.db, pid) == {f"{pid}:sale": "pending"}
    assert await bank_log(runtime.db, pid) == []

    # Timeouts still on: a second sale would hang; the look-up finds the first one's answer.
    await Recovery(hasty_processor).tick(all_open=True)  # what a restart does first
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["amount_captured"]) == ("succeeded", 1999)
    assert await bank_ops(bank, pid) == [("sale", "sale", "approved", 1999)]
    assert await bank_log(runtime.db, pid) == [("bank.sale", "approved")]
    assert (await events_of(runtime.db, pid)).count("payment.succeeded") == 1


@pytest.mark.parametrize("settings_extra", [{"auth_deadline_s": 1}], ids=["deadline_1s"])
async def test_deadline_passing_while_bank_unreachable_never_forgets_an_applied_sale(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
    bank_url: str,
) -> None:
    """A `pending` attempt is not proof that the bank never saw it: a worker that died after its
    bank call leaves exactly that. When the deadline passes while the bank cannot be asked, the
    payment fails, but the attempt must stay open until the bank says what it did; the sale it
    applied is then refunded (a reversal), never kept for a failed payment."""
    pid = await create(client, auth)
    await _die_after_bank_call(runtime, bank_url, bank, pid, await assessed(runtime, pid))
    await set_faults(bank, "PUT", down=True)
    await _past_deadline(runtime, await payment_of(client, auth, pid))

    await processor.drive_payment(pid)
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["failure_code"]) == ("failed", "processing_error")
    assert await attempt_states(runtime.db, pid) == {f"{pid}:sale": "pending"}  # still to resolve

    await set_faults(bank, "PUT")  # the bank is back
    await processor.drive_payment(pid)
    assert await bank_ops(bank, pid) == [
        ("sale", "sale", "approved", 1999),
        ("refund:reversal", "refund", "approved", 1999),
    ]
    assert await attempt_states(runtime.db, pid) == {
        f"{pid}:sale": "succeeded",
        f"{pid}:refund:reversal": "succeeded",
    }
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["amount_captured"]) == ("failed", 0)
    events = await events_of(runtime.db, pid)
    assert events.count("payment.failed") == 1 and "payment.succeeded" not in events


@pytest.mark.parametrize("settings_extra", [{"auth_deadline_s": 1}], ids=["deadline_1s"])
async def test_never_applied_attempt_is_closed_once_the_bank_says_so(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    await set_faults(bank, down=True)
    pid = await create(client, auth)
    await processor.on_event(await assessed(runtime, pid))
    # Refused (503): not applied, and open until the bank can say so, deadline passed or not.
    assert await attempt_states(runtime.db, pid) == {f"{pid}:sale": "pending"}

    await _past_deadline(runtime, await payment_of(client, auth, pid))
    await processor.drive_payment(pid)
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["failure_code"]) == ("failed", "processing_error")

    await set_faults(bank, down=False)
    await processor.drive_payment(pid)  # the bank never saw it, and it is not sent any more
    assert await attempt_states(runtime.db, pid) == {f"{pid}:sale": "failed"}
    await processor.drive_payment(pid)
    assert await bank_ops(bank, pid) == []
    assert (await payment_of(client, auth, pid))["status"] == "failed"
    assert (await events_of(runtime.db, pid)).count("payment.failed") == 1


@pytest.mark.parametrize("settings_extra", [{"auth_deadline_s": 1}], ids=["deadline_1s"])
@pytest.mark.parametrize(
    ("capture", "undo"),
    [
        (False, ("void", "void", "approved", 1999)),
        (True, ("refund:reversal", "refund", "approved", 1999)),
    ],
    ids=["authorize", "sale"],
)
async def test_late_approval_after_the_deadline_is_undone(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    hasty_processor: Processor,
    bank: httpx.AsyncClient,
    capture: bool,
    undo: tuple[str, str, str, int],
) -> None:
    await set_faults(bank, timeout_rate=1, hang_s=HANG_S)
    pid = await create(client, auth, capture=capture)
    await hasty_processor.on_event(await assessed(runtime, pid))
    first = await bank_ops(bank, pid)
    assert [(o[1], o[2]) for o in first] == [("sale" if capture else "authorize", "approved")]
    await set_faults(bank, "PUT", down=True)  # look-ups fail until the deadline has passed
    await _past_deadline(runtime, await payment_of(client, auth, pid))
    await hasty_processor.drive_payment(pid)
    assert (await payment_of(client, auth, pid))["status"] == "failed"

    await set_faults(bank, "PUT")
    await hasty_processor.drive_payment(pid)
    assert await bank_ops(bank, pid) == [*first, undo]
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["failure_code"]) == ("failed", "processing_error")
    assert set((await attempt_states(runtime.db, pid)).values()) == {"succeeded"}
    events = await events_of(runtime.db, pid)
    assert events.count("payment.failed") == 1
    assert not {"payment.succeeded", "payment.requires_capture"} & set(events)


async def test_fraud_decision_redelivered_applies_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    # Latency keeps the first sale in flight while the second delivery looks it up.
    await set_faults(bank, latency_median_ms=80, latency_sigma=0)
    pid = await create(client, auth)
    event = await assessed(runtime, pid)
    await asyncio.gather(processor.on_event(event), processor.on_event(event))
    await processor.on_event(event)

    assert (await payment_of(client, auth, pid))["status"] == "succeeded"
    assert await bank_ops(bank, pid) == [("sale", "sale", "approved", 1999)]
    assert await attempt_states(runtime.db, pid) == {f"{pid}:sale": "succeeded"}
    assert await bank_log(runtime.db, pid) == [("bank.sale", "approved")]
    assert await events_of(runtime.db, pid) == [
        "payment.created",
        "payment.fraud_assessed",
        "payment.processing",
        "payment.succeeded",
    ]
    types = [e["type"] for e in await log_of(runtime.db, pid)]
    assert sorted(types) == sorted(
        ["payment.created", "payment.processing", "bank.sale", "payment.succeeded"]
    )


async def test_refund_redelivered_applies_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    pid = await create(client, auth, amount=1000)
    await processor.on_event(await assessed(runtime, pid))
    r = await client.post(
        "/v1/refunds", json={"payment": pid, "amount": 400}, headers={**auth, **idem()}
    )
    assert r.status_code == 202, r.text
    refund_id = r.json()["id"]
    event = await event_payload(runtime.db, refund_id, "refund.created")

    await set_faults(bank, latency_median_ms=80, latency_sigma=0)
    await asyncio.gather(processor.on_event(event), processor.on_event(event))
    await processor.on_event(event)

    assert await bank_ops(bank, pid) == [
        ("sale", "sale", "approved", 1000),
        (f"refund:{refund_id}", "refund", "approved", 400),
    ]
    assert await events_of(runtime.db, refund_id) == ["refund.created", "refund.succeeded"]
    refund = (await client.get(f"/v1/refunds/{refund_id}", headers=auth)).json()
    assert refund["status"] == "succeeded"
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["amount_refunded"]) == ("succeeded", 400)
    assert [e["type"] for e in await log_of(runtime.db, pid)].count("refund.succeeded") == 1


async def test_capture_the_bank_refuses_for_good_voids_and_fails(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    """How the bank comes to refuse for real: the hold is released at the bank itself (as an
    issuer does when it drops an authorization), so our capture meets `already_voided`."""
    pid = await create(client, auth, capture=False)
    await processor.on_event(await assessed(runtime, pid))
    assert (await payment_of(client, auth, pid))["status"] == "requires_capture"
    released = await bank.post(
        "/v1/void", json={"reference": f"{pid}:void:issuer", "authorization": f"{pid}:authorize"}
    )
    assert released.json()["status"] == "approved"

    r = await client.post(f"/v1/payments/{pid}/capture", headers=auth)
    assert r.status_code == 202, r.text
    await processor.on_event(await event_payload(runtime.db, pid, "payment.capture_requested"))

    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["failure_code"]) == ("failed", "processing_error")
    assert (payment["amount_captured"], payment["amount_capturable"]) == (0, 0)
    assert await bank_ops(bank, pid) == [
        ("authorize", "authorize", "approved", 1999),
        ("void:issuer", "void", "approved", 1999),
        ("capture", "capture", "declined", 1999),
        # Our void of the authorization, answered "already voided": released either way.
        ("void", "void", "declined", 1999),
    ]
    assert await attempt_states(runtime.db, pid) == {
        f"{pid}:authorize": "succeeded",
        f"{pid}:capture": "failed",
        f"{pid}:void": "succeeded",
    }
    events = await events_of(runtime.db, pid)
    assert events.count("payment.failed") == 1 and "payment.succeeded" not in events


@pytest.mark.parametrize("settings_extra", [{"authorization_ttl_s": 0}], ids=["ttl_0"])
async def test_expired_authorization_is_voided_and_canceled(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    processor: Processor,
    bank: httpx.AsyncClient,
) -> None:
    pid = await create(client, auth, capture=False)
    await processor.on_event(await assessed(runtime, pid))
    held = await payment_of(client, auth, pid)
    assert held["status"] == "requires_capture"
    # Older than a TTL of 0 once the clock has moved past the second it was last updated in.
    await asyncio.sleep(max(0.0, held["updated"] + 1 - time.time()) + 0.05)

    recovery = Recovery(processor)
    assert await recovery.expire_authorizations() == 1
    assert await recovery.expire_authorizations() == 0
    payment = await payment_of(client, auth, pid)
    assert (payment["status"], payment["amount_capturable"]) == ("canceled", 0)
    assert await bank_ops(bank, pid) == [
        ("authorize", "authorize", "approved", 1999),
        ("void", "void", "approved", 1999),
    ]
    assert (await events_of(runtime.db, pid)).count("payment.canceled") == 1
