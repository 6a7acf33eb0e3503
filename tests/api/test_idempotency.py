"""Idempotency keys exactly as DESIGN.md section 2 states them, over HTTP, on both databases.

The app under test runs no payment pipeline, so a payment stays `pending` until a test changes it:
that keeps "what a fresh execution would answer now" under the test's control.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from paygate.api import errors, idempotency
from paygate.api.app import create_app
from paygate.api.auth import Principal
from paygate.api.idempotency import prune
from paygate.config import Settings
from paygate.errors import StateConflict
from paygate.ids import now_s
from paygate.platform.db.tables import idempotency_keys, merchants, metadata, payments
from paygate.runtime import Runtime
from tests.conftest import make_settings, new_merchant
from tests.support import ADMIN_KEY, payment_body

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
REPLAYED = "Idempotent-Replayed"


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


def new_key() -> str:
    return str(uuid.uuid4())


async def row_counts(runtime: Runtime) -> dict[str, int]:
    """Rows per table: "nothing written" means this does not change."""
    async with runtime.db.read() as conn:
        return {
            t.name: int(await conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0)
            for t in metadata.sorted_tables
        }


async def records(runtime: Runtime) -> list[sa.Row[Any]]:
    async with runtime.db.read() as conn:
        query = sa.select(idempotency_keys).order_by(idempotency_keys.c.key)
        return list((await conn.execute(query)).all())


async def payment_ids(client: httpx.AsyncClient, auth: dict[str, str]) -> list[str]:
    listed = (await client.get("/v1/payments?limit=100", headers=auth)).json()
    return [p["id"] for p in listed["data"]]


def assert_replay_of(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]


def assert_error(r: httpx.Response, status: int, type_: str, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert (error["type"], error["code"]) == (type_, code), error
    assert REPLAYED not in r.headers
    return error


# Same key, same request


async def test_same_key_same_request_replays_the_first_response(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    key = new_key()
    first = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    after_first = await row_counts(runtime)

    again = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert_replay_of(first, again)
    assert await row_counts(runtime) == after_first
    assert await payment_ids(client, auth) == [first.json()["id"]]

    # The replay is the response as it was sent, not the payment as it is now.
    pay_id = first.json()["id"]
    canceled = await client.post(f"/v1/payments/{pay_id}/cancel", headers=auth)
    assert canceled.json()["status"] == "canceled"
    later = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert_replay_of(first, later)
    assert later.json()["status"] == "pending"


# Same key, different request


async def test_same_key_different_request_is_422_and_writes_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    key = new_key()
    first = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert first.status_code == 202
    before = await row_counts(runtime)
    stored = await records(runtime)

    for changed in (
        payment_body(amount=2000),
        payment_body(currency="eur"),
        payment_body(card={"number": "5555555555554444"}),
        payment_body(card={"cvc": "321"}),
        payment_body(description="another order"),
        payment_body(capture=False),
    ):
        r = await client.post("/v1/payments", json=changed, headers=keyed(auth, key))
        assert_error(r, 422, "idempotency_error", "idempotency_key_reused")

    assert await row_counts(runtime) == before
    assert await records(runtime) == stored
    # The refused attempts did not overwrite the record: the first request still replays.
    again = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert_replay_of(first, again)


async def test_same_json_with_keys_in_another_order_is_the_same_request(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    body = payment_body(metadata={"order": "1042", "channel": "web"}, description="Order 1042")
    reordered = {k: body[k] for k in reversed(list(body))}
    reordered["payment_method"] = {
        "card": {
            k: body["payment_method"]["card"][k] for k in ("cvc", "exp_year", "exp_month", "number")
        }
    }
    reordered["metadata"] = {"channel": "web", "order": "1042"}
    first_raw = json.dumps(body).encode()
    other_raw = json.dumps(reordered, indent=2).encode()
    assert first_raw != other_raw and json.loads(first_raw) == json.loads(other_raw)

    key = new_key()
    json_type = {"content-type": "application/json"}
    first = await client.post(
        "/v1/payments", content=first_raw, headers={**keyed(auth, key), **json_type}
    )
    assert first.status_code == 202, first.text
    again = await client.post(
        "/v1/payments", content=other_raw, headers={**keyed(auth, key), **json_type}
    )
    assert_replay_of(first, again)
    assert len(await payment_ids(client, auth)) == 1


async def test_body_with_a_byte_order_mark_is_fingerprinted_not_a_500(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # The framework accepts a UTF-8 byte order mark before JSON (some clients send one); the
    # fingerprint must too, and it is the same request as the body without the mark.
    raw = json.dumps(payment_body()).encode()
    key = new_key()
    json_type = {"content-type": "application/json"}
    first = await client.post(
        "/v1/payments", content=b"\xef\xbb\xbf" + raw, headers={**keyed(auth, key), **json_type}
    )
    assert first.status_code == 202, first.text
    again = await client.post(
        "/v1/payments", content=raw, headers={**keyed(auth, key), **json_type}
    )
    assert_replay_of(first, again)


# Scope: merchant and endpoint


async def test_same_key_for_two_merchants_executes_twice(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    other = await new_merchant(client, "Other")
    theirs = {"Authorization": f"Bearer {other['api_key']}"}
    key = new_key()
    mine = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    their = await client.post("/v1/payments", json=payment_body(), headers=keyed(theirs, key))
    assert mine.status_code == their.status_code == 202
    assert REPLAYED not in mine.headers and REPLAYED not in their.headers
    assert mine.json()["id"] != their.json()["id"]
    assert await payment_ids(client, auth) == [mine.json()["id"]]
    assert await payment_ids(client, theirs) == [their.json()["id"]]
    assert len(await records(runtime)) == 2


async def test_same_key_on_two_endpoints_executes_independently(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    key = new_key()
    created = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert created.status_code == 202
    p1 = created.json()["id"]
    p2 = (
        await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, new_key()))
    ).json()["id"]

    # One key on the cancel of two payments: two endpoints, two executions.
    c1 = await client.post(f"/v1/payments/{p1}/cancel", headers=keyed(auth, key))
    c2 = await client.post(f"/v1/payments/{p2}/cancel", headers=keyed(auth, key))
    for r, pay_id in ((c1, p1), (c2, p2)):
        assert r.status_code == 200, r.text
        assert REPLAYED not in r.headers
        assert (r.json()["id"], r.json()["status"]) == (pay_id, "canceled")

    # The same key on refunds runs the refund (refused by the payment's state), not a 422.
    refund = await client.post("/v1/refunds", json={"payment": p1}, headers=keyed(auth, key))
    assert_error(refund, 409, "invalid_request_error", "invalid_state")

    # And each endpoint still replays its own first answer.
    assert_replay_of(c1, await client.post(f"/v1/payments/{p1}/cancel", headers=keyed(auth, key)))
    assert_replay_of(
        created, await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    )


# Which endpoints need a key, and what a key may be


async def test_creation_without_a_key_is_400_naming_the_header(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    pay = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, new_key()))
    before = await row_counts(runtime)
    for path, body in (
        ("/v1/payments", payment_body()),
        ("/v1/refunds", {"payment": pay.json()["id"]}),
    ):
        r = await client.post(path, json=body, headers=auth)
        error = assert_error(r, 400, "invalid_request_error", "idempotency_key_missing")
        assert error["param"] == "Idempotency-Key"
    assert await row_counts(runtime) == before


async def test_key_length_is_1_to_255(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    before = await row_counts(runtime)
    for bad in ("k" * 256, ""):
        r = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, bad))
        error = assert_error(r, 400, "invalid_request_error", "parameter_invalid")
        assert error["param"] == "Idempotency-Key"
    assert await row_counts(runtime) == before

    longest = "k" * 255
    first = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, longest))
    assert first.status_code == 202
    again = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, longest))
    assert_replay_of(first, again)


async def test_optional_key_on_cancel_replays_instead_of_running_again(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    pay_id = (
        await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, new_key()))
    ).json()["id"]
    key = new_key()
    body = {"cancellation_reason": "requested_by_customer"}
    first = await client.post(f"/v1/payments/{pay_id}/cancel", json=body, headers=keyed(auth, key))
    assert first.status_code == 200 and REPLAYED not in first.headers
    # Run again, the cancel would now be refused (the payment is canceled): the retry replays.
    unkeyed = await client.post(f"/v1/payments/{pay_id}/cancel", json=body, headers=auth)
    assert_error(unkeyed, 409, "invalid_request_error", "invalid_state")
    again = await client.post(f"/v1/payments/{pay_id}/cancel", json=body, headers=keyed(auth, key))
    assert_replay_of(first, again)
    other = await client.post(
        f"/v1/payments/{pay_id}/cancel",
        json={"cancellation_reason": "duplicate"},
        headers=keyed(auth, key),
    )
    assert_error(other, 422, "idempotency_error", "idempotency_key_reused")
    log = (await client.get(f"/v1/payments/{pay_id}/transaction_log", headers=auth)).json()
    assert [e["type"] for e in log["data"]] == ["payment.created", "payment.canceled"]


async def test_optional_key_on_merchant_creation_replays(client: httpx.AsyncClient) -> None:
    key = new_key()
    first = await client.post("/v1/merchants", json={"name": "Acme"}, headers=keyed(ADMIN, key))
    assert first.status_code == 201 and REPLAYED not in first.headers
    again = await client.post("/v1/merchants", json={"name": "Acme"}, headers=keyed(ADMIN, key))
    assert_replay_of(first, again)
    other = await client.post("/v1/merchants", json={"name": "Other"}, headers=keyed(ADMIN, key))
    assert_error(other, 422, "idempotency_error", "idempotency_key_reused")
    listed = (await client.get("/v1/merchants", headers=ADMIN)).json()
    assert [m["id"] for m in listed["data"]] == [first.json()["id"]]
    # The replayed secret key is the one that works.
    mine = {"Authorization": f"Bearer {again.json()['api_key']}"}
    assert (await client.get("/v1/payments", headers=mine)).status_code == 200


async def test_merchant_secret_key_is_not_stored_in_plain_text(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    r = await client.post("/v1/merchants", json={"name": "Acme"}, headers=keyed(ADMIN, new_key()))
    assert r.status_code == 201
    secret = r.json()["api_key"].encode()
    for row in await records(runtime):
        assert all(secret not in _as_bytes(value) for value in row)


# What is recorded: refusals before execution are not, refusals during execution are


async def test_validation_refusal_is_not_recorded(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    key = new_key()
    luhn_invalid = payment_body(card={"number": "4242424242424241"})
    r = await client.post("/v1/payments", json=luhn_invalid, headers=keyed(auth, key))
    assert_error(r, 400, "invalid_request_error", "invalid_number")
    missing = payment_body()
    del missing["currency"]
    r = await client.post("/v1/payments", json=missing, headers=keyed(auth, key))
    assert_error(r, 400, "invalid_request_error", "parameter_missing")
    assert await records(runtime) == []

    fixed = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert fixed.status_code == 202 and REPLAYED not in fixed.headers
    assert await payment_ids(client, auth) == [fixed.json()["id"]]

    refund_key = new_key()
    zero = await client.post(
        "/v1/refunds",
        json={"payment": fixed.json()["id"], "amount": 0},
        headers=keyed(auth, refund_key),
    )
    assert_error(zero, 400, "invalid_request_error", "invalid_amount")
    assert len(await records(runtime)) == 1


async def test_expired_card_refusal_is_not_recorded(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    key = new_key()
    expired = payment_body(card={"exp_year": 2020})
    r = await client.post("/v1/payments", json=expired, headers=keyed(auth, key))
    assert_error(r, 400, "invalid_request_error", "invalid_expiry")
    fixed = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert fixed.status_code == 202, fixed.text


async def test_refused_capture_replays_the_same_409_after_the_state_changed(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    pay_id = (
        await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, new_key()))
    ).json()["id"]
    key = new_key()
    first = await client.post(f"/v1/payments/{pay_id}/capture", headers=keyed(auth, key))
    assert_error(first, 409, "invalid_request_error", "invalid_state")
    assert "pending" in first.json()["error"]["message"]

    await client.post(f"/v1/payments/{pay_id}/cancel", headers=auth)
    fresh = await client.post(f"/v1/payments/{pay_id}/capture", headers=keyed(auth, new_key()))
    assert fresh.status_code == 409 and fresh.content != first.content  # says "canceled" now

    again = await client.post(f"/v1/payments/{pay_id}/capture", headers=keyed(auth, key))
    assert_replay_of(first, again)


async def test_refused_refund_replays_its_409_even_once_a_refund_would_succeed(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    pay = (
        await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, new_key()))
    ).json()
    key = new_key()
    first = await client.post("/v1/refunds", json={"payment": pay["id"]}, headers=keyed(auth, key))
    assert_error(first, 409, "invalid_request_error", "invalid_state")
    # What the payment pipeline (not run by this app) would do: the payment succeeds.
    async with runtime.db.transaction() as conn:
        await conn.execute(
            payments.update()
            .where(payments.c.id == pay["id"])
            .values(status="succeeded", amount_captured=pay["amount"], version=2)
        )

    again = await client.post("/v1/refunds", json={"payment": pay["id"]}, headers=keyed(auth, key))
    assert_replay_of(first, again)
    listed = (await client.get("/v1/refunds", headers=auth)).json()
    assert listed["data"] == []
    # A new key runs the refund, which now succeeds: the replay above was not a re-execution.
    fresh = await client.post(
        "/v1/refunds", json={"payment": pay["id"]}, headers=keyed(auth, new_key())
    )
    assert fresh.status_code == 202, fresh.text


async def test_a_refusal_after_a_write_rolls_the_write_back_and_is_recorded(
    runtime: Runtime,
) -> None:
    # No endpoint writes before it refuses today, so a minimal one does, over the real module.
    app = FastAPI()
    app.state.runtime = runtime
    errors.install(app)

    @app.post("/probe")
    async def probe(request: Request) -> Response:
        async def work(conn: AsyncConnection) -> tuple[int, Any]:
            await conn.execute(
                merchants.insert().values(
                    id="acct_probe", name="probe", tier="standard", created=now_s()
                )
            )
            raise StateConflict("Refused after a write.")

        return await idempotency.execute(request, Principal(kind="admin"), work)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as c:
        key = {"Idempotency-Key": new_key()}
        first = await c.post("/probe", json={}, headers=key)
        assert_error(first, 409, "invalid_request_error", "invalid_state")
        again = await c.post("/probe", json={}, headers=key)
        assert_replay_of(first, again)
    async with runtime.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(merchants)) == 0
    assert [r.response_status for r in await records(runtime)] == [409]


# Expiry


async def test_records_are_kept_24_hours(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    r = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, new_key()))
    assert r.status_code == 202
    [record] = await records(runtime)
    assert record.expires_at - record.created == 24 * 3600


async def _expire(runtime: Runtime, key: str) -> None:
    async with runtime.db.transaction() as conn:
        result = await conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == key)
            .values(expires_at=now_s() - 1)
        )
        assert result.rowcount == 1


async def test_an_expired_key_executes_again(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    key = new_key()
    first = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    await _expire(runtime, key)
    second = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert second.status_code == 202 and REPLAYED not in second.headers
    assert second.json()["id"] != first.json()["id"]
    # The new execution holds the key now, for a new window.
    [record] = await records(runtime)
    assert record.expires_at > now_s()
    assert_replay_of(
        second, await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    )

    # Expired, the key may even carry a different request.
    await _expire(runtime, key)
    third = await client.post(
        "/v1/payments", json=payment_body(amount=500), headers=keyed(auth, key)
    )
    assert third.status_code == 202 and third.json()["amount"] == 500
    assert len(await payment_ids(client, auth)) == 3


async def test_idempotency_ttl_setting(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, idempotency_ttl_s=1)
    async with _app_client(settings) as (client, runtime):
        auth = {"Authorization": f"Bearer {(await new_merchant(client))['api_key']}"}
        key = new_key()
        first = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
        assert first.status_code == 202
        [record] = await records(runtime)
        assert record.expires_at == record.created + 1
        async with asyncio.timeout(3):
            while now_s() < record.expires_at:
                await asyncio.sleep(0.05)
        again = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
        assert again.status_code == 202 and REPLAYED not in again.headers
        assert again.json()["id"] != first.json()["id"]


async def test_prune_deletes_only_expired_records(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    old, live = "key-old", "key-live"
    for key in (old, live):
        r = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
        assert r.status_code == 202
    kept = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, live))
    await _expire(runtime, old)

    async with runtime.db.transaction() as conn:
        assert await prune(conn) == 1
    assert [r.key for r in await records(runtime)] == [live]
    async with runtime.db.transaction() as conn:
        assert await prune(conn) == 0
    assert (
        await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, live))
    ).content == kept.content


# No card data in the table


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


async def test_the_raw_body_is_never_stored(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    pan, spaced, cvc = "5555555555554444", "5555 5555 5555 4444", "9876"
    body = payment_body(card={"number": spaced, "cvc": cvc})
    raw = json.dumps(body).encode()
    r = await client.post(
        "/v1/payments",
        content=raw,
        headers={**keyed(auth, new_key()), "content-type": "application/json"},
    )
    assert r.status_code == 202, r.text

    [record] = await records(runtime)
    for value in record:
        stored = _as_bytes(value)
        for secret in (pan.encode(), spaced.encode(), raw, b'"cvc"', b'"number"'):
            assert secret not in stored
    # The recorded response is sealed; opened, it is the payment object, with no card data.
    scope = "\x1f".join((record.merchant_id, record.endpoint, record.key)).encode()
    opened = runtime.keyring.open(record.body_key_id, bytes(record.response_body), scope)
    assert opened == r.content
    stored_strings = _strings(json.loads(opened))
    assert cvc not in stored_strings and pan not in stored_strings
    # The fingerprint is keyed: not a plain hash anyone could test a guessed card number against.
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert record.fingerprint not in {hashlib.sha256(b).hexdigest() for b in (raw, canonical)}


# Races


def _check_race(answers: list[httpx.Response]) -> httpx.Response:
    """Every answer is the one 202 (first or replayed, the same bytes) or a 409 in flight."""
    accepted = [r for r in answers if r.status_code == 202]
    assert accepted, [r.text for r in answers]
    assert len({r.content for r in accepted}) == 1
    assert sum(REPLAYED not in r.headers for r in accepted) == 1  # the one execution
    for r in answers:
        if r.status_code != 202:
            assert_error(r, 409, "idempotency_error", "idempotency_key_in_use")
            assert r.headers["retry-after"] == "1"
    return accepted[0]


async def _count_payments(runtime: Runtime) -> int:
    async with runtime.db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(payments)) or 0)


@pytest.mark.parametrize("n", [2, 10])
async def test_concurrent_identical_requests_make_one_payment(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, n: int
) -> None:
    key = new_key()
    answers = await asyncio.gather(
        *(
            client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
            for _ in range(n)
        )
    )
    accepted = _check_race(list(answers))
    assert await _count_payments(runtime) == 1
    assert len(await records(runtime)) == 1
    # Nothing is left in flight: the next retry replays.
    again = await client.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
    assert again.status_code == 202 and again.content == accepted.content


async def test_two_app_instances_racing_one_key_make_one_payment(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, settings: Settings
) -> None:
    # Two runtimes are two processes' worth of pools and in-flight sets over one database: only
    # the database guards the key between them (PostgreSQL's advisory lock; SQLite's single
    # writer).
    async with _app_client(settings) as (other, _):
        key = new_key()
        answers = await asyncio.gather(
            *(
                c.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
                for c in [client, other] * 5
            )
        )
        accepted = _check_race(list(answers))
        assert await _count_payments(runtime) == 1
        for c in (client, other):
            again = await c.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))
            assert again.status_code == 202 and again.content == accepted.content


async def test_a_key_in_flight_answers_409_at_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    settings: Settings,
    database_url: str,
) -> None:
    key = new_key()

    def post(c: httpx.AsyncClient) -> Any:
        return c.post("/v1/payments", json=payment_body(), headers=keyed(auth, key))

    async with _app_client(settings) as (other, _):
        async with _writes_held(runtime, database_url):
            first = asyncio.create_task(post(client))
            await _until_in_flight(runtime)
            # The same process: its in-flight set answers, without waiting for the database.
            same = await asyncio.wait_for(post(client), 5)
            assert_error(same, 409, "idempotency_error", "idempotency_key_in_use")
            assert same.headers["retry-after"] == "1"
            if runtime.db.is_sqlite:
                # Another process on SQLite queues behind the single writer, then sees the record.
                elsewhere = asyncio.create_task(post(other))
            else:
                # Another process on PostgreSQL: the advisory lock answers at once.
                answer = await asyncio.wait_for(post(other), 5)
                assert_error(answer, 409, "idempotency_error", "idempotency_key_in_use")
            assert not first.done()
        answers = [await asyncio.wait_for(first, 30)]
        if runtime.db.is_sqlite:
            answers.append(await asyncio.wait_for(elsewhere, 30))
        accepted = _check_race(answers)
    assert await _count_payments(runtime) == 1
    again = await post(client)
    assert again.status_code == 202 and again.content == accepted.content


@asynccontextmanager
async def _app_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """Another app instance on the same database, with its own runtime."""
    rt = Runtime.from_settings(settings)
    try:
        transport = httpx.ASGITransport(app=create_app(settings, rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://paygate.test") as c:
            yield c, rt
    finally:
        await rt.close()


@asynccontextmanager
async def _writes_held(runtime: Runtime, database_url: str) -> AsyncIterator[None]:
    """Hold the database so that a keyed request stops inside its unit of work, key claimed:
    SQLite's write lock, or on PostgreSQL a lock on the idempotency table (taken after the
    request's advisory lock, which stays free to take)."""
    if runtime.db.is_sqlite:
        conn = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    async with runtime.db.engine.connect() as pg:
        await pg.execute(sa.text("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE"))
        yield
        await pg.rollback()


async def _until_in_flight(runtime: Runtime) -> None:
    async with asyncio.timeout(10):
        while True:
            if runtime.db.is_sqlite:
                if runtime.inflight:
                    return
            else:
                async with runtime.db.read() as conn:
                    held = await conn.scalar(
                        sa.text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        )
                    )
                if held:
                    return
            await asyncio.sleep(0.01)
