"""The processor under bank faults, through the whole pipeline (API → outbox → relay → bus →
fraud → processor → the bank simulator over HTTP → recovery), in both run modes: embedded on
SQLite, scale-out on PostgreSQL, NATS JetStream and Redis.

Each test reads what the bank did from the bank's own audit listing, and what we did from our
tables: never charged twice, nothing lost, every outcome where the state machine says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.config import Settings
from paygate.pipeline import Pipeline
from paygate.platform.bus import Event, LocalBus
from paygate.platform.db.tables import outbox
from paygate.runtime import Runtime
from tests.conftest import make_settings, scale_out
from tests.e2e.conftest import quick_connector, running_pipeline
from tests.processor.records import (
    attempt_states,
    attempts_of,
    bank_log,
    bank_ops,
    dead_letters_of,
    events_of,
    eventually,
    set_faults,
)
from tests.support import idem, payment_body

# The pipeline fixture's connector gives up reading after 0.5 s; the simulator hangs 1 s.
WAIT = {"Prefer": "wait=15"}
PATIENT_READ_S = 1.5
RESTING = {"succeeded", "failed", "requires_capture", "requires_review", "canceled"}


@pytest.fixture
def settings_extra() -> dict[str, Any]:
    """Settings a test changes, by parametrizing this fixture."""
    return {}


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_url: str,
    settings_extra: dict[str, Any],
) -> Settings:
    # Back-offs scaled down so that recovery looks again at every pass (0.1 s); bursts of
    # payments must not meet the merchant's rate limit.
    base = {"recovery_backoff_scale": 1e-5, "default_tier": "unlimited"}
    engines = scale_out(request, database_url)
    return make_settings(tmp_path, database_url, **{**base, **engines, **settings_extra})


@pytest.fixture
async def patient_pipeline(runtime: Runtime, bank_url: str) -> AsyncIterator[Pipeline]:
    """The pipeline with a longer read timeout (1.5 s), for a test that must act at the bank
    between an operation being applied and our call giving up on its answer."""
    async with running_pipeline(runtime, quick_connector(bank_url, PATIENT_READ_S)) as pipeline:
        yield pipeline


async def _create(
    client: httpx.AsyncClient, auth: dict[str, str], wait: bool = False, **body: Any
) -> dict[str, Any]:
    headers = {**auth, **idem(), **(WAIT if wait else {})}
    r = await client.post("/v1/payments", json=payment_body(**body), headers=headers)
    assert r.status_code == (200 if wait else 202), r.text
    payment: dict[str, Any] = r.json()
    return payment


async def _get(client: httpx.AsyncClient, auth: dict[str, str], pid: str) -> dict[str, Any]:
    r = await client.get(f"/v1/payments/{pid}", headers=auth)
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


async def _rested(
    client: httpx.AsyncClient, auth: dict[str, str], pid: str, status: str | None = None
) -> dict[str, Any]:
    """The payment once it rests (in `status`, when given)."""
    want = {status} if status else RESTING
    return await eventually(lambda: _get(client, auth, pid), lambda p: p["status"] in want)


async def test_timed_out_operations_resolved_by_lookup_one_each(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    # Every operation is applied, then answered too late. The switch stays on: a second sale or
    # authorization would time out again, so a payment that rests was resolved by a look-up.
    await set_faults(bank, timeout_rate=1)
    sale, held = await asyncio.gather(
        _create(client, auth, wait=True), _create(client, auth, wait=True, capture=False)
    )
    assert (sale["status"], sale["amount_captured"]) == ("succeeded", 1999)
    assert (held["status"], held["amount_capturable"]) == ("requires_capture", 1999)
    for payment, op in ((sale, "sale"), (held, "authorize")):
        pid = payment["id"]
        assert await bank_ops(bank, pid) == [(op, op, "approved", 1999)]
        assert await bank_log(runtime.db, pid) == [
            (f"bank.{op}", "unknown"),
            (f"bank.{op}", "approved"),
        ]
        assert await attempt_states(runtime.db, pid) == {f"{pid}:{op}": "succeeded"}


MIX = [
    # card, capture, status, failure code, the bank's operation (None: screening declined)
    ("4242424242424242", True, "succeeded", None, "sale"),
    ("5555555555554444", False, "requires_capture", None, "authorize"),
    ("4000000000000002", True, "failed", "card_declined", "sale"),
    ("4000000000009995", False, "failed", "insufficient_funds", "authorize"),
    ("4000000000009235", True, "requires_review", None, "authorize"),
    ("4100000000000019", True, "failed", "fraud_suspected", None),
]


async def test_mixed_timeouts_every_payment_right_status_one_operation(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    await set_faults(bank, timeout_rate=0.3)
    cases = [MIX[i % len(MIX)] for i in range(30)]
    payments = await asyncio.gather(
        *(_create(client, auth, wait=True, card={"number": c[0]}, capture=c[1]) for c in cases)
    )
    unknown = 0
    for payment, (number, _, status, code, op) in zip(payments, cases, strict=True):
        pid = payment["id"]
        assert (payment["status"], payment["failure_code"]) == (status, code), number
        ops = await bank_ops(bank, pid)
        if op is None:
            assert ops == [], number
            continue
        answer = "declined" if code else "approved"
        assert ops == [(op, op, answer, 1999)], number
        assert await attempt_states(runtime.db, pid) == {
            f"{pid}:{op}": "failed" if code else "succeeded"
        }, number
        outcomes = [outcome for _, outcome in await bank_log(runtime.db, pid)]
        assert outcomes in ([answer], ["unknown", answer]), number
        unknown += outcomes[0] == "unknown"
        terminal = [e for e in await events_of(runtime.db, pid) if e == f"payment.{status}"]
        assert len(terminal) == 1, number
    # 25 bank calls at a rate of 0.3: none timing out has a chance below 1 in 7,000.
    assert unknown > 0


@pytest.mark.parametrize("settings_extra", [{"auth_deadline_s": 2}], ids=["deadline_2s"])
async def test_bank_down_then_back(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    await set_faults(bank, down=True)
    lost = [await _create(client, auth), await _create(client, auth, capture=False)]
    for payment in lost:  # the bank stays down past their deadline
        failed = await _rested(client, auth, payment["id"])
        assert (failed["status"], failed["failure_code"]) == ("failed", "processing_error")

    saved = [await _create(client, auth), await _create(client, auth, capture=False)]
    for payment in saved:  # refused once by the bank that is down
        await eventually(
            partial(attempts_of, runtime.db, payment["id"]),
            lambda attempts: [a["tries"] > 0 for a in attempts] == [True],
            every_s=0.01,
        )
    await set_faults(bank, down=False)  # back inside their deadline
    done = [await _rested(client, auth, p["id"]) for p in saved]
    assert [p["status"] for p in done] == ["succeeded", "requires_capture"]
    assert await bank_ops(bank, saved[0]["id"]) == [("sale", "sale", "approved", 1999)]
    assert await bank_ops(bank, saved[1]["id"]) == [("authorize", "authorize", "approved", 1999)]

    for payment, op in zip(lost, ("sale", "authorize"), strict=True):
        pid = payment["id"]
        # Once the bank answers again it says it never saw them; they are not sent any more.
        closed = {f"{pid}:{op}": "failed"}
        await eventually(partial(attempt_states, runtime.db, pid), closed.__eq__)
        assert await bank_ops(bank, pid) == []
        final = await _get(client, auth, pid)
        assert (final["status"], final["failure_code"]) == ("failed", "processing_error")
        assert (await events_of(runtime.db, pid)).count("payment.failed") == 1


@pytest.mark.parametrize("settings_extra", [{"auth_deadline_s": 2}], ids=["deadline_2s"])
@pytest.mark.parametrize(
    ("capture", "op", "undo"),
    [
        (False, "authorize", ("void", "void", "approved", 1999)),
        (True, "sale", ("refund:reversal", "refund", "approved", 1999)),
    ],
    ids=["authorize", "sale"],
)
async def test_late_approval_is_undone(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    patient_pipeline: Pipeline,
    bank: httpx.AsyncClient,
    capture: bool,
    op: str,
    undo: tuple[str, str, str, int],
) -> None:
    """The bank applies the operation but its answer is lost; it then goes down, so that no
    look-up can learn the answer before the deadline fails the payment. Back up, the look-up finds
    the approval, and the processor undoes it: a void, or a refund of the sale."""
    await set_faults(bank, timeout_rate=1, hang_s=PATIENT_READ_S + 0.2)
    pid = (await _create(client, auth, capture=capture))["id"]
    # Applied at once; our read gives up 1.5 s later. Down before then: look-ups fail too.
    await eventually(lambda: bank_ops(bank, pid), lambda ops: len(ops) == 1, every_s=0.01)
    await set_faults(bank, down=True)

    failed = await _rested(client, auth, pid)
    assert (failed["status"], failed["failure_code"]) == ("failed", "processing_error")
    assert await attempt_states(runtime.db, pid) == {f"{pid}:{op}": "unknown"}
    assert await bank_ops(bank, pid) == [(op, op, "approved", 1999)]

    await set_faults(bank, "PUT")  # up, and answering in time
    ops = await eventually(lambda: bank_ops(bank, pid), lambda ops: len(ops) == 2)
    assert ops == [(op, op, "approved", 1999), undo]
    await eventually(
        lambda: attempt_states(runtime.db, pid),
        lambda states: set(states.values()) == {"succeeded"},
    )
    final = await _get(client, auth, pid)
    assert (final["status"], final["failure_code"]) == ("failed", "processing_error")
    # The deadline may come before or after the timeout is recorded: order is not the point.
    assert sorted(await bank_log(runtime.db, pid)) == sorted(
        [
            (f"bank.{op}", "unknown"),
            (f"bank.{op}", "deadline"),
            (f"bank.{op}", "approved"),
            (f"bank.{undo[1]}", "approved"),
        ]
    )
    events = await events_of(runtime.db, pid)
    assert events.count("payment.failed") == 1
    assert not {"payment.succeeded", "payment.requires_capture"} & set(events)


async def test_capture_refused_for_good_voids_and_fails(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    """The bank refuses the capture for real: the hold was released at the bank itself (as an
    issuer does when it drops an authorization), so the capture meets `already_voided`."""
    pid = (await _create(client, auth, wait=True, capture=False))["id"]
    released = await bank.post(
        "/v1/void", json={"reference": f"{pid}:void:issuer", "authorization": f"{pid}:authorize"}
    )
    assert released.json()["status"] == "approved"

    r = await client.post(f"/v1/payments/{pid}/capture", headers={**auth, **WAIT})
    assert r.status_code == 200, r.text
    payment = r.json()
    assert (payment["status"], payment["failure_code"]) == ("failed", "processing_error")
    assert (payment["amount_captured"], payment["amount_capturable"]) == (0, 0)
    assert await bank_ops(bank, pid) == [
        ("authorize", "authorize", "approved", 1999),
        ("void:issuer", "void", "approved", 1999),
        ("capture", "capture", "declined", 1999),
        ("void", "void", "declined", 1999),  # "already voided": released either way
    ]
    assert await attempt_states(runtime.db, pid) == {
        f"{pid}:authorize": "succeeded",
        f"{pid}:capture": "failed",
        f"{pid}:void": "succeeded",
    }
    events = await events_of(runtime.db, pid)
    assert events.count("payment.failed") == 1 and "payment.succeeded" not in events


@pytest.mark.parametrize("settings_extra", [{"authorization_ttl_s": 0}], ids=["ttl_0"])
async def test_uncaptured_authorization_expires(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    pid = (await _create(client, auth, capture=False))["id"]
    canceled = await _rested(client, auth, pid, "canceled")
    assert (canceled["amount_capturable"], canceled["amount_captured"]) == (0, 0)
    assert await bank_ops(bank, pid) == [
        ("authorize", "authorize", "approved", 1999),
        ("void", "void", "approved", 1999),
    ]
    events = await events_of(runtime.db, pid)
    assert events.count("payment.requires_capture") == 1
    assert events.count("payment.canceled") == 1


# The in-process bus's own dead-lettering, with its retries made quick; NATS JetStream's, with
# its real back-off, is proven by the bus contract suite (tests/platform/test_bus_contract.py).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_failing_consumer_is_dead_lettered_after_its_retries(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    assert isinstance(pipeline.bus, LocalBus)
    pipeline.bus.base_delay_s = 0.005  # keep the back-off between tries short
    calls: list[str] = []

    async def broken(event: Event) -> None:
        calls.append(event["id"])
        raise RuntimeError("the ledger is on fire")

    pipeline.bus.subscribe("ledger", ["payment.succeeded"], broken)
    payment = await _create(client, auth, wait=True)
    assert payment["status"] == "succeeded"  # the other consumers were not held up

    [letter] = await eventually(lambda: dead_letters_of(runtime.db), lambda rows: len(rows) > 0)
    async with runtime.db.read() as conn:
        event_id = await conn.scalar(
            sa.select(outbox.c.id).where(
                outbox.c.object_id == payment["id"], outbox.c.type == "payment.succeeded"
            )
        )
    assert (letter["consumer"], letter["event_type"]) == ("ledger", "payment.succeeded")
    assert letter["event_id"] == event_id and letter["payload"]["id"] == event_id
    assert letter["attempts"] == pipeline.bus.attempts == len(calls) == 5
    assert set(calls) == {event_id}
    assert letter["error"] == "RuntimeError: the ledger is on fire"
    await pipeline.settle(5)
    async with runtime.db.read() as conn:
        published = await conn.scalar(
            sa.select(outbox.c.published_at).where(outbox.c.id == event_id)
        )
    assert published is not None  # handed over, so never redelivered
    await asyncio.sleep(0.3)
    assert len(await dead_letters_of(runtime.db)) == 1 and len(calls) == 5
    assert await bank_ops(bank, payment["id"]) == [("sale", "sale", "approved", 1999)]
