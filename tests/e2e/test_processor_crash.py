"""A real `paygate serve` process dies hard (as `kill -9` would) between the bank's answer and the
commit of what it means (`PAYGATE_FAULT_POINTS=processor.after_bank_call`), on SQLite and on
PostgreSQL. Restarted without the fault, it finds the open attempt, looks its reference up at
the bank and applies the answer once: the bank's own audit listing shows one operation, our
transaction log one bank entry and one state change, the outbox one event.

The bank simulator runs in the test process (a uvicorn thread, `bank_url`), so it outlives the
gateway's restarts and its audit listing and fault switch stay at hand."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.platform.db import Database
from paygate.platform.db.tables import payments
from tests.e2e.serve import CRASH_EXIT, Gateway, gateway
from tests.processor.records import attempt_states, events_of
from tests.support import ADMIN_KEY, idem, payment_body

__all__ = ["gateway"]
pytestmark = pytest.mark.slow

FAULT = "processor.after_bank_call"


@pytest.fixture
def gw(gateway: Gateway, bank_url: str) -> Gateway:
    gateway.env.update(PAYGATE_BANK_URL=bank_url, PAYGATE_RECOVERY_BACKOFF_SCALE="0.00001")
    return gateway


def _merchant(gw: Gateway) -> dict[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = gw.request("POST", "/v1/merchants", json={"name": "Acme"}, headers=admin)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


def _post_then_die(gw: Gateway, proc: Any, path: str, body: dict[str, Any], auth: dict) -> None:
    """Send a request whose bank call kills the process. The answer (202) may or may not get
    out before the process dies: the request committed either way."""
    try:
        r = gw.request("POST", path, json=body, headers={**auth, **idem()})
        assert r.status_code == 202, r.text
    except (httpx.RemoteProtocolError, httpx.ReadError):
        pass
    assert proc.wait(timeout=20) == CRASH_EXIT, gw.log_text()


def _poll(gw: Gateway, path: str, auth: dict[str, str], status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        r = gw.request("GET", path, headers=auth)
        assert r.status_code == 200, r.text
        obj: dict[str, Any] = r.json()
        if obj["status"] == status:
            return obj
        assert time.monotonic() < deadline, f"{path} still {obj['status']}:\n{gw.log_text()}"
        time.sleep(0.05)


async def _only_payment_in_database(gw: Gateway) -> str:
    db = _database(gw)
    try:
        async with db.read() as conn:
            [payment_id] = (await conn.execute(sa.select(payments.c.id))).scalars().all()
    finally:
        await db.dispose()
    return str(payment_id)


def _bank_ops(bank_url: str, pid: str) -> list[tuple[str, str, str]]:
    r = httpx.get(f"{bank_url}/v1/operations", params={"payment": pid})
    return [
        (o["reference"].split(":", 1)[1], o["operation"], o["status"]) for o in r.json()["data"]
    ]


def _log_types(gw: Gateway, auth: dict[str, str], pid: str) -> list[str]:
    r = gw.request("GET", f"/v1/payments/{pid}/transaction_log", headers=auth)
    return [e["type"] for e in r.json()["data"]]


def _database(gw: Gateway) -> Database:
    url = gw.env.get("PAYGATE_DATABASE_URL")
    return Database(url or f"sqlite:///{gw.data_dir / 'paygate.db'}")


async def _outbox_and_attempts(gw: Gateway, object_id: str, pid: str) -> tuple[list, dict]:
    db = _database(gw)
    try:
        return await events_of(db, object_id), await attempt_states(db, pid)
    finally:
        await db.dispose()


def _rest(gw: Gateway, auth: dict[str, str], **body: Any) -> str:
    """A payment through the whole pipeline, answered once it rests."""
    r = gw.request(
        "POST",
        "/v1/payments",
        json=payment_body(**body),
        headers={**auth, **idem(), "Prefer": "wait=10"},
    )
    assert r.status_code == 200, r.text
    payment_id: str = r.json()["id"]
    return payment_id


async def test_crash_after_the_bank_approved_a_sale_then_a_refund(
    gw: Gateway, bank_url: str
) -> None:
    proc = gw.start(FAULT)
    auth = _merchant(gw)
    _post_then_die(gw, proc, "/v1/payments", payment_body(amount=1000), auth)
    # What the dead process left: the bank applied the sale, our attempt is still open.
    pid = await _only_payment_in_database(gw)
    assert _bank_ops(bank_url, pid) == [("sale", "sale", "approved")]
    assert (await _outbox_and_attempts(gw, pid, pid))[1] == {f"{pid}:sale": "pending"}

    restarted = gw.start()
    payment = _poll(gw, f"/v1/payments/{pid}", auth, "succeeded")
    assert payment["amount_captured"] == 1000
    assert _bank_ops(bank_url, pid) == [("sale", "sale", "approved")]
    types = _log_types(gw, auth, pid)
    assert (types.count("bank.sale"), types.count("payment.succeeded")) == (1, 1)
    events, attempts = await _outbox_and_attempts(gw, pid, pid)
    assert events.count("payment.succeeded") == 1
    assert attempts == {f"{pid}:sale": "succeeded"}
    restarted.kill()
    restarted.wait(timeout=10)

    proc = gw.start(FAULT)
    _post_then_die(gw, proc, "/v1/refunds", {"payment": pid, "amount": 300}, auth)
    assert [o[1:] for o in _bank_ops(bank_url, pid)] == [
        ("sale", "approved"),
        ("refund", "approved"),
    ]
    attempts = (await _outbox_and_attempts(gw, pid, pid))[1]
    assert [v for k, v in attempts.items() if ":refund:" in k] == ["pending"]

    gw.start()
    [refund] = gw.request("GET", f"/v1/refunds?payment={pid}", headers=auth).json()["data"]
    _poll(gw, f"/v1/refunds/{refund['id']}", auth, "succeeded")
    assert _bank_ops(bank_url, pid) == [
        ("sale", "sale", "approved"),
        (f"refund:{refund['id']}", "refund", "approved"),
    ]
    payment = gw.request("GET", f"/v1/payments/{pid}", headers=auth).json()
    assert (payment["status"], payment["amount_refunded"]) == ("succeeded", 300)
    assert _log_types(gw, auth, pid).count("refund.succeeded") == 1
    events, attempts = await _outbox_and_attempts(gw, refund["id"], pid)
    assert events == ["refund.created", "refund.succeeded"]
    assert attempts[f"{pid}:refund:{refund['id']}"] == "succeeded"


async def test_crash_after_the_bank_approved_a_capture(gw: Gateway, bank_url: str) -> None:
    first = gw.start()
    auth = _merchant(gw)
    pid = _rest(gw, auth, capture=False)
    first.kill()
    first.wait(timeout=10)

    proc = gw.start(FAULT)
    _post_then_die(gw, proc, f"/v1/payments/{pid}/capture", {}, auth)
    assert _bank_ops(bank_url, pid)[-1] == ("capture", "capture", "approved")
    assert (await _outbox_and_attempts(gw, pid, pid))[1][f"{pid}:capture"] == "pending"

    gw.start()
    payment = _poll(gw, f"/v1/payments/{pid}", auth, "succeeded")
    assert (payment["amount_captured"], payment["amount_capturable"]) == (1999, 0)
    assert _bank_ops(bank_url, pid) == [
        ("authorize", "authorize", "approved"),
        ("capture", "capture", "approved"),
    ]
    types = _log_types(gw, auth, pid)
    assert (types.count("bank.capture"), types.count("payment.succeeded")) == (1, 1)
    events, attempts = await _outbox_and_attempts(gw, pid, pid)
    assert events.count("payment.succeeded") == 1
    assert attempts == {f"{pid}:authorize": "succeeded", f"{pid}:capture": "succeeded"}
