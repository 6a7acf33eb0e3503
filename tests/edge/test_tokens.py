"""Card tokenization for browsers: a publishable key turns card details into a single-use token
that pays once; CORS on `/v1/tokens` only."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from paygate.platform.db.tables import card_tokens, payments, vault_cards, vault_cvcs
from tests.edge.conftest import ADMIN, Api, Serve
from tests.support import CARD, idem

ORIGIN = {"Origin": "https://shop.example"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def tokenize(api: Api, merchant: dict[str, Any], **card: Any) -> dict[str, Any]:
    r = await api.client.post(
        "/v1/tokens",
        json={"card": {**CARD, **card}},
        headers={**bearer(merchant["publishable_key"]), **ORIGIN},
    )
    assert r.status_code == 201, r.text
    token: dict[str, Any] = r.json()
    return token


def pay_with(token: str) -> dict[str, Any]:
    return {"amount": 1999, "currency": "usd", "payment_method": {"token": token}}


async def test_a_token_pays_once_and_the_server_never_sees_the_card(api: Api) -> None:
    merchant, auth = await api.merchant()
    token = await tokenize(api, merchant, number="5555 5555 5555 4444")
    assert token["id"].startswith("tok_") and token["used"] is False
    assert token["card"]["brand"] == "mastercard" and token["card"]["last4"] == "4444"
    assert token["expires_at"] - token["created"] == 15 * 60
    r = await api.client.post(
        "/v1/payments", json=pay_with(token["id"]), headers={**auth, **idem()}
    )
    assert r.status_code == 202, r.text
    payment = r.json()
    assert payment["payment_method"]["card"] == token["card"]
    async with api.runtime.db.read() as conn:
        # The CVC moved to the payment; the token keeps none.
        held = set((await conn.execute(sa.select(vault_cvcs.c.payment_id))).scalars())
        assert held == {payment["id"]}
        row = (await conn.execute(sa.select(card_tokens))).mappings().one()
        assert row["payment_id"] == payment["id"] and row["used_at"] is not None
        sealed = (await conn.execute(sa.select(vault_cards.c.pan_sealed))).scalars().all()
        assert all(b"5555555555554444" not in bytes(s) for s in sealed)
        assert "5555555555554444" not in str(dict(row))
    again = await api.client.post(
        "/v1/payments", json=pay_with(token["id"]), headers={**auth, **idem()}
    )
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "token_already_used"
    assert again.json()["error"]["param"] == "payment_method.token"


async def test_expired_unknown_and_foreign_tokens_are_refused(serve_sqlite: Serve) -> None:
    async with serve_sqlite(token_ttl_s=0) as api:
        merchant, auth = await api.merchant()
        _, other_auth = await api.merchant(name="Other")
        expired = await tokenize(api, merchant)
        r = await api.client.post(
            "/v1/payments", json=pay_with(expired["id"]), headers={**auth, **idem()}
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "token_expired"
        for body, headers in (
            (pay_with("tok_0000000000000000000000000"), auth),
            (pay_with(expired["id"]), other_auth),
        ):
            r = await api.client.post("/v1/payments", json=body, headers={**headers, **idem()})
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "resource_missing"
        async with api.runtime.db.read() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(payments)) == 0


async def test_a_token_raced_by_two_payments_pays_once(api: Api) -> None:
    merchant, auth = await api.merchant()
    token = await tokenize(api, merchant)
    answers = await asyncio.gather(
        *(
            api.client.post("/v1/payments", json=pay_with(token["id"]), headers={**auth, **idem()})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in answers) == [202, 400, 400, 400]
    async with api.runtime.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(payments)) == 1


async def test_exactly_one_of_card_and_token(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:
        _, auth = await api.merchant()
        for method, code, param in (
            ({"card": CARD, "token": "tok_abc"}, "parameter_invalid", "payment_method.card"),
            ({}, "parameter_missing", "payment_method.card"),
            ({"token": "pay_abc"}, "parameter_invalid", "payment_method.token"),
        ):
            body = {"amount": 100, "currency": "usd", "payment_method": method}
            r = await api.client.post("/v1/payments", json=body, headers={**auth, **idem()})
            assert r.status_code == 400, r.text
            assert (r.json()["error"]["code"], r.json()["error"]["param"]) == (code, param)


async def test_who_may_tokenize(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:
        merchant, auth = await api.merchant()
        key = await api.client.post(
            "/v1/api_keys",
            json={"type": "restricted", "permissions": {"payments": "write"}},
            headers=auth,
        )
        body = {"card": CARD}
        for headers, status in (
            (bearer(merchant["publishable_key"]), 201),
            (auth, 201),
            (bearer(key.json()["secret"]), 403),
            (ADMIN, 403),
            ({}, 401),
        ):
            r = await api.client.post("/v1/tokens", json=body, headers=headers)
            assert r.status_code == status, r.text
        bad = await api.client.post(
            "/v1/tokens",
            json={"card": {**CARD, "number": "4242424242424241"}},
            headers=bearer(merchant["publishable_key"]),
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_number"
        assert "4242424242424241" not in bad.text


async def test_cors_is_allowed_on_tokens_only(serve_sqlite: Serve) -> None:
    async with serve_sqlite() as api:
        merchant, auth = await api.merchant()
        preflight = {**ORIGIN, "Access-Control-Request-Method": "POST"}
        r = await api.client.options(
            "/v1/tokens",
            headers={**preflight, "Access-Control-Request-Headers": "authorization,content-type"},
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["access-control-allow-methods"] == "POST"
        assert r.headers["access-control-allow-headers"] == "Authorization, Content-Type"
        assert int(r.headers["access-control-max-age"]) > 0
        token = await api.client.post(
            "/v1/tokens",
            json={"card": CARD},
            headers={**bearer(merchant["publishable_key"]), **ORIGIN},
        )
        assert token.headers["access-control-allow-origin"] == "*"
        assert "RateLimit" in token.headers["access-control-expose-headers"]
        other = await api.client.options("/v1/payments", headers=preflight)
        assert other.status_code == 405 and "access-control-allow-origin" not in other.headers
        listed = await api.client.get("/v1/payments", headers={**auth, **ORIGIN})
        assert "access-control-allow-origin" not in listed.headers
