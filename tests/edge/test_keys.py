"""API keys: restricted keys' scopes, listing without the keys, rolling with a grace period,
revocation (at once here, within the key cache's time elsewhere), `last_used_at` written at most
once a minute, the audit log of every key change and admin action, and one look-up shared by
the requests that find a key's cache entry gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from paygate.edge.keys import KeyCache, KeyRecord
from paygate.ids import now_s
from paygate.platform.db.tables import api_keys, audit_log
from tests.edge.conftest import ADMIN, Api, Serve
from tests.support import idem, payment_body, statements


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(api: Api, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await api.client.post("/v1/api_keys", json=body, headers=auth)
    assert r.status_code == 201, r.text
    key: dict[str, Any] = r.json()
    return key


async def test_restricted_keys_do_what_their_permissions_grant(api: Api) -> None:
    _, auth = await api.merchant()
    payment = await api.payment(auth)
    permissions = {"payments": "read", "customers": "write", "refunds": "none"}
    key = await new_key(api, auth, type="restricted", name="reports", permissions=permissions)
    assert key["secret"].startswith("rk_test_") and key["type"] == "restricted"
    assert key["permissions"] == {
        "payments": "read",
        "refunds": "none",
        "customers": "write",
        "webhook_endpoints": "none",
        "events": "none",
        "balance": "none",
        "settlements": "none",
        "fraud": "none",
    }
    rk = bearer(key["secret"])
    c = api.client
    allowed = [
        await c.get("/v1/payments", headers=rk),
        await c.get(f"/v1/payments/{payment['id']}", headers=rk),
        await c.post("/v1/customers", json={"email": "a@example.com"}, headers=rk),
        await c.get("/v1/customers", headers=rk),
    ]
    assert [r.status_code for r in allowed] == [200, 200, 201, 200]
    refused = [
        await c.post("/v1/payments", json=payment_body(), headers={**rk, **idem()}),
        await c.post(f"/v1/payments/{payment['id']}/cancel", headers=rk),
        await c.get("/v1/refunds", headers=rk),
        await c.get("/v1/events", headers=rk),
        await c.get("/v1/balance_transactions", headers=rk),
        await c.get("/v1/api_keys", headers=rk),
        await c.post("/v1/api_keys", json={"type": "secret"}, headers=rk),
        await c.get("/v1/audit_log", headers=rk),
    ]
    for r in refused:
        assert r.status_code == 403, r.text
        assert r.json()["error"]["type"] == "permission_error"
    assert "no write permission on payments" in refused[0].json()["error"]["message"]
    # Nothing was written by the refused requests.
    listed = await c.get("/v1/payments", headers=auth)
    assert [p["id"] for p in listed.json()["data"]] == [payment["id"]]
    assert listed.json()["data"][0]["status"] == "pending"


async def test_key_requests_are_checked_before_anything_runs(sqlite_api: Api) -> None:
    _, auth = await sqlite_api.merchant()
    c = sqlite_api.client
    for body, param in (
        ({"type": "restricted"}, "permissions"),
        ({"type": "secret", "permissions": {"payments": "read"}}, "permissions"),
        ({"type": "restricted", "permissions": {"payouts": "read"}}, "permissions.payouts"),
        ({"type": "restricted", "permissions": {"payments": "all"}}, "permissions.payments"),
        ({"type": "secret", "merchant": "acct_x"}, "merchant"),
        ({"type": "secret", "livemode": True}, "livemode"),
        ({"type": "admin"}, "type"),
    ):
        r = await c.post("/v1/api_keys", json=body, headers=auth)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param
    r = await c.post("/v1/api_keys", json={"type": "secret"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "merchant"


async def test_keys_are_listed_without_the_keys(sqlite_api: Api) -> None:
    merchant, auth = await sqlite_api.merchant()
    created = await new_key(sqlite_api, auth, type="publishable")
    listed = await sqlite_api.client.get("/v1/api_keys", headers=auth)
    assert listed.status_code == 200
    data = listed.json()["data"]
    assert len(data) == 3  # the secret and publishable keys of creation, and the new one
    assert data[0]["id"] == created["id"] and data[0]["last4"] == created["secret"][-4:]
    text = listed.text
    for key in (merchant["api_key"], merchant["publishable_key"], created["secret"]):
        assert key not in text and key[8:] not in text
    assert all("secret" not in item and "key_hash" not in item for item in data)
    one = await sqlite_api.client.get(f"/v1/api_keys/{created['id']}", headers=auth)
    assert one.json() == data[0]


async def test_live_keys_are_made_by_the_admin_and_invisible_to_test_keys(sqlite_api: Api) -> None:
    merchant, auth = await sqlite_api.merchant()
    live = await new_key(sqlite_api, ADMIN, type="secret", merchant=merchant["id"], livemode=True)
    assert live["secret"].startswith("sk_live_") and live["livemode"] is True
    assert (
        await sqlite_api.client.get(f"/v1/api_keys/{live['id']}", headers=auth)
    ).status_code == 404
    revoke = await sqlite_api.client.post(f"/v1/api_keys/{live['id']}/revoke", headers=auth)
    assert revoke.status_code == 404
    payments = await sqlite_api.client.get("/v1/payments", headers=bearer(live["secret"]))
    assert payments.status_code == 200 and payments.json()["data"] == []
    by_admin = await sqlite_api.client.get(f"/v1/api_keys?merchant={merchant['id']}", headers=ADMIN)
    assert len(by_admin.json()["data"]) == 3


async def test_a_rolled_key_works_until_it_expires(sqlite_api: Api) -> None:
    merchant, auth = await sqlite_api.merchant()
    old_id = (await sqlite_api.client.get("/v1/api_keys", headers=auth)).json()["data"][1]["id"]
    rolled = await sqlite_api.client.post(f"/v1/api_keys/{old_id}/roll", headers=auth)
    assert rolled.status_code == 201, rolled.text
    new = rolled.json()
    assert new["type"] == "secret" and new["id"] != old_id
    assert new["secret"].startswith("sk_test_") and new["secret"] != merchant["api_key"]
    old = (await sqlite_api.client.get(f"/v1/api_keys/{old_id}", headers=auth)).json()
    assert abs(old["expires_at"] - (now_s() + 24 * 3600)) <= 2
    for key in (merchant["api_key"], new["secret"]):
        assert (await sqlite_api.client.get("/v1/payments", headers=bearer(key))).status_code == 200
    # A leaked key is rolled with no grace: it stops at once.
    again = await sqlite_api.client.post(
        f"/v1/api_keys/{new['id']}/roll", json={"expires_in": 0}, headers=bearer(new["secret"])
    )
    newest = bearer(again.json()["secret"])
    stopped = await sqlite_api.client.get("/v1/payments", headers=bearer(new["secret"]))
    assert stopped.status_code == 401
    assert stopped.json()["error"]["code"] == "api_key_expired"
    assert (await sqlite_api.client.get("/v1/payments", headers=newest)).status_code == 200


async def test_a_revoked_key_stops_at_once_here_and_soon_elsewhere(serve_with: Serve) -> None:
    async with serve_with(key_cache_ttl_s=0.3) as here, serve_with(key_cache_ttl_s=0.3) as there:
        _, auth = await here.merchant()
        key = await new_key(here, auth, type="secret")
        doomed = bearer(key["secret"])
        for api in (here, there):  # both processes have it cached now
            assert (await api.client.get("/v1/payments", headers=doomed)).status_code == 200
        r = await here.client.post(
            f"/v1/api_keys/{key['id']}/revoke", json={"reason": "compromised"}, headers=auth
        )
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        assert (await here.client.get("/v1/payments", headers=doomed)).status_code == 401
        await asyncio.sleep(0.35)
        r = await there.client.get("/v1/payments", headers=doomed)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        again = await here.client.post(f"/v1/api_keys/{key['id']}/revoke", headers=auth)
        assert again.status_code == 200
        rolled = await here.client.post(f"/v1/api_keys/{key['id']}/roll", headers=auth)
        assert rolled.status_code == 409


async def test_last_used_is_written_at_most_once_a_minute(sqlite_api: Api) -> None:
    merchant, auth = await sqlite_api.merchant()
    rt = sqlite_api.runtime

    async def last_used() -> int | None:
        await rt.drain()  # the background write, if any
        async with rt.db.read() as conn:
            query = sa.select(api_keys.c.last_used_at).where(
                api_keys.c.merchant_id == merchant["id"], api_keys.c.kind == "secret"
            )
            value: int | None = await conn.scalar(query)
            return value

    await sqlite_api.client.get("/v1/payments", headers=auth)
    assert abs((await last_used() or 0) - now_s()) <= 2
    async with rt.db.transaction() as conn:
        await conn.execute(api_keys.update().values(last_used_at=1))
    for _ in range(3):
        await sqlite_api.client.get("/v1/payments", headers=auth)
    assert await last_used() == 1  # not written again within the minute
    clock = sqlite_api.edge.keys.clock
    sqlite_api.edge.keys.clock = lambda: clock() + 61
    await sqlite_api.client.get("/v1/payments", headers=auth)
    assert abs((await last_used() or 0) - now_s()) <= 2


async def test_keys_used_together_have_last_used_written_together(api: Api) -> None:
    # Many merchants, each sending one request: every key is due, and the writes share
    # transactions instead of costing one each.
    auths = [(await api.merchant(name=f"Shop {i}"))[1] for i in range(12)]
    rt = api.runtime
    await rt.drain()
    async with rt.db.transaction() as conn:
        await conn.execute(api_keys.update().values(last_used_at=None))
    with statements(rt.db) as sent:
        answers = await asyncio.gather(
            *(api.client.get("/v1/payments", headers=auth) for auth in auths)
        )
        assert all(r.status_code == 200 for r in answers)
        await rt.drain()
    writes = [s for s in sent if s.startswith("UPDATE api_keys SET last_used_at")]
    async with rt.db.read() as conn:
        query = sa.select(api_keys.c.last_used_at).where(api_keys.c.kind == "secret")
        used = [value for (value,) in (await conn.execute(query)).all()]
    assert len(used) == 12 and all(abs((u or 0) - now_s()) <= 2 for u in used)
    assert 1 <= len(writes) < 12


async def test_the_audit_log_records_key_changes_and_admin_actions(api: Api) -> None:
    merchant, auth = await api.merchant()
    other, other_auth = await api.merchant(name="Other")
    key = await new_key(api, auth, type="restricted", permissions={"payments": "read"})
    await api.client.post(f"/v1/api_keys/{key['id']}/roll", headers=auth)
    await api.client.post(f"/v1/api_keys/{key['id']}/revoke", headers=auth)
    mine = (await api.client.get("/v1/audit_log", headers=auth)).json()["data"]
    assert [e["action"] for e in mine] == [
        "api_key.revoked",
        "api_key.rolled",
        "api_key.created",
        "merchant.created",
    ]
    assert {e["merchant"] for e in mine} == {merchant["id"]}
    assert mine[2]["object_id"] == key["id"] and mine[2]["actor"]["type"] == "secret"
    assert mine[3]["actor"] == {"type": "admin", "id": "admin"}
    assert key["secret"] not in str(mine) and merchant["api_key"] not in str(mine)
    theirs = (await api.client.get("/v1/audit_log", headers=other_auth)).json()["data"]
    assert [e["action"] for e in theirs] == ["merchant.created"]
    everything = (await api.client.get("/v1/audit_log?limit=100", headers=ADMIN)).json()["data"]
    assert len(everything) == 5
    only = await api.client.get(
        f"/v1/audit_log?merchant={other['id']}&action=merchant.created", headers=ADMIN
    )
    assert [e["object_id"] for e in only.json()["data"]] == [other["id"]]


async def test_the_audit_log_is_append_only_in_the_database(api: Api) -> None:
    await api.merchant()
    for statement in (audit_log.update().values(action="x"), audit_log.delete()):
        with pytest.raises(DBAPIError, match="append-only"):
            async with api.runtime.db.transaction() as conn:
                await conn.execute(statement)


async def test_publishable_keys_only_tokenize(sqlite_api: Api) -> None:
    merchant, _ = await sqlite_api.merchant()
    pk = bearer(merchant["publishable_key"])
    for method, url in (("GET", "/v1/payments"), ("GET", "/v1/api_keys"), ("GET", "/v1/refunds")):
        r = await sqlite_api.client.request(method, url, headers=pk)
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


RECORD = KeyRecord(
    id="key_1",
    merchant_id="mer_1",
    kind="secret",
    livemode=False,
    tier="standard",
    api_version="2026-01-01",
    permissions=(),
    expires_at=None,
    revoked_at=None,
)


async def test_requests_that_find_a_key_gone_share_one_look_up() -> None:
    now = [0.0]
    cache = KeyCache(ttl_s=1.0, clock=lambda: now[0])
    looked: list[str] = []
    gate = asyncio.Event()

    async def load() -> KeyRecord | None:
        looked.append("h")
        await gate.wait()
        return RECORD

    waiting = [asyncio.create_task(cache.fetch("h", load)) for _ in range(10)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # a caller that gives up does not stop the look-up for the others
    gate.set()
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert done[1:] == [RECORD] * 9 and looked == ["h"]
    assert await cache.fetch("h", load) == RECORD and looked == ["h"]  # cached
    now[0] = 1.5  # expired: looked up again
    assert await cache.fetch("h", load) == RECORD and looked == ["h", "h"]


async def test_a_failed_look_up_fails_its_waiters_and_the_next_one_tries_again() -> None:
    cache = KeyCache(ttl_s=1.0)
    calls: list[int] = []

    async def broken() -> KeyRecord | None:
        calls.append(1)
        await asyncio.sleep(0)
        raise DBAPIError("SELECT", {}, Exception("the database went away"))

    results = await asyncio.gather(
        *(cache.fetch("h", broken) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, DBAPIError) for r in results) and calls == [1]

    async def unknown() -> KeyRecord | None:
        return None

    assert await cache.fetch("h", unknown) is None and cache.get("h") is None
