"""`/v1/fraud/rules` and `/v1/fraud/lists` over the real API and database (SQLite and
PostgreSQL), and `match_rules` as the fraud worker calls it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from paygate.config import Settings
from paygate.fraud import rules, rules_service
from paygate.fraud.attributes import payment_attributes
from paygate.fraud.rules import RuleMatch, match_rules
from paygate.platform.db.tables import audit_log, payments
from paygate.runtime import Runtime
from tests.conftest import make_settings, new_merchant
from tests.support import idem, payment_body


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # Many requests in a row: the standard tier's per-second limit is not under test here.
    return make_settings(tmp_path, database_url, default_tier="unlimited")


class Fraud:
    def __init__(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        self.client, self.auth = client, auth

    async def post(self, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        r = await self.client.post(f"/v1/fraud{path}", json=body, headers={**self.auth, **idem()})
        assert r.status_code == status, r.text
        out: dict[str, Any] = r.json()
        return out

    async def get(self, path: str, status: int = 200) -> dict[str, Any]:
        r = await self.client.get(f"/v1/fraud{path}", headers=self.auth)
        assert r.status_code == status, r.text
        out: dict[str, Any] = r.json()
        return out

    async def delete(self, path: str, status: int = 200) -> dict[str, Any]:
        r = await self.client.delete(f"/v1/fraud{path}", headers={**self.auth, **idem()})
        assert r.status_code == status, r.text
        out: dict[str, Any] = r.json()
        return out


@pytest.fixture
def fraud(client: httpx.AsyncClient, auth: dict[str, str]) -> Fraud:
    return Fraud(client, auth)


def error(body: dict[str, Any]) -> dict[str, Any]:
    err: dict[str, Any] = body["error"]
    return err


async def test_rules_are_created_versioned_disabled_and_deleted(
    fraud: Fraud, runtime: Runtime, merchant: dict[str, Any]
) -> None:
    rule = await fraud.post(
        "/rules",
        {
            "action": "block",
            "expression": "amount > 100000  AND currency == 'USD'",
            "description": "big dollars",
        },
    )
    assert rule["id"].startswith("frr_") and rule["object"] == "fraud_rule"
    assert rule["expression"] == "amount > 100000 and currency == 'usd'"
    assert (rule["action"], rule["enabled"], rule["deleted"], rule["version"]) == (
        "block",
        True,
        False,
        1,
    )
    assert await fraud.get(f"/rules/{rule['id']}") == rule

    off = await fraud.post(f"/rules/{rule['id']}", {"enabled": False}, status=200)
    assert (off["enabled"], off["version"]) == (False, 2)
    same = await fraud.post(f"/rules/{rule['id']}", {"enabled": False}, status=200)
    assert same["version"] == 2  # no change, no new version
    changed = await fraud.post(
        f"/rules/{rule['id']}", {"expression": "amount > 5", "enabled": True}, status=200
    )
    assert (changed["expression"], changed["enabled"], changed["version"]) == (
        "amount > 5",
        True,
        3,
    )

    versions = (await fraud.get(f"/rules/{rule['id']}/versions"))["data"]
    assert [(v["version"], v["expression"], v["enabled"]) for v in versions] == [
        (3, "amount > 5", True),
        (2, "amount > 100000 and currency == 'usd'", False),
        (1, "amount > 100000 and currency == 'usd'", True),
    ]
    # Who changed it: the key, by id.
    assert len({v["actor"] for v in versions}) == 1 and versions[0]["actor"].startswith("key_")

    gone = await fraud.delete(f"/rules/{rule['id']}")
    assert gone == {"id": rule["id"], "object": "fraud_rule", "deleted": True}
    assert (await fraud.get(f"/rules/{rule['id']}"))["deleted"] is True
    assert (await fraud.get("/rules"))["data"] == []
    r = await fraud.post(f"/rules/{rule['id']}", {"enabled": True}, status=409)
    assert error(r)["code"] == "invalid_state"
    assert len((await fraud.get(f"/rules/{rule['id']}/versions"))["data"]) == 4

    async with runtime.db.read() as conn:
        actions = (
            await conn.scalars(
                sa.select(audit_log.c.action)
                .where(audit_log.c.object_id == rule["id"])
                .order_by(audit_log.c.id)
            )
        ).all()
    assert actions == [
        "fraud_rule.created",
        "fraud_rule.updated",
        "fraud_rule.updated",
        "fraud_rule.deleted",
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "amout > 1",
            "Invalid expression: unknown attribute 'amout' at 1; did you mean 'amount'?.",
        ),
        ("email in @blocked", "Invalid expression: unknown list '@blocked' at 10."),
        (
            "currency > 'usd'",
            "Invalid expression: '>' at 10 compares integers only; currency is "
            "a string: use == or !=.",
        ),
    ],
)
async def test_bad_expressions_are_a_400_naming_expression(
    fraud: Fraud, expression: str, message: str
) -> None:
    for path, body in (
        ("/rules", {"action": "review", "expression": expression}),
        ("/rules/dry_run", {"action": "review", "expression": expression, "days": 7}),
    ):
        err = error(await fraud.post(path, body, status=400))
        assert (err["param"], err["code"], err["message"]) == (
            "expression",
            "invalid_expression",
            message,
        )
    assert (await fraud.get("/rules"))["data"] == []


async def test_requests_are_validated(fraud: Fraud) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/rules", {"action": "deny", "expression": "amount > 1"}, "action"),
        ("/rules", {"action": "block"}, "expression"),
        ("/rules", {"action": "block", "expression": ""}, "expression"),
        (
            "/rules",
            {"action": "block", "expression": "card_bin == '4242424242424242'"},
            "expression",
        ),
        ("/rules/dry_run", {"action": "block", "expression": "amount > 1", "days": 91}, "days"),
        ("/rules/dry_run", {"action": "block", "expression": "amount > 1", "days": 0}, "days"),
        ("/lists", {"name": "Bad Name", "kind": "email"}, "name"),
        ("/lists", {"name": "x", "kind": "phone"}, "kind"),
    ]
    for path, body, param in cases:
        r = await fraud.post(path, body, status=400)
        assert error(r)["param"] == param, r
        assert "4242424242424242" not in str(r)


async def test_lists_hold_normalized_values_and_never_card_numbers(fraud: Fraud) -> None:
    emails = await fraud.post("/lists", {"name": "blocked_emails", "kind": "email"})
    assert (emails["object"], emails["item_count"]) == ("fraud_list", 0)
    err = error(await fraud.post("/lists", {"name": "blocked_emails", "kind": "ip_address"}, 400))
    assert (err["param"], err["code"]) == ("name", "name_taken")

    item = await fraud.post(f"/lists/{emails['id']}/items", {"value": " Fraud@Example.com"})
    assert (item["value"], item["list"]) == ("fraud@example.com", emails["id"])
    again = await fraud.post(f"/lists/{emails['id']}/items", {"value": "FRAUD@example.com"}, 200)
    assert again == item
    assert (await fraud.get(f"/lists/{emails['id']}"))["item_count"] == 1

    cards = await fraud.post("/lists", {"name": "stolen", "kind": "card_fingerprint"})
    for number in ("4242424242424242", "4242 4242 4242 4242", "4000000000000002"):
        r = await fraud.post(f"/lists/{cards['id']}/items", {"value": number}, status=400)
        assert error(r)["param"] == "value"
        assert "looks like a card number" in error(r)["message"]
        assert number not in str(r)
    r = await fraud.post(f"/lists/{cards['id']}/items", {"value": "not-a-fingerprint"}, 400)
    assert error(r)["code"] == "invalid_list_item"
    bins = await fraud.post("/lists", {"name": "risky_bins", "kind": "card_bin"})
    r = await fraud.post(f"/lists/{bins['id']}/items", {"value": "4242424242424242"}, 400)
    assert "never a whole number" in error(r)["message"]
    ips = await fraud.post("/lists", {"name": "bad_ips", "kind": "ip_address"})
    ip = await fraud.post(f"/lists/{ips['id']}/items", {"value": "2001:DB8:0::1"})
    assert ip["value"] == "2001:db8::1"

    # Removal by value (in any form) or by id; then a 404.
    assert (await fraud.delete(f"/lists/{ips['id']}/items/2001:db8:0:0::1"))["id"] == ip["id"]
    await fraud.delete(f"/lists/{ips['id']}/items/{ip['id']}", status=404)
    assert (await fraud.delete(f"/lists/{emails['id']}/items/{item['id']}"))["deleted"] is True
    assert (await fraud.get(f"/lists/{emails['id']}/items"))["data"] == []
    names = [lst["name"] for lst in (await fraud.get("/lists"))["data"]]
    assert names == ["bad_ips", "risky_bins", "stolen", "blocked_emails"]


async def test_idempotent_writes_and_tenancy(
    client: httpx.AsyncClient, fraud: Fraud, auth: dict[str, str]
) -> None:
    key = idem()
    body = {"action": "review", "expression": "amount >= 1000"}
    first = await client.post("/v1/fraud/rules", json=body, headers={**auth, **key})
    second = await client.post("/v1/fraud/rules", json=body, headers={**auth, **key})
    assert first.status_code == second.status_code == 201
    assert second.content == first.content and second.headers["Idempotent-Replayed"] == "true"
    other = await client.post(
        "/v1/fraud/rules", json={**body, "action": "block"}, headers={**auth, **key}
    )
    assert other.status_code == 422
    assert len((await fraud.get("/rules"))["data"]) == 1

    rule_id = first.json()["id"]
    lst = await fraud.post("/lists", {"name": "ips", "kind": "ip_address"})
    stranger = await new_merchant(client, "Other")
    them = Fraud(client, {"Authorization": f"Bearer {stranger['api_key']}"})
    await them.get(f"/rules/{rule_id}", status=404)
    await them.post(f"/rules/{rule_id}", {"enabled": False}, status=404)
    await them.delete(f"/rules/{rule_id}", status=404)
    await them.get(f"/lists/{lst['id']}", status=404)
    await them.post(f"/lists/{lst['id']}/items", {"value": "192.0.2.1"}, status=404)
    assert (await them.get("/rules"))["data"] == [] and (await them.get("/lists"))["data"] == []
    # Their list names are their own: the same name is free for them.
    await them.post("/lists", {"name": "ips", "kind": "email"})


async def test_restricted_keys_without_a_fraud_permission_are_refused(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    r = await client.post(
        "/v1/api_keys",
        json={"type": "restricted", "name": "ops", "permissions": {"payments": "write"}},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    restricted = {"Authorization": f"Bearer {r.json()['secret']}"}
    for method, path in (("GET", "/v1/fraud/rules"), ("POST", "/v1/fraud/lists")):
        r = await client.request(method, path, json={}, headers=restricted)
        assert r.status_code == 403 and error(r.json())["type"] == "permission_error"


async def _payment(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> str:
    r = await client.post("/v1/payments", json=payment_body(**body), headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    assert "ip_address" not in r.json() and "card_bin" not in r.json()
    payment_id: str = r.json()["id"]
    return payment_id


async def test_payments_keep_bin_and_ip_and_build_their_attributes(
    client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
) -> None:
    paid = await _payment(
        client,
        auth,
        amount=250_000,
        ip_address=" 203.0.113.9",
        customer={"email": "Jenny@Example.com"},
    )
    r = await client.post(
        "/v1/tokens",
        json={
            "card": {"number": "3530111333300000", "exp_month": 1, "exp_year": 2031, "cvc": "123"}
        },
        headers={"Authorization": f"Bearer {(await _publishable(client, auth))}"},
    )
    assert r.status_code in (200, 201), r.text
    by_token = await _payment(client, auth, payment_method={"token": r.json()["id"]})
    r = await client.post(
        "/v1/payments", json=payment_body(ip_address="300.1.1.1"), headers={**auth, **idem()}
    )
    assert r.status_code == 400 and error(r.json())["param"] == "ip_address"

    async with runtime.db.read() as conn:
        rows = (
            await conn.execute(sa.select(payments.c.id, payments.c.card_bin, payments.c.ip_address))
        ).all()
        stored = {row.id: (row.card_bin, row.ip_address) for row in rows}
        attrs = await payment_attributes(conn, paid, {"total_payments_per_card_daily": 3})
        token_attrs = await payment_attributes(conn, by_token)
        assert await payment_attributes(conn, "pay_missing") is None
    assert stored[paid] == ("424242", "203.0.113.9")
    assert stored[by_token] == ("353011", None)
    assert attrs is not None and token_attrs is not None
    assert {k: attrs[k] for k in ("amount", "currency", "card_brand", "card_bin")} == {
        "amount": 250_000,
        "currency": "usd",
        "card_brand": "visa",
        "card_bin": "424242",
    }
    assert (attrs["card_country"], attrs["ip_address"], attrs["ip_country"]) == (
        "US",
        "203.0.113.9",
        "DE",
    )
    assert attrs["email"] == "jenny@example.com" and attrs["total_payments_per_card_daily"] == 3
    assert len(attrs["card_fingerprint"]) == 16 and 0 <= attrs["hour_of_day"] <= 23
    assert token_attrs["card_country"] == "JP" and "ip_country" not in token_attrs
    assert "email" not in token_attrs


async def _publishable(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    r = await client.post("/v1/api_keys", json={"type": "publishable", "name": "web"}, headers=auth)
    assert r.status_code == 201, r.text
    secret: str = r.json()["secret"]
    return secret


async def test_match_rules_order_and_cache_invalidation(
    fraud: Fraud, runtime: Runtime, merchant: dict[str, Any]
) -> None:
    mid = merchant["id"]

    async def match(attrs: dict[str, Any], livemode: bool = False) -> RuleMatch | None:
        async with runtime.db.read() as conn:
            return await match_rules(conn, mid, livemode, attrs)

    assert await match({"amount": 1}) is None  # no rules at all
    review = await fraud.post("/rules", {"action": "review", "expression": "amount > 100"})
    block = await fraud.post("/rules", {"action": "block", "expression": "amount > 1000"})
    emails = await fraud.post("/lists", {"name": "vip", "kind": "email"})
    allow = await fraud.post(
        "/rules", {"action": "allow", "expression": "email in @vip and amount < 5000"}
    )
    assert await match({"amount": 50}) is None
    assert await match({"amount": 500}) == RuleMatch("review", review["id"], "amount > 100")
    assert await match({"amount": 2000, "email": "a@b.co"}) == RuleMatch(
        "block", block["id"], "amount > 1000"
    )
    assert await match({"amount": 2000}, livemode=True) is None  # test-mode rules only

    # A list change reaches the cached rules at the next match.
    await fraud.post(f"/lists/{emails['id']}/items", {"value": "A@B.co"})
    assert await match({"amount": 2000, "email": "a@b.co"}) == RuleMatch(
        "allow", allow["id"], allow["expression"]
    )
    assert (await match({"amount": 9000, "email": "a@b.co"}) or RuleMatch("", "", "")).action == (
        "block"
    )
    # So does a rule change.
    await fraud.post(f"/rules/{allow['id']}", {"enabled": False}, status=200)
    assert (await match({"amount": 2000, "email": "a@b.co"}) or RuleMatch("", "", "")).rule_id == (
        block["id"]
    )
    await fraud.delete(f"/rules/{block['id']}")
    assert (await match({"amount": 2000})) == RuleMatch("review", review["id"], "amount > 100")
    cached = rules._cache[mid, False]
    assert [r.rule_id for r in cached.rules] == [review["id"]]
    # Unchanged: the cached set is used as it is.
    await match({"amount": 1})
    assert rules._cache[mid, False] is cached


async def test_the_number_of_rules_is_bounded(
    fraud: Fraud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rules_service, "MAX_RULES", 2)
    first = await fraud.post("/rules", {"action": "review", "expression": "amount > 1"})
    await fraud.post("/rules", {"action": "review", "expression": "amount > 2"})
    r = await fraud.post("/rules", {"action": "review", "expression": "amount > 3"}, status=400)
    assert error(r)["code"] == "too_many_rules"
    await fraud.delete(f"/rules/{first['id']}")
    await fraud.post("/rules", {"action": "review", "expression": "amount > 3"})
