"""Races through the whole in-process pipeline, on SQLite and PostgreSQL: concurrent refunds,
captures and cancels of one payment, and a burst of payments. Checked against the bank's own
audit listing and our tables: every race ends as some one-at-a-time order would have ended it."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.config import Settings
from paygate.payments.attempts import OPEN
from paygate.pipeline import Pipeline
from paygate.platform.db.tables import bank_attempts
from paygate.runtime import Runtime
from tests.conftest import make_settings, scale_out
from tests.processor.records import bank_ops, eventually
from tests.support import idem, payment_body

WAIT = {"Prefer": "wait=15"}


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    # A burst must not meet the merchant's rate limit; recovery looks again at every pass.
    return make_settings(
        tmp_path,
        database_url,
        recovery_backoff_scale=1e-5,
        default_tier="unlimited",
        **scale_out(request, database_url),
    )


async def _pay(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/payments", json=payment_body(**body), headers={**auth, **idem(), **WAIT}
    )
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


async def _get(client: httpx.AsyncClient, auth: dict[str, str], path: str) -> dict[str, Any]:
    r = await client.get(path, headers=auth)
    assert r.status_code == 200, r.text
    obj: dict[str, Any] = r.json()
    return obj


async def _settled(
    client: httpx.AsyncClient, auth: dict[str, str], rt: Runtime, pid: str
) -> dict[str, Any]:
    """The payment once no bank operation of it is open (a capture or a void is recorded before
    its request is answered, so this waits for the bank's answer to be applied)."""
    await eventually(lambda: _open_attempts(rt, pid), lambda n: n == 0)
    return await _get(client, auth, f"/v1/payments/{pid}")


async def _open_attempts(rt: Runtime, pid: str) -> int:
    async with rt.db.read() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count()).where(
                bank_attempts.c.payment_id == pid, bank_attempts.c.status.in_(OPEN)
            )
        )
    return int(count or 0)


async def test_eight_concurrent_refunds_of_400_on_1000(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    pid = (await _pay(client, auth, amount=1000))["id"]
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/refunds", json={"payment": pid, "amount": 400}, headers={**auth, **idem()}
            )
            for _ in range(8)
        )
    )
    assert sorted(r.status_code for r in answers) == [202] * 2 + [409] * 6
    for refused in (r for r in answers if r.status_code == 409):
        assert refused.json()["error"]["type"] == "invalid_request_error"
    accepted = [r.json() for r in answers if r.status_code == 202]
    assert [r["status"] for r in accepted] == ["pending", "pending"]
    for refund in accepted:
        done = await eventually(
            partial(_get, client, auth, f"/v1/refunds/{refund['id']}"),
            lambda r: r["status"] != "pending",
        )
        assert (done["status"], done["amount"]) == ("succeeded", 400)

    listed = await _get(client, auth, f"/v1/refunds?payment={pid}")
    assert sorted(r["id"] for r in listed["data"]) == sorted(r["id"] for r in accepted)
    payment = await _get(client, auth, f"/v1/payments/{pid}")
    assert (payment["status"], payment["amount_refunded"]) == ("succeeded", 800)
    assert sorted(await bank_ops(bank, pid)) == sorted(
        [("sale", "sale", "approved", 1000)]
        + [(f"refund:{r['id']}", "refund", "approved", 400) for r in accepted]
    )


async def test_two_concurrent_captures_capture_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    held = await asyncio.gather(*(_pay(client, auth, capture=False) for _ in range(3)))
    for payment in held:
        pid = payment["id"]
        assert payment["status"] == "requires_capture"
        answers = await asyncio.gather(
            *(client.post(f"/v1/payments/{pid}/capture", headers=auth) for _ in range(2))
        )
        assert sorted(r.status_code for r in answers) == [202, 409], [r.text for r in answers]
        done = await _settled(client, auth, runtime, pid)
        assert (done["status"], done["amount_captured"]) == ("succeeded", 1999)
        assert await bank_ops(bank, pid) == [
            ("authorize", "authorize", "approved", 1999),
            ("capture", "capture", "approved", 1999),
        ]


async def test_concurrent_cancel_and_capture_one_wins(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    pipeline: Pipeline,
    bank: httpx.AsyncClient,
) -> None:
    held = await asyncio.gather(*(_pay(client, auth, capture=False) for _ in range(4)))
    for payment in held:
        pid = payment["id"]
        cancel, capture = await asyncio.gather(
            client.post(f"/v1/payments/{pid}/cancel", headers=auth),
            client.post(f"/v1/payments/{pid}/capture", headers=auth),
        )
        codes = (cancel.status_code, capture.status_code)
        assert sorted(codes) == [202, 409], (cancel.text, capture.text)
        done = await _settled(client, auth, runtime, pid)
        ops = await bank_ops(bank, pid)
        if capture.status_code == 202:
            assert done["status"] == "succeeded"
            assert ops == [
                ("authorize", "authorize", "approved", 1999),
                ("capture", "capture", "approved", 1999),
            ]
        else:
            assert done["status"] == "canceled"
            assert ops == [
                ("authorize", "authorize", "approved", 1999),
                ("void", "void", "approved", 1999),
            ]
